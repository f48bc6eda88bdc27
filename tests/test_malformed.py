"""Malformed files: each file in fixtures/malformed raises its expected error at its API call.

fixtures/malformed/expected.json maps each file to the error class, a fragment of the
message, and the call that must raise: "open" (dcformat.open), "get:<tensor>" (the file opens
and decoding that tensor raises) or "verify" (the file decodes and verify() reports the
problem). Cases with no error class must open and decode cleanly.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import re
import struct
import subprocess
import sys
import zlib
from pathlib import Path

import pytest

import dcformat
from dcformat import errors

ROOT = Path(__file__).resolve().parent.parent
MALFORMED_DIR = ROOT / "fixtures" / "malformed"
EXPECTED = json.loads((MALFORMED_DIR / "expected.json").read_text(encoding="utf-8"))

# Cases about the checksums themselves, or about bytes a checksum cannot be recomputed over
# (a truncated or shifted file).
CHECKSUM_CASES = {"footer_crc", "footer_magic", "directory_crc", "section_crc", "digest", "bad_magic"}


def _open(path: Path, case: dict):
    limit = case.get("max_tensor_bytes", dcformat.DEFAULT_MAX_TENSOR_BYTES)
    return dcformat.open(path, max_tensor_bytes=limit)


def test_expected_lists_every_file():
    assert {path.name for path in MALFORMED_DIR.glob("*.dcf")} == set(EXPECTED)


def test_enough_cases():
    raising = [name for name, case in EXPECTED.items() if case["error"]]
    assert len(raising) >= 25
    calls = {case["call"].split(":")[0] for case in EXPECTED.values()}
    assert calls == {"open", "get", "verify"}


def test_error_classes_exist():
    for name, case in EXPECTED.items():
        if case["error"]:
            cls = getattr(errors, case["error"])
            assert issubclass(cls, errors.DCFormatError), name


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_malformed_raises_expected_error(name):
    case = EXPECTED[name]
    path = MALFORMED_DIR / name
    call = case["call"]
    if case["error"] is None:
        with _open(path, case) as reader:
            for tensor in reader.keys():
                reader.get(tensor)
            report = reader.verify()
        if call == "verify":
            assert not report.ok
            assert any(case["part"] == p["part"] and case["message"] in p["message"] for p in report.problems), \
                report.problems
        else:
            assert report.ok, report.problems
        return

    error = getattr(errors, case["error"])
    if call == "open":
        with pytest.raises(error, match=re.escape(case["message"])):
            _open(path, case).close()
        return

    tensor = call.removeprefix("get:")
    with _open(path, case) as reader:
        assert tensor in reader.keys()
        with pytest.raises(error, match=re.escape(case["message"])):
            reader.get(tensor)


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_malformed_has_one_fault(name):
    """Every checksum that the case is not about matches, so the file has one fault only."""
    if name.removesuffix(".dcf") in CHECKSUM_CASES or name.startswith("truncated_"):
        pytest.skip("the case is about a checksum, or there is no footer to check")
    data = (MALFORMED_DIR / name).read_bytes()
    footer = len(data) - 88
    assert zlib.crc32(data[footer : footer + 40]) == struct.unpack_from("<I", data, footer + 40)[0]
    assert hashlib.sha256(data[: len(data) - 40]).digest() == data[len(data) - 40 : len(data) - 8]
    directory_offset, stored_size = struct.unpack_from("<QQ", data, footer)
    directory_crc = struct.unpack_from("<I", data, footer + 24)[0]
    assert zlib.crc32(data[directory_offset : directory_offset + stored_size]) == directory_crc


@pytest.mark.parametrize("name", sorted(n for n, c in EXPECTED.items() if c["call"].startswith("get:")))
def test_get_cases_have_valid_section_crcs(name):
    """A decoding fault is not a checksum fault: the reader must get past every section CRC."""
    if name.removesuffix(".dcf") in CHECKSUM_CASES:
        pytest.skip("the case is about a section CRC")
    with _open(MALFORMED_DIR / name, EXPECTED[name]) as reader:
        assert reader.verify().ok


def test_hand_decoder_rejects_malformed():
    """tools/decode_by_hand.py rejects every faulty file and accepts the valid ones."""
    sys.path.insert(0, str(ROOT / "tools"))
    import decode_by_hand

    assert decode_by_hand.check_malformed(MALFORMED_DIR) == []


def test_make_vectors_check_passes():
    result = subprocess.run(
        [sys.executable, str(ROOT / "tools" / "make_vectors.py"), "--check"],
        capture_output=True, text=True, cwd=ROOT, timeout=300,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_make_vectors_check_detects_change(tmp_path, monkeypatch):
    spec = importlib.util.spec_from_file_location("make_vectors", ROOT / "tools" / "make_vectors.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules.setdefault("make_vectors", module)
    spec.loader.exec_module(module)
    module = sys.modules["make_vectors"]
    (tmp_path / "vectors").mkdir()
    (tmp_path / "malformed").mkdir()
    module.write_all(tmp_path / "vectors", tmp_path / "malformed")
    changed = tmp_path / "vectors" / "raw_none.dcf"
    changed.write_bytes(changed.read_bytes() + b"\0")
    (tmp_path / "malformed" / "stray.dcf").write_bytes(b"")
    monkeypatch.setattr(module, "VECTORS_DIR", tmp_path / "vectors")
    monkeypatch.setattr(module, "MALFORMED_DIR", tmp_path / "malformed")
    assert module.main(["--check"]) == 1
