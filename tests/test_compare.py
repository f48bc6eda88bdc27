"""Comparing two DCF files: content hashes, changed tensors and update sizes."""

from __future__ import annotations

import io
import json
from pathlib import Path

import ml_dtypes
import numpy as np
import pytest

import dcformat
from dcformat import Config, Rule
from dcformat.audit import compress_to_bytes
from dcformat.cli import main
from dcformat.compare import compare_files, content_hashes
from dcformat.constants import FOOTER_SIZE, PREAMBLE_SIZE
from dcformat.container import ContainerWriter
from dcformat.encoder import HASHES_KEY, tensor_sha256
from dcformat.encodings import encode_raw
from dcformat.errors import BadMagicError
from dcformat.io import read_tensors

REPO_ROOT = Path(__file__).resolve().parents[1]
LENET300 = REPO_ROOT / "fixtures" / "models" / "lenet300.safetensors"
# Per-tensor pruning thresholds, so changing one tensor leaves the others' encodings alone.
PER_TENSOR = Config(scope="tensor")


@pytest.fixture(scope="module")
def checkpoints() -> tuple[bytes, bytes]:
    """Two checkpoints of the LeNet-300-100 that differ only in fc2.weight."""
    tensors = read_tensors(LENET300)
    changed = dict(tensors)
    changed["fc2.weight"] = tensors["fc2.weight"] + np.float32(0.01)
    return compress_to_bytes(tensors, PER_TENSOR), compress_to_bytes(changed, PER_TENSOR)


def _manifest(data: bytes) -> int:
    with dcformat.open(data) as reader:
        return PREAMBLE_SIZE + reader.info.footer.directory_stored_size + FOOTER_SIZE


def test_only_the_changed_tensor_is_reported(checkpoints):
    old, new = checkpoints
    comparison = compare_files(old, new)

    assert [t.name for t in comparison.with_status("changed")] == ["fc2.weight"]
    assert comparison.counts == {"changed": 1, "added": 0, "removed": 0, "unchanged": 5}
    assert (comparison.old_hashes, comparison.new_hashes) == ("metadata", "metadata")
    changed = comparison.with_status("changed")[0]
    assert changed.old_sha256 != changed.new_sha256
    assert 0 < changed.transfer_bytes <= changed.new_bytes
    for tensor in comparison.with_status("unchanged"):
        assert tensor.identical_bytes, tensor.name
        assert tensor.transfer_bytes == 0


def test_update_size(checkpoints):
    old, new = checkpoints
    comparison = compare_files(old, new)
    changed = comparison.with_status("changed")[0]

    assert comparison.manifest_bytes == _manifest(new)
    assert comparison.transfer_bytes == comparison.manifest_bytes + changed.transfer_bytes
    assert comparison.exact_transfer_bytes == comparison.transfer_bytes
    assert comparison.transfer_bytes < len(new) / 2
    assert comparison.size_delta == len(new) - len(old)


def test_identical_files(checkpoints):
    old, _ = checkpoints
    comparison = compare_files(old, old)
    assert comparison.counts["unchanged"] == 6
    assert comparison.transfer_bytes == comparison.exact_transfer_bytes == _manifest(old)


def test_hashes_by_decoding_agree(checkpoints):
    old, new = checkpoints
    stored = compare_files(old, new)
    decoded = compare_files(old, new, decode=True)

    assert (decoded.old_hashes, decoded.new_hashes) == ("decoded", "decoded")
    assert [(t.name, t.status, t.new_sha256) for t in decoded.tensors] \
        == [(t.name, t.status, t.new_sha256) for t in stored.tensors]


def test_files_without_hashes():
    tensors = read_tensors(LENET300)
    changed = dict(tensors, **{"fc3.bias": tensors["fc3.bias"] * 2})
    smallest = Config(scope="tensor", record_settings=False)
    old, new = compress_to_bytes(tensors, smallest), compress_to_bytes(changed, smallest)
    with dcformat.open(new) as reader:
        assert HASHES_KEY not in reader.metadata()

    comparison = compare_files(old, new)
    assert (comparison.old_hashes, comparison.new_hashes) == ("decoded", "decoded")
    assert [t.name for t in comparison.with_status("changed")] == ["fc3.bias"]


def test_global_pruning_threshold_moves():
    # With one pruning threshold for all weights (the default), changing one weight tensor
    # moves the threshold, so other weight tensors change too: compare reports what the
    # files hold, not what the user edited.
    tensors = read_tensors(LENET300)
    changed = dict(tensors, **{"fc3.weight": tensors["fc3.weight"] * 3})
    comparison = compare_files(compress_to_bytes(tensors), compress_to_bytes(changed))
    names = {t.name for t in comparison.with_status("changed")}
    assert "fc3.weight" in names
    assert names <= {"fc1.weight", "fc2.weight", "fc3.weight"}


def test_added_removed_and_renamed():
    rng = np.random.default_rng(1)
    a = rng.standard_normal(300).astype(np.float32)
    b = rng.standard_normal(300).astype(np.float32)
    old = compress_to_bytes({"a": a, "b": b})
    new = compress_to_bytes({"a": a, "renamed": b, "c": a * 2})
    comparison = compare_files(old, new)
    by_name = {t.name: t for t in comparison.tensors}

    assert by_name["a"].status == "unchanged"
    assert by_name["b"].status == "removed"
    assert (by_name["renamed"].status, by_name["renamed"].reused_from, by_name["renamed"].transfer_bytes) \
        == ("added", "b", 0)
    assert by_name["c"].status == "added"
    assert by_name["c"].reused_from is None
    assert by_name["c"].transfer_bytes == by_name["c"].new_bytes
    assert [t.name for t in comparison.tensors] == ["a", "renamed", "c", "b"]


def test_shape_or_dtype_change_is_a_change():
    values = np.arange(300, dtype=np.float32)
    lossless = Config(rules=(Rule("*", {"encoding": "raw"}),))
    old = compress_to_bytes({"t": values}, lossless)
    reshaped = compress_to_bytes({"t": values.reshape(20, 15)}, lossless)
    retyped = compress_to_bytes({"t": values.view(np.int32)}, lossless)  # same bytes, other dtype
    for new in (reshaped, retyped):
        change = compare_files(old, new).tensors[0]
        assert change.old_sha256 == change.new_sha256
        assert change.status == "changed"


def _file_with_hashes(tensor: np.ndarray, hashes: dict) -> bytes:
    buffer = io.BytesIO()
    writer = ContainerWriter(buffer)
    writer.add_tensor(encode_raw("t", tensor, compression="none"))
    writer.close({HASHES_KEY: hashes})
    return buffer.getvalue()


def test_decode_catches_a_stale_hash():
    old_values = np.zeros(4, np.float32)
    new_values = np.ones(4, np.float32)
    old = _file_with_hashes(old_values, {"t": tensor_sha256(old_values)})
    stale = _file_with_hashes(new_values, {"t": tensor_sha256(old_values)})

    assert compare_files(old, stale).tensors[0].status == "unchanged"
    assert compare_files(old, stale, decode=True).tensors[0].status == "changed"


def test_malformed_stored_hash_is_recomputed():
    values = np.ones(4, np.float32)
    data = _file_with_hashes(values, {"t": "not a hash"})
    with dcformat.open(data) as reader:
        hashes, origin = content_hashes(reader)
    assert hashes == {"t": tensor_sha256(values)}
    assert origin == "decoded"


@pytest.mark.parametrize("encoding", ["raw", "shared", "sparse-shared", "uniform", "lowrank", "float16",
                                      "bfloat16"])
def test_stored_hash_is_hash_of_decoded(encoding):
    rng = np.random.default_rng(7)
    tensors = {"w": (rng.standard_normal((40, 30)) * 0.1).astype(np.float32),
               "h": (rng.standard_normal((300,))).astype(np.float16),
               "bf": rng.standard_normal((20, 20)).astype(ml_dtypes.bfloat16)}
    # "h" is 1-D, which lowrank cannot take, so it keeps the default choice.
    rules = (Rule("w", {"encoding": encoding}), Rule("bf", {"encoding": encoding}))
    config = Config(defaults={"sparsity": 0.6}, rules=rules, min_elements=0)
    data = compress_to_bytes(tensors, config)
    with dcformat.open(data) as reader:
        stored = reader.metadata()[HASHES_KEY]
        decoded = {name: tensor_sha256(reader.get(name)) for name in reader.keys()}
    assert stored == decoded


def test_tensor_sha256_byte_order():
    values = np.arange(5, dtype=">f4")
    assert tensor_sha256(values) == tensor_sha256(values.astype("<f4"))
    assert tensor_sha256(np.asfortranarray(np.ones((3, 2)))) == tensor_sha256(np.ones((3, 2)))


# --------------------------------------------------------------------------------------
# Command line


def test_cli_lists_only_changed(capsys, tmp_path, checkpoints):
    old_path, new_path = tmp_path / "old.dcf", tmp_path / "new.dcf"
    old_path.write_bytes(checkpoints[0])
    new_path.write_bytes(checkpoints[1])

    assert main(["compare", str(old_path), str(new_path)]) == 0
    out = capsys.readouterr().out
    listed = [line.split()[0] for line in out.splitlines() if line.startswith("fc")]
    assert listed == ["fc2.weight"]
    assert "5 unchanged tensors not listed" in out

    assert main(["compare", str(old_path), str(new_path), "--all"]) == 0
    out = capsys.readouterr().out
    assert sorted(line.split()[0] for line in out.splitlines() if line.startswith("fc")) \
        == ["fc1.bias", "fc1.weight", "fc2.bias", "fc2.weight", "fc3.bias", "fc3.weight"]


def test_cli_json(capsys, tmp_path, checkpoints):
    old_path, new_path = tmp_path / "old.dcf", tmp_path / "new.dcf"
    old_path.write_bytes(checkpoints[0])
    new_path.write_bytes(checkpoints[1])
    assert main(["compare", str(old_path), str(new_path), "--json"]) == 0
    data = json.loads(capsys.readouterr().out)

    assert set(data) == {"old", "new", "old_file_bytes", "new_file_bytes", "size_delta", "manifest_bytes",
                         "transfer_bytes", "exact_transfer_bytes", "reused_bytes", "old_hashes", "new_hashes",
                         "counts", "tensors"}
    assert data["counts"]["changed"] == 1
    tensor = data["tensors"][0]
    assert set(tensor) == {"name", "status", "old_shape", "new_shape", "old_dtype", "new_dtype", "old_encoding",
                           "new_encoding", "old_bytes", "new_bytes", "old_sha256", "new_sha256",
                           "identical_bytes", "reused_from", "transfer_bytes", "size_delta"}


def test_cli_bad_file(capsys, tmp_path, checkpoints):
    good = tmp_path / "good.dcf"
    good.write_bytes(checkpoints[0])
    bad = tmp_path / "bad.dcf"
    bad.write_bytes(b"not a dcf file at all, long enough to hold a footer" * 3)
    assert main(["compare", str(good), str(bad)]) == 1
    err = capsys.readouterr().err
    assert err.startswith("dcformat: error: ")
    assert "Traceback" not in err
    with pytest.raises(BadMagicError):
        compare_files(checkpoints[0], bad.read_bytes())
