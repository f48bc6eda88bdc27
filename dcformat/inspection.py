"""What a DCF file contains and whether it is intact, as JSON-ready data.

:func:`inspect_file` describes the container (version, flags, alignment, directory, every
section) and each tensor (encoding, bits, density, stored size, stream forms, checksum
status). :func:`verify_file` runs full verification (spec/FORMAT.md section 10) and returns
the problems found instead of raising. Both return plain dicts of str, int, float, bool,
None, lists and dicts, which ``json.dumps`` accepts as they are. The command-line tool only
formats them.
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np

from .constants import Compression, OptionalFlag, RequiredFlag, SectionKind, StreamForm
from .container import Section, crc32
from .errors import DCFormatError
from .reader import DCFReader
from .streams import read_stream_info

__all__ = ["inspect_file", "verify_file"]

STREAM_KINDS = (SectionKind.ASSIGNMENTS, SectionKind.GAPS, SectionKind.LEVELS)


def _source_name(source) -> str:
    if isinstance(source, (str, os.PathLike)):
        return os.fspath(source)
    if isinstance(source, (bytes, bytearray, memoryview)):
        return "<bytes>"
    return str(getattr(source, "name", "<stream>"))


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
