"""Inspection of a DCF file's contents and integrity, as JSON-ready data.

:func:`inspect_file` describes the container (version, flags, alignment, directory, every
section) and each tensor (encoding, bits, density, stored size, stream forms, checksum
status). :func:`inspect_tensor` dumps one tensor field by field with its codebook, symbol
counts, Huffman code lengths, block index and gap histogram. :func:`inspect_release` and
:func:`inspect_release_tensor` do the same for a ``.net`` release file and its prototxt
(:mod:`dcformat.convert`). :func:`verify_file` runs full verification (spec/FORMAT.md
section 10) and returns the problems found instead of raising. Both return plain dicts of str, int, float, bool,
None, lists and dicts, which ``json.dumps`` accepts as they are. The command-line tool only
formats them.
"""

from __future__ import annotations

import struct
from typing import Any

import numpy as np

from . import encodings
from .constants import (
    CODE_LENGTH_BITS,
    DIRECTORY_HEADER_SIZE,
    DTYPE_NAMES,
    ENCODING_NAMES,
    HUFFMAN_HEADER_SIZE,
    PREAMBLE_SIZE,
    SECTION_ENTRY_SIZE,
    STREAM_HEADER_SIZE,
    Compression,
    Encoding,
    OptionalFlag,
    RequiredFlag,
    SectionKind,
    StreamForm,
)
from .container import Section, crc32, source_name as _source_name
from .errors import DCFormatError
from .huffman import entropy_bits
from .reader import DCFReader
from .streams import decode_stream, read_stream_info

__all__ = ["inspect_file", "inspect_tensor", "inspect_release", "inspect_release_tensor", "verify_file"]

STREAM_KINDS = (SectionKind.ASSIGNMENTS, SectionKind.GAPS, SectionKind.LEVELS)


def _flag_names(value: int, flags: type) -> list[str]:
    """Names of the set bits of ``value``; bits this reader does not know appear as ``bit N``."""
    names = [flag.name.lower() for flag in flags if value & flag]
    known = 0
    for flag in flags:
        known |= flag
    unknown = value & ~known
    names += [f"bit {bit}" for bit in range(32) if unknown >> bit & 1]
    return names


def _hex32(value: int) -> str:
    return f"{value:#010x}"


# --------------------------------------------------------------------------------------
# inspect


def inspect_file(source) -> dict[str, Any]:
    """Describe the container and every tensor of a DCF file.

    ``source`` is anything :func:`dcformat.open` accepts. Computing each tensor's ``nnz``
    decodes it (``sparse-shared`` tensors only need their entries), one tensor at a time.
    A tensor whose sections fail their CRC-32 is still listed, with ``checksum``
    ``"mismatch"`` and the decoding error under ``error``.

    Raises:
        DCFormatError: the file cannot be opened (bad magic, damaged footer or directory).
        OSError: the path cannot be read.
    """
    with DCFReader(source) as reader:
        info = reader.info
        crc_ok = {s.index: crc32(reader.section_bytes(s.index, check_crc=False)) == s.crc32
                  for s in info.sections}
        owners = _section_owners(reader)

        tensors = [_describe_tensor(reader, name, crc_ok) for name in reader.keys()]
        original_bytes = sum(t["original_bytes"] for t in tensors)
        footer = info.footer
        return {
            "path": _source_name(source),
            "file_bytes": info.file_size,
            "version": f"{info.major_version}.{info.minor_version}",
            "flags": {
                "required": _flag_names(footer.required_flags, RequiredFlag),
                "optional": _flag_names(footer.optional_flags, OptionalFlag),
            },
            "alignment": 1 << footer.alignment_log2,
            "directory": {
                "offset": footer.directory_offset,
                "stored_bytes": footer.directory_stored_size,
                "bytes": footer.directory_size,
                "compression": Compression(footer.directory_compression).name.lower(),
                "crc32": _hex32(footer.directory_crc32),
            },
            "digest": footer.digest.hex(),
            "sections": [_describe_section(s, owners, crc_ok) for s in info.sections],
            "tensors": tensors,
            "user_sections": dict(info.user_sections),
            "metadata": reader.metadata(),
            "totals": {
                "tensors": len(tensors),
                "original_bytes": original_bytes,
                "stored_bytes": sum(t["stored_bytes"] for t in tensors),
                "file_bytes": info.file_size,
                "ratio": original_bytes / info.file_size if info.file_size else None,
            },
        }


def _section_owners(reader: DCFReader) -> dict[int, str]:
    owners: dict[int, str] = {}
    for record in reader.info.tensors:
        for index in range(record.first_section, record.first_section + record.section_count):
            owners[index] = record.name
    for name, index in reader.info.user_sections.items():
        owners[index] = f"user:{name}"
    return owners


def _describe_section(section: Section, owners: dict[int, str], crc_ok: dict[int, bool]) -> dict[str, Any]:
    return {
        "index": section.index,
        "kind": section.kind_name,
        "offset": section.offset,
        "offset_hex": f"{section.offset:#x}",
        "size": section.size,
        "crc32": _hex32(section.crc32),
        "crc_ok": crc_ok[section.index],
        "owner": owners.get(section.index),
    }


def _describe_tensor(reader: DCFReader, name: str, crc_ok: dict[int, bool]) -> dict[str, Any]:
    tensor = reader.tensor_info(name)
    params = tensor.params
    damaged = [s.index for s in tensor.sections if not crc_ok[s.index]]
    description: dict[str, Any] = {
        "name": name,
        "shape": list(tensor.shape),
        "dtype": tensor.dtype,
        "encoding": tensor.encoding,
        "size": tensor.size,
        "nnz": None,
        "density": None,
        "bits": params.get("bits"),
        "index_bits": params.get("index_bits") if tensor.encoding == "sparse-shared" else None,
        "n_clusters": params.get("n_clusters"),
        "original_bytes": tensor.original_bytes,
        "stored_bytes": tensor.stored_bytes,
        "bits_per_weight": 8 * tensor.stored_bytes / tensor.size if tensor.size else None,
        "params": dict(params),
        "sections": [s.index for s in tensor.sections],
        "streams": [_describe_stream(s, reader) for s in tensor.sections if s.kind in STREAM_KINDS],
        "checksum": "mismatch" if damaged else "ok",
        "damaged_sections": damaged,
        "error": None,
    }
    try:
        _, values = reader.get_entries(name)
    except DCFormatError as error:
        description["error"] = f"{type(error).__name__}: {error}"
        return description
    nnz = int(np.count_nonzero(values))
    description["nnz"] = nnz
    description["density"] = nnz / tensor.size if tensor.size else None
    return description


def _describe_stream(section: Section, reader: DCFReader) -> dict[str, Any]:
    description: dict[str, Any] = {"section": section.index, "kind": section.kind_name,
                                   "stored_bytes": section.size}
    try:
        info = read_stream_info(
            reader.section_bytes(section.index, check_crc=False),
            section=f"section[{section.index}] ({section.kind_name})", base=section.offset,
        )
    except DCFormatError as error:
        description["error"] = f"{type(error).__name__}: {error}"
        return description
    description.update(
        form=StreamForm(info.form).name.lower(),
        width=info.width,
        count=info.count,
        payload_bytes=info.payload_bytes,
    )
    if info.form == StreamForm.HUFFMAN:
        description.update(
            max_code_length=info.max_code_length,
            alphabet_size=info.alphabet_size,
            block_size=info.block_size,
        )
    return description


# --------------------------------------------------------------------------------------
# verify


def _error_problem(error: BaseException) -> dict[str, Any]:
    if isinstance(error, DCFormatError):
        return {
            "part": error.section or "file",
            "field": error.field,
            "offset": error.offset,
            "error": type(error).__name__,
            "message": str(error),
        }
    assert isinstance(error, OSError)
    message = error.strerror or str(error)
    if error.filename is not None:
        message = f"{message}: {error.filename}"
    return {"part": "file", "field": None, "offset": None, "error": type(error).__name__, "message": message}


def verify_file(source, *, decode: bool = False) -> dict[str, Any]:
    """Verify every checksum, padding byte and the digest of a DCF file; return the result.

    With ``decode``, every tensor is also decoded, which catches streams that are
    well-formed byte for byte but invalid (a writer bug rather than damage). A file that
    cannot be opened at all is reported as one problem, with the error class and message.

    Returns:
        ``{"path", "ok", "opened", "digest_ok", "checked_sections", "tensors", "problems"}``;
        each problem has ``part``, ``offset`` (absolute, or ``None``) and ``message``.
    """
    try:
        reader = DCFReader(source)
    except (DCFormatError, OSError) as error:
        return {
            "path": _source_name(source),
            "ok": False,
            "opened": False,
            "digest_ok": None,
            "checked_sections": 0,
            "tensors": None,
            "problems": [_error_problem(error)],
        }
    with reader:
        report = reader.verify().as_dict()
        problems = list(report["problems"])
        if decode:
            for failure in reader.check_tensors():
                problems.append({
                    "part": f"tensor {failure['tensor']!r}",
                    "offset": None,
                    "error": failure["error"],
                    "message": failure["message"],
                })
        return {
            "path": _source_name(source),
            "ok": not problems,
            "opened": True,
            "digest_ok": report["digest_ok"],
            "checked_sections": report["checked_sections"],
            "tensors": len(reader.keys()),
            "problems": problems,
        }


# --------------------------------------------------------------------------------------
# inspect --tensor

# Params fields of each encoding in file order (spec/FORMAT.md section 9): name, struct code.
PARAMS_FIELDS = {
    Encoding.RAW: (("compression", "B"), ("shuffle", "B")),
    Encoding.SHARED: (("codebook_dtype", "B"), ("bits", "B"), ("codebook_coding", "B"),
                      ("reserved", "B"), ("n_clusters", "I")),
    Encoding.SPARSE_SHARED: (("codebook_dtype", "B"), ("bits", "B"), ("index_bits", "B"),
                             ("codebook_coding", "B"), ("n_clusters", "I"), ("zero_slot", "I")),
    Encoding.UNIFORM: (("bits", "B"), ("axis", "B"), ("reserved", "H"), ("channels", "I")),
    Encoding.LOWRANK: (("rank", "I"), ("left", "I"), ("right", "I")),
}


def _field(space: str, offset: int, size: int, name: str, value: Any) -> dict[str, Any]:
    """Return one row of a field dump; ``space`` is "file" (absolute offsets) or "directory"."""
    return {"space": space, "offset": offset, "size": size, "field": name, "value": value}


def _record_fields(record, prefix: str = "") -> list[dict[str, Any]]:
    """List the tensor-table record field by field, at offsets into the decoded directory.

    ``prefix`` goes before every field name (for the factor records of a lowrank tensor).
    """
    fields = _plain_record_fields(record)
    for field in fields:
        field["field"] = prefix + field["field"]
    return fields


def _plain_record_fields(record) -> list[dict[str, Any]]:
    at = record.directory_offset
    name_size = len(record.name.encode("utf-8"))
    fields = [
        _field("directory", at, 2, "name_size", name_size),
        _field("directory", at + 2, name_size, "name", record.name),
    ]

    at += 2 + name_size
    dtype_name = DTYPE_NAMES.get(record.dtype, "unknown")
    try:
        encoding_name = ENCODING_NAMES[Encoding(record.encoding)]
    except ValueError:
        encoding_name = "unknown"
    fields += [
        _field("directory", at, 1, "dtype", f"{int(record.dtype)} ({dtype_name})"),
        _field("directory", at + 1, 1, "ndim", len(record.shape)),
        _field("directory", at + 2, 1, "encoding", f"{record.encoding} ({encoding_name})"),
        _field("directory", at + 3, 1, "encoding_version", record.encoding_version),
        _field("directory", at + 4, 1, "flags", f"{record.flags:#04x}"),
        _field("directory", at + 5, 3, "reserved", "00 00 00"),
    ]

    at += 8
    for axis, dim in enumerate(record.shape):
        fields.append(_field("directory", at, 8, f"shape[{axis}]", dim))
        at += 8
    fields += [
        _field("directory", at, 4, "first_section", record.first_section),
        _field("directory", at + 4, 4, "section_count", record.section_count),
        _field("directory", at + 8, 2, "params_size", len(record.params)),
    ]

    at += 10
    layout = PARAMS_FIELDS.get(Encoding(record.encoding), ()) if encoding_name != "unknown" else ()
    position = 0
    for name, code in layout:
        size = struct.calcsize("<" + code)
        if position + size > len(record.params):
            break
        (value,) = struct.unpack_from("<" + code, record.params, position)
        fields.append(_field("directory", at + position, size, f"params.{name}", value))
        position += size
    return fields


def _section_entry_fields(section: Section) -> list[dict[str, Any]]:
    at = DIRECTORY_HEADER_SIZE + SECTION_ENTRY_SIZE * section.index
    where = f"section[{section.index}]"
    return [
        _field("directory", at, 8, f"{where}.offset", section.offset),
        _field("directory", at + 8, 8, f"{where}.size", section.size),
        _field("directory", at + 16, 4, f"{where}.crc32", _hex32(section.crc32)),
        _field("directory", at + 20, 1, f"{where}.kind", f"{section.kind} ({section.kind_name})"),
        _field("directory", at + 21, 3, f"{where}.reserved", "00 00 00"),
    ]


def _stream_fields(section: Section, data, info) -> list[dict[str, Any]]:
    """List the stream header of ``section`` field by field, at absolute file offsets."""
    at = section.offset
    where = f"section[{section.index}]"
    form, width, max_code_length, reserved = struct.unpack_from("<BBBB", data, 0)
    (count,) = struct.unpack_from("<Q", data, 4)
    form_name = StreamForm(form).name.lower()
    fields = [
        _field("file", at, 1, f"{where}.form", f"{form} ({form_name})"),
        _field("file", at + 1, 1, f"{where}.width", width),
        _field("file", at + 2, 1, f"{where}.max_code_length", max_code_length),
        _field("file", at + 3, 1, f"{where}.reserved", reserved),
        _field("file", at + 4, 8, f"{where}.count", count),
    ]
    if info.form == StreamForm.HUFFMAN:
        alphabet_size, block_size, payload_bits = struct.unpack_from("<IIQ", data, STREAM_HEADER_SIZE)
        lengths_at = at + STREAM_HEADER_SIZE + HUFFMAN_HEADER_SIZE
        lengths_size = (CODE_LENGTH_BITS * alphabet_size + 7) // 8
        offsets_size = 8 * info.block_offsets.size
        fields += [
            _field("file", at + 12, 4, f"{where}.alphabet_size", alphabet_size),
            _field("file", at + 16, 4, f"{where}.block_size", block_size),
            _field("file", at + 20, 8, f"{where}.payload_bits", payload_bits),
            _field("file", lengths_at, lengths_size, f"{where}.code_lengths",
                   f"{alphabet_size} x {CODE_LENGTH_BITS} bits"),
            _field("file", lengths_at + lengths_size, offsets_size, f"{where}.block_offsets",
                   f"{info.block_offsets.size} x u64"),
        ]
    fields.append(_field("file", at + info.header_bytes, info.payload_bytes, f"{where}.payload",
                         f"{info.payload_bits} bits"))
    return fields


def _content_fields(section: Section, params: dict[str, Any]) -> list[dict[str, Any]]:
    """List the fields of a non-stream section: codebook, qparams or raw data."""
    where = f"section[{section.index}]"
    if section.kind == SectionKind.CODEBOOK:
        coding = "delta, zstd frame" if params.get("codebook_coding") else "plain"
        dtype = "f16" if params.get("codebook_dtype") == 1 else "f32"
        return [_field("file", section.offset, section.size, f"{where}.codebook",
                       f"{params.get('n_clusters')} x {dtype}, {coding}")]
    if section.kind == SectionKind.QPARAMS:
        channels = params.get("channels", 0)
        return [
            _field("file", section.offset, 4 * channels, f"{where}.scale", f"{channels} x f32"),
            _field("file", section.offset + 4 * channels, 4 * channels, f"{where}.zero_point",
                   f"{channels} x i32"),
        ]
    compression = "zstd frame" if params.get("compression") else "uncompressed"
    if params.get("shuffle"):
        compression += ", byte-shuffled"
    return [_field("file", section.offset, section.size, f"{where}.{section.kind_name}", compression)]


def _symbol_table(symbols: np.ndarray, code_lengths: np.ndarray | None) -> list[dict[str, Any]]:
    frequencies = np.bincount(symbols) if symbols.size else np.zeros(0, dtype=np.int64)
    size = max(frequencies.size, 0 if code_lengths is None else code_lengths.size)
    rows = []
    for symbol in range(size):
        count = int(frequencies[symbol]) if symbol < frequencies.size else 0
        length = int(code_lengths[symbol]) if code_lengths is not None and symbol < code_lengths.size else None
        if count or length:
            rows.append({"symbol": symbol, "count": count, "code_length": length})
    return rows


def _histogram(symbols: np.ndarray) -> list[dict[str, int]]:
    frequencies = np.bincount(symbols) if symbols.size else np.zeros(0, dtype=np.int64)
    return [{"value": value, "count": int(count)} for value, count in enumerate(frequencies) if count]


def inspect_tensor(source, name: str) -> dict[str, Any]:
    """Describe one tensor of a DCF file in depth, as JSON-ready data.

    Returns the record and the section-table entries field by field, at offsets into the
    decoded directory, and each section's own fields at absolute file offsets. It also
    returns the codebook, each stream's symbol counts, Huffman code lengths and block index,
    and the histogram of the relative-index gaps. Every stream is decoded.

    Raises:
        TensorNotFoundError: ``name`` is not a tensor of the file.
        DCFormatError: the file or one of the tensor's sections is malformed or damaged.
    """
    with DCFReader(source) as reader:
        tensor = reader.tensor_info(name)
        record = reader.record(name)
        params = tensor.params
        fields = _record_fields(record)
        # A lowrank tensor's sections belong to its two factor records, each with its own params.
        section_params: dict[int, dict[str, Any]] = {}
        if tensor.encoding == "lowrank":
            for side in ("left", "right"):
                factor = reader.info.tensors[params[side]]
                fields += _record_fields(factor, f"{side}.")
                factor_params = dict(vars(encodings.parse_params(factor)))
                for index in range(factor.first_section, factor.first_section + factor.section_count):
                    section_params[index] = factor_params
        sections = []
        streams = []
        gap_histogram = None
        for section in tensor.sections:
            padding = section.offset - (reader.info.sections[section.index - 1].end
                                        if section.index else PREAMBLE_SIZE)
            sections.append({**_describe_section(section, {}, {section.index: True}),
                             "padding_before": padding})
            fields += _section_entry_fields(section)
            data = reader.section_bytes(section.index)
            if section.kind in STREAM_KINDS:
                where = f"section[{section.index}] ({section.kind_name})"
                info = read_stream_info(data, section=where, base=section.offset)
                symbols = decode_stream(data, count=info.count, width=info.width, section=where,
                                        base=section.offset)
                fields += _stream_fields(section, data, info)
                huffman_form = info.form == StreamForm.HUFFMAN
                streams.append({
                    "section": section.index,
                    "kind": section.kind_name,
                    "form": StreamForm(info.form).name.lower(),
                    "width": info.width,
                    "count": info.count,
                    "header_bytes": info.header_bytes,
                    "payload_bits": info.payload_bits,
                    "entropy_bits": entropy_bits(np.bincount(symbols)) if symbols.size else 0.0,
                    "max_code_length": info.max_code_length if huffman_form else None,
                    "block_size": info.block_size if huffman_form else None,
                    "block_offsets": [int(v) for v in info.block_offsets],
                    "symbols": _symbol_table(symbols, info.code_lengths if huffman_form else None),
                })
                if section.kind == SectionKind.GAPS:
                    gap_histogram = _histogram(symbols)
            else:
                fields += _content_fields(section, section_params.get(section.index, params))

        codebook = None
        if tensor.encoding in ("shared", "sparse-shared"):
            values = encodings.read_codebook(
                record, encodings.parse_params(record),
                lambda index: (reader.section_bytes(index), reader.info.sections[index]),
            )
            codebook = {
                "values": [float(v) for v in values],
                "dtype": "float16" if params.get("codebook_dtype") == 1 else "float32",
                "coding": "delta" if params.get("codebook_coding") else "plain",
                "zero_slot": params.get("zero_slot") if tensor.encoding == "sparse-shared" else None,
            }
        return {
            "path": _source_name(source),
            "format": "dcf",
            "name": name,
            "shape": list(tensor.shape),
            "dtype": tensor.dtype,
            "encoding": tensor.encoding,
            "params": dict(params),
            "stored_bytes": tensor.stored_bytes,
            "directory_compression": Compression(reader.info.footer.directory_compression).name.lower(),
            "fields": fields,
            "sections": sections,
            "codebook": codebook,
            "streams": streams,
            "gap_histogram": gap_histogram,
        }


# --------------------------------------------------------------------------------------
# .net release files


def inspect_release(net, prototxt) -> dict[str, Any]:
    """Describe a ``.net`` release file layer by layer: parts, offsets, entries and density."""
    from .convert import read_release

    release = read_release(net, prototxt)
    layers = []
    for layer in release.layers:
        weights = release.weights(layer)
        nnz = int(np.count_nonzero(weights))
        layers.append({
            "name": layer.name,
            "weight_shape": list(layer.layer.weight_shape),
            "biases": layer.layer.bias_size,
            "count": layer.count,
            "nnz": nnz,
            "fillers": int(np.count_nonzero(release.indices(layer) == 0)),
            "density": nnz / weights.size if weights.size else None,
            "parts": [
                {"part": "count", "offset": layer.count_offset, "size": 4},
                {"part": "codebook", "offset": layer.codebook_offset, "size": layer.codebook_bytes},
                {"part": "biases", "offset": layer.bias_offset, "size": layer.bias_bytes},
                {"part": "indices", "offset": layer.indices_offset, "size": layer.indices_bytes},
                {"part": "gaps", "offset": layer.gaps_offset, "size": layer.gaps_bytes},
            ],
            "stored_bytes": 4 + layer.end - layer.codebook_offset,
        })
    parameters = sum(int(np.prod(l["weight_shape"])) + l["biases"] for l in layers)
    return {
        "path": release.path,
        "format": "net",
        "file_bytes": release.file_bytes,
        "layers": layers,
        "totals": {
            "layers": len(layers),
            "parameters": parameters,
            "float32_bytes": 4 * parameters,
            "file_bytes": release.file_bytes,
            "ratio": 4 * parameters / release.file_bytes if release.file_bytes else None,
        },
    }


def inspect_release_tensor(net, prototxt, name: str) -> dict[str, Any]:
    """Describe one layer of a ``.net`` file in depth, in the shape of :func:`inspect_tensor`.

    ``name`` is a layer name or its ``.weight`` tensor name. The file's streams are packed
    (no Huffman), so the symbol tables carry no code lengths.
    """
    from .convert import CODEBOOK_ENTRIES, RELEASE_BITS, RELEASE_INDEX_BITS, read_release

    release = read_release(net, prototxt)
    layer = release.layer(name)
    conv = layer.layer
    indices = release.indices(layer)
    gaps = release.gaps(layer)
    fields = [
        _field("file", layer.count_offset, 4, "count", layer.count),
        _field("file", layer.codebook_offset, layer.codebook_bytes, "codebook", f"{CODEBOOK_ENTRIES} x f32"),
        _field("file", layer.bias_offset, layer.bias_bytes, "biases", f"{conv.bias_size} x f32"),
        _field("file", layer.indices_offset, layer.indices_bytes, "indices", f"{layer.count} x u8"),
        _field("file", layer.gaps_offset, layer.gaps_bytes, "gaps",
               f"{layer.count} x 4 bits, low nibble first"),
    ]

    def stream(kind: str, symbols: np.ndarray, width: int, size: int) -> dict[str, Any]:
        return {
            "section": None, "kind": kind, "form": "packed", "width": width, "count": int(symbols.size),
            "header_bytes": 0, "payload_bits": int(symbols.size) * width,
            "entropy_bits": entropy_bits(np.bincount(symbols)) if symbols.size else 0.0,
            "max_code_length": None, "block_size": None, "block_offsets": [],
            "symbols": _symbol_table(symbols, None), "payload_bytes": size,
        }

    return {
        "path": release.path,
        "format": "net",
        "name": f"{conv.name}.weight",
        "shape": list(conv.weight_shape),
        "dtype": "float32",
        "encoding": "sparse-shared",
        "params": {"bits": RELEASE_BITS, "index_bits": RELEASE_INDEX_BITS, "n_clusters": CODEBOOK_ENTRIES,
                   "zero_slot": 0},
        "stored_bytes": 4 + layer.end - layer.codebook_offset,
        "directory_compression": None,
        "fields": fields,
        "sections": [],
        "codebook": {"values": [float(v) for v in release.codebook(layer)], "dtype": "float32",
                     "coding": "plain", "zero_slot": 0},
        "streams": [stream("assignments", indices, RELEASE_BITS, layer.indices_bytes),
                    stream("gaps", gaps, RELEASE_INDEX_BITS, layer.gaps_bytes)],
        "gap_histogram": _histogram(gaps),
    }
