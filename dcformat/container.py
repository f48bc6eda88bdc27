"""The DCF container: preamble, sections, directory and footer (spec/FORMAT.md sections 3-6).

The writer streams sections front to back with bounded memory and writes the directory and
footer last, so it never has to seek. The reader parses the preamble, footer and directory
and leaves the sections alone until a tensor is asked for.
"""

from __future__ import annotations

import hashlib
import logging
import math
import mmap
import os
import re
import tempfile
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

import zstandard

from .binary import ByteReader, checked_mul, pack_u8, pack_u16, pack_u32, pack_u64
from .constants import (
    FOOTER_DIGEST_OFFSET,
    FOOTER_MAGIC,
    FOOTER_SIZE,
    FORMAT_MAJOR,
    FORMAT_MINOR,
    KNOWN_REQUIRED_FLAGS,
    KNOWN_TENSOR_FLAGS,
    MAGIC,
    MAX_ALIGNMENT_LOG2,
    MAX_DIRECTORY_BYTES,
    MAX_DIRECTORY_EXPANSION,
    MIN_DIRECTORY_ALLOWANCE,
    MAX_METADATA_BYTES,
    MAX_NAME_BYTES,
    MAX_NDIM,
    MAX_PARAMS_BYTES,
    MAX_SECTIONS,
    MAX_TENSORS,
    NUMPY_DTYPES,
    PREAMBLE_SIZE,
    SECTION_ENTRY_SIZE,
    SUPPORTED_MAJORS,
    Compression,
    DType,
    Encoding,
    OptionalFlag,
    RequiredFlag,
    SectionKind,
    TensorFlag,
    DEFAULT_ALIGNMENT_LOG2,
)
from .errors import (
    BadMagicError,
    ChecksumError,
    DCFormatError,
    IndexOutOfRangeError,
    InvalidFieldError,
    LimitExceededError,
    OffsetOutOfRangeError,
    ReservedFieldError,
    TruncatedError,
    UnknownFeatureError,
    UnsupportedVersionError,
)
from .metadata import decode_metadata, encode_metadata

try:  # POSIX only; without it a stale temporary file is recognised by its writer's PID alone
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None

logger = logging.getLogger(__name__)

# Highest zstd level that still compresses a directory in well under a millisecond.
DIRECTORY_ZSTD_LEVEL = 19


def crc32(data) -> int:
    """CRC-32 (ISO-HDLC, as zlib) of ``data``."""
    return zlib.crc32(data) & 0xFFFFFFFF


def new_file_mode() -> int:
    """Permissions a plain ``open(path, "w")`` would give a new file under the current umask.

    ``tempfile.mkstemp`` creates files readable by their owner only; the renamed output should
    not keep that.
    """
    umask = os.umask(0)
    os.umask(umask)
    return 0o666 & ~umask


def align_up(value: int, alignment_log2: int) -> int:
    mask = (1 << alignment_log2) - 1
    return (value + mask) & ~mask


# --------------------------------------------------------------------------------------
# Structures


@dataclass(frozen=True)
class Section:
    """One entry of the section table."""

    index: int
    offset: int
    size: int
    crc32: int
    kind: int

    @property
    def end(self) -> int:
        return self.offset + self.size

    @property
    def kind_name(self) -> str:
        try:
            return SectionKind(self.kind).name.lower()
        except ValueError:
            return f"unknown({self.kind})"


@dataclass(frozen=True)
class TensorRecord:
    """One record of the tensor table, with the directory offset where it starts."""

    index: int
    name: str
    dtype: DType
    shape: tuple[int, ...]
    encoding: int
    encoding_version: int
    flags: int
    first_section: int
    section_count: int
    params: bytes
    directory_offset: int

    @property
    def size(self) -> int:
        """Number of elements (1 for a 0-d tensor)."""
        return math.prod(self.shape)

    @property
    def nbytes(self) -> int:
        return self.size * NUMPY_DTYPES[self.dtype].itemsize

    @property
    def is_factor(self) -> bool:
        return bool(self.flags & TensorFlag.FACTOR)


@dataclass(frozen=True)
class Footer:
    directory_offset: int
    directory_stored_size: int
    directory_size: int
    directory_crc32: int
    required_flags: int
    optional_flags: int
    alignment_log2: int
    directory_compression: int
    footer_crc32: int
    digest: bytes


@dataclass(frozen=True)
class ContainerInfo:
    """Everything the reader parsed before decoding any tensor."""

    file_size: int
    major_version: int
    minor_version: int
    footer: Footer
    sections: tuple[Section, ...]
    tensors: tuple[TensorRecord, ...]
    user_sections: dict[str, int]
    metadata: dict[str, Any]
    metadata_size: int


@dataclass
class SectionData:
    """Bytes of one section to write, with its kind."""

    kind: SectionKind
    data: bytes | memoryview


@dataclass
class TensorEntry:
    """A tensor ready to be written: its table fields and the bytes of its sections.

    ``factors`` contains the two factor entries of a ``lowrank`` tensor. The writer stores them
    as records of their own, flagged ``factor``, and points the params at them.
    """

    name: str
    dtype: DType
    shape: tuple[int, ...]
    encoding: Encoding
    encoding_version: int
    params: bytes
    sections: list[SectionData]
    flags: int = 0
    factors: tuple["TensorEntry", ...] = ()
    required_flags: int = 0
    # The symbols of each stream section by kind, kept for the encoder's statistics; not written.
    symbols: dict[int, Any] = field(default_factory=dict)


# --------------------------------------------------------------------------------------
# Writer


class ContainerWriter:
    """Write a DCF file section by section.

    With a path, the bytes go to a temporary file in the destination folder that is fsynced
    and renamed over the destination on :meth:`close`, so an error or an interrupt never
    leaves a partial file under the destination name. With a binary file object, the bytes are
    written to it directly and nothing is renamed.

    The temporary file is named ``.NAME.PID.RANDOM.tmp`` (NAME being the destination's file
    name and PID the writer's process id). On POSIX the writer keeps an exclusive ``flock``
    on it until the rename. A writer that is killed (SIGKILL, power loss) leaves its
    temporary file behind. The next successful write to the same destination removes every
    such file whose PID is no longer a running process and whose lock is free; files of live
    writers, of other destinations and of processes not yet reaped by their parent are left
    alone.
    """

    def __init__(
        self,
        target: str | os.PathLike | BinaryIO,
        *,
        alignment_log2: int = DEFAULT_ALIGNMENT_LOG2,
        directory_compression: Compression = Compression.ZSTD,
    ) -> None:
        if not 0 <= alignment_log2 <= MAX_ALIGNMENT_LOG2:
            raise ValueError(
                f"alignment_log2 must be in 0..{MAX_ALIGNMENT_LOG2}, not {alignment_log2}"
            )
        self.alignment_log2 = alignment_log2
        self.directory_compression = Compression(directory_compression)
        self._sections: list[tuple[int, int, int, int]] = []  # offset, size, crc32, kind
        self._records: list[bytes] = []
        self._names: set[str] = set()
        self._user_sections: list[tuple[str, int]] = []
        self._required_flags = 0
        self._optional_flags = 0
        self._digest = hashlib.sha256()
        self._position = 0
        self._closed = False
        self._temp_path: str | None = None
        self._destination: str | None = None

        if isinstance(target, (str, os.PathLike)):
            destination = os.path.abspath(os.fspath(target))
            folder = os.path.dirname(destination)
            if not os.path.isdir(folder):
                raise FileNotFoundError(f"cannot write {destination}: the folder {folder} does not exist")
            handle, self._temp_path = tempfile.mkstemp(
                prefix=f".{os.path.basename(destination)}.{os.getpid()}.", suffix=".tmp", dir=folder
            )
            if fcntl is not None:
                try:
                    fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except OSError:  # a file system without flock: the PID alone marks the file
                    pass
            self._file: BinaryIO = os.fdopen(handle, "wb")
            self._destination = destination
        elif hasattr(target, "write"):
            self._file = target
        else:
            raise TypeError(f"target must be a path or a binary file object, not {type(target).__name__}")

        self._write(MAGIC + pack_u16(FORMAT_MAJOR) + pack_u16(FORMAT_MINOR) + pack_u32(0))

    # Low-level output

    def _write(self, data) -> None:
        self._file.write(data)
        self._digest.update(data)
        self._position += len(data)

    def _pad_to_alignment(self) -> None:
        padding = align_up(self._position, self.alignment_log2) - self._position
        if padding:
            self._write(bytes(padding))

    def _write_section(self, kind: int, data) -> int:
        self._pad_to_alignment()
        offset = self._position
        view = memoryview(data).cast("B") if not isinstance(data, bytes) else data
        self._write(view)
        self._sections.append((offset, len(view), crc32(view), int(kind)))
        return len(self._sections) - 1

    # Public API

    @property
    def tensor_count(self) -> int:
        return len(self._records)

    def add_tensor(self, entry: TensorEntry) -> None:
        """Write the sections of ``entry`` (and of its factors) and record it in the table."""
        self._check_open()
        if entry.name in self._names:
            raise InvalidFieldError(
                section="tensor table", field="name", expected="unique tensor names",
                found=repr(entry.name),
            )
        params = entry.params
        if entry.encoding == Encoding.LOWRANK:
            factor_indices = []
            for factor in entry.factors:
                factor.flags |= TensorFlag.FACTOR
                self.add_tensor(factor)
                factor_indices.append(len(self._records) - 1)
            params = params[:4] + pack_u32(factor_indices[0]) + pack_u32(factor_indices[1])

        first_section = len(self._sections)
        for section in entry.sections:
            self._write_section(section.kind, section.data)
        self._required_flags |= entry.required_flags
        self._records.append(
            _pack_record(entry, params, first_section if entry.sections else 0, len(entry.sections))
        )
        self._names.add(entry.name)

    def add_user_section(self, name: str, data: bytes) -> None:
        """Store opaque application data under ``name``."""
        self._check_open()
        if any(existing == name for existing, _ in self._user_sections):
            raise InvalidFieldError(
                section="user section table", field="name", expected="unique names", found=repr(name)
            )
        _check_name(name, "user section table")
        index = self._write_section(SectionKind.USER, data)
        self._user_sections.append((name, index))
        self._optional_flags |= OptionalFlag.USER_SECTIONS

    def close(self, metadata: dict[str, Any] | None = None) -> int:
        """Write the directory and footer, then move the file into place; return its size."""
        self._check_open()
        try:
            metadata = metadata or {}
            if "settings" in metadata:
                self._optional_flags |= OptionalFlag.SETTINGS
            directory = self._build_directory(encode_metadata(metadata))
            stored = directory
            if self.directory_compression == Compression.ZSTD:
                stored = zstandard.ZstdCompressor(
                    level=DIRECTORY_ZSTD_LEVEL, write_content_size=True, write_checksum=False
                ).compress(directory)
                self._required_flags |= RequiredFlag.ZSTD
            directory_offset = self._position
            self._write(stored)

            fields = (
                pack_u64(directory_offset)
                + pack_u64(len(stored))
                + pack_u64(len(directory))
                + pack_u32(crc32(stored))
                + pack_u32(self._required_flags)
                + pack_u32(self._optional_flags)
                + pack_u8(self.alignment_log2)
                + pack_u8(self.directory_compression)
                + pack_u16(0)
            )
            self._write(fields + pack_u32(crc32(fields)) + pack_u32(0))
            self._write(self._digest.digest())
            self._file.write(FOOTER_MAGIC)
            self._position += len(FOOTER_MAGIC)
            self._finish()
        except BaseException:
            self.abort()
            raise
        logger.debug(
            "wrote %d tensors, %d sections, %d bytes", len(self._records), len(self._sections),
            self._position,
        )
        return self._position

    def abort(self) -> None:
        """Discard what was written; the destination is left as it was."""
        self._closed = True
        if self._temp_path is None:
            return
        # Also reached when close() fails after the footer (fsync, rename), so the temporary
        # file is removed whatever step failed.
        temp_path, self._temp_path = self._temp_path, None
        try:
            self._file.close()
        finally:
            try:
                os.unlink(temp_path)
            except FileNotFoundError:
                pass

    def __enter__(self) -> "ContainerWriter":
        return self

    def __exit__(self, exc_type, exc, traceback) -> None:
        if exc_type is not None:
            self.abort()
        elif not self._closed:
            self.close()

    # Helpers

    def _check_open(self) -> None:
        if self._closed:
            raise ValueError("the writer is closed")

    def _build_directory(self, metadata: bytes) -> bytes:
        if len(metadata) > MAX_METADATA_BYTES:
            raise LimitExceededError(
                section="metadata", field="size", expected=f"at most {MAX_METADATA_BYTES} bytes",
                found=len(metadata),
            )
        parts = [
            pack_u32(len(self._sections)),
            pack_u32(len(self._records)),
            pack_u32(len(self._user_sections)),
            pack_u32(len(metadata)),
        ]
        for offset, size, checksum, kind in self._sections:
            parts.append(pack_u64(offset) + pack_u64(size) + pack_u32(checksum) + pack_u8(kind) + bytes(3))
        parts.extend(self._records)
        for name, index in self._user_sections:
            encoded = name.encode("utf-8")
            parts.append(pack_u16(len(encoded)) + encoded + pack_u32(index))
        parts.append(metadata)
        directory = b"".join(parts)
        if len(directory) > MAX_DIRECTORY_BYTES:
            raise LimitExceededError(
                section="directory", field="size", expected=f"at most {MAX_DIRECTORY_BYTES} bytes",
                found=len(directory),
            )
        return directory

    def _finish(self) -> None:
        self._closed = True
        if self._temp_path is None:
            self._file.flush()
            return
        self._file.flush()
        os.fsync(self._file.fileno())
        os.chmod(self._temp_path, new_file_mode())
        if fcntl is None:
            self._file.close()  # Windows cannot rename an open file
        # With flock, the file stays open (and locked) through the rename, so no other writer
        # takes it for a dead writer's file in between.
        os.replace(self._temp_path, self._destination)
        self._temp_path = None
        self._file.close()
        _remove_stale_temporaries(self._destination)
        # Persist the rename itself; without this a crash can lose the new directory entry.
        try:
            folder = os.open(os.path.dirname(self._destination), os.O_RDONLY)
        except OSError:
            return
        try:
            os.fsync(folder)
        except OSError:
            pass
        finally:
            os.close(folder)


def _process_exists(pid: int) -> bool:
    if pid <= 0:
        return True  # not a PID this module writes; leave the file alone
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # PermissionError: the PID runs under another user
        return True
    return True


def _remove_stale_temporaries(destination: str) -> None:
    """Remove the temporary files that killed writers left for ``destination`` (best effort)."""
    folder, name = os.path.split(destination)
    pattern = re.compile(r"\." + re.escape(name) + r"\.(\d+)\.\w+\.tmp")
    try:
        entries = [entry.name for entry in os.scandir(folder)]
    except OSError:
        return
    for entry in entries:
        match = pattern.fullmatch(entry)
        if match is None or _process_exists(int(match.group(1))):
            continue
        path = os.path.join(folder, entry)
        try:
            handle = os.open(path, os.O_RDONLY)
        except OSError:
            continue
        try:
            if fcntl is not None:
                # A writer on another host that shares this folder has a PID unknown here, but
                # it still holds the lock.
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            os.unlink(path)
            logger.info("removed %s, left by writer process %s, which no longer runs", path, match.group(1))
        except OSError:
            continue
        finally:
            os.close(handle)


def _check_name(name: str, section: str) -> bytes:
    if not isinstance(name, str):
        raise TypeError(f"names must be str, not {type(name).__name__}")
    encoded = name.encode("utf-8", errors="strict") if name else b""
    if not 1 <= len(encoded) <= MAX_NAME_BYTES:
        raise LimitExceededError(
            section=section, field="name_size", expected=f"1 to {MAX_NAME_BYTES} bytes of UTF-8",
            found=f"{len(encoded)} bytes",
        )
    return encoded


def _pack_record(entry: TensorEntry, params: bytes, first_section: int, section_count: int) -> bytes:
    encoded = _check_name(entry.name, "tensor table")
    if len(entry.shape) > MAX_NDIM:
        raise LimitExceededError(
            section="tensor table", field="ndim", expected=f"at most {MAX_NDIM}", found=len(entry.shape)
        )
    if len(params) > MAX_PARAMS_BYTES:
        raise LimitExceededError(
            section="tensor table", field="params_size", expected=f"at most {MAX_PARAMS_BYTES}",
            found=len(params),
        )
    return b"".join(
        [
            pack_u16(len(encoded)),
            encoded,
            pack_u8(entry.dtype),
            pack_u8(len(entry.shape)),
            pack_u8(entry.encoding),
            pack_u8(entry.encoding_version),
            pack_u8(entry.flags),
            bytes(3),
            b"".join(pack_u64(dim) for dim in entry.shape),
            pack_u32(first_section),
            pack_u32(section_count),
            pack_u16(len(params)),
            params,
        ]
    )


# --------------------------------------------------------------------------------------
# Reader


class Source:
    """A read-only byte buffer over a path (memory-mapped), ``bytes`` or a binary file object."""

    def __init__(self, source) -> None:
        self._file = None
        self._mmap = None
        self.name = "<bytes>"
        if isinstance(source, (str, os.PathLike)):
            path = Path(source)
            self.name = str(path)
            self._file = open(path, "rb")
            size = os.fstat(self._file.fileno()).st_size
            if size:
                # NOTE: if another process truncates the file while it is mapped, reading the
                # lost pages raises SIGBUS and ends the process. Pass bytes to avoid the map.
                self._mmap = mmap.mmap(self._file.fileno(), 0, access=mmap.ACCESS_READ)
                self.buffer = memoryview(self._mmap)
            else:
                self.buffer = memoryview(b"")
        elif isinstance(source, (bytes, bytearray, memoryview)):
            self.buffer = memoryview(source).cast("B") if isinstance(source, memoryview) else memoryview(source)
        elif hasattr(source, "read"):
            self.name = getattr(source, "name", "<stream>")
            data = source.read()
            if not isinstance(data, (bytes, bytearray)):
                raise TypeError("the file object must be opened in binary mode")
            self.buffer = memoryview(data)
        else:
            raise TypeError(
                f"expected a path, bytes or a binary file object, not {type(source).__name__}"
            )

    def close(self) -> None:
        self.buffer.release()
        if self._mmap is not None:
            try:
                self._mmap.close()
            except BufferError:
                # Arrays decoded as zero-copy views still point into the map; it closes
                # when they are garbage-collected.
                pass
            self._mmap = None
        if self._file is not None:
            self._file.close()
            self._file = None


def source_name(source) -> str:
    """Name a path, ``bytes`` or file object for messages and reports."""
    if isinstance(source, (str, os.PathLike)):
        return os.fspath(source)
    if isinstance(source, (bytes, bytearray, memoryview)):
        return "<bytes>"
    return str(getattr(source, "name", "<stream>"))


def read_preamble(buffer: memoryview) -> tuple[int, int]:
    """Check the magic and version; return (major, minor)."""
    size = len(buffer)
    if size < len(MAGIC) or bytes(buffer[: len(MAGIC)]) != MAGIC:
        found = bytes(buffer[: len(MAGIC)])
        if size < len(MAGIC) and MAGIC.startswith(found):
            raise TruncatedError(
                section="preamble", field="magic", offset=0, expected=f"{len(MAGIC)} bytes",
                found=f"a file of {size} bytes",
            )
        raise BadMagicError(
            "preamble.magic at offset 0: this is not a DCF file (expected the bytes "
            f"{MAGIC.hex(' ')}, found {found.hex(' ') or 'an empty file'})",
            section="preamble", field="magic", offset=0, expected=MAGIC.hex(" "),
            found=found.hex(" ") or "an empty file",
        )
    reader = ByteReader(buffer[:PREAMBLE_SIZE], section="preamble")
    reader.read_bytes(len(MAGIC), "magic")
    major = reader.u16("major_version")
    minor = reader.u16("minor_version")
    if major not in SUPPORTED_MAJORS:
        raise UnsupportedVersionError(
            section="preamble", field="major_version", offset=8,
            expected="version " + " or ".join(f"{v}.x" for v in SUPPORTED_MAJORS),
            found=f"{major}.{minor}",
        )
    reader.reserved(4, "reserved")
    return major, minor


def read_footer(buffer: memoryview) -> Footer:
    size = len(buffer)
    if size < PREAMBLE_SIZE + FOOTER_SIZE:
        raise TruncatedError(
            section="footer", field="footer_magic", offset=size,
            expected=f"a file of at least {PREAMBLE_SIZE + FOOTER_SIZE} bytes", found=f"{size} bytes",
        )
    base = size - FOOTER_SIZE
    tail = bytes(buffer[size - len(FOOTER_MAGIC):])
    if tail != FOOTER_MAGIC:
        raise TruncatedError(
            "footer.footer_magic at offset {0} ({0:#x}): expected {1}, found {2} "
            "(the file is truncated, has trailing bytes, or its last bytes are damaged)".format(
                size - len(FOOTER_MAGIC), FOOTER_MAGIC.hex(" "), tail.hex(" ")
            ),
            section="footer", field="footer_magic", offset=size - len(FOOTER_MAGIC),
            expected=FOOTER_MAGIC.hex(" "), found=tail.hex(" "),
        )
    stored_crc = int.from_bytes(buffer[base + 40 : base + 44], "little")
    actual_crc = crc32(buffer[base : base + 40])
    if stored_crc != actual_crc:
        raise ChecksumError(
            section="footer", field="footer_crc32", offset=base + 40,
            expected=f"{actual_crc:#010x} (CRC-32 of footer bytes 0-39)", found=f"{stored_crc:#010x}",
        )

    reader = ByteReader(buffer[base:], base=base, section="footer")
    directory_offset = reader.u64("directory_offset")
    directory_stored_size = reader.u64("directory_stored_size")
    directory_size = reader.u64("directory_size")
    directory_crc32 = reader.u32("directory_crc32")
    required_flags = reader.u32("required_flags")
    optional_flags = reader.u32("optional_flags")
    alignment_log2 = reader.u8("alignment_log2")
    compression = reader.u8("directory_compression")
    reader.reserved(2, "reserved")
    footer_crc32 = reader.u32("footer_crc32")
    reader.reserved(4, "reserved")
    digest = bytes(reader.read_bytes(32, "digest"))

    unknown = required_flags & ~int(KNOWN_REQUIRED_FLAGS)
    if unknown:
        bits = [bit for bit in range(32) if unknown >> bit & 1]
        raise UnknownFeatureError(
            section="footer", field="required_flags", offset=base + 28,
            expected="known flags: " + ", ".join(f"bit {f.bit_length() - 1} ({f.name.lower()})" for f in RequiredFlag),
            found="unknown required flag " + ", ".join(f"bit {b}" for b in bits),
        )
    if alignment_log2 > MAX_ALIGNMENT_LOG2:
        raise InvalidFieldError(
            section="footer", field="alignment_log2", offset=base + 36,
            expected=f"0 to {MAX_ALIGNMENT_LOG2}", found=alignment_log2,
        )
    if compression not in (Compression.NONE, Compression.ZSTD):
        raise InvalidFieldError(
            section="footer", field="directory_compression", offset=base + 37,
            expected="0 (none) or 1 (zstd)", found=compression,
        )
    if compression == Compression.ZSTD and not required_flags & RequiredFlag.ZSTD:
        raise InvalidFieldError(
            section="footer", field="required_flags", offset=base + 28,
            expected="flag zstd set because directory_compression is 1", found=f"{required_flags:#x}",
        )
    if directory_offset < PREAMBLE_SIZE or directory_offset + directory_stored_size != base:
        raise OffsetOutOfRangeError(
            section="footer", field="directory_offset", offset=base,
            expected=f"directory_offset + directory_stored_size = {base} (start of the footer), "
            f"directory_offset >= {PREAMBLE_SIZE}",
            found=f"{directory_offset} + {directory_stored_size}",
        )
    if directory_size > MAX_DIRECTORY_BYTES:
        raise LimitExceededError(
            section="footer", field="directory_size", offset=base + 16,
            expected=f"at most {MAX_DIRECTORY_BYTES} bytes", found=directory_size,
        )
    expansion_cap = MAX_DIRECTORY_EXPANSION * directory_stored_size + MIN_DIRECTORY_ALLOWANCE
    if directory_size > expansion_cap:
        raise LimitExceededError(
            section="footer", field="directory_size", offset=base + 16,
            expected=f"at most {MAX_DIRECTORY_EXPANSION} x directory_stored_size + "
            f"{MIN_DIRECTORY_ALLOWANCE} = {expansion_cap} bytes",
            found=directory_size,
        )
    if compression == Compression.NONE and directory_size != directory_stored_size:
        raise InvalidFieldError(
            section="footer", field="directory_size", offset=base + 16,
            expected=f"{directory_stored_size} (equal to directory_stored_size when not compressed)",
            found=directory_size,
        )
    return Footer(
        directory_offset, directory_stored_size, directory_size, directory_crc32, required_flags,
        optional_flags, alignment_log2, compression, footer_crc32, digest,
    )


def read_directory_bytes(buffer: memoryview, footer: Footer) -> bytes | memoryview:
    start = footer.directory_offset
    stored = buffer[start : start + footer.directory_stored_size]
    actual = crc32(stored)
    if actual != footer.directory_crc32:
        raise ChecksumError(
            section="directory", field="directory_crc32", offset=start,
            expected=f"{footer.directory_crc32:#010x} (footer.directory_crc32)", found=f"{actual:#010x}",
        )
    if footer.directory_compression == Compression.NONE:
        return stored
    try:
        params = zstandard.get_frame_parameters(stored)
    except zstandard.ZstdError as error:
        raise InvalidFieldError(
            section="directory", field="zstd frame", offset=start, expected="a zstd frame",
            found=str(error),
        ) from None
    if params.content_size != footer.directory_size:
        raise InvalidFieldError(
            section="directory", field="zstd content size", offset=start,
            expected=f"{footer.directory_size} (footer.directory_size)", found=params.content_size,
        )
    try:
        # allow_extra_data=False: bytes after the frame would otherwise be ignored.
        data = zstandard.ZstdDecompressor().decompress(stored, max_output_size=footer.directory_size,
                                                       allow_extra_data=False)
    except zstandard.ZstdError as error:
        raise InvalidFieldError(
            section="directory", field="zstd frame", offset=start, expected="a valid zstd frame",
            found=str(error),
        ) from None
    if len(data) != footer.directory_size:
        raise TruncatedError(
            section="directory", field="directory_size", offset=start,
            expected=f"{footer.directory_size} bytes after decompression", found=len(data),
        )
    return data


def parse_container(buffer: memoryview) -> ContainerInfo:
    """Parse preamble, footer and directory, checking every rule that needs no section bytes."""
    major, minor = read_preamble(buffer)
    footer = read_footer(buffer)
    directory = read_directory_bytes(buffer, footer)

    # Offsets in directory errors are relative to the start of the (decompressed) directory.
    reader = ByteReader(directory, section="directory")
    section_count = reader.u32("section_count")
    tensor_count = reader.u32("tensor_count")
    user_section_count = reader.u32("user_section_count")
    metadata_size = reader.u32("metadata_size")
    _check_count(reader, "section_count", section_count, MAX_SECTIONS, SECTION_ENTRY_SIZE, 0)
    _check_count(reader, "tensor_count", tensor_count, MAX_TENSORS, 21, 4)
    _check_count(reader, "user_section_count", user_section_count, MAX_SECTIONS, 7, 8)
    _check_count(reader, "metadata_size", metadata_size, MAX_METADATA_BYTES, 1, 12)

    sections = _read_section_table(reader, section_count, footer)
    tensors = _read_tensor_table(reader, tensor_count, sections)
    user_sections = _read_user_section_table(reader, user_section_count, sections, tensors)
    metadata_reader_offset = reader.offset
    metadata_bytes = reader.read_bytes(metadata_size, "metadata")
    reader.expect_end("metadata")
    try:
        metadata = decode_metadata(metadata_bytes)
    except InvalidFieldError as error:
        raise InvalidFieldError(
            f"{error} (metadata starts at directory offset {metadata_reader_offset})",
            section=error.section, field=error.field, offset=metadata_reader_offset,
            expected=error.expected, found=error.found,
        ) from None
    return ContainerInfo(
        file_size=len(buffer), major_version=major, minor_version=minor, footer=footer,
        sections=tuple(sections), tensors=tuple(tensors), user_sections=user_sections,
        metadata=metadata, metadata_size=metadata_size,
    )


def _check_count(reader: ByteReader, field: str, count: int, cap: int, min_entry_size: int,
                 field_offset: int) -> None:
    if count > cap:
        raise LimitExceededError(
            section="directory", field=field, offset=field_offset, expected=f"at most {cap}", found=count,
        )
    if count * min_entry_size > reader.remaining:
        raise TruncatedError(
            section="directory", field=field, offset=field_offset,
            expected=f"at least {count * min_entry_size} bytes for {count} entries",
            found=f"{reader.remaining} bytes left in the directory",
        )


def _read_section_table(reader: ByteReader, count: int, footer: Footer) -> list[Section]:
    sections: list[Section] = []
    alignment = 1 << footer.alignment_log2
    previous_end = PREAMBLE_SIZE
    for index in range(count):
        entry_offset = reader.offset
        offset = reader.u64("section.offset")
        size = reader.u64("section.size")
        checksum = reader.u32("section.crc32")
        kind = reader.u8("section.kind")
        reader.reserved(3, "section.reserved")
        where = f"section[{index}]"
        if offset % alignment:
            raise OffsetOutOfRangeError(
                section="directory", field=f"{where}.offset", offset=entry_offset,
                expected=f"a multiple of {alignment} (alignment_log2 = {footer.alignment_log2})",
                found=offset,
            )
        if offset < previous_end:
            raise OffsetOutOfRangeError(
                section="directory", field=f"{where}.offset", offset=entry_offset,
                expected=f"at least {previous_end} (sections sorted and not overlapping)", found=offset,
            )
        if offset + size > footer.directory_offset:
            raise OffsetOutOfRangeError(
                section="directory", field=f"{where}.size", offset=entry_offset + 8,
                expected=f"the section to end by {footer.directory_offset} (the directory)",
                found=f"offset {offset} + size {size} = {offset + size}",
            )
        sections.append(Section(index, offset, size, checksum, kind))
        previous_end = offset + size
    return sections


def _read_tensor_table(reader: ByteReader, count: int, sections: list[Section]) -> list[TensorRecord]:
    records: list[TensorRecord] = []
    names: set[str] = set()
    owner = [-1] * len(sections)
    for index in range(count):
        record_offset = reader.offset
        where = f"tensor[{index}]"
        name_size = reader.u16(f"{where}.name_size")
        if name_size == 0:
            raise InvalidFieldError(
                section="directory", field=f"{where}.name_size", offset=record_offset,
                expected="1 to 65535", found=0,
            )
        raw_name = reader.read_bytes(name_size, f"{where}.name")
        try:
            name = bytes(raw_name).decode("utf-8")
        except UnicodeDecodeError as error:
            raise InvalidFieldError(
                section="directory", field=f"{where}.name", offset=record_offset + 2 + error.start,
                expected="UTF-8", found=f"byte {bytes(raw_name)[error.start]:#04x}",
            ) from None
        if name in names:
            raise InvalidFieldError(
                section="directory", field=f"{where}.name", offset=record_offset + 2,
                expected="unique tensor names", found=f"duplicate {name!r}",
            )
        names.add(name)
        where = f"tensor {name!r}"

        field_offset = reader.offset
        dtype_code = reader.u8("dtype")
        ndim = reader.u8("ndim")
        encoding = reader.u8("encoding")
        encoding_version = reader.u8("encoding_version")
        flags = reader.u8("flags")
        reader.reserved(3, f"{where}.reserved")
        try:
            dtype = DType(dtype_code)
        except ValueError:
            raise InvalidFieldError(
                section="directory", field=f"{where}.dtype", offset=field_offset,
                expected=f"a dtype code 0 to {max(DType)}", found=dtype_code,
            ) from None
        if ndim > MAX_NDIM:
            raise LimitExceededError(
                section="directory", field=f"{where}.ndim", offset=field_offset + 1,
                expected=f"at most {MAX_NDIM}", found=ndim,
            )
        if flags & ~int(KNOWN_TENSOR_FLAGS):
            raise ReservedFieldError(
                section="directory", field=f"{where}.flags", offset=field_offset + 4,
                expected="only bit 0 (factor)", found=f"{flags:#04x}",
            )
        shape_offset = reader.offset
        shape = tuple(int(reader.u64(f"{where}.shape")) for _ in range(ndim))
        # Zero dimensions are left out of the product: numpy rejects a shape such as
        # (2**62, 0) although it has no elements, because it multiplies the non-zero
        # dimensions into a signed 64-bit byte count.
        checked_mul(*(dim for dim in shape if dim), NUMPY_DTYPES[dtype].itemsize, section="directory",
                    field=f"{where}.shape", offset=shape_offset, limit=(1 << 63) - 1)
        first_section = reader.u32(f"{where}.first_section")
        section_count = reader.u32(f"{where}.section_count")
        params_size = reader.u16(f"{where}.params_size")
        if params_size > MAX_PARAMS_BYTES:
            raise LimitExceededError(
                section="directory", field=f"{where}.params_size", offset=reader.offset - 2,
                expected=f"at most {MAX_PARAMS_BYTES}", found=params_size,
            )
        params = bytes(reader.read_bytes(params_size, f"{where}.params"))
        if first_section + section_count > len(sections):
            raise IndexOutOfRangeError(
                section="directory", field=f"{where}.first_section", offset=reader.offset - params_size - 10,
                expected=f"sections within 0..{len(sections) - 1}",
                found=f"{first_section} + {section_count}",
            )
        for section_index in range(first_section, first_section + section_count):
            if owner[section_index] != -1:
                raise IndexOutOfRangeError(
                    section="directory", field=f"{where}.first_section", offset=reader.offset - params_size - 10,
                    expected="sections not shared with another tensor",
                    found=f"section {section_index} already used by tensor {owner[section_index]}",
                )
            if sections[section_index].kind == SectionKind.USER:
                raise InvalidFieldError(
                    section="directory", field=f"{where}.first_section", offset=reader.offset - params_size - 10,
                    expected="tensor sections, not user sections",
                    found=f"section {section_index} of kind user",
                )
            owner[section_index] = index
        records.append(
            TensorRecord(index, name, dtype, shape, encoding, encoding_version, flags, first_section,
                         section_count, params, record_offset)
        )
    return records


def _read_user_section_table(reader: ByteReader, count: int, sections: list[Section],
                             tensors: list[TensorRecord]) -> dict[str, int]:
    owned = set()
    for record in tensors:
        owned.update(range(record.first_section, record.first_section + record.section_count))
    result: dict[str, int] = {}
    for index in range(count):
        entry_offset = reader.offset
        where = f"user_section[{index}]"
        name_size = reader.u16(f"{where}.name_size")
        raw_name = reader.read_bytes(name_size, f"{where}.name")
        try:
            name = bytes(raw_name).decode("utf-8")
        except UnicodeDecodeError:
            raise InvalidFieldError(
                section="directory", field=f"{where}.name", offset=entry_offset + 2, expected="UTF-8",
                found="invalid bytes",
            ) from None
        section_index = reader.u32(f"{where}.section")
        if name_size == 0 or name in result:
            raise InvalidFieldError(
                section="directory", field=f"{where}.name", offset=entry_offset,
                expected="a unique, non-empty name", found=repr(name),
            )
        if section_index >= len(sections) or sections[section_index].kind != SectionKind.USER \
                or section_index in owned or section_index in result.values():
            raise IndexOutOfRangeError(
                section="directory", field=f"{where}.section", offset=reader.offset - 4,
                expected="the index of an unshared section of kind user", found=section_index,
            )
        result[name] = section_index
    return result


def section_bytes(buffer: memoryview, section: Section, *, check_crc: bool = True) -> memoryview:
    """Return the bytes of ``section``, checking its CRC-32 first."""
    data = buffer[section.offset : section.end]
    if check_crc:
        actual = crc32(data)
        if actual != section.crc32:
            raise ChecksumError(
                section=f"section[{section.index}] ({section.kind_name})", field="crc32",
                offset=section.offset, expected=f"{section.crc32:#010x}", found=f"{actual:#010x}",
            )
    return data


@dataclass
class VerificationReport:
    """Result of full verification: ``ok`` and one entry per problem found."""

    ok: bool
    digest_ok: bool
    problems: list[dict[str, Any]] = field(default_factory=list)
    checked_sections: int = 0

    def as_dict(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "digest_ok": self.digest_ok,
            "checked_sections": self.checked_sections,
            "problems": self.problems,
        }


def verify_container(buffer: memoryview, info: ContainerInfo) -> VerificationReport:
    """Check every section CRC, every padding byte and the digest (spec section 10)."""
    problems: list[dict[str, Any]] = []
    owners: dict[int, str] = {}
    for record in info.tensors:
        for i in range(record.first_section, record.first_section + record.section_count):
            owners[i] = record.name
    for name, index in info.user_sections.items():
        owners[index] = f"user section {name!r}"

    alignment_log2 = info.footer.alignment_log2
    previous_end = PREAMBLE_SIZE
    for section in info.sections:
        padding = buffer[previous_end : section.offset]
        expected_start = align_up(previous_end, alignment_log2)
        if section.offset != expected_start or any(padding):
            problems.append({
                "part": f"padding before section[{section.index}]",
                "offset": previous_end,
                "message": "padding is not the minimum number of zero bytes",
            })
        actual = crc32(buffer[section.offset : section.end])
        if actual != section.crc32:
            problems.append({
                "part": f"section[{section.index}] ({section.kind_name}) of {owners.get(section.index, 'no tensor')}",
                "offset": section.offset,
                "message": f"CRC-32 mismatch: expected {section.crc32:#010x}, found {actual:#010x}",
            })
        previous_end = section.end
    if previous_end != info.footer.directory_offset:
        problems.append({
            "part": "padding before the directory",
            "offset": previous_end,
            "message": f"{info.footer.directory_offset - previous_end} bytes between the last section and the directory",
        })

    digest_end = info.file_size - FOOTER_SIZE + FOOTER_DIGEST_OFFSET
    actual_digest = hashlib.sha256(buffer[:digest_end]).digest()
    digest_ok = actual_digest == info.footer.digest
    if not digest_ok:
        problems.append({
            "part": "digest",
            "offset": digest_end,
            "message": f"SHA-256 mismatch: expected {info.footer.digest.hex()}, found {actual_digest.hex()}",
        })
    return VerificationReport(ok=not problems, digest_ok=digest_ok, problems=problems,
                              checked_sections=len(info.sections))


__all__ = [
    "ContainerWriter",
    "ContainerInfo",
    "TensorEntry",
    "SectionData",
    "Section",
    "TensorRecord",
    "Footer",
    "Source",
    "parse_container",
    "section_bytes",
    "verify_container",
    "VerificationReport",
    "DCFormatError",
]
