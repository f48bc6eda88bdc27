"""Mutation fuzzer for the DCF reader: every input must decode or raise a DCFormatError.

Usage::

    python tools/fuzz.py --cases 100000 --seed 1 [--jobs 2] [--out summary.json]
                         [--reproducers fixtures/malformed/fuzz] [--max-tensor-mib 64]

The seeds are small valid files that this script builds with dcformat's own writer, plus
every ``fixtures/vectors/*.dcf`` of up to 64 KB. Together they contain every encoding and
stream form: raw none/zstd/shuffled, shared, sparse-shared with fillers, uniform per tensor
and per channel, lowrank, packed and Huffman streams (several blocks too), delta-coded
codebooks, user sections and metadata.

Each case takes one seed and mutates it. Most mutations work on a parsed model of the file
(sections, tensor records, user sections, metadata, footer fields) and serialise it again
with every CRC-32, the footer and the digest recomputed, so that the damage reaches the
decoders instead of stopping at a checksum. The others damage raw bytes: bit flips, extreme
values, truncation and trailing bytes. A case then opens the file and calls ``verify``,
``metadata``, ``tensor_info``, ``get``, ``get_entries`` and ``get_sparse`` on every
tensor, and runs ``streams.decode_stream`` (whole and on a random slice) and
``sparse.positions_from_gaps`` directly on every stream section.

Any exception that is not a :class:`dcformat.DCFormatError` is a bug, and so is a warning
(it becomes an exception under ``-W error``): the mutated file is written to the reproducer
folder, named after the exception, and listed in the summary. So is a case in which one
call (open, get, verify, ...) runs longer than ``--slow-seconds`` (1 s by default). Peak
memory is the resident-set high-water mark of each case above what the process held
before it (Linux ``VmHWM``, reset before every case through ``/proc/self/clear_refs``). An
address-space cap per worker process turns a runaway allocation into a ``MemoryError``,
which the summary reports as a bug.

A small share of cases (``AMPLIFY_RATE``) blow one tensor up to ``--max-tensor-mib`` while
its sections stay a few bytes, to measure the time and memory a small file can cost.

The summary is JSON: counts per outcome, per call result and per error class, the uncaught
exceptions with their reproducer paths, the slow cases, the slowest case and call, the peak
memory and the time taken. Each slow case is run again alone at the end, and its
``seconds_alone`` tells a slow call from one that the other workers slowed down. The exit
status is 1 when a case raised anything but a DCFormatError, timed out, or was still slow
when run alone.
"""

from __future__ import annotations

import argparse
import copy
import hashlib
import io
import json
import multiprocessing
import os
import re
import resource
import signal
import sys
import time
import traceback
import warnings
import zlib
from dataclasses import dataclass, field
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

# One BLAS thread per worker: the lowrank product is the only BLAS call, and idle BLAS
# threads reserve address space that the per-worker cap would otherwise count.
for _variable in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_variable, "1")

import ml_dtypes  # noqa: E402
import numpy as np  # noqa: E402
import zstandard  # noqa: E402

import dcformat  # noqa: E402
from dcformat import encodings, sparse, streams  # noqa: E402
from dcformat.constants import (  # noqa: E402
    FOOTER_MAGIC,
    FOOTER_SIZE,
    MAX_NAME_BYTES,
    MAX_SECTIONS,
    MAX_TENSORS,
    NUMPY_DTYPES,
    Compression,
    DType,
    SectionKind,
    StreamForm,
)
from dcformat.container import (  # noqa: E402
    ContainerWriter,
    align_up,
    parse_container,
    read_directory_bytes,
    read_footer,
    section_bytes,
)
from dcformat.errors import DCFormatError  # noqa: E402

__all__ = ["build_seeds", "seed_features", "Seed", "FileModel", "mutate", "exercise", "run",
           "crafted_reproducers", "write_crafted_reproducers", "main"]

STREAM_KINDS = (SectionKind.ASSIGNMENTS, SectionKind.GAPS, SectionKind.LEVELS)
DEFAULT_MAX_TENSOR_BYTES = 64 * 1024 * 1024
DEFAULT_SLOW_SECONDS = 1.0
# A case still running after this many seconds is interrupted and reported as a timeout.
CASE_TIMEOUT_SECONDS = 20
# Address space each worker may add on top of what it uses after start-up. A decode is
# capped at --max-tensor-mib, and the largest legitimate decode temporaries measured stay
# well inside this; anything above it is a runaway allocation.
DEFAULT_MEMORY_HEADROOM_MIB = 3072
# Share of cases that blow one tensor up to the decode limit (each such case decodes up to
# --max-tensor-mib of data, so they dominate the run time even when rare).
AMPLIFY_RATE = 0.002
# Larger test vectors are left out of the seeds: a case's cost grows with its file.
MAX_VECTOR_SEED_BYTES = 64 * 1024

# Interesting integers per field width: edges of every unsigned and signed range, and the
# reader's named caps, so that each mutation hits a boundary rather than a random value.
_EDGES = (0, 1, 2, 3, 7, 8, 15, 16, 31, 32, 33, 63, 64, 127, 128, 255, 256, 1023, 1024, 1025,
          4095, 4096, 65535, 65536, MAX_NAME_BYTES, MAX_TENSORS, MAX_TENSORS + 1, MAX_SECTIONS,
          MAX_SECTIONS + 1, (1 << 31) - 1, 1 << 31, (1 << 32) - 1, 1 << 32, (1 << 32) + 1,
          (1 << 40), (1 << 62), (1 << 63) - 1, 1 << 63, (1 << 64) - 1)


# ---------------------------------------------------------------------------------------
# Seeds


@dataclass
class Seed:
    """A valid file to mutate, with the parsed model that mutations start from."""

    name: str
    data: bytes
    model: "FileModel | None" = None


def _write(build) -> bytes:
    buffer = io.BytesIO()
    build(buffer)
    return buffer.getvalue()


def _save(tensors, config, metadata=None) -> bytes:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return _write(lambda target: dcformat.save(tensors, target, config, metadata=metadata))


def build_seeds(*, include_vectors: bool = True) -> list[Seed]:
    """Build the valid seed files; every encoding, stream form and optional part appears.

    Each file is a few hundred bytes to a few KB, so that a case costs milliseconds.
    """
    rng = np.random.default_rng(7)
    seeds: list[Seed] = []

    def config(**defaults):
        return dcformat.Config(defaults=defaults, min_elements=0)

    weights = rng.standard_normal((16, 24)).astype(np.float32)
    sparse_weights = weights * (rng.random((16, 24)) < 0.08)  # long zero runs: fillers at 2 bits

    # Raw in every byte-level form, written directly so each form is certain to appear.
    def raw_variants(target):
        writer = ContainerWriter(target, alignment_log2=6)
        writer.add_tensor(encodings.encode_raw("raw.none", rng.standard_normal(10).astype(np.float32),
                                               compression="none"))
        writer.add_tensor(encodings.encode_raw("raw.zstd.int8", np.arange(96, dtype=np.int8) % 5,
                                               compression="zstd"))
        smooth = np.linspace(-1, 1, 64, dtype=np.float32).reshape(8, 8)
        writer.add_tensor(encodings.encode_raw("raw.shuffled", smooth, compression="zstd"))
        writer.add_tensor(encodings.encode_raw("raw.bool", rng.random(13) > 0.5, compression="none"))
        writer.add_tensor(encodings.encode_raw(
            "raw.bf16", np.linspace(-2, 2, 6, dtype=np.float32).astype(ml_dtypes.bfloat16), compression="none"))
        writer.add_tensor(encodings.encode_raw("raw.scalar", np.array(3.5, dtype=np.float64), compression="none"))
        writer.add_tensor(encodings.encode_raw("raw.empty", np.zeros((0, 3), np.float32), compression="none"))
        writer.add_user_section("license", b"MIT licence text")
        writer.add_user_section("labels", bytes(range(40)))
        writer.close({"user": {"accuracy": 0.98, "tags": ["a", "b"], "nested": {"k": [1, 2.5, True]}}})

    seeds.append(Seed("raw_variants", _write(raw_variants)))

    # Shared weights, packed and Huffman, dense.
    for form in ("packed", "huffman"):
        seeds.append(Seed(f"shared_{form}", _save(
            {"fc.weight": weights}, config(encoding="shared", bits=3, stream=form, prune=False))))

    # Sparse-shared with fillers (2-bit gaps over long zero runs), packed and Huffman.
    for form in ("packed", "huffman"):
        seeds.append(Seed(f"sparse_{form}", _save(
            {"fc.weight": sparse_weights},
            config(encoding="sparse-shared", bits=3, index_bits=2, stream=form, prune=False))))

    # Uniform, per tensor and per channel.
    for per_channel in (False, True):
        seeds.append(Seed(f"uniform_{'channel' if per_channel else 'tensor'}", _save(
            {"conv.weight": rng.standard_normal((4, 3, 2, 2)).astype(np.float32)},
            config(encoding="uniform", bits=4, per_channel=per_channel, prune=False, stream="huffman"))))

    # Lowrank, whose factors are tensors of their own.
    seeds.append(Seed("lowrank", _save(
        {"proj.weight": rng.standard_normal((6, 10)).astype(np.float32)},
        config(encoding="lowrank", rank=2))))

    # A small model under the default settings, with metadata.
    model = {
        "fc1.weight": rng.standard_normal((20, 16)).astype(np.float32),
        "fc1.bias": rng.standard_normal(20).astype(np.float32),
        "fc2.weight": rng.standard_normal((4, 20)).astype(np.float16),
        "steps": np.array(12, dtype=np.int64),
    }
    seeds.append(Seed("model_defaults", _save(model, dcformat.Config(min_elements=64),
                                              metadata={"accuracy": 0.5})))

    # Huffman streams of several blocks, delta-coded codebooks and an uncompressed directory
    # with no alignment: built from encodings so that each is certain to appear.
    def crafted(target):
        writer = ContainerWriter(target, alignment_log2=0, directory_compression=Compression.NONE)
        codebook = np.sort(rng.standard_normal(16)).astype(np.float32)
        assignments = rng.integers(0, 16, size=200).astype(np.uint8)
        entry = encodings.encode_shared("blocks", np.dtype(np.float32), (10, 20), codebook, assignments, 4,
                                        stream_form=StreamForm.HUFFMAN, codebook_coding="delta")
        entry.sections[1].data = streams.encode_stream(assignments, 4, form=StreamForm.HUFFMAN, block_size=16)
        writer.add_tensor(entry)
        dense = np.zeros(300, dtype=np.uint8)
        dense[rng.choice(300, 25, replace=False)] = rng.integers(1, 8, size=25)
        sparse_codebook = np.concatenate([[0.0], np.linspace(0.1, 0.7, 7)]).astype(np.float16)
        entry = encodings.encode_sparse_shared("sparse.f16", np.dtype(np.float16), (300,), sparse_codebook,
                                               dense, 3, 3, 0, stream_form=StreamForm.HUFFMAN,
                                               codebook_coding="delta")
        gaps_symbols = entry.symbols[SectionKind.GAPS]
        entry.sections[2].data = streams.encode_stream(gaps_symbols, 3, form=StreamForm.HUFFMAN, block_size=4)
        writer.add_tensor(entry)
        writer.add_tensor(encodings.encode_uniform(
            "levels", np.dtype(np.float32), (3, 5), rng.integers(0, 4, size=15).astype(np.uint8), 2,
            np.array([0.5, 0.25, 1.0]), np.array([1, 2, 0]), per_channel=True, stream_form=StreamForm.PACKED))
        writer.close({})

    seeds.append(Seed("crafted_blocks", _write(crafted)))

    for seed in seeds:
        seed.model = FileModel.parse(seed.data)
    if include_vectors:
        seeds.extend(_vector_seeds())
    return seeds


def _vector_seeds() -> list[Seed]:
    """Seeds from fixtures/vectors: the small files that open, others are left out."""
    seeds = []
    for path in sorted((REPO_ROOT / "fixtures" / "vectors").glob("*.dcf")):
        data = path.read_bytes()
        if len(data) > MAX_VECTOR_SEED_BYTES:
            continue
        try:
            seeds.append(Seed(f"vector:{path.stem}", data, FileModel.parse(data)))
        except DCFormatError as error:
            print(f"fuzz: skipping {path}: {error}", file=sys.stderr)
    return seeds


def seed_features(seeds: list[Seed]) -> set[str]:
    """Return the encodings, stream forms and optional parts that ``seeds`` contain."""
    features: set[str] = set()
    for seed in seeds:
        with dcformat.open(seed.data) as reader:
            info = reader.info
            features.add(f"directory:{'zstd' if info.footer.directory_compression else 'none'}")
            features.add(f"alignment_log2:{info.footer.alignment_log2}")
            if info.user_sections:
                features.add("user sections")
            if info.metadata.get("user"):
                features.add("user metadata")
            for record in info.tensors:
                params = encodings.parse_params(record)
                name = dcformat.constants.ENCODING_NAMES[record.encoding]
                features.add(name)
                if isinstance(params, encodings.RawParams):
                    features.add(f"raw:{('none', 'zstd')[params.compression]}{'+shuffle' if params.shuffle else ''}")
                if isinstance(params, encodings.SharedParams):
                    features.add(f"codebook:{('plain', 'delta')[params.codebook_coding]}")
                if isinstance(params, encodings.UniformParams):
                    features.add("uniform:per-channel" if params.axis == 0 else "uniform:per-tensor")
                for index in range(record.first_section, record.first_section + record.section_count):
                    section = info.sections[index]
                    if section.kind not in STREAM_KINDS:
                        continue
                    data = section_bytes(reader._source.buffer, section)
                    stream = streams.read_stream_info(data, section=section.kind_name)
                    features.add(f"stream:{stream.form.name.lower()}")
                    if stream.block_offsets.size:
                        features.add("stream:huffman blocks")
                    if section.kind == SectionKind.GAPS and isinstance(params, encodings.SharedParams):
                        gaps = streams.decode_stream(data, count=stream.count, width=stream.width, section="gaps")
                        if np.any(gaps == (1 << params.index_bits) - 1):
                            features.add("sparse-shared:fillers")
    return features


# ---------------------------------------------------------------------------------------
# A mutable model of a file, serialised with fresh checksums


@dataclass
class SectionModel:
    kind: int
    data: bytes
    # Overrides of the table entry; None means "computed from the layout".
    offset: int | None = None
    size: int | None = None
    crc: int | None = None
    reserved: bytes = b"\0\0\0"
    # Index of another section whose bytes this entry points at instead of bytes of its own.
    alias: int | None = None


@dataclass
class TensorModel:
    name: bytes
    dtype: int
    ndim: int
    encoding: int
    version: int
    flags: int
    shape: list[int]
    first: int
    count: int
    params: bytes
    reserved: bytes = b"\0\0\0"
    name_size: int | None = None
    params_size: int | None = None


@dataclass
class FileModel:
    """The parts of a file, in the field order of spec/FORMAT.md, for mutate-and-rebuild."""

    preamble: bytes
    sections: list[SectionModel]
    tensors: list[TensorModel]
    users: list[tuple[bytes, int]]
    metadata: bytes
    alignment_log2: int
    compression: int
    required_flags: int
    optional_flags: int
    footer_reserved: bytes = b"\0\0"
    footer_reserved2: bytes = b"\0\0\0\0"
    # Directory header overrides (None: the real count).
    counts: dict[str, int] = field(default_factory=dict)
    # Footer overrides: directory_offset, directory_stored_size, directory_size.
    footer_fields: dict[str, int] = field(default_factory=dict)

    @classmethod
    def parse(cls, data: bytes) -> "FileModel":
        buffer = memoryview(data)
        info = parse_container(buffer)
        footer = info.footer
        sections = [SectionModel(s.kind, bytes(buffer[s.offset:s.end])) for s in info.sections]
        tensors = [
            TensorModel(r.name.encode("utf-8"), int(r.dtype), len(r.shape), r.encoding, r.encoding_version,
                        r.flags, list(r.shape), r.first_section, r.section_count, bytes(r.params))
            for r in info.tensors
        ]
        users = [(name.encode("utf-8"), index) for name, index in info.user_sections.items()]
        directory = bytes(read_directory_bytes(buffer, footer))
        metadata = directory[len(directory) - info.metadata_size:] if info.metadata_size else b""
        return cls(bytes(buffer[:16]), sections, tensors, users, metadata, footer.alignment_log2,
                   footer.directory_compression, footer.required_flags, footer.optional_flags)

    def copy(self) -> "FileModel":
        return copy.deepcopy(self)

    # Serialisation

    def layout(self) -> tuple[bytes, list[tuple[int, int, int]]]:
        """Return the bytes before the directory and each section's (offset, size, crc)."""
        out = bytearray(self.preamble)
        placed: list[tuple[int, int, int] | None] = []
        for section in self.sections:
            if section.alias is not None:
                placed.append(None)
                continue
            # A declared alignment above the maximum still lays out at the maximum, so the
            # footer field is what the reader rejects.
            pad = align_up(len(out), min(self.alignment_log2, 16)) - len(out)
            out += bytes(pad)
            placed.append((len(out), len(section.data), zlib.crc32(section.data)))
            out += section.data
        entries = []
        for index, section in enumerate(self.sections):
            base = placed[index]
            if base is None:
                target = placed[section.alias] if 0 <= section.alias < len(placed) else None
                base = target if target is not None else (len(out), 0, 0)
            offset = base[0] if section.offset is None else section.offset
            size = base[1] if section.size is None else section.size
            crc = base[2] if section.crc is None else section.crc
            entries.append((offset, size, crc))
        return bytes(out), entries

    def directory(self, entries: list[tuple[int, int, int]]) -> bytes:
        parts = []
        counts = {
            "section_count": len(self.sections), "tensor_count": len(self.tensors),
            "user_section_count": len(self.users), "metadata_size": len(self.metadata),
        }
        counts.update(self.counts)
        for key in ("section_count", "tensor_count", "user_section_count", "metadata_size"):
            parts.append(_u(counts[key], 4))
        for section, (offset, size, crc) in zip(self.sections, entries):
            parts.append(_u(offset, 8) + _u(size, 8) + _u(crc, 4) + _u(section.kind, 1) + section.reserved)
        for tensor in self.tensors:
            name_size = len(tensor.name) if tensor.name_size is None else tensor.name_size
            params_size = len(tensor.params) if tensor.params_size is None else tensor.params_size
            parts.append(
                _u(name_size, 2) + tensor.name + bytes([tensor.dtype & 0xFF, tensor.ndim & 0xFF,
                                                        tensor.encoding & 0xFF, tensor.version & 0xFF,
                                                        tensor.flags & 0xFF])
                + tensor.reserved + b"".join(_u(dim, 8) for dim in tensor.shape)
                + _u(tensor.first, 4) + _u(tensor.count, 4) + _u(params_size, 2) + tensor.params
            )
        for name, index in self.users:
            parts.append(_u(len(name), 2) + name + _u(index, 4))
        parts.append(self.metadata)
        return b"".join(parts)

    def serialize(self, directory_edit=None, stored_edit=None) -> bytes:
        body, entries = self.layout()
        directory = self.directory(entries)
        if directory_edit is not None:
            directory = directory_edit(directory)
        return assemble(body, directory, self, stored_edit)


def _u(value: int, width: int) -> bytes:
    return (int(value) & ((1 << (8 * width)) - 1)).to_bytes(width, "little")


_DIRECTORY_COMPRESSOR = zstandard.ZstdCompressor(level=1, write_content_size=True, write_checksum=False)


def assemble(body: bytes, directory: bytes, model: FileModel, stored_edit=None) -> bytes:
    """Append the directory and a footer with correct CRC-32s and digest to ``body``.

    ``stored_edit`` changes the directory as stored (the zstd frame, when compressed) before
    its CRC-32 is computed.
    """
    stored = _DIRECTORY_COMPRESSOR.compress(directory) if model.compression == 1 else directory
    if stored_edit is not None:
        stored = stored_edit(stored, directory)
    directory_offset = len(body)
    values = {"directory_offset": directory_offset, "directory_stored_size": len(stored),
              "directory_size": len(directory)}
    values.update(model.footer_fields)
    fields = (
        _u(values["directory_offset"], 8) + _u(values["directory_stored_size"], 8)
        + _u(values["directory_size"], 8) + _u(zlib.crc32(stored), 4) + _u(model.required_flags, 4)
        + _u(model.optional_flags, 4) + _u(model.alignment_log2, 1) + _u(model.compression, 1)
        + model.footer_reserved
    )
    head = body + stored + fields + _u(zlib.crc32(fields), 4) + model.footer_reserved2
    return head + hashlib.sha256(head).digest() + FOOTER_MAGIC


def refresh_digest(data: bytes) -> bytes:
    """Recompute the footer CRC-32 and the digest after a raw edit of footer fields."""
    if len(data) < FOOTER_SIZE:
        return data
    base = len(data) - FOOTER_SIZE
    out = bytearray(data)
    out[base + 40:base + 44] = _u(zlib.crc32(out[base:base + 40]), 4)
    out[base + 48:base + 80] = hashlib.sha256(bytes(out[:base + 48])).digest()
    return bytes(out)


# ---------------------------------------------------------------------------------------
# Mutations


def _interesting(rng: np.random.Generator, width: int, current: int | None = None) -> int:
    """Return a value for a field of ``width`` bytes: an edge, a neighbour of the value, or noise."""
    mask = (1 << (8 * width)) - 1
    roll = rng.random()
    if current is not None and roll < 0.35:
        delta = int(rng.choice([-2, -1, 1, 2, 8, -8, 64]))
        choice = rng.integers(0, 4)
        if choice == 0:
            return (current + delta) & mask
        if choice == 1:
            return (current * 2) & mask
        if choice == 2:
            return (current // 2) & mask
        return current ^ (1 << int(rng.integers(0, 8 * width)))
    if roll < 0.8:
        edges = [e for e in _EDGES if e <= mask] + [mask, mask >> 1, (mask >> 1) + 1]
        value = int(rng.choice(edges))
        return value if rng.random() < 0.85 else (-value) & mask  # negative as two's complement
    return int(rng.integers(0, 1 << min(63, 8 * width), dtype=np.uint64)) & mask


def _set_int(buffer: bytearray, offset: int, width: int, value: int) -> None:
    buffer[offset:offset + width] = _u(value, width)


def _get_int(buffer, offset: int, width: int) -> int:
    return int.from_bytes(buffer[offset:offset + width], "little")


def _stream_fields(data: bytes) -> list[tuple[int, int]]:
    """(offset, width) of every header field of a stream section, and a few payload words."""
    fields = [(0, 1), (1, 1), (2, 1), (3, 1), (4, 8)]
    if len(data) >= 28 and data[0] == StreamForm.HUFFMAN:
        fields += [(12, 4), (16, 4), (20, 8)]
        alphabet = _get_int(data, 12, 4)
        lengths_end = 28 + (5 * min(alphabet, 1 << 16) + 7) // 8
        for offset in range(28, min(lengths_end, len(data))):
            fields.append((offset, 1))
        count = _get_int(data, 4, 8)
        block_size = max(1, _get_int(data, 16, 4))
        entries = max(0, -(-min(count, 1 << 20) // block_size) - 1)
        for j in range(min(entries, 64)):
            at = lengths_end + 8 * j
            if at + 8 <= len(data):
                fields.append((at, 8))
    return fields


def _code_length_edit(rng, data: bytearray) -> None:
    """Set one 5-bit code length of a Huffman stream to a random value from 0 to 31."""
    alphabet = _get_int(data, 12, 4)
    if alphabet == 0 or alphabet > 1 << 16:
        return
    if rng.random() < 0.1:
        # No symbol with a code at all.
        end = min(len(data), 28 + (5 * alphabet + 7) // 8)
        data[28:end] = bytes(end - 28)
        return
    symbol = int(rng.integers(0, alphabet))
    bit = 28 * 8 + 5 * symbol
    value = int(rng.integers(0, 32))
    for k in range(5):
        position = bit + k
        byte, shift = divmod(position, 8)
        if byte >= len(data):
            return
        mask = 0x80 >> shift
        if value >> (4 - k) & 1:
            data[byte] |= mask
        else:
            data[byte] &= ~mask & 0xFF


def _mutate_section_content(rng, model: FileModel, donors: list[FileModel]) -> str:
    """Edit the bytes of one section; the layout recomputes its CRC-32 and size."""
    candidates = [i for i, s in enumerate(model.sections) if s.alias is None]
    if not candidates:
        return "no section"
    index = int(rng.choice(candidates))
    section = model.sections[index]
    data = bytearray(section.data)
    roll = rng.random()
    if section.kind in STREAM_KINDS and len(data) >= 12 and roll < 0.55:
        if data[0] == StreamForm.HUFFMAN and len(data) >= 28 and rng.random() < 0.25:
            _code_length_edit(rng, data)
            section.data = bytes(data)
            return f"section[{index}] code length"
        offset, width = _stream_fields(bytes(data))[int(rng.integers(0, len(_stream_fields(bytes(data)))))]
        _set_int(data, offset, width, _interesting(rng, width, _get_int(data, offset, width)))
        section.data = bytes(data)
        return f"section[{index}] stream field at {offset}"
    if bytes(data[:4]) == ZSTD_MAGIC and roll < 0.75:
        section.data = _zstd_reframe(rng, bytes(data))
        return f"section[{index}] zstd frame"
    if roll < 0.7 and data:
        # An aligned word of a codebook, qparams or raw section: NaN, infinity, edges.
        width = int(rng.choice([1, 2, 4, 8]))
        offset = int(rng.integers(0, max(1, len(data) - width + 1)))
        if rng.random() < 0.7:
            offset -= offset % width
        if offset + width <= len(data):
            if width == 4 and rng.random() < 0.4:
                value = int(rng.choice([0x7FC00000, 0x7F800000, 0xFF800000, 0x80000000, 0x00000001]))
            else:
                value = _interesting(rng, width, _get_int(data, offset, width))
            _set_int(data, offset, width, value)
        section.data = bytes(data)
        return f"section[{index}] word at {offset}"
    if roll < 0.8:
        # Resize: cut or extend the section, which shifts every later section.
        if data and rng.random() < 0.6:
            section.data = bytes(data[: int(rng.integers(0, len(data)))])
            return f"section[{index}] cut"
        section.data = bytes(data) + bytes(rng.integers(0, 256, size=int(rng.integers(1, 24)), dtype=np.uint8))
        return f"section[{index}] extended"
    if roll < 0.9 and donors:
        # Splice in a section of the same kind from another seed: valid-looking content of
        # the wrong size or width for this tensor.
        donor = donors[int(rng.integers(0, len(donors)))]
        same = [s for s in donor.sections if s.kind == section.kind and s.alias is None]
        if same:
            section.data = same[int(rng.integers(0, len(same)))].data
            return f"section[{index}] spliced"
    for _ in range(int(rng.integers(1, 4))):
        if data:
            position = int(rng.integers(0, len(data)))
            data[position] ^= 1 << int(rng.integers(0, 8))
    section.data = bytes(data)
    return f"section[{index}] bit flips"


def _mutate_record(rng, model: FileModel) -> str:
    """Change one field of one tensor record to a boundary value."""
    if not model.tensors:
        return "no tensor"
    index = int(rng.integers(0, len(model.tensors)))
    tensor = model.tensors[index]
    if tensor.encoding == 4 and len(tensor.params) == 12 and rng.random() < 0.5:
        # Lowrank links: rank 0, one factor twice, itself, a missing factor, no dimensions.
        rank, left, right = (_get_int(tensor.params, k, 4) for k in (0, 4, 8))
        choice = int(rng.integers(0, 6))
        if choice == 0:
            rank = int(rng.choice([0, 1, rank + 1, (1 << 32) - 1]))
        elif choice == 1:
            right = left
        elif choice == 2:
            left = index
        elif choice == 3:
            left, right = right, left
        elif choice == 4:
            right = _interesting(rng, 4, right)
        else:
            tensor.shape, tensor.ndim = [], 0
        tensor.params = _u(rank, 4) + _u(left, 4) + _u(right, 4)
        return f"tensor[{index}] lowrank link {choice}"
    choice = int(rng.integers(0, 13))
    if choice == 0:
        tensor.dtype = int(rng.choice([0, 1, 2, 3, 4, 7, 9, 12, 13, 255]))
    elif choice == 1:
        # A different number of dimensions, with or without the shape to match.
        new = int(rng.choice([0, 1, 2, 3, 32, 33, 255]))
        tensor.ndim = new
        if rng.random() < 0.7 and new <= 40:
            tensor.shape = (tensor.shape + [1] * new)[:new]
    elif choice in (2, 3, 4):
        if tensor.shape:
            dim = int(rng.integers(0, len(tensor.shape)))
            tensor.shape[dim] = _interesting(rng, 8, tensor.shape[dim])
        else:
            tensor.shape = [_interesting(rng, 8)]
            tensor.ndim = 1
    elif choice == 5:
        tensor.encoding = int(rng.choice([0, 1, 2, 3, 4, 5, 255]))
    elif choice == 6:
        tensor.version = int(rng.choice([0, 2, 255]))
    elif choice == 7:
        tensor.flags = int(rng.choice([0, 1, 2, 0x80, 0xFF]))
    elif choice == 8:
        tensor.first = _interesting(rng, 4, tensor.first)
    elif choice == 9:
        tensor.count = _interesting(rng, 4, tensor.count)
    elif choice in (10, 11):
        params = bytearray(tensor.params)
        if params:
            width = int(rng.choice([1, 2, 4]))
            offset = int(rng.integers(0, len(params)))
            width = min(width, len(params) - offset)
            _set_int(params, offset, width, _interesting(rng, width, _get_int(params, offset, width)))
        tensor.params = bytes(params)
    else:
        roll = rng.random()
        if roll < 0.3:
            tensor.params = tensor.params[:-1]
        elif roll < 0.6:
            tensor.params = tensor.params + bytes([int(rng.integers(0, 256))])
        elif roll < 0.8:
            tensor.params_size = _interesting(rng, 2, len(tensor.params))
        else:
            tensor.reserved = bytes([0, int(rng.integers(1, 256)), 0])
    return f"tensor[{index}] field {choice}"


def _mutate_structure(rng, model: FileModel) -> str:
    """Duplicate, alias, overlap, reorder or drop sections and records; clash names."""
    choice = int(rng.integers(0, 12))
    sections, tensors = model.sections, model.tensors
    if choice == 0 and len(sections) >= 2:
        # Two entries for the same bytes.
        i, j = (int(v) for v in rng.choice(len(sections), 2, replace=False))
        sections[j].alias = i
        return f"section[{j}] aliases section[{i}]"
    if choice == 1 and len(sections) >= 2:
        # An entry that starts inside the previous section.
        j = int(rng.integers(1, len(sections)))
        body, entries = model.layout()
        previous = entries[j - 1]
        sections[j].offset = previous[0] + max(0, previous[1] // 2)
        return f"section[{j}] overlaps section[{j - 1}]"
    if choice == 2 and tensors:
        # A second record with the same name (and the same sections or new ones).
        i = int(rng.integers(0, len(tensors)))
        duplicate = copy.deepcopy(tensors[i])
        tensors.insert(int(rng.integers(0, len(tensors) + 1)), duplicate)
        return f"tensor[{i}] duplicated"
    if choice == 3 and len(tensors) >= 2:
        i, j = (int(v) for v in rng.choice(len(tensors), 2, replace=False))
        tensors[j].name = tensors[i].name
        return f"tensor[{j}] renamed to tensor[{i}]"
    if choice == 4 and len(tensors) >= 2:
        i, j = (int(v) for v in rng.choice(len(tensors), 2, replace=False))
        tensors[i].first, tensors[j].first = tensors[j].first, tensors[i].first
        tensors[i].count, tensors[j].count = tensors[j].count, tensors[i].count
        return f"tensor[{i}] and tensor[{j}] swap sections"
    if choice == 5 and len(sections) >= 2:
        i, j = (int(v) for v in rng.choice(len(sections), 2, replace=False))
        sections[i], sections[j] = sections[j], sections[i]
        return f"sections {i} and {j} swapped"
    if choice == 6 and tensors:
        del tensors[int(rng.integers(0, len(tensors)))]
        return "tensor deleted"
    if choice == 7 and sections:
        i = int(rng.integers(0, len(sections)))
        sections.insert(i, copy.deepcopy(sections[i]))
        return f"section[{i}] inserted twice"
    if choice == 8 and sections:
        i = int(rng.integers(0, len(sections)))
        sections[i].kind = int(rng.choice([0, 1, 2, 3, 4, 5, 6, 7, 254, 255]))
        return f"section[{i}] kind"
    if choice == 9:
        # A name of edge length or content: empty, invalid UTF-8, a path, the maximum.
        if tensors:
            tensor = tensors[int(rng.integers(0, len(tensors)))]
            tensor.name = [b"", b"\xff\xfe", b"../../etc/passwd", b"a" * MAX_NAME_BYTES, b"\xc3",
                           "名前/重み".encode(), b"x" * 300][int(rng.integers(0, 7))]
            if rng.random() < 0.2:
                tensor.name_size = _interesting(rng, 2, len(tensor.name))
            return "tensor name"
    if choice == 10:
        # User sections: clash names, point at tensor sections, at nothing.
        if model.users:
            i = int(rng.integers(0, len(model.users)))
            name, index = model.users[i]
            roll = rng.random()
            if roll < 0.3:
                model.users.append((name, index))
            elif roll < 0.6:
                model.users[i] = (name, _interesting(rng, 4, index))
            else:
                model.users[i] = (b"" if rng.random() < 0.5 else b"\xff", index)
            return "user section"
        if sections:
            model.users.append((b"u", int(rng.integers(0, len(sections) + 2))))
            return "user section added"
    if choice == 11:
        key = str(rng.choice(["section_count", "tensor_count", "user_section_count", "metadata_size"]))
        current = {"section_count": len(sections), "tensor_count": len(tensors),
                   "user_section_count": len(model.users), "metadata_size": len(model.metadata)}[key]
        model.counts[key] = _interesting(rng, 4, current)
        return f"directory {key}"
    return "unchanged"


_METADATA_SAMPLES = (
    b'{"a":1,"a":2}', b'{"a":NaN}', b'{"a":Infinity}', b'{"a":null}', b'[1,2]', b'"text"', b'{',
    b'{"a":' * 40 + b'1' + b'}' * 40, b'[' * 5000 + b']' * 5000, b'{"\xff":1}', b'{"a":1e400}',
    b'{"a":-0.0,"b":1E-400}', b'{"a":"\\ud800"}', b'{"user":{"k":[1,2,{"x":true}]}}', b'\xef\xbb\xbf{}',
    b'{"a":123456789012345678901234567890}', b'{"a":1}\x00', b' {} ',
    b'{"a":' + b'7' * 5000 + b'}', b'{"a":-' + b'9' * 4300 + b'}', b'{"a":' + b'1' * 400 + b'.5}',
    b'{"\\udc00":1}', b'{"a":["\\ud83d\\ude00"]}', b'{"a":1,}', b'{"a":[1,]}',
)


def _mutate_metadata(rng, model: FileModel) -> str:
    roll = rng.random()
    if roll < 0.6:
        model.metadata = _METADATA_SAMPLES[int(rng.integers(0, len(_METADATA_SAMPLES)))]
        return "metadata sample"
    data = bytearray(model.metadata or b"{}")
    position = int(rng.integers(0, len(data)))
    data[position] = int(rng.choice([0x00, 0x22, 0x5C, 0x7B, 0x7D, 0x80, 0xC0, 0xFF]))
    model.metadata = bytes(data)
    return "metadata byte"


def _mutate_footer_model(rng, model: FileModel) -> str:
    choice = int(rng.integers(0, 8))
    if choice == 0:
        model.alignment_log2 = int(rng.choice([0, 1, 5, 6, 7, 16, 17, 255]))
    elif choice == 1:
        model.compression = int(rng.choice([0, 1, 2, 255]))
    elif choice == 2:
        model.required_flags = _interesting(rng, 4, model.required_flags)
    elif choice == 3:
        model.optional_flags = _interesting(rng, 4, model.optional_flags)
    elif choice == 4:
        model.footer_reserved = bytes([int(rng.integers(0, 256)), 0])
    elif choice == 5:
        key = str(rng.choice(["directory_offset", "directory_stored_size", "directory_size"]))
        model.footer_fields[key] = _interesting(rng, 8)
    elif choice == 6:
        model.preamble = model.preamble[:10] + _u(_interesting(rng, 2), 2) + model.preamble[12:]
    else:
        model.preamble = model.preamble[:8] + _u(int(rng.choice([0, 2, 0xFFFF])), 2) + model.preamble[10:]
    return f"footer field {choice}"


def _directory_byte_edit(rng):
    def edit(directory: bytes) -> bytes:
        data = bytearray(directory)
        for _ in range(int(rng.integers(1, 4))):
            if not data:
                break
            width = int(rng.choice([1, 2, 4, 8]))
            offset = int(rng.integers(0, len(data)))
            width = min(width, len(data) - offset)
            _set_int(data, offset, width, _interesting(rng, width, _get_int(data, offset, width)))
        if rng.random() < 0.1:
            data = data[: int(rng.integers(0, len(data) + 1))]
        return bytes(data)

    return edit


def _raw_mutation(rng, data: bytes) -> tuple[bytes, str]:
    """Damage bytes without fixing any checksum: flips, extremes, truncation, trailing bytes."""
    buffer = bytearray(data)
    roll = rng.random()
    if roll < 0.3:
        for _ in range(int(rng.integers(1, 5))):
            position = int(rng.integers(0, len(buffer)))
            buffer[position] ^= 1 << int(rng.integers(0, 8))
        return bytes(buffer), "raw bit flips"
    if roll < 0.55:
        width = int(rng.choice([1, 2, 4, 8]))
        offset = int(rng.integers(0, max(1, len(buffer) - width)))
        _set_int(buffer, offset, width, _interesting(rng, width, _get_int(buffer, offset, width)))
        # Half of these also fix the footer CRC and digest, so a footer edit is parsed.
        if offset >= len(buffer) - 88 and rng.random() < 0.5:
            return refresh_digest(bytes(buffer)), "footer word, digest fixed"
        return bytes(buffer), "raw word"
    if roll < 0.85:
        return bytes(buffer[: int(rng.integers(0, len(buffer)))]), "truncated"
    if roll < 0.95:
        extra = bytes(rng.integers(0, 256, size=int(rng.integers(1, 100)), dtype=np.uint8))
        return bytes(buffer) + extra, "trailing bytes"
    cut = int(rng.integers(0, len(buffer)))
    return bytes(buffer[:cut]) + bytes(buffer[-FOOTER_SIZE:]), "middle cut, footer kept"


ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"


def _zstd_reframe(rng, frame: bytes) -> bytes:
    """Return a changed zstd frame: other content, no declared size, a bad checksum, a cut,
    a second frame, a skippable frame in front, or damaged compressed blocks."""
    try:
        content = zstandard.ZstdDecompressor().decompress(frame, max_output_size=1 << 20)
    except zstandard.ZstdError:
        content = b""
    choice = int(rng.integers(0, 8))
    if choice == 0:
        changed = bytearray(content)
        if changed and rng.random() < 0.5:
            changed[int(rng.integers(0, len(changed)))] ^= 0xFF
        elif changed and rng.random() < 0.5:
            del changed[int(rng.integers(0, len(changed))):]
        else:
            changed += bytes(int(rng.integers(1, 9)))
        return zstandard.ZstdCompressor(level=1).compress(bytes(changed))
    if choice == 1:
        return zstandard.ZstdCompressor(level=1, write_content_size=False).compress(content)
    if choice == 2:
        checked = bytearray(zstandard.ZstdCompressor(level=1, write_checksum=True).compress(content))
        checked[-1] ^= 0x01
        return bytes(checked)
    if choice == 3:
        return frame[: int(rng.integers(0, max(1, len(frame))))]
    if choice == 4:
        return frame + frame
    if choice == 5:
        return b"\x50\x2a\x4d\x18" + _u(4, 4) + b"skip" + frame
    damaged = bytearray(frame)
    if damaged:
        # The first 6 bytes are the magic and the frame header; the rest are blocks.
        low = 0 if rng.random() < 0.3 else min(6, len(damaged) - 1)
        position = int(rng.integers(low, len(damaged)))
        damaged[position] = int(rng.integers(0, 256))
    return bytes(damaged)


def _single_symbol_stream(width: int, count: int, symbol: int = 0) -> bytes:
    """Return a Huffman stream of ``count`` copies of ``symbol``, with an empty payload."""
    lengths = np.zeros(symbol + 1, dtype=np.uint8)
    lengths[symbol] = 1
    from dcformat import bitpack

    return (bytes([StreamForm.HUFFMAN, width, 1, 0]) + _u(count, 8) + _u(symbol + 1, 4) + _u(0xFFFFFFFF, 4)
            + _u(0, 8) + bitpack.pack(lengths, 5))


_ZERO_FRAMES: dict[int, bytes] = {}


def _zero_frame(size: int) -> bytes:
    """Return a zstd frame of ``size`` zero bytes: a few KB that decompress to the whole limit."""
    if size not in _ZERO_FRAMES:
        _ZERO_FRAMES[size] = zstandard.ZstdCompressor(level=1).compress(bytes(size))
    return _ZERO_FRAMES[size]


def _amplify(rng, model: FileModel, max_tensor_bytes: int) -> str:
    """Make one tensor as large as the decode limit allows while its sections stay tiny.

    Streams become single-symbol Huffman streams (no payload), raw data a zstd frame of
    zeros, lowrank factors such frames too. This measures the time and memory a small file
    can cost within the limit, rather than testing a rejection.
    """
    candidates = [t for t in model.tensors if t.encoding in (0, 1, 2, 3, 4) and not t.flags]
    if not candidates:
        return "no tensor to amplify"
    tensor = candidates[int(rng.integers(0, len(candidates)))]
    itemsize = NUMPY_DTYPES[DType(tensor.dtype)].itemsize if tensor.dtype in DType._value2member_map_ else 4
    fraction = float(rng.choice([1.0, 0.5, 0.125]))
    elements = max(1, int(max_tensor_bytes * fraction) // itemsize)
    columns = int(rng.choice([1, 64, 4096]))
    rows = max(1, elements // columns)
    elements = rows * columns
    sections = model.sections
    owned = list(range(tensor.first, min(tensor.first + tensor.count, len(sections))))

    def params_field(offset, width):
        return _get_int(tensor.params, offset, width)

    if tensor.encoding == 4 and len(tensor.params) >= 12:
        # Lowrank: rows x rank x columns multiply-adds from two factors of zero frames.
        side = int(max(1, (max_tensor_bytes // 4) ** 0.5))
        rank = side
        tensor.shape, tensor.ndim = [side, side], 2
        tensor.params = _u(rank, 4) + tensor.params[4:]
        for index, shape in ((params_field(4, 4), [side, rank]), (params_field(8, 4), [rank, side])):
            if index < len(model.tensors):
                factor = model.tensors[index]
                factor.shape, factor.ndim, factor.dtype, factor.encoding = shape, 2, 0, 0
                factor.params = bytes([1, 0])
                if factor.first < len(sections):
                    sections[factor.first].data = _zero_frame(4 * shape[0] * shape[1])
                    sections[factor.first].kind = SectionKind.DATA
                    factor.count = 1
        model.required_flags |= 1
        return f"lowrank amplified to {side}x{side}, rank {rank}"

    tensor.shape, tensor.ndim = [rows, columns], 2
    if tensor.encoding == 0 and owned:
        tensor.params = bytes([1, int(rng.integers(0, 2))])
        sections[owned[0]].data = _zero_frame(elements * itemsize)
        model.required_flags |= 1
        return f"raw amplified to {elements} elements"
    if tensor.encoding == 1 and len(owned) == 2:
        bits = params_field(1, 1) or 1
        sections[owned[1]].data = _single_symbol_stream(min(bits, 16), elements)
        return f"shared amplified to {elements} elements"
    if tensor.encoding == 2 and len(owned) == 3:
        bits, index_bits = params_field(1, 1) or 1, params_field(2, 1) or 1
        gap = int(rng.choice([0, (1 << min(index_bits, 16)) - 1]))
        entries = elements // (gap + 1)
        sections[owned[1]].data = _single_symbol_stream(min(bits, 16), entries)
        sections[owned[2]].data = _single_symbol_stream(min(index_bits, 16), entries, gap)
        return f"sparse-shared amplified to {entries} entries of gap {gap}"
    if tensor.encoding == 3 and len(owned) == 2:
        bits = params_field(0, 1) or 1
        tensor.params = _u(bits, 1) + _u(255, 1) + _u(0, 2) + _u(1, 4)
        sections[owned[0]].data = np.array([0.5], "<f4").tobytes() + np.array([3], "<i4").tobytes()
        sections[owned[1]].data = _single_symbol_stream(min(bits, 16), elements)
        return f"uniform amplified to {elements} elements"
    return "amplification did not fit"


def mutate(rng: np.random.Generator, seeds: list[Seed],
           max_tensor_bytes: int = DEFAULT_MAX_TENSOR_BYTES) -> tuple[bytes, str, str]:
    """Return (file bytes, seed name, description) of one mutated case."""
    seed = seeds[int(rng.integers(0, len(seeds)))]
    roll = rng.random()
    if roll < 0.12:
        data, what = _raw_mutation(rng, seed.data)
        return data, seed.name, what
    model = seed.model.copy()
    if roll < 0.12 + AMPLIFY_RATE:
        what = _amplify(rng, model, max_tensor_bytes)
        return model.serialize(), seed.name, what
    if roll < 0.16 and model.compression == 1:
        return model.serialize(stored_edit=lambda stored, plain: _zstd_reframe(rng, stored)), seed.name, \
            "stored directory frame"
    donors = [s.model for s in seeds]
    steps = 1 if rng.random() < 0.7 else int(rng.integers(2, 4))
    descriptions = []
    directory_edit = None
    for _ in range(steps):
        pick = rng.random()
        if pick < 0.40:
            descriptions.append(_mutate_section_content(rng, model, donors))
        elif pick < 0.65:
            descriptions.append(_mutate_record(rng, model))
        elif pick < 0.82:
            descriptions.append(_mutate_structure(rng, model))
        elif pick < 0.88:
            descriptions.append(_mutate_metadata(rng, model))
        elif pick < 0.94:
            descriptions.append(_mutate_footer_model(rng, model))
        else:
            directory_edit = _directory_byte_edit(rng)
            descriptions.append("directory bytes")
    return model.serialize(directory_edit), seed.name, "; ".join(descriptions)


# ---------------------------------------------------------------------------------------
# Targets


@dataclass
class CallResult:
    call: str
    error: BaseException | None
    seconds: float = 0.0


def exercise(data: bytes, rng: np.random.Generator, max_tensor_bytes: int) -> list[CallResult]:
    """Run every reader entry point on ``data``; return each call with the exception it raised.

    Only :class:`DCFormatError` is caught here. Any other exception propagates, so the
    caller reports it as a bug, with the name of the call in ``_CURRENT_CALL``.
    """
    results: list[CallResult] = []

    def call(name: str, function, *args):
        _CURRENT_CALL[0] = name
        started = time.perf_counter()
        try:
            function(*args)
        except DCFormatError as error:
            results.append(CallResult(name, error, time.perf_counter() - started))
            return False
        results.append(CallResult(name, None, time.perf_counter() - started))
        return True

    reader = None

    def do_open():
        nonlocal reader
        reader = dcformat.open(data, max_tensor_bytes=max_tensor_bytes)

    if not call("open", do_open):
        return results
    with reader:
        call("verify", reader.verify)
        call("metadata", reader.metadata)
        for name in reader.keys():
            call(f"tensor_info:{name}", reader.tensor_info, name)
            call(f"get:{name}", reader.get, name)
            call(f"get_entries:{name}", reader.get_entries, name)
            call(f"get_sparse:{name}", reader.get_sparse, name, "csr" if rng.random() < 0.7 else "coo")
        _exercise_streams(reader, rng, max_tensor_bytes, call)
    return results


# The call in progress, for the report of an exception that escapes exercise().
_CURRENT_CALL = [""]


def _exercise_streams(reader, rng, max_tensor_bytes: int, call) -> None:
    """Run the stream and relative-index decoders directly on every stream section."""
    buffer = reader._source.buffer
    for section in reader.info.sections:
        if section.kind not in STREAM_KINDS:
            continue
        label = f"section[{section.index}] ({section.kind_name})"
        data = section_bytes(buffer, section, check_crc=False)
        holder: list = []

        def info_call():
            holder.append(streams.read_stream_info(data, section=label, base=section.offset))

        if not call(f"read_stream_info:{section.index}", info_call):
            continue
        info = holder[0]
        # The count is the stream's own claim here, so cap it the way a tensor's size is capped.
        if info.count > max_tensor_bytes:
            continue
        count, width = int(info.count), int(info.width)
        decoded: list = []

        def decode_all():
            decoded.append(streams.decode_stream(data, count=count, width=width, section=label,
                                                 base=section.offset))

        call(f"decode_stream:{section.index}", decode_all)
        if count:
            start = int(rng.integers(0, count))
            stop = int(rng.integers(start, count + 1))
            call(f"decode_stream:{section.index}:{start}:{stop}", lambda: streams.decode_stream(
                data, count=count, width=width, section=label, base=section.offset, start=start, stop=stop))
        if section.kind == SectionKind.GAPS and decoded:
            gaps = decoded[0]
            for size in (int(gaps.size), int(rng.integers(0, 4 * gaps.size + 2)), _interesting(rng, 8) >> 1):
                call(f"positions_from_gaps:{section.index}:{size}", sparse.positions_from_gaps, gaps, size)


# ---------------------------------------------------------------------------------------
# Running cases


class CaseTimeout(BaseException):
    """Raised by the interval timer inside a case that runs past CASE_TIMEOUT_SECONDS."""


def _on_alarm(signum, frame):
    raise CaseTimeout()


def _peak_rss_reset() -> bool:
    try:
        with open("/proc/self/clear_refs", "w") as handle:
            handle.write("5")
        return True
    except OSError:
        return False


def _status_kib(field: str) -> int:
    try:
        with open("/proc/self/status") as handle:
            match = re.search(field + r":\s+(\d+)", handle.read())
        return int(match.group(1)) if match else 0
    except OSError:
        return 0


def _vm_size_bytes() -> int:
    try:
        with open("/proc/self/status") as handle:
            match = re.search(r"VmSize:\s+(\d+)", handle.read())
        return int(match.group(1)) * 1024 if match else 0
    except OSError:
        return 0


def _bug_signature(error: BaseException, call: str) -> str:
    frames = traceback.extract_tb(error.__traceback__)
    inside = [f for f in frames if "dcformat" in f.filename] or frames
    last = inside[-1] if inside else None
    where = f"{Path(last.filename).name}:{last.lineno}" if last else "?"
    kind = call.split(":")[0]
    return f"{type(error).__name__} in {kind} at {where}"


def _worker(arguments) -> dict:
    (first, last, seed_value, max_tensor_bytes, slow_seconds, headroom_mib) = arguments
    seeds = build_seeds()
    # A warning from a decoder (numpy overflow, for one) becomes an exception in applications
    # that run with -W error, so the fuzzer counts it as an uncaught exception too.
    warnings.simplefilter("error")
    if headroom_mib:
        cap = _vm_size_bytes() + headroom_mib * 1024 * 1024
        resource.setrlimit(resource.RLIMIT_AS, (cap, resource.RLIM_INFINITY))
    signal.signal(signal.SIGALRM, _on_alarm)
    can_reset_peak = _peak_rss_reset()

    outcomes: dict[str, int] = {}
    errors: dict[str, int] = {}
    calls = 0
    bugs: dict[str, dict] = {}
    slow: list[dict] = []
    slowest = {"seconds": 0.0}
    slowest_call = {"seconds": 0.0}
    peak = {"kib": 0}
    for case in range(first, last):
        rng = np.random.default_rng([seed_value, case])
        data, seed_name, description = mutate(rng, seeds, max_tensor_bytes)
        if can_reset_peak:
            _peak_rss_reset()
        rss_before = _status_kib("VmRSS")
        _CURRENT_CALL[0] = "mutate"
        started = time.perf_counter()
        signal.setitimer(signal.ITIMER_REAL, CASE_TIMEOUT_SECONDS)
        failure = None
        try:
            results = exercise(data, rng, max_tensor_bytes)
        except CaseTimeout as error:
            failure, results = error, []
        except Exception as error:  # noqa: BLE001 - every non-DCFormatError is the finding
            failure, results = error, []
        finally:
            signal.setitimer(signal.ITIMER_REAL, 0)
        seconds = time.perf_counter() - started
        # The case's own peak: the high-water mark above what the process held before it.
        rss = max(0, _status_kib("VmHWM") - rss_before) if can_reset_peak else 0

        calls += len(results)
        for result in results:
            key = "ok" if result.error is None else type(result.error).__name__
            errors[key] = errors.get(key, 0) + 1
            if result.seconds > slowest_call["seconds"]:
                slowest_call = {"seconds": result.seconds, "call": result.call, "case": case,
                                "seed": seed_name, "mutation": description}
        if failure is not None:
            outcome = "timeout" if isinstance(failure, CaseTimeout) else "uncaught"
            signature = _bug_signature(failure, _CURRENT_CALL[0])
            entry = bugs.setdefault(signature, {
                "signature": signature, "count": 0, "case": case, "seed": seed_name,
                "mutation": description, "call": _CURRENT_CALL[0],
                "error": type(failure).__name__, "message": str(failure)[:300],
                "traceback": "".join(traceback.format_exception(failure)[-6:])[-2000:],
                "size": len(data), "data": data,
            })
            entry["count"] += 1
            if len(data) < entry["size"]:
                entry.update(case=case, seed=seed_name, mutation=description, size=len(data), data=data,
                             call=_CURRENT_CALL[0], message=str(failure)[:300])
        elif results and results[0].call == "open" and results[0].error is not None:
            outcome = "rejected at open"
        elif all(r.error is None for r in results):
            outcome = "decoded"
        else:
            outcome = "opened, some calls raised"
        outcomes[outcome] = outcomes.get(outcome, 0) + 1
        if seconds > slowest["seconds"]:
            slowest = {"seconds": seconds, "calls": len(results), "case": case, "seed": seed_name,
                       "mutation": description}
        slow_calls = [r for r in results if r.seconds > slow_seconds]
        if slow_calls or (failure is not None and seconds > slow_seconds):
            slow.append({"case": case, "seconds": round(seconds, 3), "seed": seed_name,
                         "mutation": description, "data": data,
                         "calls": {r.call: round(r.seconds, 3) for r in slow_calls}})
        if rss > peak["kib"]:
            peak = {"kib": rss, "case": case, "seed": seed_name, "mutation": description}

    return {"outcomes": outcomes, "errors": errors, "calls": calls, "bugs": bugs, "slow": slow,
            "slowest": slowest, "slowest_call": slowest_call, "peak": peak,
            "peak_measured": can_reset_peak}


def _exhaustive_truncation(seeds: list[Seed], max_tensor_bytes: int) -> dict:
    """Open every prefix of every generated seed; each must raise or decode."""
    counts: dict[str, int] = {}
    bugs = []
    for seed in seeds:
        if seed.name.startswith("vector:"):
            continue
        for cut in range(len(seed.data)):
            data = seed.data[:cut]
            try:
                with dcformat.open(data, max_tensor_bytes=max_tensor_bytes) as reader:
                    reader.verify()
                key = "opened"
            except DCFormatError as error:
                key = type(error).__name__
            except Exception as error:  # noqa: BLE001
                key = "uncaught"
                bugs.append({"seed": seed.name, "cut": cut, "error": repr(error)[:300]})
            counts[key] = counts.get(key, 0) + 1
    return {"cases": sum(counts.values()), "outcomes": counts, "uncaught": bugs}


def run(cases: int, seed: int = 1, *, jobs: int = 1, max_tensor_bytes: int = DEFAULT_MAX_TENSOR_BYTES,
        slow_seconds: float = DEFAULT_SLOW_SECONDS, memory_headroom_mib: int = DEFAULT_MEMORY_HEADROOM_MIB,
        reproducers: str | os.PathLike | None = None, truncation: bool = True) -> dict:
    """Run ``cases`` mutated cases (numbered 0 .. cases-1, reproducible from ``seed``) and
    return the JSON-ready summary. Reproducers are written only when ``reproducers`` is set.
    """
    started = time.perf_counter()
    jobs = max(1, min(jobs, cases or 1))
    bounds = [cases * k // jobs for k in range(jobs + 1)]
    tasks = [(bounds[k], bounds[k + 1], seed, max_tensor_bytes, slow_seconds, memory_headroom_mib)
             for k in range(jobs)]
    if jobs == 1:
        parts = [_worker_in_process(tasks[0])]
    else:
        context = multiprocessing.get_context("fork" if sys.platform == "linux" else "spawn")
        with context.Pool(jobs, maxtasksperchild=1) as pool:
            parts = pool.map(_worker, tasks)

    summary = _merge(parts)
    _retime_slow_cases(summary, seed, max_tensor_bytes, slow_seconds)
    seeds = build_seeds()
    if truncation:
        summary["truncation"] = _exhaustive_truncation(seeds, max_tensor_bytes)
    summary.update({
        "cases": cases,
        "seed": seed,
        "jobs": jobs,
        "seeds": [s.name for s in seeds],
        "max_tensor_bytes": max_tensor_bytes,
        "slow_threshold_seconds": slow_seconds,
        "seconds": round(time.perf_counter() - started, 2),
    })
    summary["cases_per_second"] = round(cases / summary["seconds"], 1) if summary["seconds"] else None
    _write_reproducers(summary, reproducers)
    return summary


def _retime_slow_cases(summary: dict, seed: int, max_tensor_bytes: int, slow_seconds: float) -> None:
    """Run each slow case again alone, to tell a slow call from one the other workers slowed.

    Adds ``seconds_alone`` (the slowest call of the rerun) to each slow case and counts the
    cases still slow alone in ``slow_alone``.
    """
    still_slow = 0
    seeds = build_seeds() if summary["slow_cases"] else []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for case in summary["slow_cases"]:
            # Replaying the mutation leaves the generator where the case left it, so the
            # random slices and sizes that exercise() draws are the same.
            rng = np.random.default_rng([seed, case["case"]])
            mutate(rng, seeds, max_tensor_bytes)
            try:
                results = exercise(case["data"], rng, max_tensor_bytes)
            except Exception:  # noqa: BLE001 - the worker has reported it as a bug already
                results = []
            case["seconds_alone"] = round(max((r.seconds for r in results), default=0.0), 3)
            still_slow += case["seconds_alone"] > slow_seconds
    summary["slow_alone"] = still_slow


def _worker_in_process(task) -> dict:
    """Run one worker's share in this process, restoring its limits, signals and warnings."""
    previous = resource.getrlimit(resource.RLIMIT_AS)
    handler = signal.getsignal(signal.SIGALRM)
    try:
        with warnings.catch_warnings():
            return _worker(task)
    finally:
        resource.setrlimit(resource.RLIMIT_AS, previous)
        signal.signal(signal.SIGALRM, handler)


def _merge(parts: list[dict]) -> dict:
    outcomes: dict[str, int] = {}
    errors: dict[str, int] = {}
    bugs: dict[str, dict] = {}
    slow: list[dict] = []
    slowest = {"seconds": 0.0}
    slowest_call = {"seconds": 0.0}
    peak = {"kib": 0}
    calls = 0
    for part in parts:
        for key, value in part["outcomes"].items():
            outcomes[key] = outcomes.get(key, 0) + value
        for key, value in part["errors"].items():
            errors[key] = errors.get(key, 0) + value
        for signature, bug in part["bugs"].items():
            if signature in bugs:
                bugs[signature]["count"] += bug["count"]
            else:
                bugs[signature] = bug
        slow.extend(part["slow"])
        calls += part["calls"]
        if part["slowest"]["seconds"] > slowest["seconds"]:
            slowest = part["slowest"]
        if part["slowest_call"]["seconds"] > slowest_call["seconds"]:
            slowest_call = part["slowest_call"]
        if part["peak"]["kib"] > peak["kib"]:
            peak = part["peak"]
    slowest["seconds"] = round(slowest["seconds"], 4)
    slowest_call["seconds"] = round(slowest_call["seconds"], 4)
    return {
        "outcomes": dict(sorted(outcomes.items())),
        "calls": calls,
        "calls_by_result": dict(sorted(errors.items(), key=lambda item: -item[1])),
        "uncaught": sum(b["count"] for b in bugs.values() if b["error"] != "CaseTimeout"),
        "timeouts": sum(b["count"] for b in bugs.values() if b["error"] == "CaseTimeout"),
        "bugs": list(bugs.values()),
        "slow_cases": slow,
        "slowest_case": slowest,
        "slowest_call": slowest_call,
        "peak_case_rss_mib": round(peak["kib"] / 1024, 1),
        "peak_case": {k: v for k, v in peak.items() if k != "kib"},
        "peak_rss_measured": all(p["peak_measured"] for p in parts),
    }


def _write_reproducers(summary: dict, folder) -> None:
    """Write each bug's and each slow case's smallest input to ``folder``; drop the bytes."""
    if folder is not None:
        Path(folder).mkdir(parents=True, exist_ok=True)
    for bug in summary["bugs"]:
        data = bug.pop("data")
        if folder is not None:
            digest = hashlib.sha256(data).hexdigest()[:10]
            path = Path(folder) / f"crash-{bug['error']}-{digest}.dcf"
            path.write_bytes(data)
            bug["reproducer"] = str(path)
    for case in summary["slow_cases"]:
        data = case.pop("data")
        if folder is not None:
            path = Path(folder) / f"slow-{hashlib.sha256(data).hexdigest()[:10]}.dcf"
            path.write_bytes(data)
            case["reproducer"] = str(path)


# ---------------------------------------------------------------------------------------
# Hand-made reproducers


def crafted_reproducers() -> dict[str, tuple[bytes, dict]]:
    """Build the reproducers that were found by reading the code rather than by mutation.

    Returns ``{file name: (bytes, expected entry)}`` in the format of
    ``fixtures/malformed/fuzz/expected.json``.
    """
    seeds = {seed.name: seed for seed in build_seeds(include_vectors=False)}
    cases: dict[str, tuple[bytes, dict]] = {}

    def with_metadata(text: bytes) -> bytes:
        model = seeds["raw_variants"].model.copy()
        model.metadata = text
        return model.serialize()

    cases["metadata_integer_5000_digits.dcf"] = (with_metadata(b'{"a":' + b"7" * 5000 + b"}"), {
        "error": "InvalidFieldError", "message": "an integer of at most 4300 digits", "call": "open",
        "description": "a metadata integer longer than CPython converts by default: json.loads raised a "
                       "plain ValueError"})
    cases["metadata_lone_surrogate.dcf"] = (with_metadata(b'{"a":"\\ud800"}'), {
        "error": "InvalidFieldError", "message": "lone surrogate U+D800", "call": "open",
        "description": "an escaped lone surrogate: the metadata opened but could not be encoded as UTF-8 again"})
    cases["metadata_value_bomb.dcf"] = (with_metadata(b'{"a":[' + b"{}," * 3_000_000 + b"{}]}"), {
        "error": "LimitExceededError", "message": "JSON values", "call": "open",
        "description": "3,000,000 empty JSON objects (9 MB of metadata, a 2 KB file): open took 1.2 s "
                       "and 232 MiB before the value cap"})

    model = seeds["raw_variants"].model.copy()
    section = next(s for s in model.sections if s.data[:4] == ZSTD_MAGIC)
    section.data += b"\x00trailing"
    name = next(t.name.decode() for t in model.tensors if t.first == model.sections.index(section))
    cases["raw_zstd_trailing_bytes.dcf"] = (model.serialize(), {
        "error": "InvalidFieldError", "message": "unused data", "call": f"get:{name}",
        "description": "bytes after the zstd frame of a raw section (CRC-32 fixed): they were ignored"})

    model = seeds["shared_huffman"].model.copy()
    cases["directory_zstd_trailing_bytes.dcf"] = (
        model.serialize(stored_edit=lambda stored, plain: stored + b"\x00trailing"), {
            "error": "InvalidFieldError", "message": "unused data", "call": "open",
            "description": "bytes after the zstd frame of the directory (CRC-32 fixed): they were ignored"})

    model = seeds["lowrank"].model.copy()
    lowrank = next(t for t in model.tensors if t.encoding == 4)
    side = 8192
    lowrank.shape = [side, side]
    lowrank.params = _u(side, 4) + lowrank.params[4:]
    for index in (_get_int(lowrank.params, 4, 4), _get_int(lowrank.params, 8, 4)):
        factor = model.tensors[index]
        factor.shape, factor.encoding, factor.params = [side, side], 0, bytes([1, 0])
        model.sections[factor.first].data = _zero_frame(4 * side * side)
    model.required_flags |= 1
    cases["lowrank_work_limit.dcf"] = (model.serialize(), {
        "error": "LimitExceededError", "message": "multiply-adds", "call": f"get:{lowrank.name.decode()}",
        "description": "an 8192 x 8192 lowrank product of rank 8192 from two zstd frames of zeros: "
                       "5.5e11 multiply-adds (minutes of CPU) from a file of a few KB"})

    model = seeds["raw_variants"].model.copy()
    tensor = model.tensors[0]
    tensor.dtype, tensor.shape, tensor.ndim, tensor.params = 8, [1024, 1024], 2, bytes([1, 0])
    model.sections[tensor.first].data = zstandard.ZstdCompressor(level=1).compress(b"\x01" * (1 << 20))
    model.required_flags |= 1
    cases["entries_over_limit.dcf"] = (model.serialize(), {
        "error": "LimitExceededError", "message": "as positions and values", "call": f"get_sparse:{tensor.name.decode()}",
        "max_tensor_bytes": 1 << 20,
        "description": "a dense uint8 tensor of 1 MiB whose 1,048,576 entries take 9 MiB as int64 positions "
                       "and values: get_sparse allocated 9 times the limit"})
    return cases


def write_crafted_reproducers(folder: str | os.PathLike) -> list[str]:
    """Write :func:`crafted_reproducers` to ``folder`` and merge them into its expected.json."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    manifest_path = folder / "expected.json"
    manifest = json.loads(manifest_path.read_text()) if manifest_path.exists() else {}
    for name, (data, expected) in crafted_reproducers().items():
        (folder / name).write_bytes(data)
        manifest[name] = expected
    manifest_path.write_text(json.dumps(dict(sorted(manifest.items())), indent=1, ensure_ascii=False) + "\n")
    return sorted(manifest)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cases", type=int, default=10000, help="number of mutated cases (default 10000)")
    parser.add_argument("--seed", type=int, default=1, help="random seed; case i is reproducible from it")
    parser.add_argument("--jobs", type=int, default=os.cpu_count() or 1, help="worker processes (default: CPU count)")
    parser.add_argument("--max-tensor-mib", type=int, default=DEFAULT_MAX_TENSOR_BYTES >> 20,
                        help="max_tensor_bytes passed to dcformat.open, in MiB (default 64)")
    parser.add_argument("--slow-seconds", type=float, default=DEFAULT_SLOW_SECONDS,
                        help="report a case in which one call runs longer than this, in seconds (default 1)")
    parser.add_argument("--memory-headroom-mib", type=int, default=DEFAULT_MEMORY_HEADROOM_MIB,
                        help="address space each worker may add after start-up, in MiB; 0 for no cap")
    parser.add_argument("--reproducers", default=None,
                        help="folder for the inputs of uncaught exceptions and slow cases")
    parser.add_argument("--no-truncation", action="store_true",
                        help="skip opening every prefix of every generated seed")
    parser.add_argument("--out", default=None, help="write the JSON summary here as well as to stdout")
    parser.add_argument("--write-crafted", metavar="DIR", default=None,
                        help="write the hand-made reproducers to DIR, merge them into DIR/expected.json "
                             "and exit")
    args = parser.parse_args(argv)
    if args.write_crafted:
        print("\n".join(write_crafted_reproducers(args.write_crafted)))
        return 0

    summary = run(args.cases, args.seed, jobs=args.jobs, max_tensor_bytes=args.max_tensor_mib << 20,
                  slow_seconds=args.slow_seconds, memory_headroom_mib=args.memory_headroom_mib,
                  reproducers=args.reproducers, truncation=not args.no_truncation)
    text = json.dumps(summary, indent=1)
    if args.out:
        Path(args.out).write_text(text + "\n")
    print(text)
    failed = summary["uncaught"] or summary["timeouts"] or summary["slow_alone"] \
        or summary.get("truncation", {}).get("uncaught")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
