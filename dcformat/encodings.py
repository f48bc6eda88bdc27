"""Tensor encodings (spec/FORMAT.md section 9): params, sections, encode and decode.

Each encoding turns one tensor into a :class:`~dcformat.container.TensorEntry` (params plus
section bytes) and back. Choosing settings (pruning, k-means, the step of uniform
quantisation) is the encoder's job in :mod:`dcformat.encoder`. This module only stores and
restores what it is given, exactly.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import Callable

import numpy as np
import zstandard

from . import sparse, streams
from .binary import ByteReader, checked_mul
from .constants import (
    ENCODING_NAMES,
    ENCODING_VERSIONS,
    FLOAT_DTYPES,
    MAX_CODEBOOK_ENTRIES,
    MAX_STREAM_WIDTH,
    NUMPY_DTYPES,
    Compression,
    DType,
    Encoding,
    RequiredFlag,
    SectionKind,
    dtype_code,
)
from .container import Section, SectionData, TensorEntry, TensorRecord
from .errors import (
    IndexOutOfRangeError,
    InvalidFieldError,
    LimitExceededError,
    UnknownFeatureError,
)

CODEBOOK_DTYPES = {0: np.dtype("<f4"), 1: np.dtype("<f2")}
AXIS_PER_TENSOR = 255

# Sections of each encoding, in order (spec section 9).
SECTION_KINDS = {
    Encoding.RAW: (SectionKind.DATA,),
    Encoding.SHARED: (SectionKind.CODEBOOK, SectionKind.ASSIGNMENTS),
    Encoding.SPARSE_SHARED: (SectionKind.CODEBOOK, SectionKind.ASSIGNMENTS, SectionKind.GAPS),
    Encoding.UNIFORM: (SectionKind.QPARAMS, SectionKind.LEVELS),
    Encoding.LOWRANK: (),
}
PARAMS_SIZE = {
    Encoding.RAW: 2,
    Encoding.SHARED: 8,
    Encoding.SPARSE_SHARED: 12,
    Encoding.UNIFORM: 8,
    Encoding.LOWRANK: 12,
}

_RAW = struct.Struct("<BB")
_SHARED = struct.Struct("<BBBBI")
_SPARSE_SHARED = struct.Struct("<BBBBII")

CODEBOOK_PLAIN = 0
CODEBOOK_DELTA_ZSTD = 1
_UNIFORM = struct.Struct("<BBHI")
_LOWRANK = struct.Struct("<III")


@dataclass(frozen=True)
class RawParams:
    compression: int
    shuffle: int


@dataclass(frozen=True)
class SharedParams:
    codebook_dtype: int
    bits: int
    n_clusters: int
    codebook_coding: int = CODEBOOK_PLAIN
    index_bits: int = 0
    zero_slot: int = 0


@dataclass(frozen=True)
class UniformParams:
    bits: int
    axis: int
    channels: int


@dataclass(frozen=True)
class LowrankParams:
    rank: int
    left: int
    right: int


# --------------------------------------------------------------------------------------
# Params parsing and structural checks (used when a file is opened)


def _field_error(record: TensorRecord, field: str, expected, found) -> InvalidFieldError:
    return InvalidFieldError(
        section="directory", field=f"tensor {record.name!r}.params.{field}",
        offset=record.directory_offset, expected=expected, found=found,
    )


def parse_params(record: TensorRecord):
    """Decode and range-check the params of ``record``; return a params dataclass."""
    encoding = Encoding(record.encoding)
    data = record.params
    if encoding == Encoding.RAW:
        compression, shuffle = _RAW.unpack(data)
        if compression not in (Compression.NONE, Compression.ZSTD):
            raise _field_error(record, "compression", "0 (none) or 1 (zstd)", compression)
        if shuffle not in (0, 1) or (shuffle and compression == Compression.NONE):
            raise _field_error(record, "shuffle", "0 or 1, and 0 when compression is 0", shuffle)
        return RawParams(compression, shuffle)
    if encoding in (Encoding.SHARED, Encoding.SPARSE_SHARED):
        if encoding == Encoding.SHARED:
            codebook_dtype, bits, coding, reserved, n_clusters = _SHARED.unpack(data)
            index_bits = zero_slot = 0
        else:
            codebook_dtype, bits, index_bits, coding, n_clusters, zero_slot = _SPARSE_SHARED.unpack(data)
            reserved = 0
            if not 1 <= index_bits <= MAX_STREAM_WIDTH:
                raise _field_error(record, "index_bits", f"1 to {MAX_STREAM_WIDTH}", index_bits)
            if zero_slot >= n_clusters:
                raise IndexOutOfRangeError(
                    section="directory", field=f"tensor {record.name!r}.params.zero_slot",
                    offset=record.directory_offset, expected=f"less than n_clusters ({n_clusters})",
                    found=zero_slot,
                )
        if reserved:
            raise _field_error(record, "reserved", "zero", reserved)
        if codebook_dtype not in CODEBOOK_DTYPES:
            raise _field_error(record, "codebook_dtype", "0 (f32) or 1 (f16)", codebook_dtype)
        if coding not in (CODEBOOK_PLAIN, CODEBOOK_DELTA_ZSTD):
            raise _field_error(record, "codebook_coding", "0 (plain) or 1 (delta, shuffled, zstd)", coding)
        if not 1 <= bits <= MAX_STREAM_WIDTH:
            raise _field_error(record, "bits", f"1 to {MAX_STREAM_WIDTH}", bits)
        if not 1 <= n_clusters <= (1 << bits):
            raise _field_error(record, "n_clusters", f"1 to {1 << bits} (2^bits)", n_clusters)
        return SharedParams(codebook_dtype, bits, n_clusters, coding, index_bits, zero_slot)
    if encoding == Encoding.UNIFORM:
        bits, axis, reserved, channels = _UNIFORM.unpack(data)
        if reserved:
            raise _field_error(record, "reserved", "zero", reserved)
        if not 1 <= bits <= MAX_STREAM_WIDTH:
            raise _field_error(record, "bits", f"1 to {MAX_STREAM_WIDTH}", bits)
        if axis == AXIS_PER_TENSOR:
            if channels != 1:
                raise _field_error(record, "channels", "1 for a per-tensor scale", channels)
        elif axis == 0:
            if not record.shape or channels != record.shape[0]:
                raise _field_error(record, "channels", "shape[0] for axis 0 (and ndim >= 1)", channels)
        else:
            raise _field_error(record, "axis", "255 (per tensor) or 0", axis)
        return UniformParams(bits, axis, channels)
    rank, left, right = _LOWRANK.unpack(data)
    if rank < 1:
        raise _field_error(record, "rank", "at least 1", rank)
    return LowrankParams(rank, left, right)


def check_record(record: TensorRecord, sections: tuple[Section, ...],
                 tensors: tuple[TensorRecord, ...]) -> None:
    """Check the encoding id, version, params and section kinds of ``record``."""
    where = f"tensor {record.name!r}"
    try:
        encoding = Encoding(record.encoding)
    except ValueError:
        raise UnknownFeatureError(
            section="directory", field=f"{where}.encoding", offset=record.directory_offset,
            expected="one of " + ", ".join(f"{int(e)} ({ENCODING_NAMES[e]})" for e in Encoding),
            found=record.encoding,
        ) from None
    if record.encoding_version != ENCODING_VERSIONS[encoding]:
        raise UnknownFeatureError(
            section="directory", field=f"{where}.encoding_version", offset=record.directory_offset,
            expected=f"version {ENCODING_VERSIONS[encoding]} of {ENCODING_NAMES[encoding]}",
            found=record.encoding_version,
        )
    if encoding != Encoding.RAW and record.dtype not in FLOAT_DTYPES:
        raise InvalidFieldError(
            section="directory", field=f"{where}.dtype", offset=record.directory_offset,
            expected=f"a float dtype for encoding {ENCODING_NAMES[encoding]}", found=record.dtype.name.lower(),
        )
    if len(record.params) != PARAMS_SIZE[encoding]:
        raise InvalidFieldError(
            section="directory", field=f"{where}.params_size", offset=record.directory_offset,
            expected=f"{PARAMS_SIZE[encoding]} for {ENCODING_NAMES[encoding]}", found=len(record.params),
        )
    kinds = tuple(sections[i].kind for i in range(record.first_section, record.first_section + record.section_count))
    expected_kinds = tuple(int(k) for k in SECTION_KINDS[encoding])
    if kinds != expected_kinds:
        raise InvalidFieldError(
            section="directory", field=f"{where}.sections", offset=record.directory_offset,
            expected="kinds (" + ", ".join(SectionKind(k).name.lower() for k in expected_kinds) + ")",
            found="kinds (" + ", ".join(str(k) for k in kinds) + ")",
        )
    params = parse_params(record)
    if encoding == Encoding.LOWRANK:
        if not record.shape:
            raise InvalidFieldError(
                section="directory", field=f"{where}.ndim", offset=record.directory_offset,
                expected="at least 1 for lowrank", found=0,
            )
        rows = record.shape[0]
        columns = record.size // rows if rows else 0
        for side, index, expected_shape in (
            ("left", params.left, (rows, params.rank)),
            ("right", params.right, (params.rank, columns)),
        ):
            if index >= len(tensors) or index == record.index:
                raise IndexOutOfRangeError(
                    section="directory", field=f"{where}.params.{side}", offset=record.directory_offset,
                    expected=f"a tensor index below {len(tensors)}, not the tensor itself", found=index,
                )
            factor = tensors[index]
            if not factor.is_factor or factor.encoding == Encoding.LOWRANK \
                    or factor.shape != expected_shape or factor.dtype not in FLOAT_DTYPES:
                raise InvalidFieldError(
                    section="directory", field=f"{where}.params.{side}", offset=record.directory_offset,
                    expected=f"a float factor tensor of shape {expected_shape} that is not lowrank",
                    found=f"tensor {factor.name!r} of shape {factor.shape}",
                )


def uses_zstd(record: TensorRecord) -> bool:
    """Return whether the params of ``record`` select zstd for one of its sections."""
    params = parse_params(record)
    if isinstance(params, RawParams):
        return params.compression == Compression.ZSTD
    return isinstance(params, SharedParams) and params.codebook_coding == CODEBOOK_DELTA_ZSTD


def check_factor_ownership(tensors: tuple[TensorRecord, ...]) -> None:
    """Raise unless every factor tensor belongs to exactly one lowrank tensor."""
    users: dict[int, int] = {}
    for record in tensors:
        if record.encoding == Encoding.LOWRANK:
            params = parse_params(record)
            for index in (params.left, params.right):
                if index in users or (index == params.left == params.right):
                    raise InvalidFieldError(
                        section="directory", field=f"tensor {record.name!r}.params",
                        offset=record.directory_offset, expected="factors used by exactly one lowrank tensor",
                        found=f"tensor index {index} used twice",
                    )
                users[index] = record.index
    for record in tensors:
        if record.is_factor and record.index not in users:
            raise InvalidFieldError(
                section="directory", field=f"tensor {record.name!r}.flags", offset=record.directory_offset,
                expected="a factor used by a lowrank tensor", found="an unused factor",
            )


# --------------------------------------------------------------------------------------
# Encoding


def _entry(name: str, array_dtype: np.dtype, shape: tuple[int, ...], encoding: Encoding,
           params: bytes, sections: list[SectionData], required_flags: int = 0) -> TensorEntry:
    return TensorEntry(
        name=name, dtype=dtype_code(array_dtype), shape=tuple(int(d) for d in shape), encoding=encoding,
        encoding_version=ENCODING_VERSIONS[encoding], params=params, sections=sections,
        required_flags=required_flags,
    )


def shuffle_bytes(data: bytes, itemsize: int) -> bytes:
    if itemsize == 1 or not data:
        return data
    planes = np.frombuffer(data, dtype=np.uint8).reshape(-1, itemsize)
    return planes.T.tobytes()


def unshuffle_bytes(data: bytes, itemsize: int) -> bytes:
    if itemsize == 1 or not data:
        return data
    planes = np.frombuffer(data, dtype=np.uint8).reshape(itemsize, -1)
    return planes.T.tobytes()


def zstd_level(size: int) -> int:
    """Compression level for a raw section of ``size`` bytes: strong for small, fast for large."""
    return 19 if size <= 1 << 20 else 6


def encode_raw(name: str, array: np.ndarray, *, compression: str = "auto") -> TensorEntry:
    """Store ``array`` losslessly. ``compression`` is "none", "zstd" (shuffled) or "auto"."""
    dtype = np.dtype(array.dtype)
    little = np.ascontiguousarray(array, dtype=dtype.newbyteorder("<") if dtype.byteorder == ">" else dtype)
    plain = little.tobytes()
    candidates = [(plain, Compression.NONE, 0)]
    if compression in ("zstd", "auto") and plain:
        level = zstd_level(len(plain))
        compressor = zstandard.ZstdCompressor(level=level, write_content_size=True, write_checksum=False)
        for shuffle in ((1, 0) if dtype.itemsize > 1 else (0,)):
            payload = shuffle_bytes(plain, dtype.itemsize) if shuffle else plain
            candidates.append((compressor.compress(payload), Compression.ZSTD, shuffle))
    elif compression not in ("none", "zstd", "auto"):
        raise ValueError(f"compression must be 'none', 'zstd' or 'auto', not {compression!r}")
    if compression == "zstd" and len(candidates) > 1:
        candidates = candidates[1:]
    data, method, shuffle = min(candidates, key=lambda c: len(c[0]))
    flags = RequiredFlag.ZSTD if method == Compression.ZSTD else 0
    return _entry(name, dtype, array.shape, Encoding.RAW, _RAW.pack(method, shuffle),
                  [SectionData(SectionKind.DATA, data)], flags)


def _order_keys(bits: np.ndarray, width: int) -> np.ndarray:
    """Map float bit patterns to unsigned keys that increase with the float's total order."""
    sign = np.uint64(1 << (width - 1))
    mask = np.uint64((1 << width) - 1)
    bits = bits.astype(np.uint64)
    return np.where(bits >= sign, mask - bits, bits + sign)


def _from_order_keys(keys: np.ndarray, width: int) -> np.ndarray:
    sign = np.uint64(1 << (width - 1))
    mask = np.uint64((1 << width) - 1)
    return np.where(keys >= sign, keys - sign, mask - keys)


def encode_codebook(codebook: np.ndarray, codebook_dtype: int, coding: str = "auto") -> tuple[int, bytes]:
    """Return (codebook_coding, section bytes) for ``codebook``: plain, or delta-coded and zstd.

    Delta coding stores the differences of consecutive order keys (spec section 9.2), which
    are small for sorted centroids, so the shuffled bytes compress well.
    """
    values = np.ascontiguousarray(codebook, dtype=CODEBOOK_DTYPES[codebook_dtype])
    plain = values.tobytes()
    if coding == "plain" or len(values) < 2:
        return CODEBOOK_PLAIN, plain
    width = values.itemsize * 8
    unsigned = np.dtype(f"<u{values.itemsize}")
    keys = _order_keys(values.view(unsigned), width)
    deltas = (np.diff(keys, prepend=np.uint64(0)) & np.uint64((1 << width) - 1)).astype(unsigned)
    frame = zstandard.ZstdCompressor(level=19, write_content_size=True, write_checksum=False).compress(
        shuffle_bytes(deltas.tobytes(), values.itemsize)
    )
    if coding == "auto" and len(frame) >= len(plain):
        return CODEBOOK_PLAIN, plain
    return CODEBOOK_DELTA_ZSTD, frame


def _zstd_flag(codebook_coding: int) -> int:
    return RequiredFlag.ZSTD if codebook_coding == CODEBOOK_DELTA_ZSTD else 0


def _codebook_code(codebook: np.ndarray) -> int:
    return 1 if np.dtype(codebook.dtype) == np.float16 else 0


def encode_shared(name: str, dtype: np.dtype, shape: tuple[int, ...], codebook: np.ndarray,
                  assignments: np.ndarray, bits: int, *, stream_form=None,
                  codebook_coding: str = "auto") -> TensorEntry:
    """Store a dense codebook tensor: ``codebook[assignments]`` restores it."""
    code = _codebook_code(codebook)
    n_clusters = len(codebook)
    coding, codebook_data = encode_codebook(codebook, code, codebook_coding)
    params = _SHARED.pack(code, bits, coding, 0, n_clusters)
    sections = [
        SectionData(SectionKind.CODEBOOK, codebook_data),
        SectionData(SectionKind.ASSIGNMENTS,
                    streams.encode_stream(np.asarray(assignments).reshape(-1), bits, form=stream_form)),
    ]
    entry = _entry(name, dtype, shape, Encoding.SHARED, params, sections, _zstd_flag(coding))
    entry.symbols = {SectionKind.ASSIGNMENTS: assignments}
    return entry


def encode_sparse_shared(name: str, dtype: np.dtype, shape: tuple[int, ...], codebook: np.ndarray,
                         assignments: np.ndarray, bits: int, index_bits: int, zero_slot: int, *,
                         stream_form=None, codebook_coding: str = "auto") -> TensorEntry:
    """Store the Deep Compression sparse layout of ``codebook[assignments]``.

    Entries are placed at every element whose assignment is not ``zero_slot``; fillers are
    inserted where a run of zeros is longer than ``2^index_bits - 1``.
    """
    flat = np.asarray(assignments).reshape(-1)
    positions = np.flatnonzero(flat != zero_slot)
    gaps, source = sparse.relative_index(positions, index_bits)
    entry_assignments = np.full(len(gaps), zero_slot, dtype=flat.dtype)
    stored = source >= 0
    entry_assignments[stored] = flat[positions[source[stored]]]
    code = _codebook_code(codebook)
    coding, codebook_data = encode_codebook(codebook, code, codebook_coding)
    params = _SPARSE_SHARED.pack(code, bits, index_bits, coding, len(codebook), zero_slot)
    sections = [
        SectionData(SectionKind.CODEBOOK, codebook_data),
        SectionData(SectionKind.ASSIGNMENTS, streams.encode_stream(entry_assignments, bits, form=stream_form)),
        SectionData(SectionKind.GAPS, streams.encode_stream(gaps, index_bits, form=stream_form)),
    ]
    entry = _entry(name, dtype, shape, Encoding.SPARSE_SHARED, params, sections, _zstd_flag(coding))
    entry.symbols = {SectionKind.ASSIGNMENTS: entry_assignments, SectionKind.GAPS: gaps}
    return entry


def encode_uniform(name: str, dtype: np.dtype, shape: tuple[int, ...], levels: np.ndarray, bits: int,
                   scales: np.ndarray, zero_points: np.ndarray, *, per_channel: bool,
                   stream_form=None) -> TensorEntry:
    """Store linear quantisation: value = float32(level - zero_point) * scale."""
    scales = np.asarray(scales, dtype="<f4").reshape(-1)
    zero_points = np.asarray(zero_points, dtype="<i4").reshape(-1)
    axis = 0 if per_channel else AXIS_PER_TENSOR
    params = _UNIFORM.pack(bits, axis, 0, len(scales))
    sections = [
        SectionData(SectionKind.QPARAMS, scales.tobytes() + zero_points.tobytes()),
        SectionData(SectionKind.LEVELS, streams.encode_stream(np.asarray(levels).reshape(-1), bits, form=stream_form)),
    ]
    entry = _entry(name, dtype, shape, Encoding.UNIFORM, params, sections)
    entry.symbols = {SectionKind.LEVELS: levels}
    return entry


def encode_lowrank(name: str, dtype: np.dtype, shape: tuple[int, ...], left: TensorEntry,
                   right: TensorEntry, rank: int) -> TensorEntry:
    """Store ``left @ right`` as two factor tensors; the writer fills in their table indices."""
    entry = _entry(name, dtype, shape, Encoding.LOWRANK, _LOWRANK.pack(rank, 0, 0), [])
    entry.factors = (left, right)
    entry.required_flags = left.required_flags | right.required_flags
    return entry


# --------------------------------------------------------------------------------------
# Decoding


SectionGetter = Callable[[int], tuple[memoryview, Section]]
FactorDecoder = Callable[[int], np.ndarray]


def check_decoded_size(record: TensorRecord, max_tensor_bytes: int) -> None:
    nbytes = checked_mul(*record.shape, NUMPY_DTYPES[record.dtype].itemsize, section="directory",
                         field=f"tensor {record.name!r}.shape", offset=record.directory_offset)
    if nbytes > max_tensor_bytes:
        raise LimitExceededError(
            f"tensor {record.name!r}: the decoded size is {nbytes} bytes, above the limit of "
            f"{max_tensor_bytes} bytes; pass a larger max_tensor_bytes to dcformat.open() to decode it",
            section="directory", field=f"tensor {record.name!r}.shape", offset=record.directory_offset,
            expected=f"at most {max_tensor_bytes} bytes", found=nbytes,
        )


def _stream(record: TensorRecord, get_section: SectionGetter, position: int, count: int, width: int) -> np.ndarray:
    data, section = get_section(record.first_section + position)
    return streams.decode_stream(
        data, count=count, width=width, section=f"section[{section.index}] ({section.kind_name}) of {record.name!r}",
        base=section.offset,
    )


def _stream_count(record: TensorRecord, get_section: SectionGetter, position: int, cap: int) -> int:
    data, section = get_section(record.first_section + position)
    info = streams.read_stream_info(
        data, section=f"section[{section.index}] ({section.kind_name}) of {record.name!r}", base=section.offset
    )
    if info.count > cap:
        raise LimitExceededError(
            section=f"section[{section.index}] ({section.kind_name}) of {record.name!r}", field="count",
            offset=section.offset + 4, expected=f"at most {cap} entries (the tensor's size)", found=info.count,
        )
    return info.count


def read_codebook(record: TensorRecord, params: SharedParams, get_section: SectionGetter) -> np.ndarray:
    """Decode the codebook section of a shared or sparse-shared tensor (plain or delta-coded)."""
    data, section = get_section(record.first_section)
    name = f"section[{section.index}] (codebook) of {record.name!r}"
    dtype = CODEBOOK_DTYPES[params.codebook_dtype]
    if params.codebook_coding == CODEBOOK_DELTA_ZSTD:
        expected = params.n_clusters * dtype.itemsize
        data = _zstd_content(data, expected, name, section.offset)
    reader = ByteReader(data, base=section.offset, section=name)
    codebook = reader.array(dtype, params.n_clusters, "codebook", cap=MAX_CODEBOOK_ENTRIES)
    reader.expect_end("codebook")
    if params.codebook_coding == CODEBOOK_DELTA_ZSTD:
        unsigned = np.dtype(f"<u{dtype.itemsize}")
        width = dtype.itemsize * 8
        deltas = np.frombuffer(unshuffle_bytes(codebook.tobytes(), dtype.itemsize), dtype=unsigned)
        keys = np.cumsum(deltas.astype(np.uint64)) & np.uint64((1 << width) - 1)
        codebook = _from_order_keys(keys, width).astype(unsigned).view(dtype)
    return codebook


def _zstd_content(data, expected: int, name: str, offset: int) -> bytes:
    """Decompress one zstd frame that must declare exactly ``expected`` bytes of content."""
    try:
        frame = zstandard.get_frame_parameters(data)
    except zstandard.ZstdError as error:
        raise InvalidFieldError(section=name, field="zstd frame", offset=offset,
                                expected="a zstd frame", found=str(error)) from None
    if frame.content_size != expected:
        raise InvalidFieldError(
            section=name, field="zstd content size", offset=offset,
            expected=f"{expected} bytes", found=frame.content_size,
        )
    try:
        # allow_extra_data=False: bytes after the frame would otherwise be ignored, and the
        # section must be exactly one frame.
        payload = zstandard.ZstdDecompressor().decompress(data, max_output_size=expected,
                                                          allow_extra_data=False)
    except zstandard.ZstdError as error:
        raise InvalidFieldError(section=name, field="zstd frame", offset=offset,
                                expected="a valid zstd frame", found=str(error)) from None
    if len(payload) != expected:
        raise InvalidFieldError(section=name, field="zstd frame", offset=offset,
                                expected=f"{expected} bytes", found=len(payload))
    return payload


def _check_assignments(record: TensorRecord, assignments: np.ndarray, n_clusters: int,
                       get_section: SectionGetter) -> None:
    if assignments.size and int(assignments.max()) >= n_clusters:
        _, section = get_section(record.first_section + 1)
        bad = int(np.argmax(assignments >= n_clusters))
        raise IndexOutOfRangeError(
            section=f"section[{section.index}] (assignments) of {record.name!r}", field=f"assignment[{bad}]",
            offset=section.offset, expected=f"a cluster index below n_clusters ({n_clusters})",
            found=int(assignments[bad]),
        )


def decode_sparse_entries(record: TensorRecord, get_section: SectionGetter) -> tuple[np.ndarray, np.ndarray, np.ndarray, int]:
    """Return (positions, assignments, codebook, zero_slot) of a sparse-shared tensor, validated."""
    params = parse_params(record)
    codebook = read_codebook(record, params, get_section)
    if codebook[params.zero_slot] != 0 or np.signbit(codebook[params.zero_slot]):
        _, section = get_section(record.first_section)
        raise InvalidFieldError(
            section=f"section[{section.index}] (codebook) of {record.name!r}", field=f"codebook[{params.zero_slot}]",
            offset=section.offset, expected="+0.0 (the zero slot)",
            found=float(codebook[params.zero_slot]),
        )
    entries = _stream_count(record, get_section, 2, record.size)
    gaps = _stream(record, get_section, 2, entries, params.index_bits)
    _, gap_section = get_section(record.first_section + 2)
    positions = sparse.positions_from_gaps(
        gaps, record.size, section=f"section[{gap_section.index}] (gaps) of {record.name!r}",
        offset=gap_section.offset,
    )
    assignments = _stream(record, get_section, 1, entries, params.bits)
    _check_assignments(record, assignments, params.n_clusters, get_section)
    return positions, assignments, codebook, params.zero_slot


def decode_tensor(record: TensorRecord, get_section: SectionGetter, decode_factor: FactorDecoder,
                  max_tensor_bytes: int) -> np.ndarray:
    """Decode ``record`` to a dense array of its dtype and shape."""
    # Conversions and products follow IEEE 754, so an overflow to infinity or a NaN is the
    # specified result. numpy warns about both, and under -W error a warning is an exception.
    with np.errstate(over="ignore", invalid="ignore"):
        return _decode_tensor(record, get_section, decode_factor, max_tensor_bytes)


def _decode_tensor(record: TensorRecord, get_section: SectionGetter, decode_factor: FactorDecoder,
                   max_tensor_bytes: int) -> np.ndarray:
    check_decoded_size(record, max_tensor_bytes)
    dtype = NUMPY_DTYPES[record.dtype]
    encoding = Encoding(record.encoding)
    params = parse_params(record)

    if encoding == Encoding.RAW:
        return _decode_raw(record, params, get_section)

    if encoding == Encoding.SHARED:
        codebook = read_codebook(record, params, get_section)
        assignments = _stream(record, get_section, 1, record.size, params.bits)
        _check_assignments(record, assignments, params.n_clusters, get_section)
        return codebook.astype(dtype)[assignments].reshape(record.shape)

    if encoding == Encoding.SPARSE_SHARED:
        positions, assignments, codebook, _ = decode_sparse_entries(record, get_section)
        dense = np.zeros(record.size, dtype=dtype)
        dense[positions] = codebook.astype(dtype)[assignments]
        return dense.reshape(record.shape)

    if encoding == Encoding.UNIFORM:
        data, section = get_section(record.first_section)
        name = f"section[{section.index}] (qparams) of {record.name!r}"
        reader = ByteReader(data, base=section.offset, section=name)
        scales = reader.array("<f4", params.channels, "scale")
        zero_points = reader.array("<i4", params.channels, "zero_point")
        reader.expect_end("zero_point")
        if not np.all(np.isfinite(scales)):
            raise InvalidFieldError(section=name, field="scale", offset=section.offset,
                                    expected="finite scales", found="NaN or infinity")
        levels = _stream(record, get_section, 1, record.size, params.bits)
        return _dequantize(levels, scales, zero_points, dtype).reshape(record.shape)

    _check_lowrank_work(record, params, max_tensor_bytes)
    left = decode_factor(params.left)
    right = decode_factor(params.right)
    product = left.astype(np.float64) @ right.astype(np.float64)
    return product.astype(dtype).reshape(record.shape)


# Multiply-adds a lowrank product may cost per byte of max_tensor_bytes. Every other encoding
# does a small constant amount of work per decoded byte, but the product does ``rank`` per
# element, and factors stored as zstd frames of zeros cost almost nothing in the file. At the
# default 4 GiB limit this admits a 4096 x 4096 product of rank 4096 (6.9e10 multiply-adds,
# about 3.6 s on one core with OpenBLAS).
LOWRANK_WORK_PER_BYTE = 16


def _check_lowrank_work(record: TensorRecord, params: LowrankParams, max_tensor_bytes: int) -> None:
    rows = record.shape[0]
    columns = record.size // rows if rows else 0
    work = rows * params.rank * columns
    if work > LOWRANK_WORK_PER_BYTE * max_tensor_bytes:
        raise LimitExceededError(
            f"tensor {record.name!r}: the lowrank product of {rows} x {params.rank} and "
            f"{params.rank} x {columns} factors takes {work} multiply-adds, above the limit of "
            f"{LOWRANK_WORK_PER_BYTE} per byte of max_tensor_bytes ({max_tensor_bytes}); pass a larger "
            "max_tensor_bytes to dcformat.open() to decode it",
            section="directory", field=f"tensor {record.name!r}.params.rank", offset=record.directory_offset,
            expected=f"at most {LOWRANK_WORK_PER_BYTE * max_tensor_bytes} multiply-adds", found=work,
        )


# Elements per step of uniform dequantisation: the int64 and float32 temporaries of one step
# stay at a few MiB instead of 12 bytes per element of the whole tensor.
_DEQUANTIZE_CHUNK = 1 << 20


def _dequantize(levels: np.ndarray, scales: np.ndarray, zero_points: np.ndarray, dtype: np.dtype) -> np.ndarray:
    """Return ``float32(level - zero_point) * scale`` per channel, converted to ``dtype``, flat."""
    channels = scales.size
    out = np.empty(levels.size, dtype=dtype)
    if not levels.size:
        return out
    per_channel = levels.size // channels
    grid = levels.reshape(channels, per_channel)
    target = out.reshape(channels, per_channel)
    rows_per_step = max(1, _DEQUANTIZE_CHUNK // per_channel)
    for row in range(0, channels, rows_per_step):
        rows = slice(row, row + rows_per_step)
        zero = zero_points[rows].astype(np.int64)[:, None]
        scale = scales[rows][:, None]
        for column in range(0, per_channel, _DEQUANTIZE_CHUNK):
            columns = slice(column, column + _DEQUANTIZE_CHUNK)
            centred = grid[rows, columns].astype(np.int64) - zero
            target[rows, columns] = (centred.astype(np.float32) * scale).astype(dtype)
    return out


def _decode_raw(record: TensorRecord, params: RawParams, get_section: SectionGetter) -> np.ndarray:
    dtype = NUMPY_DTYPES[record.dtype]
    data, section = get_section(record.first_section)
    name = f"section[{section.index}] (data) of {record.name!r}"
    expected = record.size * dtype.itemsize
    if params.compression == Compression.ZSTD:
        payload = _zstd_content(data, expected, name, section.offset)
    else:
        if len(data) != expected:
            raise InvalidFieldError(
                section=name, field="size", offset=section.offset,
                expected=f"{expected} bytes (size x dtype bytes)", found=len(data),
            )
        payload = data
    if params.shuffle:
        payload = unshuffle_bytes(bytes(payload), dtype.itemsize)
    if record.dtype == DType.BOOL:
        raw = np.frombuffer(payload, dtype=np.uint8)
        if raw.size and int(raw.max()) > 1:
            bad = int(np.argmax(raw > 1))
            raise InvalidFieldError(section=name, field=f"element[{bad}]", offset=section.offset,
                                    expected="0 or 1 for bool", found=int(raw[bad]))
    # A copy, so the array outlives the file and is writable like any decoded tensor.
    return np.frombuffer(payload, dtype=dtype, count=record.size).reshape(record.shape).copy()
