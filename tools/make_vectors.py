"""Regenerate the golden test vectors and the malformed files of the DCF format.

``fixtures/vectors/`` gets one ``NAME.dcf`` per case, its expected decoded tensors in
``NAME.npz`` and one ``manifest.json`` that lists, per vector, its tensors, their stream forms
and the recipe it was built from. ``fixtures/malformed/`` gets damaged files derived from the
vectors, each with one fault, and ``expected.json`` naming the error each one must raise.

Usage::

    python tools/make_vectors.py            # rewrite both folders
    python tools/make_vectors.py --check    # regenerate into a temporary folder and compare

The output depends only on this script, dcformat and the zstd library: no timestamps, and the
``.npz`` members carry a fixed date. Expected arrays are computed from the recipe inputs with
numpy (``codebook[assignments]`` and so on), not by decoding the files, so the vectors test
the reader instead of agreeing with it by construction. ``.npy`` has no bfloat16 type, so
bfloat16 expected arrays are stored as their uint16 bit patterns.

Malformed files are built by editing the bytes of a valid vector and then recomputing every
checksum that is not the subject of the case (section CRC-32, directory CRC-32, footer
CRC-32, digest), so that each file breaks exactly one rule. The editing helpers parse and
rebuild the container with their own code, following spec/FORMAT.md.
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import shutil
import struct
import sys
import tempfile
import zipfile
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np
import zstandard

from dcformat.constants import (
    DTYPE_NAMES,
    ENCODING_NAMES,
    NUMPY_DTYPES,
    Compression,
    Encoding,
    SectionKind,
    StreamForm,
    dtype_code,
)
from dcformat.container import ContainerWriter, SectionData, TensorEntry
from dcformat.encodings import (
    encode_lowrank,
    encode_raw,
    encode_shared,
    encode_sparse_shared,
    encode_uniform,
)
from dcformat.streams import encode_stream

ROOT = Path(__file__).resolve().parent.parent
VECTORS_DIR = ROOT / "fixtures" / "vectors"
MALFORMED_DIR = ROOT / "fixtures" / "malformed"

# A fixed zip member date keeps the .npz files byte-identical between runs; 1980-01-01 is
# the earliest date the zip format can store.
ZIP_DATE = (1980, 1, 1, 0, 0, 0)

DTYPES_BY_NAME = {name: NUMPY_DTYPES[code] for code, name in DTYPE_NAMES.items()}
STREAM_FORMS = {"packed": StreamForm.PACKED, "huffman": StreamForm.HUFFMAN}
STREAM_KINDS = {SectionKind.ASSIGNMENTS, SectionKind.GAPS, SectionKind.LEVELS}


# ==========================================================================================
# Array specs: arrays written into recipes as JSON, exactly


def array_spec(values, dtype: str, shape=None) -> dict[str, Any]:
    """Return the JSON form of an array: dtype, shape and flat values (or hex when not finite)."""
    array = np.asarray(values, dtype=DTYPES_BY_NAME[dtype])
    if shape is not None:
        array = array.reshape(shape)
    spec: dict[str, Any] = {"dtype": dtype, "shape": list(array.shape)}
    flat = array.reshape(-1)
    if array.dtype.kind in "fV":
        wide = flat.astype(np.float64)
        if not np.all(np.isfinite(wide)):
            # JSON has no NaN or infinity, so non-finite arrays keep their exact bytes.
            spec["hex"] = flat.tobytes().hex()
            return spec
        spec["values"] = wide.tolist()
    else:
        spec["values"] = flat.tolist()
    return spec


def array_from_spec(spec: dict[str, Any]) -> np.ndarray:
    dtype = DTYPES_BY_NAME[spec["dtype"]]
    shape = tuple(spec["shape"])
    if "hex" in spec:
        return np.frombuffer(bytes.fromhex(spec["hex"]), dtype=dtype).reshape(shape).copy()
    return np.array(spec["values"], dtype=dtype).reshape(shape)


def pattern(count: int, modulus: int, multiplier: int = 7, offset: int = 0) -> np.ndarray:
    """Return ``(i * multiplier + offset) % modulus`` for i < count: varied but reproducible."""
    return (np.arange(count, dtype=np.int64) * multiplier + offset) % modulus


# ==========================================================================================
# Building a file from a recipe


def _stream_form(recipe: dict[str, Any]):
    form = recipe.get("stream_form")
    return None if form is None else STREAM_FORMS[form]


def build_entry(recipe: dict[str, Any]) -> TensorEntry:
    """Turn one tensor recipe into the TensorEntry that the dcformat encode call returns."""
    call = recipe["call"]
    name = recipe["name"]
    if call == "encode_raw":
        return encode_raw(name, array_from_spec(recipe["array"]), compression=recipe["compression"])

    dtype = DTYPES_BY_NAME[recipe["dtype"]]
    shape = tuple(recipe["shape"])
    if call == "encode_shared":
        return encode_shared(
            name, dtype, shape, array_from_spec(recipe["codebook"]),
            array_from_spec(recipe["assignments"]), recipe["bits"], stream_form=_stream_form(recipe),
        )
    if call == "encode_sparse_shared":
        return encode_sparse_shared(
            name, dtype, shape, array_from_spec(recipe["codebook"]),
            array_from_spec(recipe["assignments"]), recipe["bits"], recipe["index_bits"],
            recipe["zero_slot"], stream_form=_stream_form(recipe),
        )
    if call == "encode_uniform":
        return encode_uniform(
            name, dtype, shape, array_from_spec(recipe["levels"]), recipe["bits"],
            array_from_spec(recipe["scales"]), array_from_spec(recipe["zero_points"]),
            per_channel=recipe["per_channel"], stream_form=_stream_form(recipe),
        )
    if call == "encode_lowrank":
        return encode_lowrank(
            name, dtype, shape, build_entry(recipe["left"]), build_entry(recipe["right"]),
            recipe["rank"],
        )
    if call == "shared_entry":
        return _shared_entry(recipe, dtype, shape)
    raise ValueError(f"unknown call {call!r} in the recipe of tensor {name!r}")


def _shared_entry(recipe: dict[str, Any], dtype: np.dtype, shape: tuple[int, ...]) -> TensorEntry:
    # encode_shared always uses the default block size (32768 symbols), so a stream with a
    # block index is assembled here from encode_stream and the public TensorEntry.
    codebook = array_from_spec(recipe["codebook"]).astype("<f4")
    assignments = array_from_spec(recipe["assignments"]).reshape(-1)
    bits = recipe["bits"]
    params = struct.pack("<BBHI", 0, bits, 0, codebook.size)
    stream = encode_stream(assignments, bits, form=_stream_form(recipe), block_size=recipe["block_size"])
    sections = [
        SectionData(SectionKind.CODEBOOK, codebook.tobytes()),
        SectionData(SectionKind.ASSIGNMENTS, stream),
    ]
    return TensorEntry(name=recipe["name"], dtype=dtype_code(dtype), shape=shape,
                       encoding=Encoding.SHARED, encoding_version=1, params=params, sections=sections)


def build_file(recipe: dict[str, Any]) -> bytes:
    """Write the DCF file a vector recipe describes and return its bytes."""
    # NOTE: zstd output (compressed directories and raw sections) can change with the zstd
    # library version. These files were made with python-zstandard 0.25.0 (zstd 1.5.7).
    buffer = io.BytesIO()
    writer = ContainerWriter(
        buffer, alignment_log2=recipe["alignment_log2"],
        directory_compression=Compression[recipe["directory_compression"].upper()],
    )
    for tensor in recipe["tensors"]:
        writer.add_tensor(build_entry(tensor))
    for user_section in recipe.get("user_sections", []):
        writer.add_user_section(user_section["name"], user_section["text"].encode("utf-8"))
    writer.close(recipe.get("metadata"))
    return buffer.getvalue()


# ==========================================================================================
# Expected arrays, computed from the recipe with numpy alone


def expected_array(recipe: dict[str, Any]) -> np.ndarray:
    """Return what a conforming reader must decode for one tensor recipe (spec section 9)."""
    call = recipe["call"]
    if call == "encode_raw":
        return array_from_spec(recipe["array"])
    dtype = DTYPES_BY_NAME[recipe["dtype"]]
    shape = tuple(recipe["shape"])
    if call in ("encode_shared", "shared_entry"):
        codebook = array_from_spec(recipe["codebook"])
        # encode_shared stores float16 codebooks as f16 and every other dtype as f32.
        stored = codebook.astype("<f2" if codebook.dtype == np.float16 else "<f4")
        assignments = array_from_spec(recipe["assignments"]).reshape(-1)
        return stored.astype(dtype)[assignments].reshape(shape)
    if call == "encode_sparse_shared":
        codebook = array_from_spec(recipe["codebook"])
        stored = codebook.astype("<f2" if codebook.dtype == np.float16 else "<f4")
        assignments = array_from_spec(recipe["assignments"]).reshape(-1)
        dense = np.zeros(assignments.size, dtype=dtype)
        kept = assignments != recipe["zero_slot"]
        dense[kept] = stored.astype(dtype)[assignments[kept]]
        return dense.reshape(shape)
    if call == "encode_uniform":
        levels = array_from_spec(recipe["levels"]).astype(np.int64).reshape(-1)
        scales = array_from_spec(recipe["scales"]).astype(np.float32).reshape(-1)
        zero_points = array_from_spec(recipe["zero_points"]).astype(np.int64).reshape(-1)
        channels = scales.size
        grid = levels.reshape(channels, -1) if levels.size else levels.reshape(channels, 0)
        centred = (grid - zero_points[:, None]).astype(np.float32)
        return (centred * scales[:, None]).astype(dtype).reshape(shape)
    if call == "encode_lowrank":
        left = expected_array(recipe["left"]).astype(np.float64)
        right = expected_array(recipe["right"]).astype(np.float64)
        return (left @ right).astype(dtype).reshape(shape)
    raise ValueError(f"unknown call {call!r}")


def expected_arrays(recipe: dict[str, Any]) -> dict[str, np.ndarray]:
    """Return the expected decoded arrays of a vector, by tensor name (factors excluded)."""
    return {tensor["name"]: expected_array(tensor) for tensor in recipe["tensors"]}


def write_npz(arrays: dict[str, np.ndarray]) -> bytes:
    """Write ``arrays`` as an uncompressed .npz with fixed member dates; return the bytes."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_STORED) as archive:
        for name, array in arrays.items():
            if array.dtype == DTYPES_BY_NAME["bfloat16"]:
                array = array.view(np.uint16)
            member = io.BytesIO()
            np.lib.format.write_array(member, array, version=(1, 0),
                                      allow_pickle=False)
            info = zipfile.ZipInfo(name + ".npy", date_time=ZIP_DATE)
            info.external_attr = 0o644 << 16
            archive.writestr(info, member.getvalue())
    return buffer.getvalue()


def read_npz(path: Path, dtypes: dict[str, str]) -> dict[str, np.ndarray]:
    """Read an expected-array file, restoring bfloat16 arrays from their uint16 bit patterns."""
    with np.load(path, allow_pickle=False) as archive:
        arrays = {name: archive[name] for name in archive.files}
    for name, dtype in dtypes.items():
        if dtype == "bfloat16":
            arrays[name] = arrays[name].view(DTYPES_BY_NAME["bfloat16"])
    return arrays


# ==========================================================================================
# The vectors


def _raw(name: str, array: dict, compression: str = "none") -> dict:
    return {"call": "encode_raw", "name": name, "array": array, "compression": compression}


def _file(tensors: list[dict], *, alignment_log2: int = 6, directory_compression: str = "zstd",
          **extra) -> dict:
    return {"alignment_log2": alignment_log2, "directory_compression": directory_compression,
            "tensors": tensors, **extra}


def _shared(name, dtype, shape, codebook, assignments, bits, form, codebook_dtype="float32"):
    return {
        "call": "encode_shared", "name": name, "dtype": dtype, "shape": list(shape),
        "codebook": array_spec(codebook, codebook_dtype),
        "assignments": array_spec(assignments, "int64", shape), "bits": bits, "stream_form": form,
    }


def _sparse(name, dtype, shape, codebook, assignments, bits, index_bits, zero_slot, form):
    return {
        "call": "encode_sparse_shared", "name": name, "dtype": dtype, "shape": list(shape),
        "codebook": array_spec(codebook, "float32"),
        "assignments": array_spec(assignments, "int64", shape), "bits": bits,
        "index_bits": index_bits, "zero_slot": zero_slot, "stream_form": form,
    }


def _uniform(name, dtype, shape, levels, bits, scales, zero_points, per_channel, form):
    return {
        "call": "encode_uniform", "name": name, "dtype": dtype, "shape": list(shape),
        "levels": array_spec(levels, "int64", shape), "bits": bits,
        "scales": array_spec(scales, "float32"), "zero_points": array_spec(zero_points, "int32"),
        "per_channel": per_channel, "stream_form": form,
    }


def _sparse_assignments(size: int, zero_slot: int, kept: dict[int, int]) -> np.ndarray:
    assignments = np.full(size, zero_slot, dtype=np.int64)
    for position, cluster in kept.items():
        assignments[position] = cluster
    return assignments


def _vector_definitions() -> dict[str, tuple[str, dict]]:
    """Return name -> (description, recipe) for every golden vector."""
    f32 = np.float32
    vectors: dict[str, tuple[str, dict]] = {}

    special = np.array([0.0, -0.0, 1.5, np.inf, -np.inf, 1e-45], dtype=f32)
    nan_with_payload = np.frombuffer(struct.pack("<I", 0x7FC01234), dtype=f32)
    vectors["raw_none"] = (
        "raw float32, compression none: -0.0, infinities, a subnormal and a NaN with a payload "
        "must come back bit for bit",
        _file([_raw("w", array_spec(np.concatenate([special, nan_with_payload]), "float32", (7,)))]),
    )
    vectors["raw_zstd"] = (
        "raw float32 with compression zstd and shuffle 0 (a 4-value period compresses better "
        "unshuffled)",
        _file([_raw("w", array_spec(np.tile(np.array([1.0, 2.5, -3.25, 1e-3], f32), 64),
                                    "float32", (16, 16)), "zstd")]),
    )
    ramp = np.arange(256, dtype=np.float64) / 256
    vectors["raw_zstd_shuffled"] = (
        "raw float32 and bfloat16 with compression zstd and shuffle 1 (byte planes)",
        _file([
            _raw("ramp.f32", array_spec(ramp, "float32", (16, 16)), "zstd"),
            _raw("ramp.bf16", array_spec(ramp, "bfloat16", (256,)), "zstd"),
        ]),
    )
    vectors["raw_dtypes"] = (
        "one raw tensor (compression none) of each of the 13 dtypes, with extreme values",
        _file([
            _raw("float32", array_spec([1.0, -2.0, 3.4028234663852886e38, 1.1754943508222875e-38], "float32")),
            _raw("float16", array_spec([1.0, -0.5, 65504.0, 6.103515625e-05, 5.960464477539063e-08], "float16")),
            _raw("bfloat16", array_spec([1.0, -0.5, 3.3895313892515355e38, 0.0078125], "bfloat16")),
            _raw("float64", array_spec([1.0, -2.5, 1.7976931348623157e308, 5e-324], "float64", (2, 2))),
            _raw("int8", array_spec([-128, -1, 0, 127], "int8")),
            _raw("int16", array_spec([-32768, -1, 0, 32767], "int16")),
            _raw("int32", array_spec([-2147483648, -1, 0, 2147483647], "int32")),
            _raw("int64", array_spec([-9223372036854775808, -1, 0, 9223372036854775807], "int64")),
            _raw("uint8", array_spec([0, 1, 128, 255], "uint8")),
            _raw("bool", array_spec([True, False, True, True, False], "bool")),
            _raw("uint16", array_spec([0, 1, 32768, 65535], "uint16")),
            _raw("uint32", array_spec([0, 1, 2147483648, 4294967295], "uint32")),
            _raw("uint64", array_spec([0, 1, 9223372036854775808, 18446744073709551615], "uint64")),
        ]),
    )

    vectors["shared_packed"] = (
        "shared float32 (4, 6), 5 clusters in 3 bits, assignments packed",
        _file([_shared("fc.weight", "float32", (4, 6), [-0.5, 0.0, 0.25, 1.0, 2.5],
                       pattern(24, 5), 3, "packed")]),
    )
    skewed = np.array([0, 0, 0, 0, 1, 1, 2, 3], dtype=np.int64)[pattern(64, 8, 5)]
    vectors["shared_huffman"] = (
        "shared float32 (8, 8), 4 clusters in 2 bits with skewed frequencies, assignments "
        "Huffman-coded",
        _file([_shared("conv.weight", "float32", (8, 8), [0.0, -0.125, 0.75, -1.0], skewed, 2,
                       "huffman")]),
    )
    vectors["shared_huffman_blocks"] = (
        "shared float32 (50,), 6 clusters in 3 bits, Huffman blocks of 8 symbols so the block "
        "index holds 6 offsets",
        _file([{
            "call": "shared_entry", "name": "blocks", "dtype": "float32", "shape": [50],
            "codebook": array_spec([0.5, -0.5, 1.0, -1.0, 2.0, -2.0], "float32"),
            "assignments": array_spec(np.array([0, 0, 0, 1, 1, 2, 3, 4, 5, 0])[pattern(50, 10, 3)],
                                      "int64"),
            "bits": 3, "stream_form": "huffman", "block_size": 8,
        }]),
    )
    vectors["shared_codebook_dtypes"] = (
        "shared tensors with an f16 codebook (float16 and float32 tensors) and with f32 "
        "codebooks rounded to float16 and bfloat16 (round to nearest even)",
        _file([
            _shared("f16.f16", "float16", (3, 4), [-1.5, 0.0, 0.099975586, 3.0], pattern(12, 4),
                    2, "packed", codebook_dtype="float16"),
            _shared("f32.f16", "float32", (12,), [-1.5, 0.0, 0.099975586, 3.0], pattern(12, 4, 3),
                    2, "huffman", codebook_dtype="float16"),
            _shared("f16.f32", "float16", (2, 3), [0.1, -0.3333333432674408, 1e-5], pattern(6, 3),
                    2, "packed"),
            _shared("bf16.f32", "bfloat16", (2, 3), [0.1, -0.3333333432674408, 1.00390625],
                    pattern(6, 3), 2, "huffman"),
        ]),
    )
    vectors["shared_one_cluster"] = (
        "shared with one cluster: the Huffman stream has a single symbol (length 1, empty "
        "payload), and the same tensor packed in 1 bit",
        _file([
            _shared("one.huffman", "float32", (3, 4), [0.75], np.zeros(12), 1, "huffman"),
            _shared("one.packed", "float32", (3, 4), [0.75], np.zeros(12), 1, "packed"),
        ]),
    )
    vectors["shared_1bit"] = (
        "shared with 2 clusters in 1 bit, packed and Huffman (two codes of length 1)",
        _file([
            _shared("bits1.packed", "float32", (5, 3), [-0.25, 0.5], pattern(15, 2, 1), 1, "packed"),
            _shared("bits1.huffman", "float32", (5, 3), [-0.25, 0.5], pattern(15, 2, 1), 1,
                    "huffman"),
        ]),
    )

    sparse_small = _sparse_assignments(48, 0, {1: 1, 2: 3, 9: 2, 10: 1, 23: 3, 24: 2, 40: 1, 46: 3})
    vectors["sparse_shared_packed"] = (
        "sparse-shared float32 (6, 8), zero slot 0, 2-bit assignments and 3-bit gaps, packed; "
        "the runs of 12 and 15 zeros need one filler each",
        _file([_sparse("fc1.weight", "float32", (6, 8), [0.0, -0.5, 0.25, 1.0], sparse_small,
                       2, 3, 0, "packed")]),
    )
    kept = {}
    for position in range(256):
        if (position * 37) % 10 < 2 and not 100 <= position < 141:
            kept[position] = [0, 0, 0, 1, 1, 3, 4, 5][(position * 5) % 8]
    vectors["sparse_shared_huffman"] = (
        "sparse-shared float32 (16, 16), 43 of 256 elements kept, zero slot 2 (not 0), 3-bit "
        "assignments and 4-bit gaps, both Huffman-coded; a 49-zero run needs 3 fillers",
        _file([_sparse("fc2.weight", "float32", (16, 16), [-1.5, -0.25, 0.0, 0.125, 0.5, 2.0],
                       _sparse_assignments(256, 2, kept), 3, 4, 2, "huffman")]),
    )
    vectors["sparse_all_zero"] = (
        "all-zero sparse-shared tensors: no entries, so both streams are empty, packed and "
        "Huffman (alphabet_size 0)",
        _file([
            _sparse("zero.packed", "float32", (5, 5), [0.0, 1.0], np.zeros(25), 1, 4, 0, "packed"),
            _sparse("zero.huffman", "float32", (5, 5), [0.0, 1.0], np.zeros(25), 1, 4, 0, "huffman"),
        ]),
    )
    filler_kept = {0: 1, 5: 2, 30: 3, 31: 1, 47: 2}
    vectors["sparse_fillers"] = (
        "sparse-shared (64,) with 2-bit and 1-bit gaps: runs of 4, 24 and 15 zeros give "
        "fillers, including a run that is an exact multiple of 2^index_bits (gap 0 after the "
        "fillers)",
        _file([
            _sparse("gaps2.packed", "float32", (64,), [0.0, 1.0, -1.0, 0.5],
                    _sparse_assignments(64, 0, filler_kept), 2, 2, 0, "packed"),
            _sparse("gaps2.huffman", "float32", (64,), [0.0, 1.0, -1.0, 0.5],
                    _sparse_assignments(64, 0, filler_kept), 2, 2, 0, "huffman"),
            _sparse("gaps1.packed", "float32", (8, 8), [0.0, 1.0, -1.0, 0.5],
                    _sparse_assignments(64, 0, filler_kept), 2, 1, 0, "packed"),
        ]),
    )
    vectors["sparse_wide_gaps"] = (
        "sparse-shared with 16-bit gaps and 1-bit assignments (zero slot 1), packed and Huffman",
        _file([
            _sparse("gaps16.packed", "float64", (40,), [0.5, 0.0], _sparse_assignments(40, 1, {3: 0, 39: 0}),
                    1, 16, 1, "packed"),
            _sparse("gaps16.huffman", "float64", (40,), [0.5, 0.0], _sparse_assignments(40, 1, {3: 0, 39: 0}),
                    1, 16, 1, "huffman"),
        ]),
    )

    vectors["uniform_per_tensor"] = (
        "uniform per tensor, 4-bit levels with scale 0.125 and zero point 8, packed (float32) "
        "and Huffman (float16)",
        _file([
            _uniform("q.f32", "float32", (4, 8), pattern(32, 16), 4, [0.125], [8], False, "packed"),
            _uniform("q.f16", "float16", (32,), pattern(32, 5, 3), 4, [0.1], [2], False, "huffman"),
        ]),
    )
    vectors["uniform_per_channel"] = (
        "uniform per output channel (3 channels, negative zero point), 3-bit levels, Huffman "
        "and packed",
        _file([
            _uniform("qc.huffman", "float32", (3, 5), pattern(15, 8, 3), 3, [0.5, 0.25, 2.0],
                     [4, 0, -3], True, "huffman"),
            _uniform("qc.packed", "float32", (3, 1, 5), pattern(15, 8, 5), 3, [0.5, 0.25, 2.0],
                     [4, 0, -3], True, "packed"),
        ]),
    )
    wide_levels = pattern(64, 65536, 2053)
    wide_levels[0], wide_levels[1] = 0, 65535
    vectors["uniform_16bit"] = (
        "uniform with 16-bit levels: the full range packed, and a few symbols above 255 "
        "Huffman-coded",
        _file([
            _uniform("q16.packed", "float32", (64,), wide_levels, 16, [2.0 ** -8], [32768], False,
                     "packed"),
            _uniform("q16.huffman", "float64", (4, 4),
                     np.array([300, 256, 256, 256, 299, 256, 300, 256, 257, 256, 256, 258, 256, 256, 299, 256]),
                     16, [0.5], [256], False, "huffman"),
        ]),
    )

    left = _raw("lr.left", array_spec([[1, 2], [0, -1], [3, 1], [2, 2]], "float32"))
    right = _shared("lr.right", "float32", (2, 6), [-2.0, -1.0, 0.0, 1.0, 2.0, 3.0],
                    pattern(12, 6, 5), 3, "huffman")
    left3 = _raw("lr3.left", array_spec([[1, 0], [0, 1], [-1, 2], [4, -3]], "float32"))
    right3 = _raw("lr3.right", array_spec(pattern(12, 7, 3) - 3, "float32", (2, 6)))
    vectors["lowrank"] = (
        "lowrank (4, 6) = raw left (4, 2) @ shared right (2, 6), and lowrank (4, 2, 3) viewed "
        "as a 4 x 6 matrix; small integer factors make the product exact",
        _file([
            {"call": "encode_lowrank", "name": "lr", "dtype": "float32", "shape": [4, 6], "rank": 2,
             "left": left, "right": right},
            {"call": "encode_lowrank", "name": "lr3", "dtype": "float32", "shape": [4, 2, 3],
             "rank": 2, "left": left3, "right": right3},
        ]),
    )

    vectors["empty_tensors"] = (
        "tensors with no elements in every encoding; the empty raw section (size 0) shares its "
        "offset with the next section",
        _file([
            _raw("raw.empty", array_spec([], "float32", (0, 3)), "zstd"),
            _raw("raw.after", array_spec([1.0, 2.0], "float32")),
            _shared("shared.empty", "float32", (0,), [1.0, 2.0], np.zeros(0), 1, "huffman"),
            _sparse("sparse.empty", "float32", (2, 0), [0.0, 1.0], np.zeros((2, 0)), 1, 3, 0,
                    "packed"),
            _uniform("uniform.empty", "float32", (0, 4), np.zeros((0, 4)), 8, [], [], True,
                     "packed"),
        ]),
    )
    vectors["scalars"] = (
        "0-d tensors (one element) in raw, shared, sparse-shared and uniform",
        _file([
            _raw("raw.f64", array_spec(2.718281828459045, "float64", ())),
            _raw("raw.bool", array_spec(True, "bool", ())),
            _shared("shared", "float32", (), [0.5, -4.0], np.array(1), 1, "packed"),
            _sparse("sparse", "float32", (), [0.0, 3.0], np.array(1), 1, 2, 0, "huffman"),
            _uniform("uniform", "float32", (), np.array(7), 4, [0.25], [3], False, "huffman"),
        ]),
    )
    vectors["user_sections_metadata"] = (
        "user sections and metadata with settings (optional flags settings and user_sections), "
        "and a tensor name with a slash, a space and non-ASCII letters",
        _file(
            [
                _raw("layer 0/fc.weight ü", array_spec([[1.0, 2.0], [3.0, 4.0]], "float32")),
                _shared("layer 1/fc.weight", "float32", (2, 2), [0.0, 1.0], [[0, 1], [1, 0]], 1,
                        "packed"),
            ],
            user_sections=[
                {"name": "license", "text": "CC-BY-4.0"},
                {"name": "labels.json", "text": "[\"zero\", \"one\"]"},
            ],
            metadata={
                "encoder": {"name": "make_vectors", "version": "1"},
                "settings": {"layer 1/fc.weight": {"bits": 1, "encoding": "shared"}},
                "user": {"accuracy": 0.9921, "dataset": "MNIST", "tags": ["golden", "ü"]},
            },
        ),
    )
    vectors["alignment_1"] = (
        "alignment_log2 0 (no padding) and the directory stored without compression",
        _file(
            [
                _raw("a", array_spec([1, 2, 3], "int16")),
                _shared("b", "float32", (3,), [0.0, 1.0, 2.0], [2, 1, 0], 2, "packed"),
                _sparse("c", "float32", (10,), [0.0, -1.0], [0, 0, 1, 0, 0, 0, 0, 0, 1, 0], 1, 2,
                        0, "huffman"),
            ],
            alignment_log2=0, directory_compression="none",
        ),
    )
    return vectors


VECTORS = _vector_definitions()


def build_vector(name: str) -> bytes:
    """Build the bytes of golden vector ``name`` from its recipe."""
    return build_file(VECTORS[name][1])


# ==========================================================================================
# Parsing and rebuilding a container, for the manifest and the malformed files

PREAMBLE_SIZE = 16
FOOTER_SIZE = 88
FOOTER = struct.Struct("<QQQIIIBBHII32s8s")
SECTION_ENTRY = struct.Struct("<QQIB3s")
RECORD_FIELDS = struct.Struct("<BBBBB3s")


@dataclass
class Layout:
    """A DCF file taken apart: the bytes before the directory and every directory field.

    ``counts`` overrides the directory header counts (section, tensor, user section and
    metadata size) where a case needs a count that disagrees with the tables, and
    ``directory_tail`` contains bytes appended after the metadata.
    """

    body: bytearray
    sections: list[dict[str, Any]]
    tensors: list[dict[str, Any]]
    user_sections: list[dict[str, Any]]
    metadata: bytes
    footer: dict[str, Any]
    counts: dict[str, int] = field(default_factory=dict)
    directory_tail: bytes = b""


def parse_layout(data: bytes) -> Layout:
    """Take a valid DCF file apart (no validation: the input comes from build_file)."""
    footer_values = FOOTER.unpack_from(data, len(data) - FOOTER_SIZE)
    footer = dict(zip(
        ("directory_offset", "directory_stored_size", "directory_size", "directory_crc32",
         "required_flags", "optional_flags", "alignment_log2", "directory_compression",
         "reserved_38", "footer_crc32", "reserved_44", "digest", "footer_magic"),
        footer_values,
    ))
    start = footer["directory_offset"]
    stored = data[start : start + footer["directory_stored_size"]]
    directory = zstandard.ZstdDecompressor().decompress(stored) if footer["directory_compression"] else stored

    position = 16
    section_count, tensor_count, user_count, metadata_size = struct.unpack_from("<IIII", directory)
    sections = []
    for _ in range(section_count):
        offset, size, crc, kind, reserved = SECTION_ENTRY.unpack_from(directory, position)
        sections.append({"offset": offset, "size": size, "crc32": crc, "kind": kind, "reserved": reserved})
        position += SECTION_ENTRY.size
    tensors = []
    for _ in range(tensor_count):
        (name_size,) = struct.unpack_from("<H", directory, position)
        name = directory[position + 2 : position + 2 + name_size]
        position += 2 + name_size
        dtype, ndim, encoding, version, flags, reserved = RECORD_FIELDS.unpack_from(directory, position)
        position += RECORD_FIELDS.size
        shape = list(struct.unpack_from(f"<{ndim}Q", directory, position))
        position += 8 * ndim
        first, count, params_size = struct.unpack_from("<IIH", directory, position)
        position += 10
        params = directory[position : position + params_size]
        position += params_size
        tensors.append({
            "name": bytes(name), "dtype": dtype, "ndim": ndim, "encoding": encoding,
            "encoding_version": version, "flags": flags, "reserved": reserved, "shape": shape,
            "first_section": first, "section_count": count, "params": bytes(params),
        })
    user_sections = []
    for _ in range(user_count):
        (name_size,) = struct.unpack_from("<H", directory, position)
        name = directory[position + 2 : position + 2 + name_size]
        (index,) = struct.unpack_from("<I", directory, position + 2 + name_size)
        position += 6 + name_size
        user_sections.append({"name": bytes(name), "section": index})
    metadata = bytes(directory[position : position + metadata_size])
    return Layout(bytearray(data[:start]), sections, tensors, user_sections, metadata, footer)


def serialize_directory(layout: Layout) -> bytes:
    counts = {
        "section_count": len(layout.sections), "tensor_count": len(layout.tensors),
        "user_section_count": len(layout.user_sections), "metadata_size": len(layout.metadata),
    }
    counts.update(layout.counts)
    parts = [struct.pack("<IIII", counts["section_count"], counts["tensor_count"],
                         counts["user_section_count"], counts["metadata_size"])]
    for entry in layout.sections:
        parts.append(SECTION_ENTRY.pack(entry["offset"], entry["size"], entry["crc32"],
                                        entry["kind"], entry["reserved"]))
    for record in layout.tensors:
        parts.append(struct.pack("<H", len(record["name"])) + record["name"])
        parts.append(RECORD_FIELDS.pack(record["dtype"], record["ndim"], record["encoding"],
                                        record["encoding_version"], record["flags"], record["reserved"]))
        parts.append(b"".join(struct.pack("<Q", dim) for dim in record["shape"]))
        parts.append(struct.pack("<IIH", record["first_section"], record["section_count"],
                                 len(record["params"])) + record["params"])
    for entry in layout.user_sections:
        parts.append(struct.pack("<H", len(entry["name"])) + entry["name"]
                     + struct.pack("<I", entry["section"]))
    parts.append(layout.metadata)
    parts.append(layout.directory_tail)
    return b"".join(parts)


def assemble(layout: Layout) -> bytearray:
    """Rebuild the file: directory, its CRC-32 and sizes, the footer CRC-32 and the digest."""
    directory = serialize_directory(layout)
    stored = directory
    if layout.footer["directory_compression"] == Compression.ZSTD:
        stored = zstandard.ZstdCompressor(level=19, write_content_size=True).compress(directory)
    footer = dict(layout.footer)
    footer.update(
        directory_offset=len(layout.body), directory_stored_size=len(stored),
        directory_size=len(directory), directory_crc32=zlib.crc32(stored),
    )
    data = bytearray(layout.body) + stored + FOOTER.pack(*footer.values())
    refresh_footer(data)
    return data


def refresh_footer(data: bytearray) -> None:
    """Recompute the footer CRC-32 (over footer bytes 0-39) and then the digest."""
    base = len(data) - FOOTER_SIZE
    struct.pack_into("<I", data, base + 40, zlib.crc32(data[base : base + 40]))
    refresh_digest(data)


def refresh_digest(data: bytearray) -> None:
    """Recompute the SHA-256 digest over every byte before it."""
    at = len(data) - 40
    data[at : at + 32] = hashlib.sha256(data[:at]).digest()


def refresh_section_crc(layout: Layout, index: int) -> None:
    entry = layout.sections[index]
    entry["crc32"] = zlib.crc32(layout.body[entry["offset"] : entry["offset"] + entry["size"]])


def tensor_sections(layout: Layout, name: str) -> list[dict[str, Any]]:
    record = next(r for r in layout.tensors if r["name"] == name.encode("utf-8"))
    first = record["first_section"]
    return layout.sections[first : first + record["section_count"]]


def stream_fields(layout: Layout, section: dict[str, Any]) -> dict[str, Any]:
    """Return the stream header fields of a stream section (spec section 8)."""
    offset = section["offset"]
    form, width, max_code_length, _, count = struct.unpack_from("<BBBBQ", layout.body, offset)
    fields = {"form": "packed" if form == StreamForm.PACKED else "huffman", "width": width,
              "count": count}
    if form == StreamForm.HUFFMAN:
        alphabet, block_size, payload_bits = struct.unpack_from("<IIQ", layout.body, offset + 12)
        fields.update(max_code_length=max_code_length, alphabet_size=alphabet,
                      block_size=block_size, payload_bits=payload_bits)
    return fields


def read_bits(buffer, bit_offset: int, width: int) -> int:
    value = 0
    for bit in range(bit_offset, bit_offset + width):
        value = (value << 1) | (buffer[bit // 8] >> (7 - bit % 8)) & 1
    return value


def write_bits(buffer: bytearray, bit_offset: int, width: int, value: int) -> None:
    """Write ``value`` as ``width`` bits MSB-first at ``bit_offset`` of ``buffer``."""
    for i, bit in enumerate(range(bit_offset, bit_offset + width)):
        mask = 0x80 >> (bit % 8)
        if value >> (width - 1 - i) & 1:
            buffer[bit // 8] |= mask
        else:
            buffer[bit // 8] &= ~mask & 0xFF


# ==========================================================================================
# The manifest


def describe_vector(name: str, data: bytes) -> dict[str, Any]:
    """Return the manifest entry of vector ``name`` built as ``data``."""
    description, recipe = VECTORS[name]
    layout = parse_layout(data)
    tensors = []
    for record in layout.tensors:
        first = record["first_section"]
        streams = {}
        for section in layout.sections[first : first + record["section_count"]]:
            if section["kind"] in STREAM_KINDS:
                streams[SectionKind(section["kind"]).name.lower()] = stream_fields(layout, section)
        tensors.append({
            "name": record["name"].decode("utf-8"),
            "dtype": DTYPE_NAMES[record["dtype"]],
            "shape": record["shape"],
            "encoding": ENCODING_NAMES[Encoding(record["encoding"])],
            "factor": bool(record["flags"] & 1),
            "streams": streams,
        })
    return {
        "file": f"{name}.dcf",
        "expected": f"{name}.npz",
        "description": description,
        "size": len(data),
        "sha256": hashlib.sha256(data).hexdigest(),
        "tensors": tensors,
        "build": recipe,
    }


def check_forced_forms(name: str, entry: dict[str, Any]) -> None:
    """Raise unless every stream has the form its recipe forced (so a vector tests that form)."""
    forms = {}

    def collect(recipe):
        if "stream_form" in recipe:
            forms[recipe["name"]] = recipe["stream_form"]
        for side in ("left", "right"):
            if side in recipe:
                collect(recipe[side])

    for tensor in VECTORS[name][1]["tensors"]:
        collect(tensor)
    for tensor in entry["tensors"]:
        for kind, stream in tensor["streams"].items():
            expected = forms.get(tensor["name"])
            if expected is not None and stream["form"] != expected:
                raise RuntimeError(
                    f"vector {name}: tensor {tensor['name']!r} stream {kind} is {stream['form']}, "
                    f"the recipe forced {expected}"
                )


# ==========================================================================================
# Malformed files


@dataclass
class MalformedCase:
    name: str
    error: str | None
    message: str
    call: str
    description: str
    build: Callable[[], bytes]
    extra: dict[str, Any] = field(default_factory=dict)


MALFORMED: list[MalformedCase] = []


def malformed(name: str, error: str | None, message: str, call: str, description: str, **extra):
    """Register a malformed case built by the decorated function."""
    def register(function: Callable[[], bytes]) -> Callable[[], bytes]:
        MALFORMED.append(MalformedCase(name, error, message, call, description, function, extra))
        return function
    return register


_BASE_CACHE: dict[str, bytes] = {}


def base(name: str) -> bytes:
    if name not in _BASE_CACHE:
        _BASE_CACHE[name] = build_vector(name)
    return _BASE_CACHE[name]


def edit_layout(vector: str, edit: Callable[[Layout], None]) -> bytes:
    """Apply ``edit`` to the parsed layout of ``vector`` and rebuild every checksum around it."""
    layout = parse_layout(base(vector))
    edit(layout)
    return bytes(assemble(layout))


def edit_bytes(vector: str, edit: Callable[[bytearray, int], None], *, footer_crc: bool) -> bytes:
    """Apply ``edit(data, footer_start)`` to the bytes of ``vector``, then refresh the footer.

    ``footer_crc`` is False when the edit is outside footer bytes 0-39 (the preamble, or the
    reserved field at footer offset 44), which the footer CRC-32 does not cover.
    """
    data = bytearray(base(vector))
    edit(data, len(data) - FOOTER_SIZE)
    if footer_crc:
        refresh_footer(data)
    else:
        refresh_digest(data)
    return bytes(data)


def edit_section(vector: str, tensor: str, position: int,
                 edit: Callable[[bytearray, int, dict[str, Any]], None]) -> bytes:
    """Edit section ``position`` of ``tensor``: ``edit(body, section_offset, section)``."""
    def apply(layout: Layout) -> None:
        first = next(r["first_section"] for r in layout.tensors if r["name"] == tensor.encode())
        section = layout.sections[first + position]
        edit(layout.body, section["offset"], section)
        refresh_section_crc(layout, first + position)
    return edit_layout(vector, apply)


def record(layout: Layout, name: str) -> dict[str, Any]:
    return next(r for r in layout.tensors if r["name"] == name.encode("utf-8"))


def _truncation_cases() -> None:
    # The cut points depend on the vector's layout, so this builds the vector on import.
    data = base("sparse_shared_huffman")
    layout = parse_layout(data)
    cuts = {0: "empty", 4: "magic", PREAMBLE_SIZE: "preamble_end"}
    for index, section in enumerate(layout.sections):
        cuts.setdefault(section["offset"], f"section{index}_start")
        cuts.setdefault(section["offset"] + section["size"], f"section{index}_end")
    cuts[len(data) - FOOTER_SIZE] = "footer_start"
    cuts[len(data) - 1] = "last_byte"
    for cut, label in sorted(cuts.items()):
        if cut == 0:
            message, error = "a file of 0 bytes", "TruncatedError"
        elif cut < 8:
            message, error = "expected 8 bytes", "TruncatedError"
        elif cut < PREAMBLE_SIZE + FOOTER_SIZE:
            message, error = "a file of at least 104 bytes", "TruncatedError"
        else:
            message, error = "the file is truncated, has trailing bytes, or its last bytes are damaged", "TruncatedError"
        malformed(
            f"truncated_{label}", error, message, "open",
            f"sparse_shared_huffman.dcf cut to its first {cut} bytes ({label.replace('_', ' ')})",
        )(lambda cut=cut: data[:cut])


_truncation_cases()


@malformed("bad_magic", "BadMagicError", "not a DCF file (expected the bytes 89 44 43 46 0d 0a 1a 0a", "open",
           "preamble magic with CR LF turned into LF, as a text-mode transfer would")
def _bad_magic() -> bytes:
    data = base("raw_none")
    # A text-mode copy turns every CR LF into LF. Only the magic's CR is dropped here, which
    # shifts every later byte by one.
    return data[:4] + data[5:]


@malformed("future_major_version", "UnsupportedVersionError", "expected version 1.x, found 2.0",
           "open", "major_version 2")
def _future_major() -> bytes:
    return edit_bytes("raw_none", lambda d, f: struct.pack_into("<H", d, 8, 2), footer_crc=False)


@malformed("future_minor_unknown_encoding", "UnknownFeatureError", "encoding at offset 40 (0x28): expected one of", "open",
           "minor_version 7 with encoding id 9: the minor version is accepted, the encoding is "
           "rejected by id")
def _future_minor() -> bytes:
    def edit(layout: Layout) -> None:
        struct.pack_into("<H", layout.body, 10, 7)
        layout.tensors[0]["encoding"] = 9
    return edit_layout("raw_none", edit)


@malformed("reserved_preamble", "ReservedFieldError", "preamble.reserved", "open",
           "preamble reserved u32 set to 1")
def _reserved_preamble() -> bytes:
    return edit_bytes("raw_none", lambda d, f: struct.pack_into("<I", d, 12, 1), footer_crc=False)


@malformed("unknown_required_flag", "UnknownFeatureError", "unknown required flag bit 5", "open",
           "required_flags bit 5, which no version defines")
def _unknown_required_flag() -> bytes:
    return edit_bytes("raw_none", lambda d, f: struct.pack_into("<I", d, f + 28, 1 << 5), footer_crc=True)


@malformed("unknown_optional_flag", None, "", "open",
           "optional_flags bit 9, which a reader must ignore: opens and decodes normally",
           valid=True)
def _unknown_optional_flag() -> bytes:
    return edit_bytes("raw_none", lambda d, f: struct.pack_into("<I", d, f + 32, 1 << 9), footer_crc=True)


@malformed("reserved_footer_38", "ReservedFieldError", "footer.reserved", "open",
           "footer reserved u16 at footer offset 38 set to 1 (covered by the footer CRC-32)")
def _reserved_footer_38() -> bytes:
    return edit_bytes("raw_none", lambda d, f: struct.pack_into("<H", d, f + 38, 1), footer_crc=True)


@malformed("reserved_footer_44", "ReservedFieldError", "footer.reserved", "open",
           "footer reserved u32 at footer offset 44 set to 1 (not covered by the footer CRC-32)")
def _reserved_footer_44() -> bytes:
    return edit_bytes("raw_none", lambda d, f: struct.pack_into("<I", d, f + 44, 1), footer_crc=False)


@malformed("footer_crc", "ChecksumError", "footer.footer_crc32", "open",
           "directory_offset changed without updating the footer CRC-32")
def _footer_crc() -> bytes:
    data = bytearray(base("raw_none"))
    footer = len(data) - FOOTER_SIZE
    struct.pack_into("<Q", data, footer, struct.unpack_from("<Q", data, footer)[0] + 64)
    refresh_digest(data)
    return bytes(data)


@malformed("footer_magic", "TruncatedError", "expected 89 44 43 46 1a 45 4e 44", "open",
           "last byte of footer_magic changed")
def _footer_magic() -> bytes:
    data = bytearray(base("raw_none"))
    data[-1] ^= 0xFF
    return bytes(data)


@malformed("directory_crc", "ChecksumError", "directory.directory_crc32", "open",
           "one byte of the stored directory flipped, footer CRC-32 and digest refreshed")
def _directory_crc() -> bytes:
    data = bytearray(base("alignment_1"))
    directory_offset = struct.unpack_from("<Q", data, len(data) - FOOTER_SIZE)[0]
    data[directory_offset + 2] ^= 0x01
    refresh_digest(data)
    return bytes(data)


@malformed("alignment_log2_17", "InvalidFieldError", "expected 0 to 16, found 17", "open",
           "alignment_log2 17, above the maximum of 16")
def _alignment_17() -> bytes:
    return edit_bytes("raw_none", lambda d, f: struct.pack_into("<B", d, f + 36, 17), footer_crc=True)


@malformed("directory_compression_2", "InvalidFieldError", "expected 0 (none) or 1 (zstd), found 2",
           "open", "directory_compression 2, an unknown method")
def _directory_compression_2() -> bytes:
    return edit_bytes("raw_none", lambda d, f: struct.pack_into("<B", d, f + 37, 2), footer_crc=True)


@malformed("reserved_section_entry", "ReservedFieldError", "section.reserved", "open",
           "reserved bytes of section table entry 0 set to 00 01 00")
def _reserved_section_entry() -> bytes:
    return edit_layout("raw_none", lambda layout: layout.sections[0].update(reserved=b"\x00\x01\x00"))


@malformed("reserved_tensor_record", "ReservedFieldError", "reserved", "open",
           "reserved bytes of the tensor record set to 00 00 01")
def _reserved_tensor_record() -> bytes:
    return edit_layout("raw_none", lambda layout: layout.tensors[0].update(reserved=b"\x00\x00\x01"))


@malformed("reserved_tensor_flags", "ReservedFieldError", "only bit 0 (factor)", "open",
           "tensor flags bit 3, a reserved flag bit")
def _reserved_tensor_flags() -> bytes:
    return edit_layout("raw_none", lambda layout: layout.tensors[0].update(flags=8))


@malformed("reserved_stream_padding", "ReservedFieldError", "payload padding", "get:bits1.packed",
           "a 1 in the unused low bit of the last byte of a packed stream (15 symbols of 1 bit)")
def _reserved_stream_padding() -> bytes:
    def edit(body, offset, section):
        body[offset + section["size"] - 1] |= 0x01
    return edit_section("shared_1bit", "bits1.packed", 1, edit)


@malformed("overlapping_sections", "OffsetOutOfRangeError", "sections sorted and not overlapping",
           "open", "section 1 moved to start inside section 0 (alignment 1, CRC-32 refreshed)")
def _overlapping_sections() -> bytes:
    def edit(layout: Layout) -> None:
        first, second = layout.sections[0], layout.sections[1]
        second["offset"] = first["offset"] + first["size"] - 1
        refresh_section_crc(layout, 1)
    return edit_layout("alignment_1", edit)


@malformed("unaligned_section", "OffsetOutOfRangeError", "expected a multiple of 64", "open",
           "section 1 offset moved 8 bytes past its 64-byte boundary (CRC-32 refreshed)")
def _unaligned_section() -> bytes:
    def edit(layout: Layout) -> None:
        layout.sections[1]["offset"] += 8
        refresh_section_crc(layout, 1)
    return edit_layout("sparse_shared_huffman", edit)


@malformed("section_past_end", "OffsetOutOfRangeError", "the section to end by", "open",
           "last section offset set to 2^40, far past the end of the file")
def _section_past_end() -> bytes:
    return edit_layout("sparse_shared_huffman", lambda layout: layout.sections[-1].update(offset=1 << 40))


@malformed("tensor_count_huge", "LimitExceededError", "expected at most 1000000, found 4294967295",
           "open", "tensor_count 2^32 - 1, above the 1,000,000 limit")
def _tensor_count_huge() -> bytes:
    return edit_layout("raw_none", lambda layout: layout.counts.update(tensor_count=0xFFFFFFFF))


@malformed("tensor_count_past_directory", "TruncatedError", "bytes left in the directory", "open",
           "tensor_count 999,999: within the limit but far more records than the directory holds")
def _tensor_count_past_directory() -> bytes:
    return edit_layout("raw_none", lambda layout: layout.counts.update(tensor_count=999_999))


@malformed("section_count_huge", "LimitExceededError", "expected at most 4000000", "open",
           "section_count 2^32 - 1, above the 4,000,000 limit")
def _section_count_huge() -> bytes:
    return edit_layout("raw_none", lambda layout: layout.counts.update(section_count=0xFFFFFFFF))


@malformed("shape_overflow", "LimitExceededError", "a size of at most 9223372036854775807", "open",
           "shape (2^32, 2^32) of float32: the byte size 2^66 overflows 2^63")
def _shape_overflow() -> bytes:
    return edit_layout("sparse_shared_huffman",
                       lambda layout: layout.tensors[0].update(shape=[1 << 32, 1 << 32]))


@malformed("ndim_33", "LimitExceededError", "expected at most 32, found 33", "open",
           "ndim 33, above the 32-dimension limit (33 dimensions of 1)")
def _ndim_33() -> bytes:
    def edit(layout: Layout) -> None:
        layout.tensors[0].update(ndim=33, shape=[1] * 33)
    return edit_layout("scalars", edit)


@malformed("stream_count_huge", "TruncatedError", "expected at least 1099511627776 bits", "get:fc2.weight",
           "gaps stream count 2^40 in a tensor of 256 elements: the stream header alone shows "
           "that the payload is too short for that many codes (section CRC-32 refreshed)")
def _stream_count_huge() -> bytes:
    return edit_section("sparse_shared_huffman", "fc2.weight", 2,
                        lambda body, offset, s: struct.pack_into("<Q", body, offset + 4, 1 << 40))


@malformed("stream_count_over_size", "LimitExceededError", "expected at most 8 entries (the tensor's size), found 10",
           "get:fc1.weight", "sparse-shared streams of 10 consistent entries (8 kept, 2 fillers) in a tensor whose "
           "shape is changed from (6, 8) to (2, 4)")
def _stream_count_over_size() -> bytes:
    return edit_layout("sparse_shared_packed", lambda layout: layout.tensors[0].update(shape=[2, 4]))


@malformed("stream_count_mismatch", "InvalidFieldError", "count at offset", "get:fc.weight",
           "assignments stream count 23 in a dense shared tensor of 24 elements")
def _stream_count_mismatch() -> bytes:
    return edit_section("shared_packed", "fc.weight", 1,
                        lambda body, offset, s: struct.pack_into("<Q", body, offset + 4, 23))


def _edit_code_lengths(lengths_edit: Callable[[list[int]], list[int]]):
    def edit(body: bytearray, offset: int, section: dict[str, Any]) -> None:
        (alphabet,) = struct.unpack_from("<I", body, offset + 12)
        table = offset + 28
        lengths = [read_bits(body, table * 8 + 5 * s, 5) for s in range(alphabet)]
        for symbol, length in enumerate(lengths_edit(lengths)):
            write_bits(body, table * 8 + 5 * symbol, 5, length)
    return edit


@malformed("huffman_incomplete", "InvalidHuffmanTableError", "incomplete code", "get:conv.weight",
           "the code length of the last coded symbol set to 0, leaving a Kraft sum below 1")
def _huffman_incomplete() -> bytes:
    def drop_last(lengths: list[int]) -> list[int]:
        last = max(i for i, length in enumerate(lengths) if length)
        return lengths[:last] + [0] + lengths[last + 1 :]
    return edit_section("shared_huffman", "conv.weight", 1, _edit_code_lengths(drop_last))


@malformed("huffman_oversubscribed", "InvalidHuffmanTableError", "oversubscribed code",
           "get:conv.weight", "a code length shortened so the Kraft sum exceeds 1")
def _huffman_oversubscribed() -> bytes:
    def shorten(lengths: list[int]) -> list[int]:
        longest = max(lengths)
        index = lengths.index(longest)
        return lengths[:index] + [longest - 1] + lengths[index + 1 :]
    return edit_section("shared_huffman", "conv.weight", 1, _edit_code_lengths(shorten))


@malformed("huffman_single_symbol_length_2", "InvalidHuffmanTableError",
           "a single-symbol code must have length 1", "get:one.huffman",
           "the only symbol of a single-symbol code given length 2 (max_code_length raised to 2)")
def _huffman_single_length_2() -> bytes:
    def edit(body, offset, section):
        body[offset + 2] = 2
        _edit_code_lengths(lambda l: [2])(body, offset, section)
    return edit_section("shared_one_cluster", "one.huffman", 1, edit)


@malformed("huffman_payload_bits", "InvalidFieldError", "expected 110, the bits that the 46 symbols use",
           "get:fc2.weight", "payload_bits 111 where the 46 codes use 110; the last payload byte "
           "has spare bits, so the section size is unchanged")
def _huffman_payload_bits() -> bytes:
    def edit(body, offset, section):
        (payload_bits,) = struct.unpack_from("<Q", body, offset + 20)
        struct.pack_into("<Q", body, offset + 20, payload_bits + 1)
    return edit_section("sparse_shared_huffman", "fc2.weight", 1, edit)


@malformed("huffman_block_offsets_decreasing", "InvalidFieldError", "non-decreasing offsets",
           "get:blocks", "block_offsets[2] set below block_offsets[1]")
def _block_offsets_decreasing() -> bytes:
    def edit(body, offset, section):
        (alphabet,) = struct.unpack_from("<I", body, offset + 12)
        index_at = offset + 28 + (5 * alphabet + 7) // 8
        (second,) = struct.unpack_from("<Q", body, index_at + 8)
        struct.pack_into("<Q", body, index_at + 16, second - 1)
    return edit_section("shared_huffman_blocks", "blocks", 1, edit)


@malformed("huffman_block_offset_misplaced", "InvalidFieldError", "where the decoder finishes block",
           "get:blocks", "block_offsets[0] moved one bit later than the end of block 0")
def _block_offset_misplaced() -> bytes:
    def edit(body, offset, section):
        (alphabet,) = struct.unpack_from("<I", body, offset + 12)
        index_at = offset + 28 + (5 * alphabet + 7) // 8
        (first,) = struct.unpack_from("<Q", body, index_at)
        struct.pack_into("<Q", body, index_at, first + 1)
    return edit_section("shared_huffman_blocks", "blocks", 1, edit)


@malformed("assignment_beyond_codebook", "IndexOutOfRangeError", "a cluster index below n_clusters (5)",
           "get:fc.weight", "packed assignment 7 in a 3-bit stream over a codebook of 5 entries")
def _assignment_beyond_codebook() -> bytes:
    return edit_section("shared_packed", "fc.weight", 1,
                        lambda body, offset, s: write_bits(body, (offset + 12) * 8 + 3 * 4, 3, 7))


@malformed("gap_past_end", "IndexOutOfRangeError", "past the end of a tensor of 48 elements",
           "get:fc1.weight", "last gap raised from 1 to 2, so the last entry lands at position 48")
def _gap_past_end() -> bytes:
    def edit(body, offset, section):
        (count,) = struct.unpack_from("<Q", body, offset + 4)
        at = (offset + 12) * 8 + 3 * (count - 1)
        write_bits(body, at, 3, read_bits(body, at, 3) + 2)
    return edit_section("sparse_shared_packed", "fc1.weight", 2, edit)


@malformed("zero_slot_not_zero", "InvalidFieldError", "expected +0.0 (the zero slot), found 0.5",
           "get:fc2.weight", "codebook[zero_slot] (entry 2) changed from 0.0 to 0.5")
def _zero_slot_not_zero() -> bytes:
    return edit_section("sparse_shared_huffman", "fc2.weight", 0,
                        lambda body, offset, s: struct.pack_into("<f", body, offset + 8, 0.5))


@malformed("zero_slot_negative_zero", "InvalidFieldError", "expected +0.0 (the zero slot), found -0.0",
           "get:fc2.weight", "codebook[zero_slot] (entry 2) changed from +0.0 to -0.0")
def _zero_slot_negative_zero() -> bytes:
    return edit_section("sparse_shared_huffman", "fc2.weight", 0,
                        lambda body, offset, s: struct.pack_into("<f", body, offset + 8, -0.0))


@malformed("zero_slot_out_of_range", "IndexOutOfRangeError", "less than n_clusters (6)", "open",
           "zero_slot 6 with a codebook of 6 entries")
def _zero_slot_out_of_range() -> bytes:
    def edit(layout: Layout) -> None:
        params = bytearray(layout.tensors[0]["params"])
        struct.pack_into("<I", params, 8, 6)
        layout.tensors[0]["params"] = bytes(params)
    return edit_layout("sparse_shared_huffman", edit)


@malformed("unknown_encoding", "UnknownFeatureError", "found 7", "open", "encoding id 7")
def _unknown_encoding() -> bytes:
    return edit_layout("raw_none", lambda layout: layout.tensors[0].update(encoding=7))


@malformed("unknown_encoding_version", "UnknownFeatureError", "expected version 1 of shared, found 2",
           "open", "shared encoding version 2")
def _unknown_encoding_version() -> bytes:
    return edit_layout("shared_packed", lambda layout: layout.tensors[0].update(encoding_version=2))


@malformed("unknown_dtype", "InvalidFieldError", "expected a dtype code 0 to 12, found 13", "open",
           "dtype code 13")
def _unknown_dtype() -> bytes:
    return edit_layout("raw_none", lambda layout: layout.tensors[0].update(dtype=13))


@malformed("unknown_section_kind", "InvalidFieldError", "found kinds (2, 9)", "open",
           "the assignments section of a shared tensor given kind 9")
def _unknown_section_kind() -> bytes:
    return edit_layout("shared_packed", lambda layout: layout.sections[1].update(kind=9))


@malformed("integer_dtype_shared", "InvalidFieldError", "a float dtype for encoding shared", "open",
           "a shared tensor with dtype int32")
def _integer_dtype_shared() -> bytes:
    return edit_layout("shared_packed", lambda layout: layout.tensors[0].update(dtype=6))


@malformed("params_size", "InvalidFieldError", "expected 8 for shared, found 9", "open",
           "shared params with one extra byte")
def _params_size() -> bytes:
    return edit_layout("shared_packed", lambda layout: layout.tensors[0].update(
        params=layout.tensors[0]["params"] + b"\x00"))


@malformed("bad_zstd_frame", "InvalidFieldError", "zstd frame", "get:w",
           "first byte of the zstd frame magic in a raw section changed (CRC-32 refreshed)")
def _bad_zstd_frame() -> bytes:
    def edit(body, offset, section):
        body[offset] ^= 0xFF
    return edit_section("raw_zstd", "w", 0, edit)


@malformed("zstd_content_size", "InvalidFieldError", "zstd content size", "get:w",
           "raw zstd frame whose declared content size disagrees with the shape")
def _zstd_content_size() -> bytes:
    def edit(layout: Layout) -> None:
        layout.tensors[0]["shape"] = [16, 15]
    return edit_layout("raw_zstd", edit)


@malformed("raw_size", "InvalidFieldError", "expected 28 bytes (size x dtype bytes), found 24",
           "get:w", "uncompressed raw section of 24 bytes for 7 float32 elements (the last 4 "
           "bytes removed from the file)")
def _raw_size() -> bytes:
    def edit(layout: Layout) -> None:
        section = layout.sections[0]
        if section["offset"] + section["size"] != len(layout.body):
            raise RuntimeError("raw_none's data section is expected to end at the directory")
        section["size"] -= 4
        del layout.body[-4:]
        refresh_section_crc(layout, 0)
    return edit_layout("raw_none", edit)


@malformed("bool_value_2", "InvalidFieldError", "expected 0 or 1 for bool, found 2", "get:bool",
           "a raw bool element stored as 2")
def _bool_value_2() -> bytes:
    return edit_section("raw_dtypes", "bool", 0, lambda body, offset, s: body.__setitem__(offset + 1, 2))


@malformed("uniform_nan_scale", "InvalidFieldError", "finite scales", "get:q.f32",
           "a uniform scale set to NaN")
def _uniform_nan_scale() -> bytes:
    return edit_section("uniform_per_tensor", "q.f32", 0,
                        lambda body, offset, s: struct.pack_into("<f", body, offset, float("nan")))


@malformed("duplicate_tensor_names", "InvalidFieldError", "expected unique tensor names, found duplicate 'int8'",
           "open", "tensor int16 renamed to int8, the name of the tensor before it")
def _duplicate_names() -> bytes:
    return edit_layout("raw_dtypes", lambda layout: layout.tensors[5].update(name=b"int8"))


@malformed("invalid_utf8_name", "InvalidFieldError", "expected UTF-8, found byte 0xff", "open",
           "tensor name with the byte 0xff")
def _invalid_utf8_name() -> bytes:
    return edit_layout("raw_none", lambda layout: layout.tensors[0].update(name=b"w\xff"))


@malformed("empty_name", "InvalidFieldError", "expected 1 to 65535, found 0", "open",
           "tensor name of 0 bytes")
def _empty_name() -> bytes:
    return edit_layout("raw_none", lambda layout: layout.tensors[0].update(name=b""))


@malformed("lowrank_factor_index", "IndexOutOfRangeError", "params.right", "open",
           "lowrank params.right pointing past the tensor table")
def _lowrank_factor_index() -> bytes:
    def edit(layout: Layout) -> None:
        parent = record(layout, "lr")
        params = bytearray(parent["params"])
        struct.pack_into("<I", params, 8, 40)
        parent["params"] = bytes(params)
    return edit_layout("lowrank", edit)


def _metadata_case(text: bytes) -> Callable[[], bytes]:
    return lambda: edit_layout("user_sections_metadata", lambda layout: setattr(layout, "metadata", text))


malformed("metadata_nan", "InvalidFieldError", "expected a finite number, found NaN", "open",
          "metadata {\"user\": {\"accuracy\": NaN}}")(_metadata_case(b'{"user":{"accuracy":NaN}}'))
malformed("metadata_null", "InvalidFieldError", "found null", "open",
          "metadata {\"user\": {\"note\": null}}")(_metadata_case(b'{"user":{"note":null}}'))
malformed("metadata_duplicate_key", "InvalidFieldError", "expected unique object keys, found 'user'",
          "open", "metadata with the key \"user\" twice")(_metadata_case(b'{"user":{},"user":{}}'))
malformed("metadata_not_object", "InvalidFieldError", "expected a JSON object, found list", "open",
          "metadata that is a JSON array")(_metadata_case(b'["user"]'))
malformed("metadata_invalid_utf8", "InvalidFieldError", "expected UTF-8", "open",
          "metadata with the byte 0xff inside a string")(_metadata_case(b'{"user":"\xff"}'))


@malformed("directory_trailing_bytes", "TruncatedError", "trailing bytes", "open",
           "four bytes after the metadata that no directory count covers")
def _directory_trailing() -> bytes:
    return edit_layout("user_sections_metadata", lambda layout: setattr(layout, "directory_tail", b"\0\0\0\0"))


@malformed("tensor_bytes_limit", "LimitExceededError", "above the limit of 4294967296 bytes",
           "get:fc2.weight",
           "sparse-shared tensor of 256 entries whose shape is changed to (2^20, 2^20) float32: "
           "4 TiB decoded from a few hundred bytes, over the default 4 GiB max_tensor_bytes",
           max_tensor_bytes=4 * 1024**3)
def _tensor_bytes_limit() -> bytes:
    return edit_layout("sparse_shared_huffman",
                       lambda layout: layout.tensors[0].update(shape=[1 << 20, 1 << 20]))


@malformed("tensor_bytes_limit_small", "LimitExceededError", "above the limit of 95 bytes",
           "get:fc.weight", "the unchanged shared_packed vector (24 float32 elements, 96 bytes "
           "decoded) opened with max_tensor_bytes=95", max_tensor_bytes=95)
def _tensor_bytes_limit_small() -> bytes:
    return base("shared_packed")


@malformed("section_crc", "ChecksumError", "crc32", "get:fc.weight",
           "one codebook byte changed without updating the section CRC-32")
def _section_crc() -> bytes:
    def edit(layout: Layout) -> None:
        layout.body[layout.sections[0]["offset"]] ^= 0x01
    return edit_layout("shared_packed", edit)


@malformed("digest", None, "SHA-256 mismatch", "verify",
           "the digest with one bit flipped; opening and decoding still work", part="digest")
def _digest() -> bytes:
    data = bytearray(base("shared_packed"))
    data[len(data) - 40] ^= 0x01
    return bytes(data)


@malformed("padding_not_zero", None, "padding is not the minimum number of zero bytes", "verify",
           "a 1 in the padding between sections 0 and 1", part="padding before section[1]")
def _padding_not_zero() -> bytes:
    def edit(layout: Layout) -> None:
        end = layout.sections[0]["offset"] + layout.sections[0]["size"]
        layout.body[end] = 1
    return edit_layout("shared_packed", edit)


# ==========================================================================================
# Writing and checking


def write_all(vectors_dir: Path, malformed_dir: Path) -> tuple[int, int]:
    """Write every vector and malformed file; return their counts."""
    vectors_dir.mkdir(parents=True, exist_ok=True)
    malformed_dir.mkdir(parents=True, exist_ok=True)
    manifest = {"format_version": "1.0", "vectors": []}
    for name, (_, recipe) in VECTORS.items():
        data = base(name)
        entry = describe_vector(name, data)
        check_forced_forms(name, entry)
        (vectors_dir / f"{name}.dcf").write_bytes(data)
        (vectors_dir / f"{name}.npz").write_bytes(write_npz(expected_arrays(recipe)))
        manifest["vectors"].append(entry)
    (vectors_dir / "manifest.json").write_text(
        json.dumps(manifest, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")

    expected = {}
    for case in MALFORMED:
        (malformed_dir / f"{case.name}.dcf").write_bytes(case.build())
        expected[f"{case.name}.dcf"] = {
            "error": case.error, "message": case.message, "call": case.call,
            "description": case.description, **case.extra,
        }
    (malformed_dir / "expected.json").write_text(
        json.dumps(expected, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
    return len(VECTORS), len(MALFORMED)


def compare_trees(expected: Path, actual: Path) -> list[str]:
    """Return one line per file that differs between two folders (missing, extra, changed)."""
    problems = []
    expected_files = {p.name for p in expected.iterdir() if p.is_file()} if expected.exists() else set()
    actual_files = {p.name for p in actual.iterdir() if p.is_file()}
    for name in sorted(actual_files - expected_files):
        problems.append(f"{expected / name}: missing (the script writes it)")
    for name in sorted(expected_files - actual_files):
        problems.append(f"{expected / name}: not written by the script")
    for name in sorted(expected_files & actual_files):
        if (expected / name).read_bytes() != (actual / name).read_bytes():
            problems.append(f"{expected / name}: differs from the regenerated file")
    return problems


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--check", action="store_true",
                        help="regenerate into a temporary folder and compare with fixtures/ "
                             "instead of writing; exit status 1 on any difference")
    args = parser.parse_args(argv)
    if not args.check:
        for folder in (VECTORS_DIR, MALFORMED_DIR):
            if folder.exists():
                shutil.rmtree(folder)
        vectors, cases = write_all(VECTORS_DIR, MALFORMED_DIR)
        print(f"wrote {vectors} vectors to {VECTORS_DIR} and {cases} malformed files to {MALFORMED_DIR}")
        return 0
    with tempfile.TemporaryDirectory() as temp:
        vectors_tmp, malformed_tmp = Path(temp) / "vectors", Path(temp) / "malformed"
        write_all(vectors_tmp, malformed_tmp)
        problems = compare_trees(VECTORS_DIR, vectors_tmp) + compare_trees(MALFORMED_DIR, malformed_tmp)
    for line in problems:
        print(line)
    if problems:
        print(f"{len(problems)} files differ; run tools/make_vectors.py to regenerate them")
        return 1
    print("fixtures/vectors and fixtures/malformed match the generator")
    return 0


if __name__ == "__main__":
    sys.exit(main())
