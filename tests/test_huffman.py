"""Tests of length-limited canonical Huffman coding."""

import itertools
from fractions import Fraction

import numpy as np
import pytest
from bitarray import bitarray
from bitarray.util import huffman_code
from hypothesis import given, settings
from hypothesis import strategies as st

from dcformat import huffman
from dcformat.errors import InvalidFieldError, InvalidHuffmanTableError, TruncatedError
from dcformat.huffman import (
    canonical_codes,
    code_lengths,
    coded_bits,
    decode,
    encode,
    entropy_bits,
    validate_code_lengths,
)

frequency_tables = st.lists(st.integers(0, 10_000), min_size=2, max_size=300).filter(
    lambda table: sum(1 for f in table if f) >= 2
)


def kraft_sum(lengths):
    return sum(Fraction(1, 2 ** int(length)) for length in lengths if length)


def code_strings(lengths):
    codes = canonical_codes(lengths)
    return {
        symbol: format(int(codes[symbol]), f"0{int(length)}b")
        for symbol, length in enumerate(lengths)
        if length
    }


def reference_encode(symbols, lengths):
    """Encode with bitarray's own encoder from the canonical code strings."""
    table = {symbol: bitarray(code) for symbol, code in code_strings(lengths).items()}
    bits = bitarray(endian="big")
    bits.encode(table, [int(s) for s in symbols])
    return bits


def decode_all(payload, payload_bits, count, lengths, block_offsets=None, block_size=None,
               **kwargs):
    return decode(payload, payload_bits, count, lengths, block_offsets, section="gaps",
                  offset=1000, block_size=block_size, **kwargs)


# --- code_lengths ------------------------------------------------------------------------


@given(frequency_tables, st.integers(9, 24))
@settings(max_examples=150, deadline=None)
def test_code_is_complete_and_prefix_free(frequencies, limit):
    lengths = code_lengths(frequencies, limit)

    assert lengths.dtype == np.uint8
    assert lengths.size == len(frequencies)
    assert all((f == 0) == (length == 0) for f, length in zip(frequencies, lengths))
    assert int(lengths.max()) <= limit
    assert kraft_sum(lengths) == 1
    codes = sorted(code_strings(lengths).values())
    for shorter, longer in zip(codes, codes[1:]):
        assert not longer.startswith(shorter)


@given(frequency_tables)
@settings(max_examples=150, deadline=None)
def test_unbounded_limit_matches_plain_huffman(frequencies):
    reference = huffman_code({s: f for s, f in enumerate(frequencies) if f})
    reference_bits = sum(frequencies[s] * len(code) for s, code in reference.items())

    lengths = code_lengths(frequencies, 24)
    assert coded_bits(frequencies, lengths) == reference_bits


@given(
    st.lists(st.integers(1, 1000), min_size=2, max_size=6),
    st.integers(1, 3),
)
@settings(max_examples=150, deadline=None)
def test_binding_limit_is_optimal(frequencies, limit):
    if len(frequencies) > 2**limit:
        with pytest.raises(ValueError, match="raise max_code_length"):
            code_lengths(frequencies, limit)
        return
    # Brute force over every length vector within the limit that forms a prefix code.
    best = min(
        sum(f * length for f, length in zip(frequencies, candidate))
        for candidate in itertools.product(range(1, limit + 1), repeat=len(frequencies))
        if kraft_sum(candidate) <= 1
    )
    lengths = code_lengths(frequencies, limit)
    assert int(lengths.max()) <= limit
    assert kraft_sum(lengths) == 1
    assert coded_bits(frequencies, lengths) == best


def test_limit_shortens_skewed_code():
    frequencies = [2**k for k in range(20)]  # plain Huffman needs 19-bit codes
    assert int(code_lengths(frequencies, 24).max()) == 19
    limited = code_lengths(frequencies, 8)
    assert int(limited.max()) == 8
    assert kraft_sum(limited) == 1


def test_single_and_no_symbol():
    np.testing.assert_array_equal(code_lengths([0, 0, 7, 0], 12), [0, 0, 1, 0])
    np.testing.assert_array_equal(code_lengths([0, 0, 0], 12), [0, 0, 0])
    assert code_lengths([], 12).size == 0
    np.testing.assert_array_equal(code_lengths([3, 5], 1), [1, 1])


def test_ties_are_deterministic():
    first = code_lengths([5] * 7, 12)
    assert first.tolist() == code_lengths(np.full(7, 5), 12).tolist()
    # Among equal frequencies the lower symbols get the longer codes.
    assert first.tolist() == [3, 3, 3, 3, 3, 3, 2]


def test_code_lengths_rejects_bad_arguments():
    with pytest.raises(ValueError, match="5 symbols cannot be coded with codes of at most 2"):
        code_lengths([1, 1, 1, 1, 1], 2)
    with pytest.raises(ValueError, match="max_code_length must be 1 to 24"):
        code_lengths([1, 1], 25)
    with pytest.raises(ValueError, match="frequency of symbol 1 is negative"):
        code_lengths([1, -1], 12)
    with pytest.raises(TypeError, match="integers"):
        code_lengths([1.0, 2.0], 12)


# --- canonical codes and table validation ------------------------------------------------


def test_canonical_codes_match_rfc1951_example():
    # RFC 1951, 3.2.2: lengths (3, 3, 3, 3, 3, 2, 4, 4) for A..H.
    codes = code_strings([3, 3, 3, 3, 3, 2, 4, 4])
    assert [codes[s] for s in range(8)] == [
        "010", "011", "100", "101", "110", "00", "1110", "1111",
    ]


def test_canonical_codes_rejects_oversubscribed():
    with pytest.raises(ValueError, match="oversubscribe"):
        canonical_codes([1, 1, 1])


@pytest.mark.parametrize(
    ("lengths", "fragment", "offset"),
    [
        ([1, 1, 1], "oversubscribed code", 500),
        ([1, 2, 0, 0], "incomplete code", 500),
        ([2], "a single-symbol code must have length 1", 500),
        ([0, 0, 0, 0, 0, 0, 0, 2], "the only symbol, 7", 504),
        ([1, 2, 3, 13, 13], "code length 13 of symbol 3 exceeds max_code_length 12", 501),
    ],
)
def test_validate_code_lengths_rejects(lengths, fragment, offset):
    with pytest.raises(InvalidHuffmanTableError, match=fragment) as caught:
        validate_code_lengths(lengths, 12, section="gaps", offset=500)
    assert caught.value.offset == offset
    assert caught.value.section == "gaps"
    assert "gaps.code_lengths" in str(caught.value)


def test_validate_code_lengths_accepts_valid_tables():
    for lengths in ([], [0, 0], [0, 1], [1, 1], [2, 2, 2, 2], [1, 2, 3, 3]):
        validate_code_lengths(lengths, 12, section="gaps", offset=0)


# --- encode and decode -------------------------------------------------------------------


@given(
    frequencies=frequency_tables,
    block_size=st.integers(1, 50),
    seed=st.integers(0, 2**32 - 1),
)
@settings(max_examples=100, deadline=None)
def test_round_trip_matches_bitarray_encoder(frequencies, block_size, seed):
    rng = np.random.default_rng(seed)
    present = [s for s, f in enumerate(frequencies) if f]
    symbols = rng.choice(present, size=int(rng.integers(1, 400)))
    lengths = code_lengths(np.bincount(symbols, minlength=len(frequencies)), 16)

    payload, payload_bits, block_offsets = encode(symbols, lengths, block_size)
    if len(np.unique(symbols)) == 1:
        # Single-symbol rule: no payload at all, where a plain encoder writes one bit a symbol.
        assert payload_bits == 0
        return

    reference = reference_encode(symbols, lengths)
    assert payload_bits == len(reference)
    reference.fill()
    assert payload == reference.tobytes()
    expected_offsets = np.concatenate(([0], np.cumsum(lengths[symbols].astype(np.int64))))
    np.testing.assert_array_equal(
        block_offsets, expected_offsets[block_size : symbols.size : block_size]
    )

    decoded = decode_all(payload, payload_bits, symbols.size, lengths, block_offsets,
                         block_size)
    np.testing.assert_array_equal(decoded, symbols)


@given(data=st.data())
@settings(max_examples=100, deadline=None)
def test_decode_slices(data):
    rng = np.random.default_rng(data.draw(st.integers(0, 1000)))
    count = data.draw(st.integers(1, 300))
    block_size = data.draw(st.integers(1, 40))
    symbols = np.minimum(rng.geometric(0.3, count) - 1, 20)
    frequencies = np.bincount(symbols, minlength=21)
    frequencies[:2] += 1  # at least two symbols, so the code is not single-symbol
    lengths = code_lengths(frequencies, 12)
    payload, payload_bits, block_offsets = encode(symbols, lengths, block_size)
    start = data.draw(st.integers(0, count))
    stop = data.draw(st.integers(start, count))

    decoded = decode_all(payload, payload_bits, count, lengths, block_offsets, block_size,
                         start=start, stop=stop)
    np.testing.assert_array_equal(decoded, symbols[start:stop])


def test_encode_chunk_boundaries(monkeypatch):
    monkeypatch.setattr(huffman, "_ENCODE_CHUNK", 13)
    rng = np.random.default_rng(3)
    symbols = np.minimum(rng.geometric(0.2, 500) - 1, 30)
    lengths = code_lengths(np.bincount(symbols), 12)

    payload, payload_bits, block_offsets = encode(symbols, lengths, 7)

    reference = reference_encode(symbols, lengths)
    assert payload_bits == len(reference)
    reference.fill()
    assert payload == reference.tobytes()
    decoded = decode_all(payload, payload_bits, symbols.size, lengths, block_offsets, 7)
    np.testing.assert_array_equal(decoded, symbols)


def test_wide_alphabet_round_trip():
    rng = np.random.default_rng(11)
    symbols = np.minimum(rng.geometric(0.001, 20_000), 65535)
    lengths = code_lengths(np.bincount(symbols, minlength=65536), 20)
    payload, payload_bits, block_offsets = encode(symbols, lengths, 4096)
    decoded = decode_all(payload, payload_bits, symbols.size, lengths, block_offsets, 4096)
    assert decoded.dtype == np.uint16
    np.testing.assert_array_equal(decoded, symbols)


def test_single_symbol_stream_has_empty_payload():
    lengths = [0, 0, 0, 1]
    payload, payload_bits, block_offsets = encode([3] * 10, lengths, 4)
    assert (payload, payload_bits) == (b"", 0)
    np.testing.assert_array_equal(block_offsets, [0, 0])
    np.testing.assert_array_equal(decode_all(b"", 0, 10, lengths, block_offsets, 4), [3] * 10)
    np.testing.assert_array_equal(decode_all(b"", 0, 10, lengths, start=2, stop=5), [3] * 3)


def test_empty_stream():
    payload, payload_bits, block_offsets = encode([], [], 8)
    assert (payload, payload_bits, block_offsets.size) == (b"", 0, 0)
    assert decode_all(b"", 0, 0, []).size == 0


def test_encode_rejects_bad_input():
    with pytest.raises(ValueError, match="symbol 2 at index 1 has no code"):
        encode([0, 2], [1, 1, 0], 8)
    with pytest.raises(ValueError, match="symbol 5 at index 0 is outside the alphabet of 3"):
        encode([5], [1, 1, 0], 8)
    with pytest.raises(ValueError, match="incomplete code"):
        encode([0], [1, 2, 0], 8)
    with pytest.raises(ValueError, match="block_size must be at least 1"):
        encode([0], [1, 1], 0)
    with pytest.raises(TypeError, match="integers"):
        encode([0.0], [1, 1], 8)


# --- malformed payloads ------------------------------------------------------------------

# Lengths 1, 2, 2 give codes 0, 10, 11.
LENGTHS = [1, 2, 2]


def test_decode_payload_ends_inside_code():
    # 0 10 1|: the last code is cut after one bit.
    with pytest.raises(TruncatedError, match=r"gaps\.payload .*3 symbols in 4 payload bits"):
        decode_all(b"\x50", 4, 3, LENGTHS)


def test_decode_payload_too_short_for_count():
    with pytest.raises(TruncatedError, match="5 symbols in 4 payload bits"):
        decode_all(b"\x00", 4, 5, LENGTHS)


def test_decode_payload_bits_beyond_data():
    with pytest.raises(TruncatedError, match="2 bytes for 9 bits") as caught:
        decode_all(b"\x00", 9, 3, LENGTHS)
    assert caught.value.offset == 1001


def test_decode_leftover_bits():
    # 0 10 11 0: four codes in six bits, but only three symbols declared.
    with pytest.raises(InvalidFieldError, match=r"payload_bits.*expected 5, the bits") as caught:
        decode_all(b"\x5c", 6, 3, LENGTHS)
    assert caught.value.found == 6


def test_decode_block_offset_disagrees():
    payload, payload_bits, block_offsets = encode([0, 1, 2, 0, 1, 2], LENGTHS, 2)
    np.testing.assert_array_equal(block_offsets, [3, 6])  # 0 10 | 11 0 | 10 11
    with pytest.raises(InvalidFieldError, match=r"block_offsets\[0\].*expected bit 3") as caught:
        decode_all(payload, payload_bits, 6, LENGTHS, [4, 6], 2)
    assert caught.value.offset == 1000  # no index_offset: errors point at the payload

    with pytest.raises(InvalidFieldError, match=r"block_offsets\[1\]") as caught:
        decode_all(payload, payload_bits, 6, LENGTHS, [3, 7], 2, index_offset=200)
    assert caught.value.offset == 208

    # A slice decodes only its own blocks, so it detects only their errors.
    np.testing.assert_array_equal(
        decode_all(payload, payload_bits, 6, LENGTHS, [3, 7], 2, start=0, stop=2), [0, 1]
    )
    with pytest.raises(InvalidFieldError, match=r"block_offsets\[0\]"):
        decode_all(payload, payload_bits, 6, LENGTHS, [2, 6], 2, start=0, stop=1)


def test_decode_block_offsets_checked():
    payload, payload_bits, _ = encode([0, 1, 2, 0, 1, 2], LENGTHS, 2)
    with pytest.raises(InvalidFieldError, match=r"block_offsets\[1\].*non-decreasing"):
        decode_all(payload, payload_bits, 6, LENGTHS, [5, 4], 2)
    with pytest.raises(InvalidFieldError, match=r"block_offsets\[1\].*at most payload_bits"):
        decode_all(payload, payload_bits, 6, LENGTHS, [3, 11], 2)
    with pytest.raises(InvalidFieldError, match="expected 2 entries"):
        decode_all(payload, payload_bits, 6, LENGTHS, [3], 2)


def test_decode_rejects_bad_table_and_slice():
    with pytest.raises(InvalidHuffmanTableError, match="incomplete"):
        decode_all(b"\x00", 2, 2, [1, 2])
    with pytest.raises(InvalidHuffmanTableError, match="no symbol has a code"):
        decode_all(b"\x00", 2, 2, [0, 0])
    with pytest.raises(InvalidFieldError, match="0 for a single-symbol code"):
        decode_all(b"\x00", 1, 2, [1, 0])
    with pytest.raises(ValueError, match="slice 2:5 is outside a stream of 4"):
        decode_all(b"\x00", 4, 4, [1, 1], start=2, stop=5)


def test_entropy_bits():
    assert entropy_bits([1, 1]) == pytest.approx(2.0)
    assert entropy_bits([1, 1, 2]) == pytest.approx(6.0)
    assert entropy_bits([0, 9, 0]) == 0.0
    assert entropy_bits([]) == 0.0


def test_coded_bits_single_symbol_is_free():
    assert coded_bits([0, 12], [0, 1]) == 0
    assert coded_bits([3, 1], [1, 1]) == 4
