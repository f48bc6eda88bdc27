"""Stream sections: integer symbols stored packed or Huffman-coded (``spec/FORMAT.md``, 8).

A stream section starts with a 12-byte header:

| offset | size | type | field |
| --- | --- | --- | --- |
| 0 | 1 | u8 | ``form``: 0 = packed, 1 = huffman |
| 1 | 1 | u8 | ``width``: symbol width in bits, 1 to 16 |
| 2 | 1 | u8 | ``max_code_length``: 0 for packed, 1 to 24 for huffman |
| 3 | 1 | u8 | ``reserved`` |
| 4 | 8 | u64 | ``count``: number of symbols |

The packed form follows with ``ceil(count * width / 8)`` payload bytes. The huffman form
follows with ``alphabet_size`` (u32), ``block_size`` (u32), ``payload_bits`` (u64), the 5-bit
``code_lengths``, the u64 ``block_offsets`` and the payload. The section ends exactly after
the payload.

:func:`read_stream_info` checks every field and returns them as a :class:`StreamInfo`
without decoding the payload; :func:`decode_stream` also decodes it, whole or as a slice.
Neither allocates memory in proportion to a declared count before checking that count
against the bytes present.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np

from . import bitpack, huffman
from .binary import ByteReader, checked_mul, pack_u8, pack_u32, pack_u64
from .constants import (
    CODE_LENGTH_BITS,
    DEFAULT_BLOCK_SIZE,
    MAX_CODE_LENGTH,
    MAX_STREAM_WIDTH,
    STREAM_HEADER_SIZE,
    StreamForm,
)
from .errors import (
    InvalidFieldError,
    InvalidHuffmanTableError,
    ReservedFieldError,
    TruncatedError,
)

__all__ = [
    "StreamInfo",
    "encode_stream",
    "decode_stream",
    "read_stream_info",
    "default_max_code_length",
]

logger = logging.getLogger(__name__)

# Huffman fields between the stream header and the code lengths: alphabet_size (u32),
# block_size (u32), payload_bits (u64).
HUFFMAN_FIELDS_SIZE = 4 + 4 + 8
_MAX_U32 = (1 << 32) - 1


@dataclass(frozen=True, eq=False)
class StreamInfo:
    """The parsed fields of one stream section.

    For the packed form ``alphabet_size`` and ``block_size`` are 0, ``code_lengths`` and
    ``block_offsets`` are empty, and ``payload_bits`` is ``count * width``. ``header_bytes``
    counts every byte before the payload (header, code lengths and block index), so
    ``header_bytes + payload_bytes`` is the section size. Arrays are read-only copies.
    """

    form: StreamForm
    width: int
    max_code_length: int
    count: int
    alphabet_size: int
    block_size: int
    code_lengths: np.ndarray
    block_offsets: np.ndarray
    payload_bits: int
    header_bytes: int
    payload_bytes: int


def default_max_code_length(width: int) -> int:
    """Return the code length limit used when none is given: ``min(24, max(width + 4, 12))``.

    Four bits above the symbol width let a symbol 16 times rarer than in a uniform stream
    still get its ideal length, ``-log2(probability)``. The floor of 12 bits gives small
    alphabets room for skew: symbols of a 5-bit stream as rare as 1 in 4096 keep their
    ideal length. A lower limit would only matter to table-driven decoders in other readers.
    """
    return min(MAX_CODE_LENGTH, max(width + 4, 12))


# --- encoding ------------------------------------------------------------------------------


def _header(form: StreamForm, width: int, max_code_length: int, count: int) -> bytes:
    return pack_u8(form) + pack_u8(width) + pack_u8(max_code_length) + pack_u8(0) + pack_u64(count)


def _huffman_size(count: int, alphabet_size: int, block_size: int, payload_bits: int) -> int:
    return (
        STREAM_HEADER_SIZE
        + HUFFMAN_FIELDS_SIZE
        + bitpack.packed_size(alphabet_size, CODE_LENGTH_BITS)
        + 8 * huffman.block_count(count, block_size)
        + (payload_bits + 7) // 8
    )


def _resolve_form(form) -> StreamForm | None:
    if form is None:
        return None
    if isinstance(form, bool) or not isinstance(form, (int, np.integer)):
        raise TypeError(f"form must be a StreamForm or None, not {type(form).__name__}")
    try:
        return StreamForm(form)
    except ValueError:
        allowed = ", ".join(f"{member.value} ({member.name.lower()})" for member in StreamForm)
        raise ValueError(f"unknown stream form {form}: expected one of {allowed}") from None


def encode_stream(symbols, width: int, *, form=None, max_code_length: int | None = None,
                  block_size: int = DEFAULT_BLOCK_SIZE) -> bytes:
    """Encode integer symbols as a complete stream section and return its bytes.

    ``symbols`` is an integer array-like (flattened in C order) with every value below
    ``2**width``. ``form`` is ``StreamForm.PACKED``, ``StreamForm.HUFFMAN`` or ``None`` to keep
    the smaller of the two (the packed form on a tie). ``max_code_length`` limits the Huffman
    code lengths (default :func:`default_max_code_length`); it is ignored for the packed form.
    ``block_size`` is the number of symbols per Huffman block, the unit of random access.
    The output depends only on the arguments. With ``form=None``, a stream with more distinct
    symbols than ``2**max_code_length`` is stored packed; with ``form=StreamForm.HUFFMAN`` it
    raises ``ValueError``.

    The huffman header stores the longest code length actually used (1 for an empty stream),
    which is at most ``max_code_length``.
    """
    width = bitpack.check_width(width)
    symbols = bitpack.as_symbols(symbols, width)
    form = _resolve_form(form)
    if max_code_length is None:
        max_code_length = default_max_code_length(width)
    if isinstance(max_code_length, bool) or not isinstance(max_code_length, (int, np.integer)):
        raise TypeError(f"max_code_length must be an int, not {type(max_code_length).__name__}")
    if not 1 <= max_code_length <= MAX_CODE_LENGTH:
        raise ValueError(
            f"max_code_length must be from 1 to {MAX_CODE_LENGTH}, got {max_code_length}"
        )
    if isinstance(block_size, bool) or not isinstance(block_size, (int, np.integer)):
        raise TypeError(f"block_size must be an int, not {type(block_size).__name__}")
    if not 1 <= block_size <= _MAX_U32:
        raise ValueError(f"block_size must be from 1 to {_MAX_U32}, got {block_size}")
    count = symbols.size
    packed_bytes = STREAM_HEADER_SIZE + bitpack.packed_size(count, width)

    if form is StreamForm.PACKED:
        return _header(StreamForm.PACKED, width, 0, count) + bitpack.pack(symbols, width)

    frequencies = np.bincount(symbols)
    if form is None and np.count_nonzero(frequencies) > 1 << max_code_length:
        # Too many distinct symbols for codes of max_code_length bits: only packed fits.
        return _header(StreamForm.PACKED, width, 0, count) + bitpack.pack(symbols, width)
    lengths = huffman.code_lengths(frequencies, max_code_length)
    alphabet_size = int(np.flatnonzero(lengths)[-1]) + 1 if count else 0
    lengths = lengths[:alphabet_size]
    payload_bits = huffman.coded_bits(frequencies, lengths)
    huffman_bytes = _huffman_size(count, alphabet_size, block_size, payload_bits)
    logger.debug("stream of %d symbols, width %d: packed %d bytes, huffman %d bytes",
                 count, width, packed_bytes, huffman_bytes)
    if form is None and packed_bytes <= huffman_bytes:
        return _header(StreamForm.PACKED, width, 0, count) + bitpack.pack(symbols, width)

    payload, payload_bits, block_offsets = huffman.encode(symbols, lengths, block_size)
    longest = int(lengths.max()) if alphabet_size else 1
    parts = [
        _header(StreamForm.HUFFMAN, width, longest, count),
        pack_u32(alphabet_size),
        pack_u32(block_size),
        pack_u64(payload_bits),
        bitpack.pack(lengths, CODE_LENGTH_BITS),
        block_offsets.astype("<u8").tobytes(),
        payload,
    ]
    return b"".join(parts)


# --- parsing -------------------------------------------------------------------------------


def _check_padding(data: memoryview, used_bits: int, *, section: str, field: str,
                   offset: int) -> None:
    """Raise :class:`ReservedFieldError` unless the bits after ``used_bits`` in ``data`` are 0."""
    spare = 8 * len(data) - used_bits
    if spare <= 0:
        return
    last = data[len(data) - 1]
    if last & ((1 << spare) - 1):
        at = offset + len(data) - 1
        raise ReservedFieldError(
            section=section, field=f"{field} padding", offset=at,
            expected=f"the low {spare} bits of the last byte to be zero",
            found=f"0x{last:02x}",
        )


def _expect_field(reader: ByteReader, field: str, at: int, found: int,
                  expected: int | None) -> None:
    if expected is not None and found != expected:
        raise InvalidFieldError(section=reader.section, field=field, offset=at,
                                expected=expected, found=found)


def _parse(buffer, *, section: str, base: int, count: int | None = None,
           width: int | None = None) -> tuple[StreamInfo, memoryview, int]:
    """Parse and check a stream section; return its info, payload and payload file offset.

    ``count`` and ``width``, when given, are the values the caller expects.
    """
    reader = ByteReader(buffer, base=base, section=section)

    at = reader.offset
    form_value = reader.u8("form")
    if form_value not in {member.value for member in StreamForm}:
        allowed = " or ".join(f"{member.value} ({member.name.lower()})" for member in StreamForm)
        raise InvalidFieldError(section=section, field="form", offset=at, expected=allowed,
                                found=form_value)
    form = StreamForm(form_value)

    at = reader.offset
    stored_width = reader.u8("width")
    _expect_field(reader, "width", at, stored_width, width)
    if not 1 <= stored_width <= MAX_STREAM_WIDTH:
        raise InvalidFieldError(section=section, field="width", offset=at,
                                expected=f"1 to {MAX_STREAM_WIDTH}", found=stored_width)

    max_code_length_at = reader.offset
    max_code_length = reader.u8("max_code_length")
    reader.reserved(1, "reserved")

    at = reader.offset
    stored_count = reader.u64("count")
    _expect_field(reader, "count", at, stored_count, count)

    if form is StreamForm.PACKED:
        if max_code_length != 0:
            raise InvalidFieldError(section=section, field="max_code_length",
                                    offset=max_code_length_at, expected="0 for the packed form",
                                    found=max_code_length)
        return _parse_packed(reader, stored_width, stored_count)

    if not 1 <= max_code_length <= MAX_CODE_LENGTH:
        raise InvalidFieldError(section=section, field="max_code_length",
                                offset=max_code_length_at,
                                expected=f"1 to {MAX_CODE_LENGTH} for the huffman form",
                                found=max_code_length)
    return _parse_huffman(reader, stored_width, max_code_length, stored_count)


def _parse_packed(reader: ByteReader, width: int,
                  count: int) -> tuple[StreamInfo, memoryview, int]:
    payload_bits = checked_mul(count, width, section=reader.section, field="count",
                               offset=reader.offset)
    payload_size = (payload_bits + 7) // 8
    payload_at = reader.offset
    payload = reader.read_bytes(payload_size, "payload")
    _check_padding(payload, payload_bits, section=reader.section, field="payload",
                   offset=payload_at)
    reader.expect_end("payload")

    empty = np.zeros(0, dtype=np.uint8)
    empty.flags.writeable = False
    no_offsets = np.zeros(0, dtype=np.uint64)
    no_offsets.flags.writeable = False
    info = StreamInfo(
        form=StreamForm.PACKED, width=width, max_code_length=0, count=count,
        alphabet_size=0, block_size=0, code_lengths=empty, block_offsets=no_offsets,
        payload_bits=payload_bits, header_bytes=STREAM_HEADER_SIZE, payload_bytes=payload_size,
    )
    return info, payload, payload_at


def _parse_huffman(reader: ByteReader, width: int, max_code_length: int,
                   count: int) -> tuple[StreamInfo, memoryview, int]:
    section = reader.section

    # Fixed fields.
    alphabet_at = reader.offset
    alphabet_size = reader.u32("alphabet_size")
    block_size_at = reader.offset
    block_size = reader.u32("block_size")
    payload_bits_at = reader.offset
    payload_bits = reader.u64("payload_bits")
    if alphabet_size > 1 << width:
        raise InvalidFieldError(section=section, field="alphabet_size", offset=alphabet_at,
                                expected=f"at most 2^{width} = {1 << width} for width {width}",
                                found=alphabet_size)
    if (alphabet_size == 0) != (count == 0):
        expected = "0 for an empty stream" if count == 0 else f"at least 1 for {count} symbols"
        raise InvalidFieldError(section=section, field="alphabet_size", offset=alphabet_at,
                                expected=expected, found=alphabet_size)
    if block_size == 0:
        raise InvalidFieldError(section=section, field="block_size", offset=block_size_at,
                                expected="at least 1", found=0)
    if count == 0 and payload_bits != 0:
        raise InvalidFieldError(section=section, field="payload_bits", offset=payload_bits_at,
                                expected="0 for an empty stream", found=payload_bits)

    # Code lengths: alphabet_size 5-bit values, zero-padded to a byte.
    lengths_at = reader.offset
    lengths_bits = CODE_LENGTH_BITS * alphabet_size
    lengths_data = reader.read_bytes((lengths_bits + 7) // 8, "code_lengths")
    _check_padding(lengths_data, lengths_bits, section=section, field="code_lengths",
                   offset=lengths_at)
    lengths = bitpack.unpack(lengths_data, alphabet_size, CODE_LENGTH_BITS)
    huffman.validate_code_lengths(lengths, max_code_length, section=section, offset=lengths_at)
    present = np.flatnonzero(lengths)
    if count and present.size == 0:
        raise InvalidHuffmanTableError(
            section=section, field="code_lengths", offset=lengths_at,
            expected=f"at least one symbol with a code for {count} symbols",
            found="every code length is 0",
        )

    # payload_bits against count: a single-symbol code uses no bits; otherwise every code is
    # between the shortest and the longest length.
    if present.size == 1 and payload_bits != 0:
        raise InvalidFieldError(section=section, field="payload_bits", offset=payload_bits_at,
                                expected="0 for a single-symbol code", found=payload_bits)
    if present.size > 1:
        shortest = int(lengths[present].min())
        longest = int(lengths[present].max())
        if payload_bits < count * shortest:
            raise TruncatedError(
                section=section, field="payload_bits", offset=payload_bits_at,
                expected=f"at least {count * shortest} bits for {count} codes of at least "
                         f"{shortest} bits",
                found=payload_bits,
            )
        if payload_bits > count * longest:
            raise InvalidFieldError(
                section=section, field="payload_bits", offset=payload_bits_at,
                expected=f"at most {count * longest} bits for {count} codes of at most "
                         f"{longest} bits",
                found=payload_bits,
            )

    # Block index: checked against the bytes present before reading.
    offsets_at = reader.offset
    entries = huffman.block_count(count, block_size)
    if entries > reader.remaining // 8:
        raise TruncatedError(section=section, field="block_offsets", offset=offsets_at,
                             expected=f"{entries} entries of 8 bytes",
                             found=f"{reader.remaining} bytes left")
    stored_offsets = reader.array("<u8", entries, "block_offsets")
    block_offsets = huffman.validate_block_offsets(
        stored_offsets, count, block_size, payload_bits, section=section, offset=offsets_at
    ).astype(np.uint64)

    # Payload.
    payload_at = reader.offset
    payload_size = (payload_bits + 7) // 8
    payload = reader.read_bytes(payload_size, "payload")
    _check_padding(payload, payload_bits, section=section, field="payload", offset=payload_at)
    reader.expect_end("payload")

    lengths.flags.writeable = False
    block_offsets.flags.writeable = False
    info = StreamInfo(
        form=StreamForm.HUFFMAN, width=width, max_code_length=max_code_length, count=count,
        alphabet_size=alphabet_size, block_size=block_size, code_lengths=lengths,
        block_offsets=block_offsets, payload_bits=payload_bits,
        header_bytes=payload_at - reader.base, payload_bytes=payload_size,
    )
    return info, payload, payload_at


def read_stream_info(buffer, *, section: str, base: int = 0) -> StreamInfo:
    """Parse and check a stream section without decoding its payload.

    ``buffer`` contains exactly the section's bytes, ``base`` is the absolute file offset of
    its first byte and ``section`` names the section in errors. Every check of
    :func:`decode_stream` runs except the decoding of the Huffman payload itself.
    """
    info, _, _ = _parse(buffer, section=section, base=base)
    return info


def decode_stream(buffer, *, count: int, width: int, section: str, base: int = 0,
                  start: int = 0, stop: int | None = None) -> np.ndarray:
    """Decode symbols ``start .. stop - 1`` of a stream section (all of them by default).

    ``buffer`` contains exactly the section's bytes, ``base`` is the absolute file offset of its
    first byte and ``section`` names it in errors. ``count`` and ``width`` are the values the
    caller's encoding requires; a stream that stores others raises
    :class:`InvalidFieldError` naming both. Returns a new uint8 array for widths up to 8,
    uint16 otherwise.

    A Huffman slice decodes only the blocks that hold it; the other blocks are not decoded
    and so not checked. Raises a :class:`~dcformat.errors.DCFormatError` subclass for any
    malformed field (see ``spec/FORMAT.md``, section 8) and ``ValueError`` for a slice outside
    ``0 .. count``.
    """
    width = bitpack.check_width(width)
    if isinstance(count, bool) or not isinstance(count, (int, np.integer)):
        raise TypeError(f"count must be an int, not {type(count).__name__}")
    if count < 0:
        raise ValueError(f"count must be non-negative, got {count}")
    stop = count if stop is None else stop
    if not 0 <= start <= stop <= count:
        raise ValueError(f"slice {start}:{stop} is outside a stream of {count} symbols")

    info, payload, payload_at = _parse(buffer, section=section, base=base, count=int(count),
                                       width=width)
    dtype = bitpack.symbol_dtype(width)
    if info.form is StreamForm.PACKED:
        return bitpack.unpack(payload, stop - start, width, bit_offset=start * width)

    symbols = huffman.decode(
        payload, info.payload_bits, info.count, info.code_lengths, info.block_offsets,
        section=section, offset=payload_at, block_size=info.block_size,
        index_offset=payload_at - 8 * info.block_offsets.size, start=start, stop=stop,
    )
    return symbols.astype(dtype, copy=False)
