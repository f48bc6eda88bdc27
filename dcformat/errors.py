"""Errors raised by dcformat.

Every failure to read or write a ``.dcf`` file raises a subclass of :class:`DCFormatError`,
which is a :class:`ValueError`. A message names the section and field, the byte offset where
one applies, what was expected and what was found, so that a damaged file can be located
without a debugger. Wrong argument types raise :class:`TypeError` instead.
"""

from __future__ import annotations

__all__ = [
    "DCFormatError",
    "BadMagicError",
    "UnsupportedVersionError",
    "UnknownFeatureError",
    "ReservedFieldError",
    "TruncatedError",
    "ChecksumError",
    "OffsetOutOfRangeError",
    "IndexOutOfRangeError",
    "LimitExceededError",
    "InvalidHuffmanTableError",
    "InvalidFieldError",
    "TensorNotFoundError",
    "ConfigError",
    "InputError",
]


class DCFormatError(ValueError):
    """Base class of every dcformat error.

    Attributes mirror the message so that tools can report them as data. ``section`` and
    ``field`` name where the problem is. ``offset`` is the absolute byte offset in the file
    (``None`` where no single offset applies). ``expected`` and ``found`` describe the values.
    """

    def __init__(
        self,
        message: str | None = None,
        *,
        section: str | None = None,
        field: str | None = None,
        offset: int | None = None,
        expected: object = None,
        found: object = None,
    ) -> None:
        self.section = section
        self.field = field
        self.offset = offset
        self.expected = expected
        self.found = found
        super().__init__(message if message is not None else self._compose())

    def _compose(self) -> str:
        where = ".".join(part for part in (self.section, self.field) if part)
        parts = [where or "file"]
        if self.offset is not None:
            parts.append(f" at offset {self.offset} ({self.offset:#x})")
        text = "".join(parts) + ": "
        if self.expected is not None:
            text += f"expected {self.expected}"
            if self.found is not None:
                text += f", found {self.found}"
        elif self.found is not None:
            text += f"found {self.found}"
        return text


class BadMagicError(DCFormatError):
    """The file does not start or end with the DCF magic bytes."""


class UnsupportedVersionError(DCFormatError):
    """The container major version is not one this reader supports."""


class UnknownFeatureError(DCFormatError):
    """A required feature flag, encoding or section kind is unknown to this reader."""


class ReservedFieldError(DCFormatError):
    """A reserved field or padding byte is not zero."""


class TruncatedError(DCFormatError):
    """A structure extends past the end of the file or of its section."""


class ChecksumError(DCFormatError):
    """A CRC-32 or the SHA-256 digest does not match the bytes it covers."""


class OffsetOutOfRangeError(DCFormatError):
    """A section offset or length points outside the file, overlaps, or breaks alignment."""


class IndexOutOfRangeError(DCFormatError):
    """An index (cluster index, section index, element position) is beyond its range."""


class LimitExceededError(DCFormatError):
    """A declared count or size is larger than a reader limit allows."""


class InvalidHuffmanTableError(DCFormatError):
    """Canonical Huffman code lengths do not describe a valid prefix code."""


class InvalidFieldError(DCFormatError):
    """A field contains a value outside its allowed set (unknown dtype, bad shape, bad JSON)."""


class TensorNotFoundError(DCFormatError, KeyError):
    """The requested tensor name is not in the file."""

    def __str__(self) -> str:  # KeyError would otherwise quote the message
        return self.args[0] if self.args else ""


class ConfigError(DCFormatError):
    """A compression setting is invalid; the message names the key, value and allowed range."""


class InputError(DCFormatError):
    """An input tensor or model file cannot be compressed as given."""
