"""The fuzzer in tools/fuzz.py, run on a seeded subset, and its reproducers.

Every mutated file must decode or raise a DCFormatError; every reproducer in
fixtures/malformed/fuzz/ must give the result listed in its expected.json.
"""

from __future__ import annotations

import importlib.util
import json
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest

import dcformat
from dcformat import errors
from dcformat.constants import DEFAULT_MAX_TENSOR_BYTES

REPO_ROOT = Path(__file__).resolve().parent.parent
REPRODUCERS = REPO_ROOT / "fixtures" / "malformed" / "fuzz"
EXPECTED = json.loads((REPRODUCERS / "expected.json").read_text())


def _load_fuzzer():
    spec = importlib.util.spec_from_file_location("dcformat_fuzz", REPO_ROOT / "tools" / "fuzz.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


fuzz = _load_fuzzer()


@pytest.fixture(scope="module")
def seeds():
    return fuzz.build_seeds()


def test_seeds_cover_every_encoding(seeds):
    features = fuzz.seed_features([s for s in seeds if not s.name.startswith("vector:")])
    expected = {
        "raw:none", "raw:zstd", "raw:zstd+shuffle", "shared", "sparse-shared", "sparse-shared:fillers",
        "uniform:per-tensor", "uniform:per-channel", "lowrank", "stream:packed", "stream:huffman",
        "stream:huffman blocks", "codebook:plain", "codebook:delta", "user sections", "user metadata",
        "directory:zstd", "directory:none",
    }
    assert expected <= features, f"missing: {sorted(expected - features)}"


def test_seed_model_rebuilds_same_tensors(seeds):
    for seed in seeds:
        rebuilt = seed.model.serialize()
        with dcformat.open(rebuilt) as reader:
            assert reader.verify().ok, seed.name
        original, copy = dcformat.load(seed.data), dcformat.load(rebuilt)
        assert list(original) == list(copy), seed.name
        for name in original:
            assert original[name].tobytes() == copy[name].tobytes(), f"{seed.name}: {name}"


def test_fuzz_subset_has_no_uncaught_exception(tmp_path):
    summary = fuzz.run(2000, seed=20261204, jobs=1, reproducers=tmp_path, truncation=False)
    bugs = [(b["signature"], b.get("reproducer"), b["mutation"]) for b in summary["bugs"]]
    assert summary["uncaught"] == 0, bugs
    assert summary["timeouts"] == 0, bugs
    # The mutations must reach past open() and into the decoders, not only the checksums.
    assert summary["outcomes"].get("decoded", 0) > 100
    assert summary["outcomes"].get("opened, some calls raised", 0) > 100
    assert summary["calls_by_result"].get("InvalidHuffmanTableError", 0) > 0
    assert summary["calls_by_result"].get("IndexOutOfRangeError", 0) > 0


def test_every_prefix_of_every_seed(seeds):
    result = fuzz._exhaustive_truncation(seeds, 64 << 20)
    assert result["uncaught"] == []
    assert result["cases"] > 5000


def test_every_reproducer_listed():
    files = sorted(p.name for p in REPRODUCERS.glob("*.dcf"))
    assert files == sorted(EXPECTED)


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_reproducer_gives_expected_result(name):
    case = EXPECTED[name]
    data = (REPRODUCERS / name).read_bytes()
    limit = case.get("max_tensor_bytes", DEFAULT_MAX_TENSOR_BYTES)
    # Warnings count as failures: several reproducers made numpy warn during a decode.
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        if case["error"] is None:
            _call(data, case["call"], limit)
            return
        error_class = getattr(errors, case["error"])
        with pytest.raises(error_class) as raised:
            _call(data, case["call"], limit)
    assert case["message"] in str(raised.value)


def _call(data: bytes, call: str, limit: int):
    method, _, tensor = call.partition(":")
    with dcformat.open(data, max_tensor_bytes=limit) as reader:
        if method == "open":
            return None
        if method == "verify":
            report = reader.verify()
            if not report.ok:
                raise errors.ChecksumError(str(report.problems))
            return report
        result = getattr(reader, method)(tensor)
        if method == "get":
            assert isinstance(result, np.ndarray)
        return result
