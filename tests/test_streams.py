"""Tests of stream sections: round trips, form choice, golden bytes and malformed input."""

import struct

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dcformat.bitpack import pack
from dcformat.constants import StreamForm
from dcformat.errors import (
    InvalidFieldError,
    InvalidHuffmanTableError,
    LimitExceededError,
    ReservedFieldError,
    TruncatedError,
)
from dcformat.huffman import encode
from dcformat.streams import (
    StreamInfo,
    decode_stream,
    default_max_code_length,
    encode_stream,
    read_stream_info,
)

PACKED, HUFFMAN = StreamForm.PACKED, StreamForm.HUFFMAN
BASE = 4096  # the section's offset in an imaginary file; every error offset includes it


def skewed_symbols(rng, count, width):
    return np.minimum(rng.geometric(0.35, count) - 1, (1 << width) - 1)


def decode(section, count, width, **kwargs):
    return decode_stream(section, count=count, width=width, section="gaps", base=BASE,
                         **kwargs)


def huffman_section(*, width=3, max_code_length=2, count=6, alphabet_size=None,
                    block_size=2, payload_bits=None, lengths=(1, 2, 2), offsets=None,
                    payload=None, symbols=(0, 1, 2, 0, 1, 2), reserved=0, form=1):
    """Build a huffman section field by field, independently of encode_stream.

    The defaults give a valid stream: codes 0, 10, 11 for symbols 0, 1, 2, so the payload is
    0 10 11 0 10 11 (10 bits) with block offsets [3, 6]. With ``symbols=None`` nothing is
    encoded and ``payload``, ``payload_bits`` and ``offsets`` must be given.
    """
    if symbols is None:
        coded, coded_bits, coded_offsets = payload, payload_bits, offsets
    else:
        coded, coded_bits, coded_offsets = encode(list(symbols), list(lengths), block_size)
    alphabet_size = len(lengths) if alphabet_size is None else alphabet_size
    payload_bits = coded_bits if payload_bits is None else payload_bits
    offsets = coded_offsets if offsets is None else offsets
    payload = coded if payload is None else payload
    return (
        struct.pack("<BBBBQ", form, width, max_code_length, reserved, count)
        + struct.pack("<IIQ", alphabet_size, block_size, payload_bits)
        + pack(list(lengths), 5)
        + np.asarray(offsets, dtype="<u8").tobytes()
        + payload
    )


def packed_section(values=(1, 2, 3), width=3, count=None, max_code_length=0, reserved=0):
    count = len(values) if count is None else count
    return struct.pack("<BBBBQ", 0, width, max_code_length, reserved, count) + pack(values,
                                                                                     width)


# --- round trips ---------------------------------------------------------------------------


@pytest.mark.parametrize("form", [PACKED, HUFFMAN, None])
@pytest.mark.parametrize("width", [1, 2, 5, 8, 9, 13, 16])
@pytest.mark.parametrize("count", [0, 1, 2, 777])
def test_round_trip(form, width, count):
    rng = np.random.default_rng(width * 7 + count)
    symbols = skewed_symbols(rng, count, width)

    section = encode_stream(symbols, width, form=form, block_size=100)
    decoded = decode(section, count, width)

    assert decoded.dtype == (np.uint8 if width <= 8 else np.uint16)
    np.testing.assert_array_equal(decoded, symbols)
    info = read_stream_info(section, section="gaps")
    assert info.count == count
    assert info.width == width
    assert info.header_bytes + info.payload_bytes == len(section)
    if form is not None:
        assert info.form == form


@given(data=st.data())
@settings(max_examples=100, deadline=None)
def test_slices_decode_like_full_stream(data):
    width = data.draw(st.integers(1, 16))
    count = data.draw(st.integers(0, 400))
    form = data.draw(st.sampled_from([PACKED, HUFFMAN]))
    block_size = data.draw(st.integers(1, 64))
    rng = np.random.default_rng(data.draw(st.integers(0, 10_000)))
    symbols = skewed_symbols(rng, count, width)
    section = encode_stream(symbols, width, form=form, block_size=block_size)
    start = data.draw(st.integers(0, count))
    stop = data.draw(st.integers(start, count))

    decoded = decode(section, count, width, start=start, stop=stop)
    np.testing.assert_array_equal(decoded, symbols[start:stop])


def test_wide_alphabet_huffman():
    rng = np.random.default_rng(5)
    symbols = np.minimum(rng.geometric(0.002, 50_000), 65535)
    section = encode_stream(symbols, 16, form=HUFFMAN)
    info = read_stream_info(section, section="levels")
    assert info.max_code_length <= default_max_code_length(16) == 20
    np.testing.assert_array_equal(decode(section, symbols.size, 16), symbols)


def test_single_symbol_stream_is_header_only():
    section = encode_stream(np.full(100_000, 4), 5, form=HUFFMAN)
    info = read_stream_info(section, section="assignments")
    assert info.payload_bits == 0
    assert info.payload_bytes == 0
    assert info.alphabet_size == 5
    assert info.code_lengths.tolist() == [0, 0, 0, 0, 1]
    np.testing.assert_array_equal(info.block_offsets, [0, 0, 0])
    assert len(section) == 12 + 16 + 4 + 3 * 8
    np.testing.assert_array_equal(decode(section, 100_000, 5, start=5, stop=9), [4] * 4)
    # The automatic choice takes it too, as it is far smaller than 62,500 packed bytes.
    assert encode_stream(np.full(100_000, 4), 5) == section


def test_form_choice():
    rng = np.random.default_rng(1)
    uniform = rng.integers(0, 32, 10_000)
    skewed = skewed_symbols(rng, 10_000, 5)
    assert read_stream_info(encode_stream(uniform, 5), section="s").form == PACKED
    assert read_stream_info(encode_stream(skewed, 5), section="s").form == HUFFMAN
    # Empty: 12 packed bytes against 28 huffman bytes.
    assert encode_stream([], 5) == encode_stream([], 5, form=PACKED)


def test_form_choice_tie_goes_to_packed():
    # 21 symbols 0 and 1 of width 8: packed 12 + 21 bytes; huffman 28 + 2 (code lengths)
    # + 3 (21 one-bit codes) bytes. One more symbol tips the balance to huffman.
    symbols = [0, 1] * 10 + [0]
    packed = encode_stream(symbols, 8, form=PACKED)
    huffman = encode_stream(symbols, 8, form=HUFFMAN)
    assert len(packed) == len(huffman) == 33
    assert encode_stream(symbols, 8) == packed
    assert encode_stream(symbols + [1], 8) == encode_stream(symbols + [1], 8, form=HUFFMAN)


def test_encoding_is_deterministic():
    rng = np.random.default_rng(9)
    symbols = skewed_symbols(rng, 5_000, 6)
    assert encode_stream(symbols, 6) == encode_stream(symbols.copy(), 6)
    assert encode_stream(symbols, 6) == encode_stream(symbols.tolist(), 6)


def test_info_is_frozen_and_read_only():
    info = read_stream_info(huffman_section(), section="gaps")
    assert isinstance(info, StreamInfo)
    with pytest.raises(AttributeError):
        info.count = 3
    with pytest.raises(ValueError):
        info.code_lengths[0] = 2


# --- golden bytes --------------------------------------------------------------------------


def test_golden_packed_bytes():
    section = encode_stream([1, 2, 3], 3, form=PACKED)
    assert section == bytes.fromhex("00 03 00 00 03000000 00000000 2980")


def test_golden_huffman_bytes():
    section = encode_stream([0, 1, 2, 0, 1, 2, 0, 0], 3, form=HUFFMAN, block_size=4)
    # Lengths 1, 2, 2 (codes 0, 10, 11); payload 0 10 11 0 | 10 11 0 0 = 12 bits.
    assert section == bytes.fromhex(
        "01 03 02 00 0800000000000000"  # huffman, width 3, longest code 2, count 8
        "03000000 04000000 0c00000000000000"  # alphabet 3, block size 4, 12 payload bits
        "08 84"  # 00001 00010 00010 and 1 padding bit
        "0600000000000000"  # block 1 starts at bit 6
        "5a c0"  # 0101 1010 1100 and 4 padding bits
    )
    assert section == huffman_section(width=3, count=8, block_size=4,
                                      symbols=(0, 1, 2, 0, 1, 2, 0, 0))


def test_max_code_length_limit_is_applied():
    frequencies = [2**k for k in range(16)]
    symbols = np.repeat(np.arange(16), frequencies)
    info = read_stream_info(encode_stream(symbols, 4, form=HUFFMAN, max_code_length=9),
                            section="s")
    assert info.max_code_length == 9
    assert int(info.code_lengths.max()) == 9
    unlimited = read_stream_info(encode_stream(symbols, 4, form=HUFFMAN, max_code_length=24),
                                 section="s")
    assert unlimited.max_code_length == 15


def test_encode_rejects_bad_arguments():
    with pytest.raises(ValueError, match="symbol 8 at index 1 is outside 0..7"):
        encode_stream([1, 8], 3)
    with pytest.raises(ValueError, match="unknown stream form 2"):
        encode_stream([1], 3, form=2)
    with pytest.raises(ValueError, match="max_code_length must be from 1 to 24"):
        encode_stream([1], 3, max_code_length=25)
    with pytest.raises(ValueError, match="block_size must be from 1"):
        encode_stream([1], 3, block_size=0)
    with pytest.raises(ValueError, match="raise max_code_length"):
        encode_stream(range(16), 4, form=HUFFMAN, max_code_length=3)
    with pytest.raises(TypeError, match="form must be"):
        encode_stream([1], 3, form="huffman")


# --- malformed sections --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("section", "count", "width"),
    [
        (packed_section(), 3, 3),
        (huffman_section(), 6, 3),
        (huffman_section(lengths=(0, 0, 1), symbols=(2,) * 6), 6, 3),
    ],
    ids=["packed", "huffman", "single-symbol"],
)
def test_every_truncation_is_detected(section, count, width):
    decode(section, count, width)  # intact
    for size in range(len(section)):
        with pytest.raises(TruncatedError, match=r"gaps\.\w+ at offset \d+") as caught:
            decode(section[:size], count, width)
        assert BASE <= caught.value.offset <= BASE + size


def test_truncated_fields_are_named():
    section = huffman_section()
    expectations = {0: "form", 1: "width", 2: "max_code_length", 3: "reserved", 4: "count",
                    12: "alphabet_size", 16: "block_size", 20: "payload_bits",
                    28: "code_lengths", 30: "block_offsets", 46: "payload"}
    for size, field in expectations.items():
        with pytest.raises(TruncatedError) as caught:
            decode(section[:size], 6, 3)
        assert caught.value.field == field, size


def test_trailing_bytes():
    for section, count in ((packed_section(), 3), (huffman_section(), 6)):
        with pytest.raises(TruncatedError, match="1 trailing bytes"):
            decode(section + b"\x00", count, 3)


def test_unknown_form():
    section = bytearray(packed_section())
    section[0] = 7
    with pytest.raises(InvalidFieldError,
                       match=r"gaps\.form at offset 4096 .*0 \(packed\) or 1 \(huffman\), found 7"):
        decode(bytes(section), 3, 3)


def test_reserved_byte():
    with pytest.raises(ReservedFieldError, match=r"gaps\.reserved at offset 4099"):
        decode(packed_section(reserved=1), 3, 3)
    with pytest.raises(ReservedFieldError, match="reserved"):
        read_stream_info(huffman_section(reserved=0x80), section="gaps")


def test_count_and_width_must_match_caller():
    with pytest.raises(InvalidFieldError, match=r"gaps\.count at offset 4100.*expected 4, found 3"):
        decode(packed_section(), 4, 3)
    with pytest.raises(InvalidFieldError, match=r"gaps\.width .*expected 4, found 3"):
        decode(packed_section(), 3, 4)
    with pytest.raises(InvalidFieldError, match=r"expected 5, found 6"):
        decode(huffman_section(), 5, 3)


def test_width_out_of_range():
    with pytest.raises(InvalidFieldError, match=r"width .*expected 1 to 16, found 0"):
        read_stream_info(struct.pack("<BBBBQ", 0, 0, 0, 0, 0), section="gaps")
    with pytest.raises(InvalidFieldError, match=r"found 17"):
        read_stream_info(struct.pack("<BBBBQ", 1, 17, 12, 0, 0), section="gaps")


def test_max_code_length_field():
    with pytest.raises(InvalidFieldError, match="0 for the packed form, found 5"):
        decode(packed_section(max_code_length=5), 3, 3)
    with pytest.raises(InvalidFieldError, match="1 to 24 for the huffman form, found 0"):
        decode(huffman_section(max_code_length=0), 6, 3)
    with pytest.raises(InvalidFieldError, match="1 to 24 for the huffman form, found 25"):
        decode(huffman_section(max_code_length=25), 6, 3)
    with pytest.raises(InvalidHuffmanTableError, match="exceeds max_code_length 1"):
        decode(huffman_section(max_code_length=1), 6, 3)


def test_alphabet_size_field():
    with pytest.raises(InvalidFieldError, match=r"alphabet_size .*at most 2\^1 = 2 .*found 3"):
        decode(huffman_section(width=1), 6, 1)
    with pytest.raises(InvalidFieldError, match="alphabet_size .*at least 1 for 6 symbols"):
        decode(huffman_section(alphabet_size=0, lengths=(), symbols=None, payload=b"",
                               payload_bits=0, offsets=[0, 0]), 6, 3)
    empty = huffman_section(count=0, alphabet_size=1, lengths=(1,), symbols=(), payload=b"")
    with pytest.raises(InvalidFieldError, match="0 for an empty stream, found 1"):
        decode(empty, 0, 3)


def test_empty_huffman_stream():
    section = huffman_section(count=0, lengths=(), symbols=(), payload=b"")
    assert decode(section, 0, 3).size == 0
    assert encode_stream([], 3, form=HUFFMAN) == huffman_section(
        count=0, max_code_length=1, block_size=32768, lengths=(), symbols=()
    )
    nonzero_bits = huffman_section(count=0, lengths=(), symbols=(), payload=b"\x00",
                                   payload_bits=3)
    with pytest.raises(InvalidFieldError, match="payload_bits .*0 for an empty stream"):
        decode(nonzero_bits, 0, 3)


def test_block_size_zero():
    section = huffman_section(block_size=2)
    section = section[:16] + struct.pack("<I", 0) + section[20:]
    with pytest.raises(InvalidFieldError, match=r"block_size at offset 4112.*at least 1"):
        decode(section, 6, 3)


@pytest.mark.parametrize(
    ("lengths", "fragment"),
    [
        ((1, 1, 1), "oversubscribed code"),
        ((1, 2, 3), "incomplete code"),
        ((0, 2, 0), "single-symbol code must have length 1"),
    ],
)
def test_invalid_tables(lengths, fragment):
    section = huffman_section(max_code_length=3, lengths=(1, 2, 2))
    table = pack(list(lengths), 5)
    section = section[:28] + table + section[30:]
    with pytest.raises(InvalidHuffmanTableError, match=fragment) as caught:
        decode(section, 6, 3)
    assert caught.value.offset >= BASE + 28


def test_table_without_symbols():
    section = huffman_section(lengths=(0, 0, 0), symbols=None, payload=b"", payload_bits=0,
                              offsets=[0, 0])
    with pytest.raises(InvalidHuffmanTableError, match="every code length is 0"):
        decode(section, 6, 3)


def test_single_symbol_with_payload_bits():
    section = huffman_section(lengths=(0, 1), symbols=(1,) * 6, payload_bits=8,
                              payload=b"\x00", offsets=[0, 0])
    with pytest.raises(InvalidFieldError, match="payload_bits .*0 for a single-symbol code"):
        decode(section, 6, 3)


def test_payload_bits_out_of_range():
    with pytest.raises(TruncatedError, match=r"payload_bits .*at least 6 bits for 6 codes"):
        decode(huffman_section(payload_bits=5, offsets=[3, 5], payload=b"\x58"), 6, 3)
    with pytest.raises(InvalidFieldError, match=r"payload_bits .*at most 12 bits for 6 codes"):
        decode(huffman_section(payload_bits=13, payload=b"\x5a\xc0"), 6, 3)


def test_payload_ends_inside_code():
    # 0 10 11 0 10 1|1: nine bits declared, the last code is cut.
    section = huffman_section(block_size=8, payload_bits=9, payload=b"\x5a\x80", offsets=[])
    with pytest.raises(TruncatedError, match=r"gaps\.payload .*6 symbols in 9 payload bits"):
        decode(section, 6, 3)


def test_leftover_payload_bits():
    # Ten bits of codes, eleven declared: the extra 0 would decode as a seventh symbol.
    section = huffman_section(block_size=8, payload_bits=11, offsets=[])
    with pytest.raises(InvalidFieldError, match=r"payload_bits .*expected 10, the bits"):
        decode(section, 6, 3)


@pytest.mark.parametrize(
    ("offsets", "exception", "fragment"),
    [
        ([3, 2], InvalidFieldError, r"block_offsets\[1\] at offset 4134.*non-decreasing"),
        ([3, 11], InvalidFieldError, r"block_offsets\[1\].*at most payload_bits = 10, found 11"),
        ([4, 6], InvalidFieldError, r"block_offsets\[0\] at offset 4126.*expected bit 3"),
        ([3, 7], InvalidFieldError, r"block_offsets\[1\].*expected bit 6.*found 7"),
    ],
)
def test_bad_block_offsets(offsets, exception, fragment):
    with pytest.raises(exception, match=fragment):
        decode(huffman_section(offsets=offsets), 6, 3)


def test_block_offsets_point_inside_a_slice():
    section = huffman_section(offsets=[2, 6])  # block 0 really ends at bit 3
    np.testing.assert_array_equal(decode(section, 6, 3, start=4, stop=6), [1, 2])
    with pytest.raises(InvalidFieldError, match=r"block_offsets\[0\]"):
        decode(section, 6, 3, start=0, stop=2)


def test_nonzero_padding_bits():
    packed = bytearray(packed_section())  # 9 bits used of 16
    packed[-1] |= 0x01
    with pytest.raises(ReservedFieldError, match=r"payload padding at offset 4109.*found 0x81"):
        decode(bytes(packed), 3, 3)

    huffman = bytearray(huffman_section())  # payload: 10 bits used of 16
    huffman[-1] |= 0x20
    with pytest.raises(ReservedFieldError, match=r"gaps\.payload padding .*low 6 bits"):
        decode(bytes(huffman), 6, 3)

    lengths = bytearray(huffman_section())  # code lengths: 15 bits used of 16
    lengths[29] |= 0x01
    with pytest.raises(ReservedFieldError, match=r"code_lengths padding at offset 4125"):
        decode(bytes(lengths), 6, 3)


def test_huge_declared_count_fails_before_allocating():
    count = 1 << 40
    with pytest.raises(TruncatedError, match="payload"):
        decode(packed_section(count=count), count, 3)
    section = huffman_section(count=count, block_size=0xFFFFFFFF)
    with pytest.raises(TruncatedError, match="at least 1099511627776 bits"):
        decode(section, count, 3)
    many_blocks = huffman_section(count=count, block_size=1, payload_bits=count, offsets=[])
    with pytest.raises(TruncatedError, match=r"block_offsets .*1099511627775 entries"):
        decode(many_blocks, count, 3)
    with pytest.raises(LimitExceededError, match="count"):
        read_stream_info(packed_section(count=(1 << 64) - 1, width=16), section="gaps")


def test_decode_rejects_bad_slice():
    with pytest.raises(ValueError, match="slice 2:4 is outside a stream of 3"):
        decode(packed_section(), 3, 3, start=2, stop=4)
    with pytest.raises(ValueError, match="slice 2:1"):
        decode(packed_section(), 3, 3, start=2, stop=1)


def test_automatic_form_falls_back_to_packed():
    # 16 distinct symbols cannot get codes of at most 3 bits, so only packed is possible.
    symbols = list(range(16)) * 4
    assert encode_stream(symbols, 4, max_code_length=3) == encode_stream(symbols, 4,
                                                                         form=PACKED)
