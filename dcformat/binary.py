"""The one bounded reader that every parser in dcformat reads through.

A :class:`ByteReader` wraps a byte buffer (``bytes``, ``memoryview`` or an ``mmap``) and a
base offset, so the errors it raises name the absolute file offset of the field being read.
Every read checks the bytes that remain first, so no declared count can make a parser read
past its structure or allocate for data that is not there.
"""

from __future__ import annotations

import struct

import numpy as np

from .errors import LimitExceededError, ReservedFieldError, TruncatedError

_U8 = struct.Struct("<B")
_U16 = struct.Struct("<H")
_U32 = struct.Struct("<I")
_U64 = struct.Struct("<Q")


class ByteReader:
    """Sequential little-endian reader over ``buffer`` that tracks the offset of each field.

    ``base`` is the absolute file offset of ``buffer[0]``; ``section`` names the structure
    being parsed and appears in every error.
    """

    def __init__(self, buffer, *, base: int = 0, section: str = "file") -> None:
        self.view = memoryview(buffer).cast("B") if not isinstance(buffer, memoryview) else buffer
        if self.view.format != "B" or self.view.ndim != 1:
            self.view = self.view.cast("B")
        self.base = base
        self.section = section
        self.position = 0

    @property
    def offset(self) -> int:
        """Absolute file offset of the next byte to read."""
        return self.base + self.position

    @property
    def remaining(self) -> int:
        return len(self.view) - self.position

    def require(self, size: int, field: str) -> None:
        """Raise :class:`TruncatedError` unless ``size`` bytes remain."""
        if size < 0 or size > self.remaining:
            raise TruncatedError(
                section=self.section,
                field=field,
                offset=self.offset,
                expected=f"{size} bytes",
                found=f"{self.remaining} bytes left",
            )

    def read_bytes(self, size: int, field: str) -> memoryview:
        """Return the next ``size`` bytes as a zero-copy view."""
        self.require(size, field)
        start = self.position
        self.position += size
        return self.view[start : self.position]

    def _unpack(self, codec: struct.Struct, field: str) -> int:
        self.require(codec.size, field)
        (value,) = codec.unpack_from(self.view, self.position)
        self.position += codec.size
        return value

    def u8(self, field: str) -> int:
        return self._unpack(_U8, field)

    def u16(self, field: str) -> int:
        return self._unpack(_U16, field)

    def u32(self, field: str) -> int:
        return self._unpack(_U32, field)

    def u64(self, field: str) -> int:
        return self._unpack(_U64, field)

    def reserved(self, size: int, field: str) -> None:
        """Read ``size`` reserved bytes and raise :class:`ReservedFieldError` unless all are zero."""
        start = self.offset
        data = self.read_bytes(size, field)
        if any(data):
            raise ReservedFieldError(
                section=self.section,
                field=field,
                offset=start,
                expected="zero",
                found="0x" + bytes(data).hex(),
            )

    def array(self, dtype, count: int, field: str, *, cap: int | None = None) -> np.ndarray:
        """Read ``count`` elements of ``dtype`` (little-endian) as a read-only array view."""
        dtype = np.dtype(dtype)
        if cap is not None and count > cap:
            raise LimitExceededError(
                section=self.section,
                field=field,
                offset=self.offset,
                expected=f"at most {cap} elements",
                found=count,
            )
        size = checked_mul(count, dtype.itemsize, section=self.section, field=field, offset=self.offset)
        data = self.read_bytes(size, field)
        return np.frombuffer(data, dtype=dtype, count=count)

    def expect_end(self, field: str) -> None:
        """Raise unless every byte of the buffer has been read."""
        if self.remaining:
            raise TruncatedError(
                section=self.section,
                field=field,
                offset=self.offset,
                expected="end of structure",
                found=f"{self.remaining} trailing bytes",
            )


def checked_mul(*factors: int, section: str, field: str, offset: int | None = None,
                limit: int = 1 << 63) -> int:
    """Multiply non-negative integers; raise :class:`LimitExceededError` if the product exceeds ``limit``.

    Python integers do not overflow, but the result still has to fit the u64 fields and the
    allocation sizes that follow, so every size product goes through here.
    """
    product = 1
    for factor in factors:
        product *= int(factor)
        if product > limit:
            raise LimitExceededError(
                section=section,
                field=field,
                offset=offset,
                expected=f"a size of at most {limit}",
                found=" x ".join(str(int(f)) for f in factors),
            )
    return product


def pack_u8(value: int) -> bytes:
    return _U8.pack(value)


def pack_u16(value: int) -> bytes:
    return _U16.pack(value)


def pack_u32(value: int) -> bytes:
    return _U32.pack(value)


def pack_u64(value: int) -> bytes:
    return _U64.pack(value)
