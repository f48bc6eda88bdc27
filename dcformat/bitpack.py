"""Fixed-width bit packing of unsigned integer symbols (the packed stream form).

Symbols of ``width`` bits (1 to 16) are written MSB-first and back to back: the first bit of
the output is bit 7 of its first byte, and the unused low bits of the last byte are zero.
Eight symbols of ``width`` bits fill exactly ``width`` bytes, so the general path works on
groups of eight symbols held in two 64-bit words. Widths 8 and 16 are plain byte copies.
"""

from __future__ import annotations

import numpy as np

from .constants import MAX_STREAM_WIDTH

__all__ = ["pack", "unpack", "packed_size", "as_symbols", "symbol_dtype"]

# Symbols per vectorised step. A multiple of 8 keeps every chunk byte-aligned, and the size
# bounds the temporaries at a few tens of MiB whatever the stream length.
_CHUNK_SYMBOLS = 1 << 20



def symbol_dtype(width: int) -> np.dtype:
    """Return the dtype of decoded symbols: uint8 for widths up to 8, uint16 above."""
    return np.dtype(np.uint8) if width <= 8 else np.dtype(np.uint16)


def packed_size(count: int, width: int) -> int:
    """Return the number of bytes that ``count`` symbols of ``width`` bits occupy."""
    return (count * width + 7) // 8


def check_width(width: int) -> int:
    """Return ``width`` as an int, or raise unless it is an integer from 1 to 16."""
    if isinstance(width, bool) or not isinstance(width, (int, np.integer)):
        raise TypeError(f"width must be an int, not {type(width).__name__}")
    if not 1 <= width <= MAX_STREAM_WIDTH:
        raise ValueError(f"width must be from 1 to {MAX_STREAM_WIDTH} bits, got {width}")
    return int(width)


def as_symbols(values, width: int) -> np.ndarray:
    """Return ``values`` flattened to a 1-D array of :func:`symbol_dtype`.

    Raises ``TypeError`` for a non-integer array and ``ValueError``, naming the first offending
    value and its index, when a value is outside ``0 .. 2**width - 1``.
    """
    width = check_width(width)
    array = np.asarray(values)
    if array.size == 0:
        return np.zeros(0, dtype=symbol_dtype(width))
    if array.dtype == np.bool_ or not np.issubdtype(array.dtype, np.integer):
        raise TypeError(f"symbols must be integers, not {array.dtype}")
    array = array.ravel()

    limit = 1 << width
    if int(array.min()) < 0 or int(array.max()) >= limit:
        index = int(np.flatnonzero((array < 0) | (array >= limit))[0])
        raise ValueError(
            f"symbol {int(array[index])} at index {index} is outside 0..{limit - 1}, "
            f"the range of a {width}-bit stream"
        )
    return array.astype(symbol_dtype(width), copy=False)


def _group_layout(width: int):
    """Yield ``(k, shift)`` for each of the 8 symbols of a group.

    ``shift`` is the position of symbol ``k``'s least significant bit in the 128-bit,
    big-endian group, counted from the group's last bit.
    """
    for k in range(8):
        yield k, 128 - (k + 1) * width


def _pack_groups(symbols: np.ndarray, width: int) -> bytes:
    """Pack symbols (any count) into ``ceil(count * width / 8)`` bytes via 128-bit groups."""
    count = symbols.size
    groups = -(-count // 8)
    padded = np.zeros(groups * 8, dtype=np.uint64)
    padded[:count] = symbols
    padded = padded.reshape(groups, 8)

    high = np.zeros(groups, dtype=np.uint64)
    low = np.zeros(groups, dtype=np.uint64)
    for k, shift in _group_layout(width):
        column = padded[:, k]
        if shift >= 64:
            high |= column << np.uint64(shift - 64)
        elif shift + width <= 64:
            low |= column << np.uint64(shift)
        else:  # the symbol straddles the two words
            high |= column >> np.uint64(64 - shift)
            low |= column << np.uint64(shift)

    words = np.empty((groups, 2), dtype=">u8")
    words[:, 0] = high
    words[:, 1] = low
    data = words.view(np.uint8).reshape(groups, 16)[:, :width]
    return data.tobytes()[: packed_size(count, width)]


def _unpack_groups(data: np.ndarray, count: int, width: int) -> np.ndarray:
    """Unpack ``count`` symbols from byte-aligned ``data`` (at least the packed size)."""
    groups = -(-count // 8)
    source = np.zeros(groups * width, dtype=np.uint8)
    used = min(data.size, source.size)
    source[:used] = data[:used]
    padded = np.zeros((groups, 16), dtype=np.uint8)
    padded[:, :width] = source.reshape(groups, width)

    words = padded.view(">u8").reshape(groups, 2).astype(np.uint64)
    high = words[:, 0]
    low = words[:, 1]
    mask = np.uint64((1 << width) - 1)
    out = np.empty((groups, 8), dtype=symbol_dtype(width))
    for k, shift in _group_layout(width):
        if shift >= 64:
            column = high >> np.uint64(shift - 64)
        elif shift + width <= 64:
            column = low >> np.uint64(shift)
        else:
            column = (high << np.uint64(64 - shift)) | (low >> np.uint64(shift))
        out[:, k] = column & mask
    return out.reshape(-1)[:count]


def pack(values, width: int) -> bytes:
    """Pack integer symbols into ``ceil(len * width / 8)`` bytes, MSB-first.

    ``values`` is any integer array-like (flattened in C order); every value must be in
    ``0 .. 2**width - 1``, otherwise ``ValueError`` names the first one that is not.
    """
    symbols = as_symbols(values, width)
    width = int(width)
    if symbols.size == 0:
        return b""
    if width == 8:
        return symbols.tobytes()
    if width == 16:
        return symbols.astype(">u2").tobytes()

    parts = [
        _pack_groups(symbols[start : start + _CHUNK_SYMBOLS], width)
        for start in range(0, symbols.size, _CHUNK_SYMBOLS)
    ]
    return b"".join(parts)


def _byte_view(buffer) -> np.ndarray:
    if isinstance(buffer, np.ndarray):
        if buffer.dtype != np.uint8 or buffer.ndim != 1:
            raise TypeError(
                f"buffer must be a 1-D uint8 array, not {buffer.dtype} of shape {buffer.shape}"
            )
        return buffer
    try:
        view = memoryview(buffer)
    except TypeError:
        raise TypeError(f"buffer must be bytes-like, not {type(buffer).__name__}") from None
    return np.frombuffer(view.cast("B") if view.format != "B" or view.ndim != 1 else view,
                         dtype=np.uint8)


def unpack(buffer, count: int, width: int, *, bit_offset: int = 0) -> np.ndarray:
    """Unpack ``count`` symbols of ``width`` bits starting ``bit_offset`` bits into ``buffer``.

    Returns a new array of uint8 (width up to 8) or uint16 (width 9 to 16). Raises
    ``ValueError`` when ``buffer`` contains fewer than ``bit_offset + count * width`` bits. The
    padding bits after the last symbol are not examined; the stream parser checks them.
    """
    width = check_width(width)
    for name, value in (("count", count), ("bit_offset", bit_offset)):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
            raise TypeError(f"{name} must be an int, not {type(value).__name__}")
    if count < 0 or bit_offset < 0:
        raise ValueError(f"count and bit_offset must be non-negative, got {count} and {bit_offset}")
    data = _byte_view(buffer)
    count = int(count)
    bit_offset = int(bit_offset)
    end_bit = bit_offset + count * width
    if end_bit > 8 * data.size:
        raise ValueError(
            f"buffer of {data.size} bytes is too short for {count} symbols of {width} bits "
            f"after bit {bit_offset}: {packed_size(end_bit, 1)} bytes needed"
        )
    if count == 0:
        return np.zeros(0, dtype=symbol_dtype(width))

    # Realign a slice that starts inside a byte, so the rest works on whole bytes.
    first_byte, shift = divmod(bit_offset, 8)
    size = packed_size(count, width)
    if shift:
        source = data[first_byte : first_byte + size + 1]
        following = np.zeros(size, dtype=np.uint8)
        following[: source.size - 1] = source[1 : size + 1]
        data = (source[:size] << np.uint8(shift)) | (following >> np.uint8(8 - shift))
    else:
        data = data[first_byte : first_byte + size]

    if width == 8:
        return data[:count].copy()
    if width == 16:
        return data[: 2 * count].view(">u2").astype(np.uint16)

    out = np.empty(count, dtype=symbol_dtype(width))
    chunk_bytes = _CHUNK_SYMBOLS * width // 8
    for index, start in enumerate(range(0, count, _CHUNK_SYMBOLS)):
        stop = min(start + _CHUNK_SYMBOLS, count)
        part = data[index * chunk_bytes : index * chunk_bytes + packed_size(stop - start, width)]
        out[start:stop] = _unpack_groups(part, stop - start, width)
    return out
