"""On-disk constants of the DCF container, as defined in ``spec/FORMAT.md``.

Ids are ``IntEnum`` values that are never reused: a retired id stays here as a comment with
the reason it was retired.
"""

from __future__ import annotations

from enum import IntEnum, IntFlag

import numpy as np

# Preamble and footer magic. Both start with a byte above 0x7F so that no text file and no
# 7-bit channel can produce them by accident (the same reason PNG starts with 0x89).
MAGIC = b"\x89DCF\r\n\x1a\n"
FOOTER_MAGIC = b"\x89DCF\x1aEND"

FORMAT_MAJOR = 1
FORMAT_MINOR = 0
SUPPORTED_MAJORS = (1,)

PREAMBLE_SIZE = 16
FOOTER_SIZE = 88
FOOTER_DIGEST_OFFSET = 48  # offset of the SHA-256 digest inside the footer
DIRECTORY_HEADER_SIZE = 16
SECTION_ENTRY_SIZE = 24
STREAM_HEADER_SIZE = 12
HUFFMAN_HEADER_SIZE = 16  # alphabet_size, block_size, payload_bits: bytes between the stream header and the code lengths

DEFAULT_ALIGNMENT_LOG2 = 6  # 64-byte sections: one cache line, enough for mmap and SIMD loads
MAX_ALIGNMENT_LOG2 = 16

# Stream limits.
MAX_STREAM_WIDTH = 16
MAX_CODE_LENGTH = 24
CODE_LENGTH_BITS = 5  # each stored code length uses 5 bits, enough for 0..31
DEFAULT_BLOCK_SIZE = 32768  # symbols per Huffman block; one index entry per block after the first

# Reader caps. Each guards an allocation that a declared count would otherwise drive; the
# reader also checks every count against the bytes that remain before allocating.
MAX_NDIM = 32  # numpy supports 64 dimensions; no weight tensor comes close to 32
MAX_NAME_BYTES = 65535  # the name length is a u16
MAX_TENSORS = 1_000_000
MAX_SECTIONS = 4_000_000
MAX_DIRECTORY_BYTES = 256 * 1024 * 1024
# Cap on how much a compressed directory may expand: its size may be at most this many times
# its stored size, plus MIN_DIRECTORY_ALLOWANCE. Directories written by dcformat expand 3 to 7
# times. Without the cap, a 9 KB file could declare millions of empty sections and make open()
# parse hundreds of megabytes.
MAX_DIRECTORY_EXPANSION = 64
MIN_DIRECTORY_ALLOWANCE = 1024 * 1024
MAX_METADATA_BYTES = 64 * 1024 * 1024
MAX_METADATA_DEPTH = 32
MAX_PARAMS_BYTES = 1024
MAX_CODEBOOK_ENTRIES = 1 << MAX_STREAM_WIDTH
# Default cap on the decoded size of one tensor. A sparse tensor can legitimately declare a
# large dense shape from a few bytes, so the reader refuses to materialise more than this
# unless the caller raises the limit (``dcformat.open(..., max_tensor_bytes=...)``).
DEFAULT_MAX_TENSOR_BYTES = 4 * 1024**3


class DType(IntEnum):
    """Element type of a tensor as stored in the tensor table."""

    FLOAT32 = 0
    FLOAT16 = 1
    BFLOAT16 = 2
    FLOAT64 = 3
    INT8 = 4
    INT16 = 5
    INT32 = 6
    INT64 = 7
    UINT8 = 8
    BOOL = 9
    UINT16 = 10
    UINT32 = 11
    UINT64 = 12


class Encoding(IntEnum):
    """Tensor encoding id stored in the tensor table."""

    RAW = 0
    SHARED = 1
    SPARSE_SHARED = 2
    UNIFORM = 3
    LOWRANK = 4


# Encoding versions this reader decodes, per encoding. A tensor with a newer encoding version
# is rejected by name.
ENCODING_VERSIONS = {encoding: 1 for encoding in Encoding}
ENCODING_NAMES = {
    Encoding.RAW: "raw",
    Encoding.SHARED: "shared",
    Encoding.SPARSE_SHARED: "sparse-shared",
    Encoding.UNIFORM: "uniform",
    Encoding.LOWRANK: "lowrank",
}


class SectionKind(IntEnum):
    """Content type of a section, stored in the section table."""

    DATA = 1
    CODEBOOK = 2
    ASSIGNMENTS = 3
    GAPS = 4
    QPARAMS = 5
    LEVELS = 6
    USER = 255


class StreamForm(IntEnum):
    """Storage form of an integer stream."""

    PACKED = 0
    HUFFMAN = 1


class Compression(IntEnum):
    """Byte-level compression of the directory or of a raw section."""

    NONE = 0
    ZSTD = 1


class RequiredFlag(IntFlag):
    """Features a reader must understand to read the file correctly."""

    ZSTD = 1 << 0  # the directory, a raw section or a codebook is zstd-compressed


class OptionalFlag(IntFlag):
    """Features a reader may ignore."""

    SETTINGS = 1 << 0  # the metadata records the settings used per tensor
    USER_SECTIONS = 1 << 1  # the file contains user sections


class TensorFlag(IntFlag):
    """Per-tensor flags in the tensor table."""

    FACTOR = 1 << 0  # a factor of a lowrank tensor: decoded through its parent, not listed


KNOWN_REQUIRED_FLAGS = RequiredFlag.ZSTD
KNOWN_OPTIONAL_FLAGS = OptionalFlag.SETTINGS | OptionalFlag.USER_SECTIONS
KNOWN_TENSOR_FLAGS = TensorFlag.FACTOR

RAW_FLAG_SHUFFLE = 1 << 0  # raw encoding parameter bit: bytes are shuffled before compression


def _bfloat16_dtype() -> np.dtype:
    import ml_dtypes

    return np.dtype(ml_dtypes.bfloat16)


# numpy dtype of each stored element type, little-endian.
NUMPY_DTYPES: dict[DType, np.dtype] = {
    DType.FLOAT32: np.dtype("<f4"),
    DType.FLOAT16: np.dtype("<f2"),
    DType.BFLOAT16: _bfloat16_dtype(),
    DType.FLOAT64: np.dtype("<f8"),
    DType.INT8: np.dtype("i1"),
    DType.INT16: np.dtype("<i2"),
    DType.INT32: np.dtype("<i4"),
    DType.INT64: np.dtype("<i8"),
    DType.UINT8: np.dtype("u1"),
    DType.BOOL: np.dtype("?"),
    DType.UINT16: np.dtype("<u2"),
    DType.UINT32: np.dtype("<u4"),
    DType.UINT64: np.dtype("<u8"),
}

DTYPE_NAMES: dict[DType, str] = {
    DType.FLOAT32: "float32",
    DType.FLOAT16: "float16",
    DType.BFLOAT16: "bfloat16",
    DType.FLOAT64: "float64",
    DType.INT8: "int8",
    DType.INT16: "int16",
    DType.INT32: "int32",
    DType.INT64: "int64",
    DType.UINT8: "uint8",
    DType.BOOL: "bool",
    DType.UINT16: "uint16",
    DType.UINT32: "uint32",
    DType.UINT64: "uint64",
}

FLOAT_DTYPES = frozenset({DType.FLOAT32, DType.FLOAT16, DType.BFLOAT16, DType.FLOAT64})


def dtype_code(dtype: np.dtype) -> DType:
    """Map a numpy dtype to its on-disk code; raise ``TypeError`` for an unsupported one."""
    dtype = np.dtype(dtype)
    for code, candidate in NUMPY_DTYPES.items():
        if dtype == candidate or (dtype.newbyteorder("<") == candidate):
            return code
    raise TypeError(
        f"unsupported dtype {dtype}: expected one of {', '.join(DTYPE_NAMES.values())}"
    )
