"""Every single-bit flip of small files is detected, located, and never decodes silently.

For each bit of each file, either ``dcformat.open`` raises a DCFormatError naming the part
that contains the bit (preamble, directory or footer), or ``verify()`` reports a problem for
that part (the section, its padding, or the digest). A flip inside a tensor's section makes
``get`` of that tensor raise, while every other tensor still decodes to its original values.
"""

from __future__ import annotations

import io

import numpy as np
import pytest

import dcformat
from dcformat import encodings
from dcformat.constants import FOOTER_SIZE, PREAMBLE_SIZE, Encoding
from dcformat.container import ContainerWriter, parse_container
from dcformat.errors import (
    BadMagicError,
    ChecksumError,
    DCFormatError,
    ReservedFieldError,
    TruncatedError,
    UnsupportedVersionError,
)


def _raw_file() -> bytes:
    rng = np.random.default_rng(1)
    buffer = io.BytesIO()
    writer = ContainerWriter(buffer)
    writer.add_tensor(encodings.encode_raw("plain", rng.standard_normal(48).astype(np.float32), compression="none"))
    writer.add_tensor(encodings.encode_raw("int8.zstd", (np.arange(200) % 7).astype(np.int8), compression="zstd"))
    writer.add_tensor(encodings.encode_raw("shuffled", np.linspace(-1, 1, 64, dtype=np.float32).reshape(8, 8),
                                           compression="zstd"))
    writer.add_tensor(encodings.encode_raw("flags", rng.random(11) > 0.5, compression="none"))
    writer.add_user_section("license", b"MIT")
    writer.close({"user": {"accuracy": 0.5}})
    return buffer.getvalue()


def _saved(tensors, **settings) -> bytes:
    buffer = io.BytesIO()
    config = dcformat.Config(defaults={"prune": False, **settings}, min_elements=0,
                             rules=(dcformat.Rule("*.huffman", {"stream": "huffman"}),
                                    dcformat.Rule("*.packed", {"stream": "packed"})))
    dcformat.save(tensors, buffer, config)
    return buffer.getvalue()


def _files() -> dict[str, bytes]:
    rng = np.random.default_rng(2)
    dense = rng.standard_normal((12, 20)).astype(np.float32)
    sparse = dense * (rng.random((12, 20)) < 0.1)
    return {
        "raw": _raw_file(),
        "shared": _saved({"w.packed": dense, "w.huffman": dense[:6]}, encoding="shared", bits=3),
        "sparse-shared": _saved({"w.packed": sparse, "w.huffman": sparse}, encoding="sparse-shared", bits=3,
                                index_bits=2),
        "uniform": _saved({"w.packed": dense, "c.huffman": dense.reshape(4, 3, 20)}, encoding="uniform", bits=4,
                          per_channel=True),
    }


FILES = _files()


def _regions(data: bytes) -> tuple[list[tuple[int, int, str]], dict[int, str]]:
    """Return (start, end, part) of every byte range of the file, and each section's tensor."""
    info = parse_container(memoryview(data))
    regions = [(0, 8, "preamble:magic"), (8, 10, "preamble:major_version"),
               (10, 12, "preamble:minor_version"), (12, 16, "preamble:reserved")]
    previous_end = PREAMBLE_SIZE
    for section in info.sections:
        if section.offset > previous_end:
            regions.append((previous_end, section.offset, f"padding before section[{section.index}]"))
        regions.append((section.offset, section.end, f"section[{section.index}]"))
        previous_end = section.end
    footer = len(data) - FOOTER_SIZE
    regions += [
        (info.footer.directory_offset, footer, "directory"),
        (footer, footer + 40, "footer:fields"), (footer + 40, footer + 44, "footer:footer_crc32"),
        (footer + 44, footer + 48, "footer:reserved"), (footer + 48, footer + 80, "footer:digest"),
        (footer + 80, len(data), "footer:footer_magic"),
    ]
    owners: dict[int, str] = {}
    by_index = {record.index: record for record in info.tensors}
    for record in info.tensors:
        owner = record
        # A factor's sections belong to the lowrank tensor that lists it.
        for candidate in info.tensors:
            if candidate.encoding == Encoding.LOWRANK and record.index in (
                    int.from_bytes(candidate.params[4:8], "little"), int.from_bytes(candidate.params[8:12], "little")):
                owner = by_index[candidate.index]
        for index in range(record.first_section, record.first_section + record.section_count):
            owners[index] = owner.name
    return regions, owners


# Error class that open() raises for a flip in each part it reads.
OPEN_ERRORS = {
    "preamble:magic": BadMagicError,
    "preamble:major_version": UnsupportedVersionError,
    "preamble:reserved": ReservedFieldError,
    "directory": ChecksumError,
    "footer:fields": ChecksumError,
    "footer:footer_crc32": ChecksumError,
    "footer:reserved": ReservedFieldError,
    "footer:footer_magic": TruncatedError,
}


def test_files_cover_each_encoding():
    for kind, data in FILES.items():
        with dcformat.open(data) as reader:
            encodings_used = {reader.tensor_info(name).encoding for name in reader.keys()}
        assert encodings_used == {kind}
        assert len(data) < 4096


@pytest.mark.parametrize("kind", sorted(FILES))
def test_every_bit_flip_detected(kind):
    data = FILES[kind]
    regions, owners = _regions(data)
    assert sum(end - start for start, end, _ in regions) == len(data), "regions must tile the file"
    originals = dcformat.load(data)
    buffer = bytearray(data)
    failures: list[str] = []

    for start, end, part in regions:
        for position in range(start, end):
            for bit in range(8):
                buffer[position] ^= 1 << bit
                problem = _check_flip(bytes(buffer), part, owners, originals)
                buffer[position] ^= 1 << bit
                if problem:
                    failures.append(f"byte {position} bit {bit} ({part}): {problem}")

    assert not failures, f"{len(failures)} flips not handled, first: {failures[:5]}"


def _check_flip(data: bytes, part: str, owners: dict[int, str], originals: dict) -> str | None:
    """Return what is wrong with how the reader handled one flipped file, or None."""
    try:
        reader = dcformat.open(data)
    except DCFormatError as error:
        expected = OPEN_ERRORS.get(part)
        if expected is None:
            return f"open raised {type(error).__name__}: {error}, but {part} is not read by open"
        if not isinstance(error, expected):
            return f"open raised {type(error).__name__}, expected {expected.__name__}"
        if error.section != part.split(":")[0]:
            return f"the error names section {error.section!r}, expected {part.split(':')[0]!r}"
        return None
    if part in OPEN_ERRORS:
        return "open accepted the file"

    with reader:
        report = reader.verify()
        if report.ok:
            return "verify() reported no problem"
        named = [p["part"] for p in report.problems]
        if part.startswith("section["):
            if not any(name.startswith(part + " ") for name in named):
                return f"verify() names {named}, not {part}"
        elif part.startswith("padding"):
            if part not in named:
                return f"verify() names {named}, not {part}"
        elif named != ["digest"]:
            # The minor version and the digest are covered by the digest alone.
            return f"verify() names {named}, expected only the digest"

        damaged = owners.get(int(part[8:part.index("]")])) if part.startswith("section[") else None
        for name in reader.keys():
            if name == damaged:
                try:
                    reader.get(name)
                except ChecksumError:
                    continue
                except DCFormatError as error:
                    # Raising at all keeps the data from being used, but the CRC-32 is meant
                    # to be checked before any decoding.
                    return f"get({name!r}) raised {type(error).__name__} before checking the CRC-32"
                return f"get({name!r}) returned data from a damaged section"
            decoded = reader.get(name)
            if decoded.tobytes() != originals[name].tobytes():
                return f"get({name!r}) changed although its sections are intact"
    return None
