"""Size audits, plots and ``inspect --tensor``: hand-computed numbers, schemas, byte accounting."""

from __future__ import annotations

import csv
import io
import json
import math
import sys
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import dcformat
from dcformat import Config, Rule
from dcformat.audit import (
    CSV_COLUMNS,
    audit_file,
    audit_tensors,
    compress_to_bytes,
    weight_distribution,
)
from dcformat.cli import main
from dcformat.constants import StreamForm
from dcformat.container import ContainerWriter
from dcformat.encodings import encode_raw, encode_sparse_shared
from dcformat.errors import ChecksumError, TensorNotFoundError
from dcformat.inspection import inspect_tensor
from dcformat.io import read_tensors

REPO_ROOT = Path(__file__).resolve().parents[1]
LENET300 = REPO_ROOT / "fixtures" / "models" / "lenet300.safetensors"

# The hand-computed file: one sparse-shared tensor "w" of 4 x 8 with kept positions
# 0, 5, 6, 20, 31 (values codebook[1, 2, 3, 1, 2]) and 3-bit gaps, then a raw bias "b".
# Zeros before each kept weight: 0, 4, 0, 13, 10. 13 and 10 exceed the largest gap (7), so
# each gets one filler (gap 7) and keeps 13 - 8 = 5 and 10 - 8 = 2:
#   gaps        0 4 0 7 5 7 2   (7 entries, 2 fillers)
#   assignments 1 2 3 0 1 0 2
CODEBOOK = np.array([0.0, -1.0, 0.5, 2.0], dtype=np.float32)
POSITIONS = [0, 5, 6, 20, 31]
SLOTS = [1, 2, 3, 1, 2]
GAPS = [0, 4, 0, 7, 5, 7, 2]
ENTRY_SLOTS = [1, 2, 3, 0, 1, 0, 2]
BIAS = np.array([0.25, -0.5, 1.0], dtype=np.float32)


def _entropy(symbols) -> float:
    counts = np.bincount(symbols)
    counts = counts[counts > 0]
    return float(-np.sum(counts * np.log2(counts / counts.sum())))


@pytest.fixture(scope="module")
def small_file() -> bytes:
    """The hand-computed file, 64-byte alignment, packed streams, plain codebook."""
    assignments = np.zeros(32, dtype=np.uint8)
    assignments[POSITIONS] = SLOTS
    buffer = io.BytesIO()
    writer = ContainerWriter(buffer, alignment_log2=6)
    writer.add_tensor(encode_sparse_shared("w", np.dtype(np.float32), (4, 8), CODEBOOK, assignments, 2, 3, 0,
                                           stream_form=StreamForm.PACKED, codebook_coding="plain"))
    writer.add_tensor(encode_raw("b", BIAS, compression="none"))
    writer.close({})
    return buffer.getvalue()


@pytest.fixture(scope="module")
def lenet_file() -> bytes:
    return compress_to_bytes(read_tensors(LENET300))


def run(capsys, *argv) -> tuple[int, str, str]:
    status = main([str(arg) for arg in argv])
    captured = capsys.readouterr()
    return status, captured.out, captured.err


# --------------------------------------------------------------------------------------
# Hand-computed numbers


def test_small_file_layout_is_as_computed(small_file):
    # Sections at 64-byte boundaries: codebook 64..80, assignments 128..142, gaps 192..207,
    # bias 256..268, then the directory with no padding.
    with dcformat.open(small_file) as reader:
        sections = [(s.offset, s.size) for s in reader.info.sections]
        directory = reader.info.footer.directory_stored_size
    assert sections == [(64, 16), (128, 14), (192, 15), (256, 12)]
    assert len(small_file) == 268 + directory + 88


def test_small_file_tensor_bytes(small_file):
    audit = audit_file(small_file)
    w, b = audit.tensors

    assert (w.name, w.encoding, w.parameters, w.nnz) == ("w", "sparse-shared", 32, 5)
    assert (w.entries, w.fillers, w.bits, w.index_bits, w.n_clusters) == (7, 2, 2, 3, 4)
    assert w.codebook_bytes == 16  # 4 x f32, plain
    assert w.value_bytes == 2  # 7 x 2 bits
    assert w.index_bytes == 3  # 7 x 3 bits
    assert w.header_bytes == 24  # two 12-byte stream headers
    assert w.padding_bytes == 48 + 48 + 50
    assert w.total_bytes == 191
    assert w.kept_fraction == 5 / 32
    assert w.percent_of_float32 == pytest.approx(100 * 191 / 128)

    assert (b.encoding, b.value_bytes, b.padding_bytes, b.total_bytes) == ("raw", 12, 49, 61)
    assert b.streams == []


def test_small_file_streams_and_entropy(small_file):
    w = audit_file(small_file).tensors[0]
    weights, gaps = w.weight_stream, w.index_stream

    assert (weights.kind, weights.form, weights.count, weights.width) == ("assignments", "packed", 7, 2)
    assert (weights.payload_bits, weights.payload_bytes, weights.header_bytes) == (14, 2, 12)
    assert weights.entropy_bits == pytest.approx(_entropy(ENTRY_SLOTS))
    # 0, 1, 2 twice and 3 once: 6 log2(7/2) + log2(7) bits.
    assert weights.entropy_bits == pytest.approx(6 * math.log2(3.5) + math.log2(7))
    assert weights.distinct_symbols == 4
    assert weights.bits_per_symbol == 2.0

    assert (gaps.kind, gaps.count, gaps.width, gaps.payload_bits, gaps.payload_bytes) == ("gaps", 7, 3, 21, 3)
    assert gaps.entropy_bits == pytest.approx(4 * math.log2(3.5) + 3 * math.log2(7))
    assert gaps.entropy_bytes == math.ceil(gaps.entropy_bits / 8)
    assert gaps.efficiency == pytest.approx(gaps.entropy_bits / 21)


def test_small_file_stages(small_file):
    audit = audit_file(small_file)
    w, b = audit.tensors

    assert (w.stages.dense, w.stages.pruned, w.stages.shared, w.stages.stored) == (128, 31, 21, 45)
    assert (b.stages.dense, b.stages.pruned, b.stages.shared, b.stages.stored) == (12, 12, 12, 12)
    stages = {s.name: s.bytes for s in audit.stages}
    assert stages == {"dense": 140, "pruned": 43, "shared": 33, "stored": len(small_file)}
    assert audit.stages[0].ratio == 1.0


def test_small_file_bytes_add_up(small_file):
    audit = audit_file(small_file)
    directory = audit.container["directory"]

    assert audit.container == {"preamble": 16, "padding before directory": 0, "directory": directory,
                               "footer": 88}
    assert audit.tensor_bytes == 191 + 61
    assert audit.accounted_bytes == audit.file_bytes == len(small_file)
    assert audit.float32_bytes == 4 * 35
    assert audit.ratio == 140 / len(small_file)


def test_small_file_directory_parts(small_file):
    parts = audit_file(small_file).directory_parts
    # Records: 2 + 1 (name) + 8 + 8 x ndim + 10 + params: "w" 2-D with 12 bytes, "b" 1-D with 2.
    assert parts["section table"] == 4 * 24
    assert parts["tensor table"] == (2 + 1 + 8 + 16 + 10 + 12) + (2 + 1 + 8 + 8 + 10 + 2)
    assert parts["metadata"] == 0
    assert parts["header"] + parts["section table"] + parts["tensor table"] + parts["metadata"] \
        == parts["decoded total"]


def test_user_sections_accounted():
    buffer = io.BytesIO()
    writer = ContainerWriter(buffer, alignment_log2=4)
    writer.add_tensor(encode_raw("b", BIAS, compression="none"))
    writer.add_user_section("licence", b"x" * 21)
    writer.close({"user": {"note": "kept"}})
    audit = audit_file(buffer.getvalue())

    assert audit.container["user sections"] == 21
    assert audit.container["padding before user sections"] == 4  # 16 + 12 = 28 -> 32
    assert audit.accounted_bytes == audit.file_bytes


# --------------------------------------------------------------------------------------
# Every encoding and random files add up


def test_every_encoding_adds_up():
    rng = np.random.default_rng(3)
    weights = (rng.standard_normal((64, 48)) * 0.1).astype(np.float32)
    tensors = {f"{kind}.weight": weights for kind in ("raw", "shared", "sparse-shared", "uniform", "lowrank",
                                                      "float16", "bfloat16")}
    tensors["steps"] = np.array(7, dtype=np.int64)
    tensors["mask"] = np.ones((3, 3), dtype=bool)
    rules = tuple(Rule(f"{kind}.weight", {"encoding": kind}) for kind in
                  ("raw", "shared", "sparse-shared", "uniform", "lowrank", "float16", "bfloat16"))
    audit = audit_tensors(tensors, Config(rules=rules, defaults={"sparsity": 0.5}))

    assert audit.accounted_bytes == audit.file_bytes
    by_name = {t.name: t for t in audit.tensors}
    assert by_name["lowrank.weight"].value_bytes > 0  # its factors' sections
    assert by_name["uniform.weight"].codebook_bytes == 8  # one scale and one zero point
    assert by_name["float16.weight"].dtype == "float16"
    assert by_name["steps"].stages.dense == 8  # int64 counts at its own size
    for tensor in audit.tensors:
        assert tensor.stages.stored == tensor.stored_bytes, tensor.name


@pytest.mark.filterwarnings("ignore:.*pruning removed every weight")  # tiny tensors at high sparsity
@settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    rows=st.integers(1, 40), columns=st.integers(1, 40), sparsity=st.floats(0.0, 0.95),
    bits=st.integers(1, 6), alignment=st.sampled_from([1, 8, 64]), seed=st.integers(0, 1000),
)
def test_random_files_add_up(rows, columns, sparsity, bits, alignment, seed):
    rng = np.random.default_rng(seed)
    tensors = {"w": rng.standard_normal((rows, columns)).astype(np.float32),
               "b": rng.standard_normal(rows).astype(np.float32)}
    config = Config(defaults={"sparsity": sparsity, "bits": bits}, min_elements=0, alignment=alignment)
    data = compress_to_bytes(tensors, config)
    audit = audit_file(data)

    assert audit.accounted_bytes == audit.file_bytes == len(data)
    assert sum(row["total_bytes"] for row in audit.rows()[:-1]) == len(data)
    with dcformat.open(data) as reader:
        assert [t.nnz for t in audit.tensors] == [int(np.count_nonzero(reader.get(n))) for n in reader.keys()]


def test_damaged_section_raises(small_file):
    damaged = bytearray(small_file)
    damaged[130] ^= 0x01  # inside the assignments section
    with pytest.raises(ChecksumError):
        audit_file(bytes(damaged))


# --------------------------------------------------------------------------------------
# Output schemas


def test_json_schema(capsys, tmp_path, small_file):
    path = tmp_path / "small.dcf"
    path.write_bytes(small_file)
    status, out, err = run(capsys, "audit", path, "--json")
    data = json.loads(out)

    assert status == 0
    assert err == ""
    assert set(data) == {"source", "format", "dry_run", "file_bytes", "parameters", "float32_bytes", "ratio",
                         "bits_per_parameter", "tensor_bytes", "container_bytes", "accounted_bytes", "tensors",
                         "container", "directory_parts", "stream_totals", "stages"}
    assert data["accounted_bytes"] == data["file_bytes"] == len(small_file)
    assert (data["format"], data["dry_run"]) == ("dcf", False)
    tensor = data["tensors"][0]
    assert {"name", "shape", "encoding", "parameters", "nnz", "entries", "fillers", "codebook_bytes",
            "value_bytes", "index_bytes", "header_bytes", "padding_bytes", "total_bytes", "stored_bytes",
            "float32_bytes", "kept_fraction", "percent_of_float32", "streams", "stages"} <= set(tensor)
    assert tensor["shape"] == [4, 8]
    assert tensor["stages"] == {"dense": 128, "pruned": 31, "shared": 21, "stored": 45}
    assert {"kind", "form", "count", "width", "header_bytes", "payload_bits", "payload_bytes", "entropy_bits",
            "entropy_bytes", "bits_per_symbol", "efficiency"} <= set(tensor["streams"][0])
    assert [s["name"] for s in data["stages"]] == ["dense", "pruned", "shared", "stored"]


def test_csv_schema(capsys, tmp_path, small_file):
    path = tmp_path / "small.dcf"
    path.write_bytes(small_file)
    status, out, _ = run(capsys, "audit", path, "--csv")
    reader = csv.DictReader(io.StringIO(out))
    rows = list(reader)

    assert status == 0
    assert tuple(reader.fieldnames) == CSV_COLUMNS
    assert [row["part"] for row in rows] == ["tensor", "tensor", "container", "container", "container",
                                             "container", "total"]
    assert [row["name"] for row in rows[:2]] == ["w", "b"]
    assert sum(int(row["total_bytes"]) for row in rows[:-1]) == int(rows[-1]["total_bytes"]) == len(small_file)
    w = rows[0]
    assert (w["shape"], w["entries"], w["fillers"], w["weight_bits_fixed"], w["index_bits_fixed"]) \
        == ("4x8", "7", "2", "2", "3")
    assert w["index_bits_stored"] == "3"
    assert rows[1]["weight_bits_fixed"] == ""  # a raw tensor has no stream


def test_markdown_and_terminal_tables(capsys, tmp_path, small_file):
    path = tmp_path / "small.dcf"
    path.write_bytes(small_file)
    status, out, _ = run(capsys, "audit", path, "--markdown")
    table = [line for line in out.splitlines() if line.startswith("|")]
    assert status == 0
    assert table[0].startswith("| tensor | params | kept %")
    assert table[2].startswith("| w | 32 | 15.6 | 2 | 2.00 |")

    status, out, _ = run(capsys, "audit", path)
    assert status == 0
    assert f"file                      {len(small_file):>5}" in out or f"{len(small_file):,}" in out
    assert "stored  as stored" in out


def test_terminal_escapes_names(capsys, tmp_path):
    data = compress_to_bytes({"evil\x1b[31m": np.arange(300, dtype=np.float32)})
    path = tmp_path / "evil.dcf"
    path.write_bytes(data)
    for option in ((), ("--csv",), ("--markdown",)):
        status, out, _ = run(capsys, "audit", path, *option)
        assert status == 0
        assert "\x1b" not in out
        assert "evil\\x1b[31m" in out


# --------------------------------------------------------------------------------------
# Dry runs


def test_dry_run_matches_compress(capsys, tmp_path):
    written = tmp_path / "lenet.dcf"
    assert main(["compress", str(LENET300), "-o", str(written), "--sparsity", "0.8", "-q"]) == 0
    status, out, _ = run(capsys, "audit", LENET300, "--sparsity", "0.8", "--json")
    data = json.loads(out)

    assert status == 0
    assert data["dry_run"] is True
    assert data["file_bytes"] == written.stat().st_size
    assert data["accounted_bytes"] == data["file_bytes"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["lenet.dcf"]  # the audit wrote nothing


def test_dry_run_settings_change_the_audit(capsys):
    status, out, _ = run(capsys, "audit", LENET300, "--bits", "fc1.weight=3", "--encoding", "fc1.weight=sparse-shared",
                         "--json")
    fc1 = next(t for t in json.loads(out)["tensors"] if t["name"] == "fc1.weight")
    assert status == 0
    assert (fc1["bits"], fc1["n_clusters"]) == (3, 8)


def test_settings_rejected_for_dcf(capsys, tmp_path, small_file):
    path = tmp_path / "small.dcf"
    path.write_bytes(small_file)
    status, _, err = run(capsys, "audit", path, "--sparsity", "0.5")
    assert status == 1
    assert "model files only" in err


def test_audit_missing_and_unknown_files(capsys, tmp_path):
    status, _, err = run(capsys, "audit", tmp_path / "missing.dcf")
    assert status == 1
    assert err.startswith("dcformat: error: ")

    other = tmp_path / "model.onnx"
    other.write_bytes(b"not a model")
    status, _, err = run(capsys, "audit", other)
    assert status == 1
    assert "'.onnx'" in err


# --------------------------------------------------------------------------------------
# Plots


def test_plot_written(capsys, tmp_path):
    pytest.importorskip("matplotlib")
    output = tmp_path / "audit.png"
    status, out, _ = run(capsys, "audit", LENET300, "--plot", output)

    assert status == 0
    assert output.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert f"wrote {output}" in out

    status, _, err = run(capsys, "audit", LENET300, "--plot", output)
    assert status == 1
    assert "--force" in err


def test_plot_unknown_tensor_and_suffix(capsys, tmp_path):
    pytest.importorskip("matplotlib")
    status, _, err = run(capsys, "audit", LENET300, "--plot", tmp_path / "a.png", "--plot-tensor", "nope")
    assert status == 1
    assert "'nope' not found" in err

    status, _, err = run(capsys, "audit", LENET300, "--plot", tmp_path / "a.gif")
    assert status == 1
    assert ".png" in err

    status, _, err = run(capsys, "audit", LENET300, "--plot-tensor", "fc1.weight")
    assert status == 1
    assert "--plot" in err


def test_plot_without_matplotlib(capsys, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # makes "import matplotlib" raise ImportError
    status, _, err = run(capsys, "audit", LENET300, "--plot", tmp_path / "a.png")
    assert status == 1
    assert "matplotlib" in err
    assert "pip install" in err
    assert not (tmp_path / "a.png").exists()


def test_weight_distribution_with_and_without_originals(lenet_file):
    original = read_tensors(LENET300)["fc1.weight"]
    with_original = weight_distribution(lenet_file, "fc1.weight", original=original)
    decoded = dcformat.load(lenet_file)["fc1.weight"]

    assert with_original.from_original
    assert with_original.pruned == int(np.count_nonzero((decoded == 0) & (original != 0)))
    low, high = with_original.pruned_range
    assert low == -high
    assert high > 0
    assert np.all(np.abs(original[decoded != 0]) >= high)
    assert with_original.centroids.size == np.unique(decoded[decoded != 0]).size

    without = weight_distribution(lenet_file, "fc1.weight")
    assert not without.from_original
    assert without.values.size == int(np.count_nonzero(decoded))
    assert without.pruned_range[0] < 0 < without.pruned_range[1]

    raw = weight_distribution(lenet_file, "fc1.bias")
    assert raw.centroids.size == 0  # a raw tensor has no shared values
    assert raw.pruned_range is None

    with pytest.raises(TensorNotFoundError):
        weight_distribution(lenet_file, "missing")
    with pytest.raises(ValueError):
        weight_distribution(lenet_file, "fc1.weight", original=original[:10])


# --------------------------------------------------------------------------------------
# inspect --tensor


def test_inspect_tensor_fields(small_file):
    data = inspect_tensor(small_file, "w")
    fields = {f["field"]: f for f in data["fields"]}

    assert fields["name"]["value"] == "w"
    assert fields["params.index_bits"]["value"] == 3
    assert fields["params.zero_slot"]["value"] == 0
    assert (fields["section[1].form"]["offset"], fields["section[1].form"]["value"]) == (128, "0 (packed)")
    assert (fields["section[1].count"]["offset"], fields["section[1].count"]["value"]) == (132, 7)
    assert (fields["section[2].payload"]["offset"], fields["section[2].payload"]["size"]) == (204, 3)
    assert fields["section[0].offset"]["space"] == "directory"
    assert (fields["section[0].offset"]["offset"], fields["section[0].offset"]["value"]) == (16, 64)
    assert [s["padding_before"] for s in data["sections"]] == [48, 48, 50]


def test_inspect_tensor_codebook_and_histograms(small_file):
    data = inspect_tensor(small_file, "w")

    assert data["codebook"] == {"values": [0.0, -1.0, 0.5, 2.0], "dtype": "float32", "coding": "plain",
                                "zero_slot": 0}
    assert data["gap_histogram"] == [{"value": 0, "count": 2}, {"value": 2, "count": 1},
                                     {"value": 4, "count": 1}, {"value": 5, "count": 1},
                                     {"value": 7, "count": 2}]
    assignments = data["streams"][0]
    assert [(s["symbol"], s["count"], s["code_length"]) for s in assignments["symbols"]] \
        == [(0, 2, None), (1, 2, None), (2, 2, None), (3, 1, None)]


def test_inspect_tensor_huffman_lengths_and_blocks(lenet_file):
    data = inspect_tensor(lenet_file, "fc1.weight")
    for stream in data["streams"]:
        assert stream["form"] == "huffman"
        lengths = [s["code_length"] for s in stream["symbols"] if s["code_length"]]
        assert sum(2.0 ** -length for length in lengths) == 1.0  # a complete prefix code
        expected_blocks = math.ceil(stream["count"] / stream["block_size"]) - 1
        assert len(stream["block_offsets"]) == expected_blocks
        assert stream["block_offsets"] == sorted(stream["block_offsets"])


def test_inspect_tensor_cli(capsys, tmp_path, lenet_file):
    path = tmp_path / "lenet.dcf"
    path.write_bytes(lenet_file)
    status, out, _ = run(capsys, "inspect", path, "--tensor", "fc1.weight")
    assert status == 0
    assert "params.index_bits" in out
    assert "gap histogram" in out
    assert "code length" in out

    status, out, _ = run(capsys, "inspect", path, "--tensor", "fc1.weight", "--json")
    assert status == 0
    assert json.loads(out)["codebook"]["zero_slot"] == 0

    status, _, err = run(capsys, "inspect", path, "--tensor", "nope")
    assert status == 1
    assert "'nope' not found" in err


def test_inspect_tensor_escapes_names(capsys, tmp_path):
    name = "evil\x1b]0;title\x07"
    path = tmp_path / "evil.dcf"
    path.write_bytes(compress_to_bytes({name: np.arange(300, dtype=np.float32)}))
    status, out, _ = run(capsys, "inspect", path, "--tensor", name)

    assert status == 0
    assert "\x1b" not in out
    assert "\x07" not in out
    assert "evil\\x1b]0;title\\x07" in out
