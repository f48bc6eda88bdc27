"""Golden vectors: every file in fixtures/vectors decodes to its expected arrays, bit for bit.

The expected arrays were computed by tools/make_vectors.py from the recipe inputs with numpy,
not by decoding, so these tests check the reader against the spec's definitions. Rebuilding
each file from its manifest recipe checks that the writer is deterministic and unchanged.
"""

from __future__ import annotations

import importlib.util
import json
import struct
import sys
from pathlib import Path

import numpy as np
import pytest

import dcformat

ROOT = Path(__file__).resolve().parent.parent
VECTORS_DIR = ROOT / "fixtures" / "vectors"


def _load_make_vectors():
    spec = importlib.util.spec_from_file_location("make_vectors", ROOT / "tools" / "make_vectors.py")
    module = importlib.util.module_from_spec(spec)
    # dataclasses look the module up in sys.modules while the file executes.
    sys.modules.setdefault("make_vectors", module)
    spec.loader.exec_module(module)
    return sys.modules["make_vectors"]


make_vectors = _load_make_vectors()
sys.path.insert(0, str(ROOT / "tools"))
import decode_by_hand  # noqa: E402  (tools/ is not a package)
MANIFEST = json.loads((VECTORS_DIR / "manifest.json").read_text(encoding="utf-8"))
ENTRIES = {entry["file"].removesuffix(".dcf"): entry for entry in MANIFEST["vectors"]}


def _listed(entry):
    return [tensor for tensor in entry["tensors"] if not tensor["factor"]]


def _expected(entry):
    dtypes = {tensor["name"]: tensor["dtype"] for tensor in _listed(entry)}
    return make_vectors.read_npz(VECTORS_DIR / entry["expected"], dtypes)


def _assert_identical(actual: np.ndarray, expected: np.ndarray, name: str) -> None:
    assert actual.dtype == expected.dtype, f"{name}: dtype {actual.dtype} != {expected.dtype}"
    assert actual.shape == expected.shape, f"{name}: shape {actual.shape} != {expected.shape}"
    # Compare bytes so that -0.0 and NaN payloads count too.
    assert actual.tobytes() == expected.tobytes(), f"{name}: values differ"


def test_manifest_lists_every_file():
    on_disk = {path.stem for path in VECTORS_DIR.glob("*.dcf")}
    assert on_disk == set(ENTRIES)
    assert {path.stem for path in VECTORS_DIR.glob("*.npz")} == set(ENTRIES)


def test_vector_count_covers_cases():
    assert len(ENTRIES) >= 20
    encodings = {t["encoding"] for entry in ENTRIES.values() for t in entry["tensors"]}
    assert encodings == {"raw", "shared", "sparse-shared", "uniform", "lowrank"}
    forms = {s["form"] for entry in ENTRIES.values() for t in entry["tensors"] for s in t["streams"].values()}
    assert forms == {"packed", "huffman"}
    widths = {s["width"] for entry in ENTRIES.values() for t in entry["tensors"] for s in t["streams"].values()}
    assert {1, 16} <= widths


@pytest.mark.parametrize("name", sorted(ENTRIES))
def test_vector_decodes_exactly(name):
    entry = ENTRIES[name]
    expected = _expected(entry)
    with dcformat.open(VECTORS_DIR / entry["file"]) as reader:
        assert reader.keys() == [t["name"] for t in _listed(entry)]
        for tensor in _listed(entry):
            actual = reader.get(tensor["name"])
            _assert_identical(actual, expected[tensor["name"]], tensor["name"])
            assert list(actual.shape) == tensor["shape"]
            assert str(actual.dtype) == tensor["dtype"]


@pytest.mark.parametrize("name", sorted(ENTRIES))
def test_vector_from_bytes_equals_from_path(name):
    entry = ENTRIES[name]
    data = (VECTORS_DIR / entry["file"]).read_bytes()
    expected = _expected(entry)
    decoded = dcformat.load(data)
    assert list(decoded) == list(expected)
    for tensor_name, array in decoded.items():
        _assert_identical(array, expected[tensor_name], tensor_name)


@pytest.mark.parametrize("name", sorted(ENTRIES))
def test_vector_reencodes_to_same_bytes(name):
    entry = ENTRIES[name]
    committed = (VECTORS_DIR / entry["file"]).read_bytes()
    rebuilt = make_vectors.build_file(entry["build"])
    assert rebuilt == committed, (
        f"{entry['file']}: rebuilding from the manifest recipe gives {len(rebuilt)} bytes that "
        f"differ from the committed {len(committed)}; if only zstd-compressed parts differ, "
        f"the zstd library version changed (the vectors were made with zstd 1.5.7)"
    )


@pytest.mark.parametrize("name", sorted(ENTRIES))
def test_expected_arrays_follow_recipe(name):
    entry = ENTRIES[name]
    expected = _expected(entry)
    computed = make_vectors.expected_arrays(entry["build"])
    assert list(computed) == list(expected)
    for tensor_name, array in computed.items():
        _assert_identical(array, expected[tensor_name], tensor_name)


@pytest.mark.parametrize("name", sorted(ENTRIES))
def test_vector_verifies(name):
    with dcformat.open(VECTORS_DIR / ENTRIES[name]["file"]) as reader:
        report = reader.verify()
    assert report.ok, report.problems
    assert report.digest_ok


@pytest.mark.parametrize("name", sorted(ENTRIES))
def test_manifest_matches_directory(name):
    entry = ENTRIES[name]
    with dcformat.open(VECTORS_DIR / entry["file"]) as reader:
        records = {record.name: record for record in reader.info.tensors}
        assert list(records) == [t["name"] for t in entry["tensors"]]
        for tensor in entry["tensors"]:
            record = records[tensor["name"]]
            assert list(record.shape) == tensor["shape"]
            assert record.is_factor == tensor["factor"]
            for kind, stream in tensor["streams"].items():
                section = next(
                    s for s in reader.info.sections[record.first_section : record.first_section + record.section_count]
                    if s.kind_name == kind
                )
                form = (VECTORS_DIR / entry["file"]).read_bytes()[section.offset]
                assert form == {"packed": 0, "huffman": 1}[stream["form"]]


SPARSE = sorted(
    name for name, entry in ENTRIES.items()
    if any(t["encoding"] == "sparse-shared" and not t["factor"] for t in entry["tensors"])
)


@pytest.mark.parametrize("name", SPARSE)
def test_sparse_csr_equals_dense(name):
    entry = ENTRIES[name]
    expected = _expected(entry)
    with dcformat.open(VECTORS_DIR / entry["file"]) as reader:
        for tensor in _listed(entry):
            if tensor["encoding"] != "sparse-shared":
                continue
            dense = expected[tensor["name"]]
            rows = dense.shape[0] if dense.ndim else 1
            matrix = dense.reshape(rows, -1) if dense.size else dense.reshape(rows, 0 if dense.ndim else 1)
            csr = reader.get_sparse(tensor["name"])
            assert csr.shape == matrix.shape
            assert np.array_equal(csr.toarray(), matrix.astype(csr.dtype))
            # Fillers and zero-slot entries are dropped, so only non-zeros are stored.
            assert csr.nnz == np.count_nonzero(matrix)


def test_empty_raw_section_shares_offset():
    with dcformat.open(VECTORS_DIR / "empty_tensors.dcf") as reader:
        first, second = reader.info.sections[0], reader.info.sections[1]
    assert first.size == 0
    assert first.offset == second.offset


def test_alignment_1_has_no_padding():
    data = (VECTORS_DIR / "alignment_1.dcf").read_bytes()
    footer = len(data) - 88
    assert data[footer + 36] == 0  # alignment_log2
    assert data[footer + 37] == 0  # directory stored as is
    with dcformat.open(data) as reader:
        sections = reader.info.sections
    assert sections[0].offset == 16
    for previous, current in zip(sections, sections[1:]):
        assert current.offset == previous.offset + previous.size


def test_user_sections_and_metadata():
    with dcformat.open(VECTORS_DIR / "user_sections_metadata.dcf") as reader:
        assert set(reader.info.user_sections) == {"license", "labels.json"}
        metadata = reader.metadata()
        optional_flags = reader.info.footer.optional_flags
        data = (VECTORS_DIR / "user_sections_metadata.dcf").read_bytes()
        license_section = reader.info.sections[reader.info.user_sections["license"]]
    assert metadata["user"]["accuracy"] == 0.9921
    assert "layer 1/fc.weight" in metadata["settings"]
    assert optional_flags == 0b11  # settings and user_sections
    assert data[license_section.offset : license_section.end] == b"CC-BY-4.0"


def test_single_symbol_stream_has_empty_payload():
    entry = ENTRIES["shared_one_cluster"]
    stream = next(t for t in entry["tensors"] if t["name"] == "one.huffman")["streams"]["assignments"]
    assert stream["alphabet_size"] == 1
    assert stream["payload_bits"] == 0


def test_fillers_present_in_gap_streams():
    entry = ENTRIES["sparse_fillers"]
    gaps = {t["name"]: t["streams"]["gaps"]["count"] for t in entry["tensors"]}
    # 5 kept weights; zero runs of 4, 24 and 15 need 1 + 6 + 3 fillers at 2 index bits.
    assert gaps["gaps2.packed"] == 15
    assert gaps["gaps2.huffman"] == 15
    assert gaps["gaps1.packed"] > gaps["gaps2.packed"]


def test_raw_zstd_params():
    with dcformat.open(VECTORS_DIR / "raw_zstd.dcf") as reader:
        assert reader.tensor_info("w").params == {"compression": 1, "shuffle": 0}
    with dcformat.open(VECTORS_DIR / "raw_zstd_shuffled.dcf") as reader:
        for name in reader.keys():
            assert reader.tensor_info(name).params == {"compression": 1, "shuffle": 1}


def test_footer_fields_of_vectors():
    for entry in ENTRIES.values():
        data = (VECTORS_DIR / entry["file"]).read_bytes()
        (alignment_log2,) = struct.unpack_from("<B", data, len(data) - 88 + 36)
        assert alignment_log2 == entry["build"]["alignment_log2"]


@pytest.mark.parametrize("name", sorted(ENTRIES))
def test_hand_decoder_matches_vector(name):
    """tools/decode_by_hand.py, written from the spec alone, decodes the same arrays."""
    assert decode_by_hand.check_vector(VECTORS_DIR / ENTRIES[name]["file"]) == []
