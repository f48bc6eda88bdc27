"""Length-limited canonical Huffman coding of integer streams.

A code is described only by its ``code_lengths``: one length per symbol, 0 for a symbol that
does not occur. The codes follow from the lengths as in DEFLATE (RFC 1951, 3.2.2). Symbols
of non-zero length, sorted by (length, symbol), get consecutive code values. The first code
of each longer length is the previous code plus one, shifted left by the difference in
length. Codes are written MSB-first.

A valid table (see ``spec/FORMAT.md``, section 8.2) is either empty, a single symbol of
length 1 that is coded with zero bits, or a complete prefix code: ``sum(2**-length) == 1``.

Encoding is vectorised with numpy. Decoding uses bitarray's C canonical decoder
(``bitarray.util.canonical_decode``). ``tools/bench_huffman.py`` measures it against a
vectorised numpy table decoder, which ran 3.5 to 5.5 times slower on its 5-bit streams
(one AMD EPYC core, bitarray 3.12, numpy 2).
"""

from __future__ import annotations

import logging

import numpy as np
from bitarray import bitarray
from bitarray.util import canonical_decode

from .constants import MAX_CODE_LENGTH
from .errors import InvalidFieldError, InvalidHuffmanTableError, TruncatedError

__all__ = [
    "code_lengths",
    "canonical_codes",
    "validate_code_lengths",
    "validate_block_offsets",
    "block_count",
    "encode",
    "decode",
    "entropy_bits",
    "coded_bits",
]

logger = logging.getLogger(__name__)

# Symbols per vectorised encoding step; bounds the temporaries at a few tens of MiB.
_ENCODE_CHUNK = 1 << 20

# The Kraft sum is computed exactly as an integer in units of 2**-_KRAFT_BITS. Stored lengths
# are 5-bit values, so no length exceeds 31.
_KRAFT_BITS = 31


# --- argument checks -----------------------------------------------------------------------


def _check_int(value, name: str, minimum: int, maximum: int | None = None) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise TypeError(f"{name} must be an int, not {type(value).__name__}")
    if value < minimum or (maximum is not None and value > maximum):
        allowed = f"{minimum} to {maximum}" if maximum is not None else f"at least {minimum}"
        raise ValueError(f"{name} must be {allowed}, got {value}")
    return int(value)


def _as_frequencies(frequencies) -> np.ndarray:
    array = np.asarray(frequencies)
    if array.size == 0:
        return np.zeros(0, dtype=np.int64)
    if array.ndim != 1:
        raise ValueError(f"frequencies must be 1-D, got shape {array.shape}")
    if array.dtype == np.bool_ or not np.issubdtype(array.dtype, np.integer):
        raise TypeError(f"frequencies must be integers, not {array.dtype}")
    if int(array.min()) < 0:
        symbol = int(np.flatnonzero(array < 0)[0])
        raise ValueError(f"frequency of symbol {symbol} is negative: {int(array[symbol])}")
    return array.astype(np.int64)


def _as_lengths(lengths) -> np.ndarray:
    array = np.asarray(lengths)
    if array.size == 0:
        return np.zeros(0, dtype=np.uint8)
    if array.ndim != 1:
        raise ValueError(f"code lengths must be 1-D, got shape {array.shape}")
    if array.dtype == np.bool_ or not np.issubdtype(array.dtype, np.integer):
        raise TypeError(f"code lengths must be integers, not {array.dtype}")
    if int(array.min()) < 0 or int(array.max()) > _KRAFT_BITS:
        symbol = int(np.flatnonzero((array < 0) | (array > _KRAFT_BITS))[0])
        raise ValueError(
            f"code length of symbol {symbol} is {int(array[symbol])}, outside 0..{_KRAFT_BITS}"
        )
    return array.astype(np.uint8)


def _table_problem(lengths: np.ndarray, max_code_length: int) -> tuple[str, int | None] | None:
    """Return ``(problem, symbol)`` when ``lengths`` is not a valid table, else ``None``.

    ``symbol`` is the first symbol the problem concerns, or ``None`` when it concerns the whole
    table (an incomplete or oversubscribed code).
    """
    too_long = np.flatnonzero(lengths > max_code_length)
    if too_long.size:
        symbol = int(too_long[0])
        return (
            f"code length {int(lengths[symbol])} of symbol {symbol} exceeds "
            f"max_code_length {max_code_length}",
            symbol,
        )

    present = np.flatnonzero(lengths)
    if present.size == 0:
        return None
    if present.size == 1:
        symbol = int(present[0])
        if lengths[symbol] != 1:
            return (
                f"the only symbol, {symbol}, has code length {int(lengths[symbol])}; "
                "a single-symbol code must have length 1",
                symbol,
            )
        return None

    kraft = int(np.sum(np.left_shift(1, _KRAFT_BITS - lengths[present].astype(np.int64))))
    full = 1 << _KRAFT_BITS
    if kraft > full:
        return (f"oversubscribed code: Kraft sum {kraft / full:.9g} exceeds 1", None)
    if kraft < full:
        return (f"incomplete code: Kraft sum {kraft / full:.9g} is less than 1", None)
    return None


# --- code construction ---------------------------------------------------------------------


def _package_merge(weights: np.ndarray, limit: int) -> np.ndarray:
    """Return optimal code lengths, at most ``limit``, for ``weights`` sorted ascending.

    Package-merge (Larmore and Hirschberg, 1990): the list for the deepest level contains the
    leaves, and each shallower level merges the leaves with pairwise sums ("packages") of the
    level below. Selecting the 2n - 2 cheapest items of the top list, and expanding every
    selected package into the two items it was made from, selects a prefix of the sorted
    leaves at each level. A leaf's code length is the number of levels that select it.
    Needs ``2 <= len(weights) <= 2**limit``.
    """
    n = weights.size
    leaf_index = np.arange(n)
    # Positions of the leaves in each level's merged list, deepest level first.
    leaf_positions = [leaf_index]
    items = weights
    for _ in range(limit - 1):
        pairs = items.size // 2
        packages = items[0 : 2 * pairs : 2] + items[1 : 2 * pairs : 2]
        # Stable merge with leaves first among equal weights, which keeps the result
        # deterministic.
        leaf_at = leaf_index + np.searchsorted(packages, weights, side="left")
        package_at = np.arange(pairs) + np.searchsorted(weights, packages, side="right")
        items = np.empty(n + pairs, dtype=np.int64)
        items[leaf_at] = weights
        items[package_at] = packages
        leaf_positions.append(leaf_at)

    lengths = np.zeros(n, dtype=np.uint8)
    selected = 2 * n - 2
    for leaf_at in reversed(leaf_positions):
        leaves_selected = int(np.searchsorted(leaf_at, selected, side="left"))
        lengths[:leaves_selected] += 1
        selected = 2 * (selected - leaves_selected)
    assert selected == 0, "package-merge left packages unexpanded"
    return lengths


def code_lengths(frequencies, max_code_length: int) -> np.ndarray:
    """Compute optimal length-limited Huffman code lengths.

    ``frequencies[s]`` is how often symbol ``s`` occurs. Returns a uint8 array of the same
    length: 0 for absent symbols, otherwise a length of at most ``max_code_length`` such that
    the total coded size ``sum(frequencies * lengths)`` is the smallest any prefix code with
    that limit achieves. One present symbol gets length 1 (the single-symbol rule: it is
    coded with zero bits). Ties are broken by symbol value, so the result is deterministic.

    Raises ``ValueError`` when more symbols are present than ``2**max_code_length``.
    """
    limit = _check_int(max_code_length, "max_code_length", 1, MAX_CODE_LENGTH)
    frequencies = _as_frequencies(frequencies)
    lengths = np.zeros(frequencies.size, dtype=np.uint8)
    present = np.flatnonzero(frequencies)
    if present.size == 0:
        return lengths
    if present.size == 1:
        lengths[present] = 1
        return lengths
    if present.size > 1 << limit:
        raise ValueError(
            f"{present.size} symbols cannot be coded with codes of at most {limit} bits; "
            f"raise max_code_length to at least {int(present.size - 1).bit_length()}"
        )
    total = int(frequencies.sum())
    if total > (1 << 62) // MAX_CODE_LENGTH:
        raise ValueError(f"total frequency {total} is too large to code")

    # No Huffman code is longer than n - 1, so deeper levels cannot change the result.
    limit = min(limit, present.size - 1)
    order = present[np.argsort(frequencies[present], kind="stable")]
    lengths[order] = _package_merge(frequencies[order], limit)
    return lengths


def canonical_codes(lengths) -> np.ndarray:
    """Return the canonical code value of each symbol as a uint32 array (0 where absent).

    Symbol ``s``'s code is the low ``lengths[s]`` bits of the result, most significant first.
    Raises ``ValueError`` when the lengths oversubscribe the code space.
    """
    lengths = _as_lengths(lengths)
    codes = np.zeros(lengths.size, dtype=np.uint32)
    present = np.flatnonzero(lengths)
    if present.size == 0:
        return codes
    kraft = int(np.sum(np.left_shift(1, _KRAFT_BITS - lengths[present].astype(np.int64))))
    if kraft > 1 << _KRAFT_BITS:
        raise ValueError("code lengths oversubscribe the code space (Kraft sum above 1)")

    order = present[np.argsort(lengths[present], kind="stable")]
    sorted_lengths = lengths[order].astype(np.int64)
    counts = np.bincount(sorted_lengths, minlength=_KRAFT_BITS + 1)
    # first_code[l] is the code of the first symbol of length l; first_index[l] is where that
    # symbol sits in ``order``.
    first_code = np.zeros(_KRAFT_BITS + 1, dtype=np.int64)
    code = 0
    for length in range(1, _KRAFT_BITS + 1):
        code = (code + int(counts[length - 1])) << 1
        first_code[length] = code
    first_index = np.concatenate(([0], np.cumsum(counts)[:-1]))
    rank = np.arange(order.size) - first_index[sorted_lengths]
    codes[order] = (first_code[sorted_lengths] + rank).astype(np.uint32)
    return codes


def _decoder_tables(lengths: np.ndarray) -> tuple[list[int], list[int]]:
    """Return bitarray's canonical tables: symbols per length, and symbols in code order."""
    present = np.flatnonzero(lengths)
    order = present[np.argsort(lengths[present], kind="stable")]
    counts = np.bincount(lengths[present], minlength=int(lengths.max()) + 1)
    counts[0] = 0
    return counts.tolist(), order.tolist()


def validate_code_lengths(lengths, max_code_length: int, *, section: str, offset: int) -> None:
    """Raise :class:`InvalidHuffmanTableError` unless ``lengths`` is a valid code table.

    Valid means: every length is at most ``max_code_length``, and either no symbol is present,
    exactly one symbol is present with length 1, or the code is complete (Kraft sum exactly
    1). ``offset`` is the absolute file offset of the stored ``code_lengths`` field; an error
    about one symbol points at the byte that contains its 5-bit length.
    """
    lengths = _as_lengths(lengths)
    problem = _table_problem(lengths, max_code_length)
    if problem is None:
        return
    message, symbol = problem
    at = offset if symbol is None else offset + 5 * symbol // 8
    raise InvalidHuffmanTableError(
        f"{section}.code_lengths at offset {at} ({at:#x}): {message}",
        section=section,
        field="code_lengths",
        offset=at,
        found=message,
    )


def block_count(count: int, block_size: int) -> int:
    """Return the number of block offsets stored for ``count`` symbols: ceil(count/N) - 1."""
    return max(0, -(-count // block_size) - 1)


def validate_block_offsets(block_offsets, count: int, block_size: int, payload_bits: int,
                           *, section: str, offset: int) -> np.ndarray:
    """Check a block index and return it as an int64 array.

    Entry ``j`` is the payload bit offset of symbol ``(j + 1) * block_size``. The entries must
    number ``ceil(count / block_size) - 1`` (at least 0), be non-decreasing and be at most
    ``payload_bits``; otherwise :class:`InvalidFieldError` names the entry. ``offset`` is the
    absolute file offset of the first entry (8 bytes each).
    """
    array = np.asarray(block_offsets, dtype=np.uint64).reshape(-1)
    expected = block_count(count, block_size)
    if array.size != expected:
        raise InvalidFieldError(
            section=section, field="block_offsets", offset=offset,
            expected=f"{expected} entries for {count} symbols in blocks of {block_size}",
            found=f"{array.size} entries",
        )
    if array.size == 0:
        return np.zeros(0, dtype=np.int64)

    beyond = np.flatnonzero(array > np.uint64(payload_bits))
    if beyond.size:
        j = int(beyond[0])
        raise InvalidFieldError(
            section=section, field=f"block_offsets[{j}]", offset=offset + 8 * j,
            expected=f"a bit offset of at most payload_bits = {payload_bits}",
            found=int(array[j]),
        )
    decreasing = np.flatnonzero(array[1:] < array[:-1])
    if decreasing.size:
        j = int(decreasing[0]) + 1
        raise InvalidFieldError(
            section=section, field=f"block_offsets[{j}]", offset=offset + 8 * j,
            expected=(f"non-decreasing offsets, at least block_offsets[{j - 1}] = "
                      f"{int(array[j - 1])}"),
            found=int(array[j]),
        )
    return array.astype(np.int64)


# --- encoding ------------------------------------------------------------------------------


def entropy_bits(frequencies) -> float:
    """Return the order-0 entropy of a whole stream in bits: ``-sum(f * log2(f / total))``."""
    frequencies = _as_frequencies(frequencies)
    present = frequencies[frequencies > 0].astype(np.float64)
    if present.size == 0:
        return 0.0
    total = present.sum()
    return float(-np.sum(present * np.log2(present / total)))


def coded_bits(frequencies, lengths) -> int:
    """Return the payload size in bits of a stream with these symbol frequencies and lengths.

    A single-symbol code costs zero bits, as its payload is empty.
    """
    frequencies = _as_frequencies(frequencies)
    lengths = _as_lengths(lengths)
    if np.count_nonzero(lengths) <= 1:
        return 0
    size = min(frequencies.size, lengths.size)
    return int(np.dot(frequencies[:size], lengths[:size].astype(np.int64)))


def _encode_chunk(codes: np.ndarray, lengths: np.ndarray, start_bit: int,
                  words: np.ndarray) -> np.ndarray:
    """OR the codes of one chunk of symbols into ``words`` and return each code's start bit.

    ``words`` are the payload's 32-bit units, most significant bit first.
    A code of at most 24 bits that starts at bit ``b`` lies inside the 64-bit window formed by
    32-bit words ``b // 32`` and ``b // 32 + 1``, so each symbol contributes one high and one
    low half. The codes of one chunk do not overlap and their start bits increase, so the
    contributions to a word are grouped by ``reduceat``.
    """
    ends = np.cumsum(lengths, dtype=np.uint64) + np.uint64(start_bit)
    starts = ends - lengths
    word = starts >> np.uint64(5)
    window = codes << (np.uint64(64) - (starts & np.uint64(31)) - lengths)

    first = np.empty(word.size, dtype=bool)
    first[0] = True
    np.not_equal(word[1:], word[:-1], out=first[1:])
    group = np.flatnonzero(first)
    group_word = word[group].astype(np.intp)
    words[group_word] |= np.bitwise_or.reduceat(window >> np.uint64(32), group).astype(np.uint32)
    words[group_word + 1] |= np.bitwise_or.reduceat(window, group).astype(np.uint32)
    return starts


def encode(symbols, lengths, block_size: int) -> tuple[bytes, int, np.ndarray]:
    """Huffman-code a stream of symbols with the canonical code given by ``lengths``.

    Returns ``(payload, payload_bits, block_offsets)``: the payload bytes (MSB-first, the last
    byte zero-padded), its length in bits, and the uint64 bit offset of every symbol
    ``(j + 1) * block_size`` that starts a block after the first. A single-symbol code writes
    an empty payload.

    Raises ``ValueError`` when ``lengths`` is not a valid table (see
    :func:`validate_code_lengths`) or when a symbol has no code.
    """
    block_size = _check_int(block_size, "block_size", 1)
    lengths = _as_lengths(lengths)
    problem = _table_problem(lengths, MAX_CODE_LENGTH)
    if problem is not None:
        raise ValueError(f"invalid code lengths: {problem[0]}")

    array = np.asarray(symbols)
    if array.size == 0:
        return b"", 0, np.zeros(0, dtype=np.uint64)
    if array.dtype == np.bool_ or not np.issubdtype(array.dtype, np.integer):
        raise TypeError(f"symbols must be integers, not {array.dtype}")
    array = array.ravel()
    count = array.size
    offsets_count = block_count(count, block_size)

    if int(array.min()) < 0 or int(array.max()) >= lengths.size:
        index = int(np.flatnonzero((array < 0) | (array >= lengths.size))[0])
        raise ValueError(
            f"symbol {int(array[index])} at index {index} is outside the alphabet of "
            f"{lengths.size} symbols"
        )
    wide_lengths = lengths.astype(np.uint64)
    symbol_lengths = wide_lengths[array]
    if not symbol_lengths.all():
        index = int(np.flatnonzero(symbol_lengths == 0)[0])
        raise ValueError(f"symbol {int(array[index])} at index {index} has no code")

    if np.count_nonzero(lengths) == 1:
        return b"", 0, np.zeros(offsets_count, dtype=np.uint64)

    codes = canonical_codes(lengths).astype(np.uint64)
    payload_bits = int(symbol_lengths.sum())
    words = np.zeros(payload_bits // 32 + 2, dtype=np.uint32)
    block_offsets = np.zeros(offsets_count, dtype=np.uint64)

    start_bit = 0
    for start in range(0, count, _ENCODE_CHUNK):
        chunk = array[start : start + _ENCODE_CHUNK]
        chunk_lengths = symbol_lengths[start : start + _ENCODE_CHUNK]
        starts = _encode_chunk(codes[chunk], chunk_lengths, start_bit, words)

        # Symbols (j + 1) * block_size that fall in this chunk start blocks.
        first_block = max(1, -(-start // block_size))
        block_starts = np.arange(first_block * block_size, start + chunk.size, block_size)
        block_offsets[first_block - 1 : first_block - 1 + block_starts.size] = (
            starts[block_starts - start]
        )
        start_bit = int(starts[-1] + chunk_lengths[-1])

    payload = words.astype(">u4").tobytes()[: (payload_bits + 7) // 8]
    return payload, payload_bits, block_offsets


# --- decoding ------------------------------------------------------------------------------


def decode(payload, payload_bits: int, count: int, lengths, block_offsets=None, *,
           section: str, offset: int, block_size: int | None = None,
           index_offset: int | None = None, start: int = 0,
           stop: int | None = None) -> np.ndarray:
    """Decode symbols ``start .. stop - 1`` of a Huffman-coded stream of ``count`` symbols.

    ``payload`` contains at least ``ceil(payload_bits / 8)`` bytes. ``offset`` is the absolute
    file offset of its first byte and ``index_offset`` that of the block index, so that errors
    point into the file. ``lengths`` is the code table. With ``block_offsets``
    (``ceil(count / block_size) - 1`` entries) and ``block_size``, decoding starts at the block
    that contains ``start`` and stops after the block that contains ``stop - 1``. Without them
    it starts at bit 0. Returns uint8 symbols for an alphabet of at most 256 symbols, uint16
    otherwise.

    Every decoded block must end exactly where the next begins, and the last block exactly at
    ``payload_bits``. A payload that ends inside a code or before ``count`` symbols raises
    :class:`TruncatedError`; leftover bits and block offsets that disagree with the decoder
    raise :class:`InvalidFieldError`; an invalid table raises
    :class:`InvalidHuffmanTableError`. Blocks outside the requested range are not decoded,
    so they are not checked either.
    """
    lengths = _as_lengths(lengths)
    count = _check_int(count, "count", 0)
    payload_bits = _check_int(payload_bits, "payload_bits", 0)
    start = _check_int(start, "start", 0)
    stop = count if stop is None else _check_int(stop, "stop", 0)
    if not start <= stop <= count:
        raise ValueError(f"slice {start}:{stop} is outside a stream of {count} symbols")
    validate_code_lengths(lengths, MAX_CODE_LENGTH, section=section, offset=offset)
    data = memoryview(payload).cast("B")
    if payload_bits > 8 * len(data):
        raise TruncatedError(
            section=section, field="payload", offset=offset + len(data),
            expected=f"{(payload_bits + 7) // 8} bytes for {payload_bits} bits",
            found=f"{len(data)} bytes",
        )
    dtype = np.uint8 if lengths.size <= 256 else np.uint16

    present = np.flatnonzero(lengths)
    if count and present.size == 0:
        raise InvalidHuffmanTableError(
            section=section, field="code_lengths", offset=offset,
            expected=f"at least one symbol with a code for {count} symbols",
            found="no symbol has a code length",
        )
    if present.size == 1:
        if payload_bits:
            raise InvalidFieldError(
                section=section, field="payload_bits", offset=offset,
                expected="0 for a single-symbol code", found=payload_bits,
            )
        return np.full(stop - start, present[0], dtype=dtype)
    if start == stop:
        return np.zeros(0, dtype=dtype)

    # bounds[j] is the bit where block j starts; the last entry is payload_bits.
    if block_offsets is None:
        block_size = count
        bounds = [0, payload_bits]
    else:
        block_size = _check_int(block_size, "block_size", 1)
        index_offset = offset if index_offset is None else index_offset
        checked = validate_block_offsets(block_offsets, count, block_size, payload_bits,
                                         section=section, offset=index_offset)
        bounds = [0, *checked.tolist(), payload_bits]
    errors = _BoundaryErrors(section, offset, index_offset, count, payload_bits,
                             last_block=len(bounds) - 2)
    first_block = start // block_size
    last_block = (stop - 1) // block_size
    bit_start = bounds[first_block]
    bit_end = bounds[last_block + 1]
    symbol_start = first_block * block_size
    decode_count = min((last_block + 1) * block_size, count) - symbol_start

    # Every code is at least min_length bits long: a cheap bound before allocating.
    min_length = int(lengths[present].min())
    if decode_count * min_length > bit_end - bit_start:
        raise errors.ran_out(last_block, bit_end)

    counts, canonical_order = _decoder_tables(lengths)
    bits = bitarray(buffer=data, endian="big")[bit_start:bit_end]
    try:
        decoded = np.fromiter(canonical_decode(bits, counts, canonical_order), dtype=dtype,
                              count=decode_count)
    except ValueError:
        # The bits ended inside a code or before ``decode_count`` symbols.
        raise errors.ran_out(last_block, bit_end) from None

    # Each decoded block must end at its declared offset, the last one at bit_end.
    block_starts = np.arange(0, decode_count, block_size)
    sizes = np.add.reduceat(lengths[decoded], block_starts, dtype=np.int64)
    ends = bit_start + np.cumsum(sizes)
    declared = np.asarray(bounds[first_block + 1 : last_block + 2], dtype=np.int64)
    mismatch = np.flatnonzero(ends != declared)
    if mismatch.size:
        j = int(mismatch[0])
        raise errors.leftover(first_block + j, int(ends[j]), int(declared[j]))
    logger.debug("%s: decoded symbols %d..%d from payload bits %d..%d", section, start, stop,
                 bit_start, bit_end)
    if stop - start == decoded.size:
        return decoded
    # A copy, so that a short slice does not keep its whole blocks alive.
    return decoded[start - symbol_start : stop - symbol_start].copy()


class _BoundaryErrors:
    """Factory of the errors for a block that does not end where the stream declares.

    Block ``j`` ends at ``block_offsets[j]``, except the last block, which ends at
    ``payload_bits``.
    """

    def __init__(self, section: str, offset: int, index_offset: int | None, count: int,
                 payload_bits: int, last_block: int) -> None:
        self.section = section
        self.offset = offset
        self.index_offset = offset if index_offset is None else index_offset
        self.count = count
        self.payload_bits = payload_bits
        self.last_block = last_block

    def ran_out(self, block: int, declared_end: int) -> Exception:
        """Return the error for a block whose bits end inside a code or too early."""
        if block == self.last_block:
            return TruncatedError(
                section=self.section, field="payload", offset=self.offset + declared_end // 8,
                expected=f"{self.count} symbols in {self.payload_bits} payload bits",
                found=f"a payload that ends before the last symbol of block {block}",
            )
        return InvalidFieldError(
            section=self.section, field=f"block_offsets[{block}]",
            offset=self.index_offset + 8 * block,
            expected=f"a bit offset past the last code of block {block}",
            found=declared_end,
        )

    def leftover(self, block: int, actual_end: int, declared_end: int) -> Exception:
        """Return the error for a block that the decoder finishes before its declared end."""
        if block == self.last_block:
            return InvalidFieldError(
                section=self.section, field="payload_bits", offset=self.offset + actual_end // 8,
                expected=f"{actual_end}, the bits that the {self.count} symbols use",
                found=declared_end,
            )
        return InvalidFieldError(
            section=self.section, field=f"block_offsets[{block}]",
            offset=self.index_offset + 8 * block,
            expected=f"bit {actual_end}, where the decoder finishes block {block}",
            found=declared_end,
        )
