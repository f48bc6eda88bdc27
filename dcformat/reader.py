"""The lazy reader behind :func:`dcformat.open`."""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from typing import Any, Iterator

import numpy as np

from . import encodings, sparse
from .constants import (
    DEFAULT_MAX_TENSOR_BYTES,
    DTYPE_NAMES,
    ENCODING_NAMES,
    NUMPY_DTYPES,
    Encoding,
    RequiredFlag,
)
from .container import (
    ContainerInfo,
    Section,
    Source,
    TensorRecord,
    VerificationReport,
    parse_container,
    section_bytes,
    verify_container,
)
from .errors import DCFormatError, LimitExceededError, TensorNotFoundError, UnknownFeatureError

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class TensorInfo:
    """Directory fields of one tensor, read without decoding it."""

    name: str
    dtype: str
    shape: tuple[int, ...]
    encoding: str
    stored_bytes: int
    sections: tuple[Section, ...]
    params: dict[str, int]

    @property
    def size(self) -> int:
        return math.prod(self.shape)

    @property
    def original_bytes(self) -> int:
        """Size of the tensor as it was given, in its own dtype."""
        return self.size * NUMPY_DTYPES[_dtype_from_name(self.dtype)].itemsize


def _dtype_from_name(name: str):
    for code, dtype_name in DTYPE_NAMES.items():
        if dtype_name == name:
            return code
    raise KeyError(name)


class DCFReader:
    """A DCF file opened for reading. Tensors are decoded only when asked for, by name.

    Use :func:`dcformat.open` to create one. The reader works as a context manager; arrays
    that :meth:`get` returns are independent copies and stay valid after :meth:`close`.
    """

    def __init__(self, source, *, max_tensor_bytes: int = DEFAULT_MAX_TENSOR_BYTES) -> None:
        if not isinstance(max_tensor_bytes, int) or max_tensor_bytes < 0:
            raise ValueError(f"max_tensor_bytes must be a non-negative int, not {max_tensor_bytes!r}")
        self.max_tensor_bytes = max_tensor_bytes
        self._source = Source(source)
        try:
            self.info: ContainerInfo = parse_container(self._source.buffer)
            zstd_allowed = bool(self.info.footer.required_flags & RequiredFlag.ZSTD)
            for record in self.info.tensors:
                encodings.check_record(record, self.info.sections, self.info.tensors)
                if not zstd_allowed and encodings.uses_zstd(record):
                    raise UnknownFeatureError(
                        section="directory", field=f"tensor {record.name!r}.params",
                        offset=record.directory_offset, expected="required flag zstd set for a zstd section",
                        found="the flag clear",
                    )
            encodings.check_factor_ownership(self.info.tensors)
        except BaseException:
            self._source.close()
            raise
        self._by_name = {record.name: record for record in self.info.tensors}
        logger.debug("opened %s: %d tensors", self._source.name, len(self._by_name))

    # Context manager and lifetime

    def __enter__(self) -> "DCFReader":
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()

    def close(self) -> None:
        self._source.close()

    # Listing

    def keys(self) -> list[str]:
        """Names of the tensors in file order (factors of lowrank tensors are not listed)."""
        return [record.name for record in self.info.tensors if not record.is_factor]

    def __iter__(self) -> Iterator[str]:
        return iter(self.keys())

    def __contains__(self, name: object) -> bool:
        record = self._by_name.get(name) if isinstance(name, str) else None
        return record is not None and not record.is_factor

    def __len__(self) -> int:
        return len(self.keys())

    def __getitem__(self, name: str) -> np.ndarray:
        return self.get(name)

    def metadata(self) -> dict[str, Any]:
        """Return a fresh copy of the file's metadata object."""
        import copy

        return copy.deepcopy(self.info.metadata)

    def record(self, name: str) -> TensorRecord:
        record = self._by_name.get(name)
        if record is None or record.is_factor:
            known = ", ".join(repr(k) for k in self.keys()[:10])
            raise TensorNotFoundError(f"tensor {name!r} not found; the file has: {known}"
                                      + (" ..." if len(self) > 10 else ""))
        return record

    def tensor_info(self, name: str) -> TensorInfo:
        """Dtype, shape, encoding, params and sections of ``name``, without decoding it."""
        record = self.record(name)
        sections = self._sections_of(record)
        params = encodings.parse_params(record)
        return TensorInfo(
            name=record.name,
            dtype=DTYPE_NAMES[record.dtype],
            shape=record.shape,
            encoding=ENCODING_NAMES[Encoding(record.encoding)],
            stored_bytes=sum(s.size for s in sections),
            sections=tuple(sections),
            params=dict(vars(params)),
        )

    def _sections_of(self, record: TensorRecord) -> list[Section]:
        own = list(self.info.sections[record.first_section : record.first_section + record.section_count])
        if record.encoding == Encoding.LOWRANK:
            params = encodings.parse_params(record)
            for index in (params.left, params.right):
                own.extend(self._sections_of(self.info.tensors[index]))
        return own

    def section_bytes(self, index: int, *, check_crc: bool = True) -> memoryview:
        """Return the bytes of section ``index``, checking its CRC-32 when ``check_crc`` is true."""
        if not 0 <= index < len(self.info.sections):
            raise IndexError(f"section index {index} out of range 0..{len(self.info.sections) - 1}")
        return section_bytes(self._source.buffer, self.info.sections[index], check_crc=check_crc)

    # Decoding

    def _section_getter(self):
        def get_section(index: int) -> tuple[memoryview, Section]:
            section = self.info.sections[index]
            return section_bytes(self._source.buffer, section), section

        return get_section

    def _decode(self, record: TensorRecord) -> np.ndarray:
        return encodings.decode_tensor(
            record,
            self._section_getter(),
            lambda index: self._decode(self.info.tensors[index]),
            self.max_tensor_bytes,
        )

    def get(self, name: str) -> np.ndarray:
        """Decode tensor ``name`` to a dense numpy array of its original dtype and shape."""
        return self._decode(self.record(name))

    def get_entries(self, name: str) -> tuple[np.ndarray, np.ndarray]:
        """Return (positions, values) of the non-zero elements of the flattened tensor.

        For ``sparse-shared`` tensors this reads the entries directly, without building the
        dense tensor; fillers and entries of the zero slot are dropped.
        """
        record = self.record(name)
        dtype = NUMPY_DTYPES[record.dtype]
        if record.encoding == Encoding.SPARSE_SHARED:
            encodings.check_decoded_size(record, self.max_tensor_bytes)
            positions, assignments, codebook, zero_slot = encodings.decode_sparse_entries(
                record, self._section_getter()
            )
            keep = assignments != zero_slot
            self._check_entries_size(record, int(np.count_nonzero(keep)))
            with np.errstate(over="ignore"):  # IEEE overflow to infinity, as get() gives
                values = codebook.astype(dtype)[assignments[keep]]
            return positions[keep], values
        flat = self._decode(record).reshape(-1)
        self._check_entries_size(record, int(np.count_nonzero(flat)))
        positions = np.flatnonzero(flat)
        return positions, flat[positions]

    def _check_entries_size(self, record: TensorRecord, nnz: int) -> None:
        # Positions are int64, so the entries of a dense uint8 tensor take 9 times its
        # decoded size. The limit therefore applies to what is returned as well.
        entries_bytes = nnz * (8 + NUMPY_DTYPES[record.dtype].itemsize)
        self._check_output_size(record, entries_bytes,
                                f"its {nnz} non-zero elements take {entries_bytes} bytes as positions and values",
                                "or decode it dense with get()")

    def get_sparse(self, name: str, format: str = "csr"):
        """Decode ``name`` as a sparse matrix over its 2-D view (rows = first dimension).

        ``format`` is ``"csr"`` (``scipy.sparse.csr_array``), ``"coo"``
        (``scipy.sparse.coo_array``) or ``"torch"`` (a ``torch`` sparse CSR tensor).
        """
        if format not in ("csr", "coo", "torch"):
            raise ValueError(f"format must be 'csr', 'coo' or 'torch', not {format!r}")
        record = self.record(name)
        if format != "coo":
            self._check_indptr_size(record)
        positions, values = self.get_entries(name)
        if format == "coo":
            return sparse.to_coo(positions, values, record.shape)
        matrix = sparse.to_csr(positions, values, record.shape)
        if format == "csr":
            return matrix
        from .torch import csr_to_torch

        return csr_to_torch(matrix)

    def _check_indptr_size(self, record: TensorRecord) -> None:
        # A CSR index has one int64 per row plus one, however few elements the tensor has,
        # so a shape such as (2**40, 0) would allocate terabytes without this check.
        rows, _ = sparse.matrix_shape(record.shape)
        indptr_bytes = 8 * (rows + 1)
        self._check_output_size(record, indptr_bytes,
                                f"the CSR row index of {rows} rows takes {indptr_bytes} bytes",
                                "or use format='coo'")

    def _check_output_size(self, record: TensorRecord, nbytes: int, description: str, alternative: str) -> None:
        """Raise :class:`LimitExceededError` when an output of ``nbytes`` exceeds ``max_tensor_bytes``."""
        if nbytes > self.max_tensor_bytes:
            raise LimitExceededError(
                f"tensor {record.name!r}: {description}, above the limit of {self.max_tensor_bytes} "
                f"bytes; pass a larger max_tensor_bytes to dcformat.open() {alternative}",
                section="directory", field=f"tensor {record.name!r}.shape", offset=record.directory_offset,
                expected=f"at most {self.max_tensor_bytes} bytes", found=nbytes,
            )

    def items(self) -> Iterator[tuple[str, np.ndarray]]:
        for name in self.keys():
            yield name, self.get(name)

    # Verification

    def verify(self) -> VerificationReport:
        """Check every section CRC-32, every padding byte and the SHA-256 digest."""
        return verify_container(self._source.buffer, self.info)

    def check_tensors(self) -> list[dict[str, str]]:
        """Decode every tensor and return the problems found (empty when all decode)."""
        problems = []
        for name in self.keys():
            try:
                self.get(name)
            except DCFormatError as error:
                problems.append({"tensor": name, "error": type(error).__name__, "message": str(error)})
        return problems
