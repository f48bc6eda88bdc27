"""Tests of fixed-width bit packing against a bit-string reference."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dcformat import bitpack
from dcformat.bitpack import pack, unpack


def reference_pack(values, width):
    """Pack through a string of '0'/'1' characters, the slow and obvious way."""
    bits = "".join(format(int(value), f"0{width}b") for value in values)
    bits += "0" * (-len(bits) % 8)
    return bytes(int(bits[i : i + 8], 2) for i in range(0, len(bits), 8))


def random_symbols(rng, count, width):
    values = rng.integers(0, 1 << width, count)
    if count >= 2:
        values[0] = 0
        values[-1] = (1 << width) - 1
    return values


@pytest.mark.parametrize("width", range(1, 17))
@pytest.mark.parametrize("count", [0, 1, 2, 7, 8, 9, 15, 63, 1001])
def test_round_trip_every_width(width, count):
    rng = np.random.default_rng(width * 1000 + count)
    values = random_symbols(rng, count, width)

    data = pack(values, width)
    assert data == reference_pack(values, width)
    assert len(data) == (count * width + 7) // 8

    decoded = unpack(data, count, width)
    assert decoded.dtype == (np.uint8 if width <= 8 else np.uint16)
    np.testing.assert_array_equal(decoded, values)


def test_pack_golden_bytes():
    # 001 010 011 -> 0010 1001 1(000 0000)
    assert pack([1, 2, 3], 3) == b"\x29\x80"
    assert pack([0xABC], 12) == b"\xab\xc0"
    assert pack([1] * 8, 1) == b"\xff"
    assert pack([0x1234, 0xFFFF], 16) == b"\x12\x34\xff\xff"


@given(
    width=st.integers(1, 16),
    data=st.data(),
)
@settings(max_examples=200, deadline=None)
def test_unpack_slice_at_any_bit(width, data):
    count = data.draw(st.integers(0, 80))
    values = data.draw(st.lists(st.integers(0, (1 << width) - 1), min_size=count,
                                max_size=count))
    start = data.draw(st.integers(0, count))
    stop = data.draw(st.integers(start, count))
    packed = pack(values, width)

    decoded = unpack(packed, stop - start, width, bit_offset=start * width)
    np.testing.assert_array_equal(decoded, np.asarray(values[start:stop], dtype=np.int64))


def test_unpack_unaligned_offset_not_multiple_of_width():
    # A bit offset need not be a multiple of the width: the slice is read as raw bits.
    data = pack([0b101, 0b110, 0b011], 3)  # 101110011
    np.testing.assert_array_equal(unpack(data, 2, 4, bit_offset=1), [0b0111, 0b0011])


def test_chunk_boundaries(monkeypatch):
    monkeypatch.setattr(bitpack, "_CHUNK_SYMBOLS", 16)
    rng = np.random.default_rng(7)
    for width in (3, 5, 11, 13):
        values = random_symbols(rng, 203, width)
        data = pack(values, width)
        assert data == reference_pack(values, width)
        np.testing.assert_array_equal(unpack(data, values.size, width), values)


def test_accepts_buffers_and_arrays():
    values = [5, 0, 31, 17]
    data = pack(np.asarray(values, dtype=np.int32), 5)
    for buffer in (data, bytearray(data), memoryview(data), np.frombuffer(data, np.uint8)):
        np.testing.assert_array_equal(unpack(buffer, 4, 5), values)


def test_unpack_returns_writable_copy():
    data = pack([1, 2, 3], 8)
    decoded = unpack(data, 3, 8)
    decoded[0] = 9
    assert data == b"\x01\x02\x03"


def test_value_out_of_range_names_value():
    with pytest.raises(ValueError, match=r"symbol 32 at index 2 is outside 0\.\.31"):
        pack([1, 2, 32], 5)
    with pytest.raises(ValueError, match=r"symbol -1 at index 0"):
        pack([-1, 2], 5)
    with pytest.raises(ValueError, match=r"symbol 65536"):
        pack(np.array([65536], dtype=np.int64), 16)


def test_rejects_bad_arguments():
    with pytest.raises(TypeError, match="integers"):
        pack([0.5], 4)
    with pytest.raises(TypeError, match="integers"):
        pack(np.array([True]), 4)
    with pytest.raises(ValueError, match="width must be from 1 to 16"):
        pack([1], 0)
    with pytest.raises(ValueError, match="width must be from 1 to 16"):
        pack([1], 17)
    with pytest.raises(TypeError, match="width must be an int"):
        pack([1], True)
    with pytest.raises(TypeError, match="bytes-like"):
        unpack(12, 1, 4)


def test_unpack_short_buffer():
    with pytest.raises(ValueError, match="too short for 3 symbols of 5 bits"):
        unpack(b"\x00", 3, 5)
    with pytest.raises(ValueError, match="after bit 4"):
        unpack(b"\x00", 1, 5, bit_offset=4)


def test_empty_input():
    assert pack([], 7) == b""
    assert unpack(b"", 0, 7).size == 0
    assert unpack(b"", 0, 12).dtype == np.uint16
