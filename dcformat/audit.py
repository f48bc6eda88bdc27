"""Size audits of DCF files and ``.net`` releases: where the bytes of a compressed model go.

:func:`audit_file` returns a :class:`FileAudit`: one :class:`TensorAudit` per tensor, laid
out like the per-layer tables of Deep Compression (Han, Mao and Dally, ICLR 2016), plus the
container's own bytes and a per-stage view of the whole file. Every byte of the file is
attributed to exactly one place, so ``FileAudit.accounted_bytes == FileAudit.file_bytes``:

- a tensor's sections split into four parts. ``codebook_bytes`` is the codebook, or the
  scales and zero points of ``uniform``. ``value_bytes`` is the payload of the cluster-index
  or level stream, or the bytes of a raw tensor. ``index_bytes`` is the payload of the gap
  stream, and ``header_bytes`` the stream headers, Huffman code lengths and block index.
  The zero bytes that align each section go to ``padding_bytes``. A ``lowrank`` tensor owns
  its factors' sections.
- the container's parts (preamble, directory as stored, footer, user sections and their
  padding, any padding before the directory) are listed in ``FileAudit.container``.

Per stream, the audit decodes the symbols and reports the order-0 entropy of their
frequencies, the size no symbol-by-symbol code can beat, beside the fixed width and the bits
per symbol actually stored.

The per-stage view follows the Deep Compression pipeline, tensor by tensor, summed:

1. ``dense``: every float tensor as float32 (4 bytes per parameter); other tensors at their
   own size.
2. ``pruned``: a ``sparse-shared`` tensor as its stored entries, each a float32 value and a
   fixed-width gap (fillers included); other tensors as in stage 1.
3. ``shared``: cluster indices and gaps at their fixed widths, plus the codebook at its
   stored dtype (``uniform``: levels plus scales and zero points). Raw tensors count at
   their stored dtype, uncompressed.
4. ``stored``: the file as written (entropy-coded streams, compressed raw sections and every
   container byte).

For a ``.net`` release (:mod:`dcformat.convert`) the same fields apply. The per-layer count
is the weight tensor's header, the 8-bit cluster indices are its values and the packed 4-bit
gaps its index. Biases are raw tensors of their own.

:func:`audit_tensors` audits what compression would give for a model without writing a file.
"""

from __future__ import annotations

import io
import math
import os
from dataclasses import asdict, dataclass, field
from typing import Any, Mapping

import numpy as np

from .constants import (
    FLOAT_DTYPES,
    DIRECTORY_HEADER_SIZE,
    FOOTER_SIZE,
    PREAMBLE_SIZE,
    SECTION_ENTRY_SIZE,
    Encoding,
    SectionKind,
    StreamForm,
)
from .container import source_name as _source_name
from .huffman import entropy_bits
from .reader import DCFReader
from .streams import decode_stream, read_stream_info

__all__ = [
    "StreamAudit",
    "StageSizes",
    "TensorAudit",
    "StageAudit",
    "FileAudit",
    "WeightDistribution",
    "audit_file",
    "audit_release",
    "audit_tensors",
    "compress_to_bytes",
    "weight_distribution",
    "CSV_COLUMNS",
]

STREAM_KINDS = (SectionKind.ASSIGNMENTS, SectionKind.GAPS, SectionKind.LEVELS)
# Encodings whose decoded values are a small set: a codebook or quantisation levels.
SHARED_ENCODINGS = ("shared", "sparse-shared", "uniform")
FLOAT32_BYTES = 4
STAGES = (
    ("dense", "dense float32"),
    ("pruned", "pruned: float32 values + fixed-width gaps"),
    ("shared", "shared weights: fixed-width indices and gaps + codebook"),
    ("stored", "as stored: the whole file, container bytes included"),
)

# Columns of FileAudit.rows(), the flat view behind the CSV output.
CSV_COLUMNS = (
    "part", "name", "shape", "dtype", "encoding", "parameters", "nnz", "kept_percent",
    "entries", "fillers", "n_clusters", "weight_bits_fixed", "weight_bits_stored",
    "weight_bits_entropy", "index_bits_fixed", "index_bits_stored", "index_bits_entropy",
    "codebook_bytes", "index_bytes", "value_bytes", "header_bytes", "padding_bytes",
    "total_bytes", "float32_bytes", "percent_of_float32",
)


# --------------------------------------------------------------------------------------
# Data


@dataclass
class StreamAudit:
    """One integer stream: its fixed width, the bits stored, and its order-0 entropy."""

    kind: str
    form: str
    count: int
    width: int
    header_bytes: int
    payload_bits: int
    payload_bytes: int
    entropy_bits: float
    distinct_symbols: int

    @property
    def stored_bytes(self) -> int:
        return self.header_bytes + self.payload_bytes

    @property
    def bits_per_symbol(self) -> float | None:
        """Payload bits per symbol as stored (headers excluded)."""
        return self.payload_bits / self.count if self.count else None

    @property
    def entropy_bits_per_symbol(self) -> float | None:
        return self.entropy_bits / self.count if self.count else None

    @property
    def entropy_bytes(self) -> int:
        """The order-0 entropy bound of the payload, rounded up to whole bytes."""
        return math.ceil(self.entropy_bits / 8)

    @property
    def efficiency(self) -> float | None:
        """Entropy bound over payload bits: 1.0 means the payload is at the bound."""
        return self.entropy_bits / self.payload_bits if self.payload_bits else None

    def as_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data.update(stored_bytes=self.stored_bytes, bits_per_symbol=self.bits_per_symbol,
                    entropy_bits_per_symbol=self.entropy_bits_per_symbol,
                    entropy_bytes=self.entropy_bytes, efficiency=self.efficiency)
        return data


@dataclass
class StageSizes:
    """Bytes of one tensor at each stage of the pipeline (see the module docstring)."""

    dense: int
    pruned: int
    shared: int
    stored: int


@dataclass
class TensorAudit:
    """The byte breakdown of one tensor, in the shape of a Deep Compression table row."""

    name: str
    shape: tuple[int, ...]
    dtype: str
    encoding: str
    parameters: int
    nnz: int
    entries: int | None
    fillers: int | None
    bits: int | None
    index_bits: int | None
    n_clusters: int | None
    codebook_bytes: int
    value_bytes: int
    index_bytes: int
    header_bytes: int
    padding_bytes: int
    streams: list[StreamAudit]
    stages: StageSizes

    @property
    def stored_bytes(self) -> int:
        """Bytes of the tensor's sections."""
        return self.codebook_bytes + self.value_bytes + self.index_bytes + self.header_bytes

    @property
    def total_bytes(self) -> int:
        """Bytes of the tensor's sections and of the padding before each."""
        return self.stored_bytes + self.padding_bytes

    @property
    def float32_bytes(self) -> int:
        return FLOAT32_BYTES * self.parameters

    @property
    def kept_fraction(self) -> float | None:
        """Fraction of the parameters that are non-zero after decoding."""
        return self.nnz / self.parameters if self.parameters else None

    @property
    def percent_of_float32(self) -> float | None:
        return 100 * self.total_bytes / self.float32_bytes if self.parameters else None

    def stream(self, *kinds: str) -> StreamAudit | None:
        """Return the first stream of one of ``kinds`` ("assignments", "gaps", "levels")."""
        for stream in self.streams:
            if stream.kind in kinds:
                return stream
        return None

    @property
    def weight_stream(self) -> StreamAudit | None:
        """The stream of cluster indices or quantisation levels."""
        return self.stream("assignments", "levels")

    @property
    def index_stream(self) -> StreamAudit | None:
        """The stream of relative-index gaps."""
        return self.stream("gaps")

    def as_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["shape"] = list(self.shape)
        data["streams"] = [s.as_dict() for s in self.streams]
        data.update(stored_bytes=self.stored_bytes, total_bytes=self.total_bytes,
                    float32_bytes=self.float32_bytes, kept_fraction=self.kept_fraction,
                    percent_of_float32=self.percent_of_float32)
        return data

    def row(self) -> dict[str, Any]:
        """This tensor as one flat row with the keys of :data:`CSV_COLUMNS`."""
        weight, index = self.weight_stream, self.index_stream
        kept = self.kept_fraction
        return {
            "part": "tensor", "name": self.name, "shape": "x".join(map(str, self.shape)),
            "dtype": self.dtype, "encoding": self.encoding, "parameters": self.parameters,
            "nnz": self.nnz, "kept_percent": None if kept is None else 100 * kept,
            "entries": self.entries, "fillers": self.fillers, "n_clusters": self.n_clusters,
            "weight_bits_fixed": weight.width if weight else None,
            "weight_bits_stored": weight.bits_per_symbol if weight else None,
            "weight_bits_entropy": weight.entropy_bits_per_symbol if weight else None,
            "index_bits_fixed": index.width if index else None,
            "index_bits_stored": index.bits_per_symbol if index else None,
            "index_bits_entropy": index.entropy_bits_per_symbol if index else None,
            "codebook_bytes": self.codebook_bytes, "index_bytes": self.index_bytes,
            "value_bytes": self.value_bytes, "header_bytes": self.header_bytes,
            "padding_bytes": self.padding_bytes, "total_bytes": self.total_bytes,
            "float32_bytes": self.float32_bytes, "percent_of_float32": self.percent_of_float32,
        }


@dataclass
class StageAudit:
    """The whole file at one stage of the pipeline."""

    name: str
    description: str
    bytes: int
    float32_bytes: int

    @property
    def ratio(self) -> float | None:
        """Compression ratio against dense float32."""
        return self.float32_bytes / self.bytes if self.bytes else None

    def as_dict(self) -> dict[str, Any]:
        return {"name": self.name, "description": self.description, "bytes": self.bytes,
                "ratio": self.ratio}


@dataclass
class FileAudit:
    """The size audit of one file: tensors, container parts, stages and totals."""

    source: str
    format: str  # "dcf" or "net"
    dry_run: bool
    file_bytes: int
    tensors: list[TensorAudit]
    container: dict[str, int]  # container parts in file order: name -> bytes
    directory_parts: dict[str, int] = field(default_factory=dict)  # decoded directory sizes

    @property
    def parameters(self) -> int:
        return sum(t.parameters for t in self.tensors)

    @property
    def float32_bytes(self) -> int:
        return sum(t.float32_bytes for t in self.tensors)

    @property
    def tensor_bytes(self) -> int:
        return sum(t.total_bytes for t in self.tensors)

    @property
    def container_bytes(self) -> int:
        return sum(self.container.values())

    @property
    def accounted_bytes(self) -> int:
        """Tensor bytes plus container bytes; equals ``file_bytes`` for every audit."""
        return self.tensor_bytes + self.container_bytes

    @property
    def ratio(self) -> float | None:
        """Dense float32 size over file size."""
        return self.float32_bytes / self.file_bytes if self.file_bytes else None

    @property
    def bits_per_parameter(self) -> float | None:
        return 8 * self.file_bytes / self.parameters if self.parameters else None

    @property
    def stream_totals(self) -> dict[str, int]:
        """Payload, entropy-bound and header bytes summed over every stream of the file."""
        streams = [s for t in self.tensors for s in t.streams]
        return {
            "payload_bytes": sum(s.payload_bytes for s in streams),
            "entropy_bytes": sum(s.entropy_bytes for s in streams),
            "header_bytes": sum(s.header_bytes for s in streams),
        }

    @property
    def stages(self) -> list[StageAudit]:
        totals = {
            "dense": sum(t.stages.dense for t in self.tensors),
            "pruned": sum(t.stages.pruned for t in self.tensors),
            "shared": sum(t.stages.shared for t in self.tensors),
            "stored": self.file_bytes,
        }
        return [StageAudit(name, description, totals[name], self.float32_bytes)
                for name, description in STAGES]

    def totals_row(self) -> dict[str, Any]:
        """Return the totals of every summable column as a row with the keys of :data:`CSV_COLUMNS`."""
        row = dict.fromkeys(CSV_COLUMNS)
        nnz = sum(t.nnz for t in self.tensors)
        row.update(
            part="total", name="total", parameters=self.parameters, nnz=nnz,
            kept_percent=100 * nnz / self.parameters if self.parameters else None,
            codebook_bytes=sum(t.codebook_bytes for t in self.tensors),
            index_bytes=sum(t.index_bytes for t in self.tensors),
            value_bytes=sum(t.value_bytes for t in self.tensors),
            header_bytes=sum(t.header_bytes for t in self.tensors),
            padding_bytes=sum(t.padding_bytes for t in self.tensors),
            total_bytes=self.file_bytes, float32_bytes=self.float32_bytes,
            percent_of_float32=100 / self.ratio if self.ratio else None,
        )
        return row

    def rows(self) -> list[dict[str, Any]]:
        """Flat rows with the keys of :data:`CSV_COLUMNS`: tensors, container parts, total.

        The ``total_bytes`` of the tensor and container rows add up to the total row's,
        which is the file size.
        """
        rows = [t.row() for t in self.tensors]
        for name, size in self.container.items():
            row = dict.fromkeys(CSV_COLUMNS)
            row.update(part="container", name=name, total_bytes=size)
            rows.append(row)
        rows.append(self.totals_row())
        return rows

    def as_dict(self) -> dict[str, Any]:
        return {
            "source": self.source,
            "format": self.format,
            "dry_run": self.dry_run,
            "file_bytes": self.file_bytes,
            "parameters": self.parameters,
            "float32_bytes": self.float32_bytes,
            "ratio": self.ratio,
            "bits_per_parameter": self.bits_per_parameter,
            "tensor_bytes": self.tensor_bytes,
            "container_bytes": self.container_bytes,
            "accounted_bytes": self.accounted_bytes,
            "tensors": [t.as_dict() for t in self.tensors],
            "container": dict(self.container),
            "directory_parts": dict(self.directory_parts),
            "stream_totals": self.stream_totals,
            "stages": [s.as_dict() for s in self.stages],
        }


# --------------------------------------------------------------------------------------
# DCF files


def audit_file(source, *, prototxt: str | os.PathLike | None = None, name: str | None = None,
               dry_run: bool = False) -> FileAudit:
    """Audit a DCF file, or with ``prototxt`` a ``.net`` release file.

    ``source`` is a path, ``bytes`` or a binary file object (a DCF file), or a path or bytes
    of a ``.net`` file when ``prototxt`` is given. ``name`` replaces the source's name in
    the result; ``dry_run`` marks an audit of a file that was never written.

    Every stream is decoded to count its symbols, one tensor at a time. Raises a
    :class:`~dcformat.errors.DCFormatError` subclass for a malformed or damaged file
    (including a section whose CRC-32 does not match).
    """
    if prototxt is not None:
        return audit_release(source, prototxt, name=name)
    with DCFReader(source) as reader:
        return _audit_reader(reader, name or _source_name(source), dry_run)


def _audit_reader(reader: DCFReader, source: str, dry_run: bool) -> FileAudit:
    info = reader.info
    owners = _section_owners(reader)

    # Padding before each section: the gap from the previous section's end (or the preamble's).
    padding: dict[int, int] = {}
    previous_end = PREAMBLE_SIZE
    for section in info.sections:
        padding[section.index] = section.offset - previous_end
        previous_end = section.end

    tensors = [_audit_tensor(reader, name, padding) for name in reader.keys()]

    user_indices = [i for i, owner in owners.items() if owner is None]
    container = {"preamble": PREAMBLE_SIZE}
    if user_indices:
        container["user sections"] = sum(info.sections[i].size for i in user_indices)
        container["padding before user sections"] = sum(padding[i] for i in user_indices)
    container["padding before directory"] = info.footer.directory_offset - previous_end
    container["directory"] = info.footer.directory_stored_size
    container["footer"] = FOOTER_SIZE
    return FileAudit(source, "dcf", dry_run, info.file_size, tensors, container,
                     _directory_parts(reader))


def _section_owners(reader: DCFReader) -> dict[int, str | None]:
    """Map each section to the listed tensor that owns it (a factor's to its lowrank parent)."""
    owners: dict[int, str | None] = {}
    for name in reader.keys():
        for section in reader.tensor_info(name).sections:
            owners[section.index] = name
    for index in reader.info.user_sections.values():
        owners[index] = None
    return owners


def _directory_parts(reader: DCFReader) -> dict[str, int]:
    info = reader.info
    user_table = sum(2 + len(name.encode("utf-8")) + 4 for name in info.user_sections)
    section_table = SECTION_ENTRY_SIZE * len(info.sections)
    tensor_table = (info.footer.directory_size - DIRECTORY_HEADER_SIZE - section_table - user_table
                    - info.metadata_size)
    return {
        "header": DIRECTORY_HEADER_SIZE,
        "section table": section_table,
        "tensor table": tensor_table,
        "user section table": user_table,
        "metadata": info.metadata_size,
        "decoded total": info.footer.directory_size,
        "stored": info.footer.directory_stored_size,
    }


def _audit_stream(reader: DCFReader, section) -> tuple[StreamAudit, np.ndarray]:
    data = reader.section_bytes(section.index)
    where = f"section[{section.index}] ({section.kind_name})"
    info = read_stream_info(data, section=where, base=section.offset)
    symbols = decode_stream(data, count=info.count, width=info.width, section=where, base=section.offset)
    frequencies = np.bincount(symbols) if symbols.size else np.zeros(0, dtype=np.int64)
    audit = StreamAudit(
        kind=section.kind_name, form=StreamForm(info.form).name.lower(), count=info.count,
        width=info.width, header_bytes=info.header_bytes, payload_bits=info.payload_bits,
        payload_bytes=info.payload_bytes, entropy_bits=entropy_bits(frequencies),
        distinct_symbols=int(np.count_nonzero(frequencies)),
    )
    return audit, symbols


def _packed_bytes(count: int, bits: int) -> int:
    return (count * bits + 7) // 8


def _audit_tensor(reader: DCFReader, name: str, padding: dict[int, int]) -> TensorAudit:
    tensor = reader.tensor_info(name)
    record = reader.record(name)
    params = tensor.params
    size = tensor.size
    float_tensor = record.dtype in FLOAT_DTYPES
    dense = FLOAT32_BYTES * size if float_tensor else tensor.original_bytes

    codebook_bytes = value_bytes = index_bytes = header_bytes = 0
    streams: list[StreamAudit] = []
    symbols: dict[str, np.ndarray] = {}
    for section in tensor.sections:
        if section.kind in STREAM_KINDS:
            stream, decoded = _audit_stream(reader, section)
            streams.append(stream)
            symbols[stream.kind] = decoded
            header_bytes += stream.header_bytes
            if section.kind == SectionKind.GAPS:
                index_bytes += stream.payload_bytes
            else:
                value_bytes += stream.payload_bytes
        elif section.kind in (SectionKind.CODEBOOK, SectionKind.QPARAMS):
            codebook_bytes += section.size
        else:
            value_bytes += section.size

    _, values = reader.get_entries(name)
    nnz = int(np.count_nonzero(values))
    entries = fillers = None
    encoding = Encoding(record.encoding)
    bits = params.get("bits")
    index_bits = params.get("index_bits") if encoding == Encoding.SPARSE_SHARED else None
    n_clusters = params.get("n_clusters")
    stored = sum(s.size for s in tensor.sections)

    if encoding == Encoding.SPARSE_SHARED:
        entries = int(symbols["gaps"].size)
        fillers = int(np.count_nonzero(symbols["assignments"] == params["zero_slot"]))
        codebook_entry = 2 if params["codebook_dtype"] == 1 else 4
        pruned = _packed_bytes(entries, 8 * FLOAT32_BYTES + index_bits)
        shared = _packed_bytes(entries, bits + index_bits) + n_clusters * codebook_entry
    elif encoding == Encoding.SHARED:
        codebook_entry = 2 if params["codebook_dtype"] == 1 else 4
        pruned = dense
        shared = _packed_bytes(size, bits) + n_clusters * codebook_entry
    elif encoding == Encoding.UNIFORM:
        pruned = dense
        shared = _packed_bytes(size, bits) + 8 * params["channels"]
    elif encoding == Encoding.LOWRANK:
        pruned = dense
        shared = sum(reader.info.tensors[i].nbytes for i in (params["left"], params["right"]))
    else:
        pruned = dense
        shared = tensor.original_bytes

    return TensorAudit(
        name=name, shape=tuple(tensor.shape), dtype=tensor.dtype, encoding=tensor.encoding,
        parameters=size, nnz=nnz, entries=entries, fillers=fillers, bits=bits,
        index_bits=index_bits, n_clusters=n_clusters, codebook_bytes=codebook_bytes,
        value_bytes=value_bytes, index_bytes=index_bytes, header_bytes=header_bytes,
        padding_bytes=sum(padding[s.index] for s in tensor.sections), streams=streams,
        stages=StageSizes(dense=dense, pruned=pruned, shared=shared, stored=stored),
    )


# --------------------------------------------------------------------------------------
# .net releases


def audit_release(net, prototxt, *, name: str | None = None) -> FileAudit:
    """Audit a ``.net`` release file of the Deep Compression authors (see :mod:`dcformat.convert`).

    Each layer gives a weight row and a raw bias row. In the weight row the header is the
    layer's entry count, the values are the 8-bit cluster indices and the index is the
    packed 4-bit gaps. The file has no container bytes of its own.
    """
    from .convert import RELEASE_BITS, RELEASE_INDEX_BITS, read_release

    release = read_release(net, prototxt)
    tensors: list[TensorAudit] = []
    for layer in release.layers:
        conv = layer.layer
        indices = release.indices(layer)
        gaps = release.gaps(layer)
        weights = release.weights(layer)
        streams = [
            _packed_stream("assignments", indices, RELEASE_BITS, layer.indices_bytes),
            _packed_stream("gaps", gaps, RELEASE_INDEX_BITS, layer.gaps_bytes),
        ]
        size = conv.weight_size
        tensors.append(TensorAudit(
            name=f"{conv.name}.weight", shape=conv.weight_shape, dtype="float32",
            encoding="sparse-shared", parameters=size, nnz=int(np.count_nonzero(weights)),
            entries=layer.count, fillers=int(np.count_nonzero(indices == 0)), bits=RELEASE_BITS,
            index_bits=RELEASE_INDEX_BITS, n_clusters=layer.codebook_bytes // FLOAT32_BYTES,
            codebook_bytes=layer.codebook_bytes, value_bytes=layer.indices_bytes,
            index_bytes=layer.gaps_bytes, header_bytes=4, padding_bytes=0, streams=streams,
            stages=StageSizes(
                dense=FLOAT32_BYTES * size,
                pruned=_packed_bytes(layer.count, 8 * FLOAT32_BYTES + RELEASE_INDEX_BITS),
                shared=_packed_bytes(layer.count, RELEASE_BITS + RELEASE_INDEX_BITS) + layer.codebook_bytes,
                stored=4 + layer.codebook_bytes + layer.indices_bytes + layer.gaps_bytes,
            ),
        ))
        if conv.bias:
            biases = release.biases(layer)
            tensors.append(_raw_audit(f"{conv.name}.bias", biases, layer.bias_bytes))
    return FileAudit(name or release.path, "net", False, release.file_bytes, tensors, {})


def _packed_stream(kind: str, symbols: np.ndarray, width: int, payload_bytes: int) -> StreamAudit:
    frequencies = np.bincount(symbols) if symbols.size else np.zeros(0, dtype=np.int64)
    return StreamAudit(
        kind=kind, form="packed", count=int(symbols.size), width=width, header_bytes=0,
        payload_bits=int(symbols.size) * width, payload_bytes=payload_bytes,
        entropy_bits=entropy_bits(frequencies), distinct_symbols=int(np.count_nonzero(frequencies)),
    )


def _raw_audit(name: str, values: np.ndarray, stored: int) -> TensorAudit:
    size = int(values.size)
    return TensorAudit(
        name=name, shape=tuple(values.shape), dtype="float32", encoding="raw", parameters=size,
        nnz=int(np.count_nonzero(values)), entries=None, fillers=None, bits=None, index_bits=None,
        n_clusters=None, codebook_bytes=0, value_bytes=stored, index_bytes=0, header_bytes=0,
        padding_bytes=0, streams=[],
        stages=StageSizes(dense=FLOAT32_BYTES * size, pruned=FLOAT32_BYTES * size,
                          shared=FLOAT32_BYTES * size, stored=stored),
    )


# --------------------------------------------------------------------------------------
# Dry runs


def compress_to_bytes(tensors: Mapping[str, Any], config=None) -> bytes:
    """Compress ``tensors`` with ``config`` into memory and return the DCF file's bytes."""
    from .encoder import compress

    buffer = io.BytesIO()
    compress(tensors, buffer, config)
    return buffer.getvalue()


def audit_tensors(tensors: Mapping[str, Any], config=None, *, source: str = "<tensors>") -> FileAudit:
    """Audit what :func:`dcformat.encoder.compress` would write for ``tensors``, writing nothing.

    ``source`` names the model in the result. Use :func:`compress_to_bytes` and
    :func:`audit_file` directly when the compressed bytes are needed too.
    """
    return audit_file(compress_to_bytes(tensors, config), name=source, dry_run=True)


# --------------------------------------------------------------------------------------
# Weight distributions (for plots)


@dataclass
class WeightDistribution:
    """The weights of one tensor with its shared values and the range pruned to zero.

    ``values`` are the original weights when they were given (a dry run), else the decoded
    non-zero weights. ``centroids`` are the distinct non-zero decoded values of a tensor with
    shared weights or quantisation levels, and empty for a raw tensor.
    ``pruned_range`` is ``(low, high)``. With originals it is the magnitude range of the
    weights that decode to zero. Without, it is the widest interval around 0 that contains
    no decoded non-zero weight. It is ``None`` when nothing was pruned.
    """

    name: str
    values: np.ndarray
    centroids: np.ndarray
    pruned_range: tuple[float, float] | None
    pruned: int
    parameters: int
    from_original: bool


def weight_distribution(source, name: str, *, original: np.ndarray | None = None,
                        prototxt: str | os.PathLike | None = None) -> WeightDistribution:
    """Decode tensor ``name`` of a DCF file (or of a ``.net`` file with ``prototxt``).

    ``original`` is the tensor before compression, when known; it must have the decoded
    tensor's size.
    """
    if prototxt is not None:
        from .convert import read_release

        release = read_release(source, prototxt)
        layer = release.layer(name)
        shared = not name.endswith(".bias")
        decoded = release.weights(layer) if shared else release.biases(layer)
    else:
        with DCFReader(source) as reader:
            decoded = reader.get(name)
            shared = reader.tensor_info(name).encoding in SHARED_ENCODINGS
    decoded = np.asarray(decoded, dtype=np.float64).reshape(-1)
    kept = decoded[decoded != 0]
    centroids = np.unique(kept) if shared else np.zeros(0)
    zeros = decoded.size - kept.size

    if original is not None:
        original = np.asarray(original, dtype=np.float64).reshape(-1)
        if original.size != decoded.size:
            raise ValueError(f"original has {original.size} elements, tensor {name!r} has {decoded.size}")
        pruned_mask = (decoded == 0) & (original != 0)
        pruned = int(np.count_nonzero(pruned_mask))
        threshold = float(np.abs(original[pruned_mask]).max()) if pruned else None
        pruned_range = (-threshold, threshold) if threshold is not None else None
        return WeightDistribution(name, original, centroids, pruned_range, pruned, decoded.size, True)

    pruned_range = None
    if zeros and kept.size:
        negative = kept[kept < 0]
        positive = kept[kept > 0]
        low = float(negative.max()) if negative.size else 0.0
        high = float(positive.min()) if positive.size else 0.0
        pruned_range = (low, high)
    return WeightDistribution(name, kept, centroids, pruned_range, zeros, decoded.size, False)
