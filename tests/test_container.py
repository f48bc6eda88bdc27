"""Container layer: writer and reader round trips, atomic writes, structural checks."""

from __future__ import annotations

import io
import os
import struct
import zlib

import ml_dtypes
import numpy as np
import pytest

import dcformat
from dcformat import encodings
from dcformat.constants import FOOTER_SIZE, MAGIC, PREAMBLE_SIZE, Compression
from dcformat.container import ContainerWriter, parse_container
from dcformat.errors import (
    BadMagicError,
    ChecksumError,
    InvalidFieldError,
    LimitExceededError,
    OffsetOutOfRangeError,
    ReservedFieldError,
    TensorNotFoundError,
    TruncatedError,
    UnknownFeatureError,
    UnsupportedVersionError,
)

DTYPES = ["float32", "float16", "float64", "int8", "int16", "int32", "int64", "uint8", "bool",
          "uint16", "uint32", "uint64"]


def _write_raw(tensors, **kwargs) -> bytes:
    buffer = io.BytesIO()
    writer = ContainerWriter(buffer, **kwargs)
    for name, array in tensors.items():
        writer.add_tensor(encodings.encode_raw(name, array))
    writer.close(kwargs.pop("metadata", None) if "metadata" in kwargs else {"user": {"k": 1}})
    return buffer.getvalue()


def _sample(dtype: str, shape=(3, 5)) -> np.ndarray:
    rng = np.random.default_rng(0)
    if dtype == "bool":
        return rng.random(shape) > 0.5
    if dtype.startswith(("int", "uint")):
        info = np.iinfo(dtype)
        return rng.integers(info.min, info.max, size=shape, dtype=dtype, endpoint=True)
    return rng.standard_normal(shape).astype(dtype)


@pytest.mark.parametrize("dtype", DTYPES)
def test_raw_round_trip_every_dtype(dtype):
    array = _sample(dtype)
    data = _write_raw({"t": array})
    with dcformat.open(data) as reader:
        decoded = reader.get("t")
    assert decoded.dtype == array.dtype
    assert decoded.shape == array.shape
    np.testing.assert_array_equal(decoded, array)


def test_raw_round_trip_bfloat16():
    array = np.linspace(-3, 3, 24, dtype=np.float32).astype(ml_dtypes.bfloat16).reshape(4, 6)
    decoded = dcformat.load(_write_raw({"b": array}))["b"]
    assert decoded.dtype == array.dtype
    assert decoded.tobytes() == array.tobytes()


@pytest.mark.parametrize("shape", [(), (0,), (0, 7), (1,), (2, 3, 4, 5)])
def test_raw_shapes_kept_exactly(shape):
    array = np.arange(int(np.prod(shape)), dtype=np.float32).reshape(shape)
    decoded = dcformat.load(_write_raw({"x": array}))["x"]
    assert decoded.shape == shape
    np.testing.assert_array_equal(decoded, array)


def test_zstd_shuffle_used_for_compressible_data():
    array = np.zeros((256, 256), dtype=np.float32)
    array[::7] = 1.5
    entry = encodings.encode_raw("z", array)
    params = encodings.RawParams(*entry.params)
    assert params.compression == Compression.ZSTD
    assert len(entry.sections[0].data) < array.nbytes // 10
    np.testing.assert_array_equal(dcformat.load(_write_raw({"z": array}))["z"], array)


def test_writer_is_deterministic():
    tensors = {"a": _sample("float32", (30, 40)), "b": _sample("int64", (7,))}
    assert _write_raw(tensors) == _write_raw(tensors)


def test_sections_are_aligned_and_padding_minimal():
    tensors = {f"t{i}": _sample("float32", (i + 1, 3)) for i in range(5)}
    data = _write_raw(tensors, alignment_log2=6)
    info = parse_container(memoryview(data))
    previous_end = PREAMBLE_SIZE
    for section in info.sections:
        assert section.offset % 64 == 0
        assert section.offset - previous_end < 64
        previous_end = section.end
    assert info.footer.directory_offset == previous_end


def test_smallest_alignment_has_no_padding():
    tensors = {f"t{i}": _sample("float32", (i + 1, 3)) for i in range(5)}
    packed = _write_raw(tensors, alignment_log2=0)
    aligned = _write_raw(tensors, alignment_log2=6)
    assert len(packed) < len(aligned)
    info = parse_container(memoryview(packed))
    assert all(b.offset == a.end for a, b in zip(info.sections, info.sections[1:]))


def test_open_from_path_bytes_and_file_object(tmp_path):
    tensors = {"w": _sample("float32", (4, 4)), "n": _sample("int32", (2,))}
    data = _write_raw(tensors)
    path = tmp_path / "m.dcf"
    path.write_bytes(data)
    for source in (path, str(path), data, io.BytesIO(data)):
        loaded = dcformat.load(source)
        assert list(loaded) == ["w", "n"]
        for name in tensors:
            np.testing.assert_array_equal(loaded[name], tensors[name])


def test_names_are_opaque_utf8():
    names = ["a/b", "x.y.z", "with space", "ünïcødé ✓", "../etc/passwd", "t" * 5000]
    tensors = {name: np.full((2,), i, dtype=np.int16) for i, name in enumerate(names)}
    loaded = dcformat.load(_write_raw(tensors))
    assert list(loaded) == names


def test_unknown_name_raises_key_error():
    with dcformat.open(_write_raw({"a": np.zeros(3, np.float32)})) as reader:
        with pytest.raises(TensorNotFoundError, match="'b' not found"):
            reader.get("b")
        with pytest.raises(KeyError):
            reader.get("b")


def test_duplicate_name_rejected_by_writer():
    writer = ContainerWriter(io.BytesIO())
    writer.add_tensor(encodings.encode_raw("a", np.zeros(2, np.float32)))
    with pytest.raises(InvalidFieldError, match="unique tensor names"):
        writer.add_tensor(encodings.encode_raw("a", np.zeros(2, np.float32)))


def test_user_sections_are_listed_and_skipped():
    buffer = io.BytesIO()
    writer = ContainerWriter(buffer)
    writer.add_tensor(encodings.encode_raw("a", np.ones(3, np.float32)))
    writer.add_user_section("labels", b"zero\none\ntwo")
    writer.close()
    with dcformat.open(buffer.getvalue()) as reader:
        assert reader.keys() == ["a"]
        assert reader.info.user_sections == {"labels": 1}
        assert reader.verify().ok


def test_metadata_round_trip():
    buffer = io.BytesIO()
    writer = ContainerWriter(buffer)
    metadata = {"user": {"accuracy": 0.981, "note": "ok", "tags": ["a", 1, True], "nested": {"x": -2}}}
    writer.close(metadata)
    with dcformat.open(buffer.getvalue()) as reader:
        assert reader.metadata() == metadata
        assert reader.keys() == []


@pytest.mark.parametrize("bad", [{"x": None}, {"x": float("nan")}, {"x": object()}, {1: "a"}])
def test_metadata_grammar_rejects(bad):
    writer = ContainerWriter(io.BytesIO())
    with pytest.raises((InvalidFieldError, TypeError)):
        writer.close(bad)


def test_atomic_write_leaves_no_partial_file(tmp_path):
    path = tmp_path / "out.dcf"
    path.write_bytes(b"previous")
    writer = ContainerWriter(path)
    writer.add_tensor(encodings.encode_raw("a", np.ones(1000, np.float32)))
    writer.abort()
    assert path.read_bytes() == b"previous"
    assert os.listdir(tmp_path) == ["out.dcf"]

    with pytest.raises(RuntimeError):
        with ContainerWriter(path) as writer:
            writer.add_tensor(encodings.encode_raw("a", np.ones(10, np.float32)))
            raise RuntimeError("interrupted")
    assert path.read_bytes() == b"previous"
    assert os.listdir(tmp_path) == ["out.dcf"]

    with ContainerWriter(path) as writer:
        writer.add_tensor(encodings.encode_raw("a", np.ones(10, np.float32)))
    assert os.listdir(tmp_path) == ["out.dcf"]
    np.testing.assert_array_equal(dcformat.load(path)["a"], np.ones(10, np.float32))


# --------------------------------------------------------------------------------------
# Malformed files


@pytest.fixture
def valid() -> bytes:
    return _write_raw({"a": _sample("float32", (8, 8)), "b": _sample("int8", (5,))})


def _refooter(data: bytes, **changes) -> bytes:
    """Rewrite footer fields and fix the footer CRC and the digest, so only the change is wrong."""
    import hashlib

    footer = bytearray(data[-FOOTER_SIZE:])
    layout = {"directory_offset": (0, "<Q"), "directory_stored_size": (8, "<Q"), "directory_size": (16, "<Q"),
              "required_flags": (28, "<I"), "optional_flags": (32, "<I"), "alignment_log2": (36, "<B"),
              "directory_compression": (37, "<B"), "reserved": (38, "<H")}
    for key, value in changes.items():
        offset, fmt = layout[key]
        struct.pack_into(fmt, footer, offset, value)
    struct.pack_into("<I", footer, 40, zlib.crc32(bytes(footer[:40])))
    body = data[:-FOOTER_SIZE] + bytes(footer[:48])
    footer[48:80] = hashlib.sha256(body).digest()
    return data[:-FOOTER_SIZE] + bytes(footer)


def test_bad_magic(valid):
    with pytest.raises(BadMagicError, match="not a DCF file \\(expected the bytes 89 44 43 46"):
        dcformat.open(b"PK\x03\x04" + valid[4:])


def test_empty_file_is_truncated():
    with pytest.raises(TruncatedError, match="a file of 0 bytes"):
        dcformat.open(b"")


def test_future_major_version(valid):
    data = bytearray(valid)
    struct.pack_into("<H", data, 8, 2)
    with pytest.raises(UnsupportedVersionError, match=r"expected version 1\.x, found 2\.0"):
        dcformat.open(bytes(data))


def test_newer_minor_version_is_accepted(valid):
    data = bytearray(valid)
    struct.pack_into("<H", data, 10, 7)
    with dcformat.open(bytes(data)) as reader:
        assert reader.info.minor_version == 7
        assert not reader.verify().digest_ok  # the digest covers the preamble


def test_nonzero_preamble_reserved(valid):
    data = bytearray(valid)
    data[13] = 1
    with pytest.raises(ReservedFieldError, match="preamble.reserved"):
        dcformat.open(bytes(data))


@pytest.mark.parametrize("cut", [1, 8, 20, FOOTER_SIZE, 200])
def test_truncated(valid, cut):
    with pytest.raises(TruncatedError):
        dcformat.open(valid[:-cut])


def test_trailing_bytes(valid):
    with pytest.raises(TruncatedError, match="trailing bytes"):
        dcformat.open(valid + b"\x00")


def test_footer_crc_mismatch(valid):
    data = bytearray(valid)
    data[-FOOTER_SIZE] ^= 0x01
    with pytest.raises(ChecksumError, match="footer.footer_crc32"):
        dcformat.open(bytes(data))


def test_unknown_required_flag(valid):
    with pytest.raises(UnknownFeatureError, match="unknown required flag bit 5"):
        dcformat.open(_refooter(valid, required_flags=1 | 1 << 5))


def test_unknown_optional_flag_ignored(valid):
    with dcformat.open(_refooter(valid, optional_flags=1 << 20)) as reader:
        assert reader.keys() == ["a", "b"]


def test_footer_reserved_nonzero(valid):
    with pytest.raises(ReservedFieldError, match="footer.reserved"):
        dcformat.open(_refooter(valid, reserved=3))


def test_directory_offset_out_of_range(valid):
    with pytest.raises(OffsetOutOfRangeError, match="directory_offset"):
        dcformat.open(_refooter(valid, directory_offset=len(valid) * 2))


def test_directory_size_over_limit(valid):
    with pytest.raises(LimitExceededError, match="directory_size"):
        dcformat.open(_refooter(valid, directory_size=1 << 40))


def test_directory_crc_mismatch(valid):
    info = parse_container(memoryview(valid))
    data = bytearray(valid)
    data[info.footer.directory_offset + 2] ^= 0x40
    with pytest.raises(ChecksumError, match="directory.directory_crc32"):
        dcformat.open(bytes(data))


def test_section_crc_checked_on_get(valid):
    info = parse_container(memoryview(valid))
    data = bytearray(valid)
    data[info.sections[0].offset] ^= 0x01
    with dcformat.open(bytes(data)) as reader:
        with pytest.raises(ChecksumError, match=r"section\[0\] \(data\)"):
            reader.get("a")
        np.testing.assert_array_equal(reader.get("b"), _sample("int8", (5,)))
        report = reader.verify()
    assert not report.ok
    parts = [p["part"] for p in report.problems]
    assert any("section[0] (data) of a" in part for part in parts)
    assert "digest" in parts


def test_nonzero_padding_reported_by_verify(valid):
    info = parse_container(memoryview(valid))
    data = bytearray(valid)
    gap = info.sections[0].offset - 1
    assert gap >= PREAMBLE_SIZE  # there is padding between the preamble and section 0
    data[gap] = 0xFF
    with dcformat.open(bytes(data)) as reader:
        report = reader.verify()
    assert any(p["part"] == "padding before section[0]" for p in report.problems)


def test_decoded_size_limit():
    data = _write_raw({"big": np.zeros((64, 64), np.float32)})
    with dcformat.open(data, max_tensor_bytes=1000) as reader:
        with pytest.raises(LimitExceededError, match="max_tensor_bytes"):
            reader.get("big")
    with dcformat.open(data, max_tensor_bytes=64 * 64 * 4) as reader:
        assert reader.get("big").shape == (64, 64)


def test_preamble_is_magic_then_version(valid):
    assert valid[:8] == MAGIC
    assert struct.unpack_from("<HH", valid, 8) == (1, 0)


def test_directory_expansion_capped(valid):
    with pytest.raises(LimitExceededError, match="64 x directory_stored_size"):
        dcformat.open(_refooter(valid, directory_size=100 * 1024 * 1024))
