"""Tests of the dcformat command: compress, decompress, inspect, verify, exit statuses."""

from __future__ import annotations

import io
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import ml_dtypes
import numpy as np
import pytest

import dcformat
from dcformat.cli import ProgressBar, escape, main, parse_metadata_value
from dcformat.inspection import inspect_file
from dcformat.io import read_tensors, write_tensors

REPO_ROOT = Path(__file__).resolve().parent.parent
LENET300 = REPO_ROOT / "fixtures" / "models" / "lenet300.safetensors"
LENET300_NAMES = ["fc1.bias", "fc1.weight", "fc2.bias", "fc2.weight", "fc3.bias", "fc3.weight"]


def run(capsys, *argv) -> tuple[int, str, str]:
    """Run main(argv) in-process; return (exit status, stdout, stderr)."""
    status = main([str(arg) for arg in argv])
    captured = capsys.readouterr()
    return status, captured.out, captured.err


def assert_clean_error(err: str, *fragments: str) -> None:
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("dcformat: error: ")
    assert "Traceback" not in err
    for fragment in fragments:
        assert fragment in lines[0]


@pytest.fixture(scope="module")
def compressed(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("cli") / "lenet300.dcf"
    assert main(["compress", str(LENET300), "-o", str(path), "--quiet"]) == 0
    return path


@pytest.fixture
def damaged(compressed, tmp_path) -> tuple[Path, dict]:
    """A copy of the compressed file with one byte flipped inside fc1.weight's assignments."""
    section = next(s for s in inspect_file(compressed)["sections"]
                   if s["owner"] == "fc1.weight" and s["kind"] == "assignments")
    data = bytearray(compressed.read_bytes())
    data[section["offset"] + section["size"] // 2] ^= 0x40
    path = tmp_path / "damaged.dcf"
    path.write_bytes(bytes(data))
    return path, section


# --------------------------------------------------------------------------------------
# compress


def test_compress_table(capsys, tmp_path):
    output = tmp_path / "out.dcf"
    status, out, err = run(capsys, "compress", LENET300, "-o", output)

    assert status == 0
    assert err == ""  # no progress bar when stderr is not a terminal
    header = out.splitlines()[0].split()
    assert header[:4] == ["name", "shape", "encoding", "bits"]
    for name in LENET300_NAMES:
        assert f"\n{name} " in out
    assert "300x784" in out
    totals = dict(line.rsplit(None, 1) for line in out.split("\n\n")[1].splitlines()[:3])
    file_bytes = output.stat().st_size
    assert totals["original bytes"] == "1,066,440"  # 266,610 float32 parameters
    assert totals["file bytes"] == f"{file_bytes:,}"
    assert totals["ratio"] == f"{1_066_440 / file_bytes:.2f}x"
    assert f"wrote {output}" in out


def test_compress_json(capsys, tmp_path):
    output = tmp_path / "out.dcf"
    status, out, _ = run(capsys, "compress", LENET300, "-o", output, "--json")
    report = json.loads(out)

    assert status == 0
    assert report["file_bytes"] == output.stat().st_size
    assert report["original_bytes"] == 1_066_440
    assert report["ratio"] == pytest.approx(1_066_440 / output.stat().st_size)
    assert sorted(t["name"] for t in report["tensors"]) == LENET300_NAMES
    fc1 = next(t for t in report["tensors"] if t["name"] == "fc1.weight")
    assert fc1["shape"] == [300, 784]
    assert 0 < fc1["stored_bytes"] < fc1["original_bytes"]
    assert fc1["bits_per_weight"] == pytest.approx(8 * fc1["stored_bytes"] / fc1["size"])


def test_compress_options(capsys, tmp_path):
    output = tmp_path / "out.dcf"
    status, out, _ = run(
        capsys, "compress", LENET300, "-o", output, "--json",
        "--sparsity", "0.9", "--encoding", "fc1.weight=sparse-shared", "--bits", "4",
        "--index-bits", "fc1.weight=3", "--encoding", "fc3.weight=shared", "--seed", "3",
        "--metadata", "accuracy=0.969", "--metadata", "note=hello world", "--metadata", 'tags=["a", "b"]',
        "--smallest",
    )
    report = {t["name"]: t for t in json.loads(out)["tensors"]}

    assert status == 0
    fc1 = report["fc1.weight"]
    assert fc1["encoding"] == "sparse-shared"
    assert fc1["bits"] == 4
    assert fc1["index_bits"] == 3
    assert fc1["n_clusters"] <= 16
    # Pruning removes 90 %; a few kept weights may then land on the zero centroid.
    assert 0.9 <= fc1["sparsity"] < 0.95
    assert report["fc3.weight"]["encoding"] == "shared"
    assert report["fc1.bias"]["encoding"] == "raw"

    info = inspect_file(output)
    assert info["alignment"] == 1
    assert "settings" not in info["metadata"]
    assert "settings" not in info["flags"]["optional"]
    assert info["metadata"]["user"] == {"accuracy": 0.969, "note": "hello world", "tags": ["a", "b"]}


def test_compress_config_file_and_override(capsys, tmp_path):
    config = tmp_path / "settings.toml"
    config.write_text('bits = 6\nencoding = "shared"\nalignment = 16\n\n[rules."fc1.*"]\nbits = 3\n')
    output = tmp_path / "out.dcf"
    status, out, _ = run(capsys, "compress", LENET300, "-o", output, "--json", "--config", config,
                         "--bits", "fc2.weight=2")
    report = {t["name"]: t for t in json.loads(out)["tensors"]}

    assert status == 0
    assert report["fc1.weight"]["bits"] == 3
    assert report["fc2.weight"]["bits"] == 2  # the command line wins over the file
    assert report["fc3.weight"]["bits"] == 6
    assert inspect_file(output)["alignment"] == 16


def test_compress_global_scope(capsys, tmp_path):
    output = tmp_path / "out.dcf"
    status, out, _ = run(capsys, "compress", LENET300, "-o", output, "--json", "--scope", "global",
                         "--sparsity", "0.8")
    report = json.loads(out)
    weights = [t for t in report["tensors"] if t["name"].endswith(".weight")]
    pruned = sum(t["size"] - t["nnz"] for t in weights)

    assert status == 0
    assert pruned / sum(t["size"] for t in weights) == pytest.approx(0.8, abs=0.01)


def test_compress_invalid_config_file(capsys, tmp_path):
    config = tmp_path / "bad.toml"
    config.write_text("bits = 40\n")
    status, _, err = run(capsys, "compress", LENET300, "-o", tmp_path / "out.dcf", "--config", config)

    assert status == 1
    assert_clean_error(err, "bits=40")
    assert not (tmp_path / "out.dcf").exists()


def test_compress_warning_printed_once(capsys, tmp_path):
    weight = np.random.default_rng(0).standard_normal((20, 20)).astype(np.float32)
    weight[3, 4] = np.nan
    source = tmp_path / "nan.npz"
    write_tensors({"w": weight}, source)
    status, _, err = run(capsys, "compress", source, "-o", tmp_path / "out.dcf", "--quiet")

    assert status == 0
    warnings = [line for line in err.splitlines() if line.startswith("dcformat: warning:")]
    assert len(warnings) == 1
    assert "NaN" in warnings[0]


def test_compress_escapes_names(capsys, tmp_path):
    source = tmp_path / "names.npz"
    write_tensors({"evil\x1b[2J\nname": np.ones(3, np.float32), "\u202egnp.exe": np.ones(2, np.int8)}, source)
    output = tmp_path / "out.dcf"
    status, out, _ = run(capsys, "compress", source, "-o", output)

    assert status == 0
    assert "\x1b" not in out
    assert "\u202e" not in out
    assert "evil\\x1b[2J\\nname" in out
    assert "\\u202egnp.exe" in out

    status, out, _ = run(capsys, "inspect", output)
    assert status == 0
    assert "\x1b" not in out
    assert "evil\\x1b[2J\\nname" in out


# --------------------------------------------------------------------------------------
# decompress


@pytest.mark.parametrize("suffix", [".safetensors", ".npz", ".pt"])
def test_decompress_formats(capsys, compressed, tmp_path, suffix):
    if suffix == ".pt":
        pytest.importorskip("torch")
    output = tmp_path / f"model{suffix}"
    status, out, _ = run(capsys, "decompress", compressed, "-o", output)
    expected = dcformat.load(compressed)
    loaded = read_tensors(output)

    assert status == 0
    assert f"wrote {output}: 6 tensors" in out
    assert sorted(loaded) == sorted(expected)
    for name, array in expected.items():
        assert loaded[name].dtype == array.dtype
        np.testing.assert_array_equal(loaded[name], array)


def test_decompress_json(capsys, compressed, tmp_path):
    output = tmp_path / "model.npz"
    status, out, _ = run(capsys, "decompress", compressed, "-o", output, "--json")
    data = json.loads(out)

    assert status == 0
    assert [t["name"] for t in data["tensors"]] == dcformat.open(compressed).keys()
    fc1 = next(t for t in data["tensors"] if t["name"] == "fc1.weight")
    assert fc1 == {"name": "fc1.weight", "shape": [300, 784], "dtype": "float32", "bytes": 940_800}
    assert data["tensor_bytes"] == 1_066_440
    assert data["file_bytes"] == output.stat().st_size


def test_decompress_bfloat16(capsys, tmp_path):
    source = tmp_path / "bf16.dcf"
    weights = np.arange(12, dtype=np.float32).reshape(3, 4).astype(ml_dtypes.bfloat16)
    dcformat.save({"w": weights}, source)

    status, _, err = run(capsys, "decompress", source, "-o", tmp_path / "out.npz")
    assert status == 1
    assert_clean_error(err, "bfloat16", ".safetensors")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bf16.dcf"]  # no partial output

    status, _, _ = run(capsys, "decompress", source, "-o", tmp_path / "out.safetensors", "--quiet")
    assert status == 0
    assert read_tensors(tmp_path / "out.safetensors")["w"].tobytes() == weights.tobytes()


def test_decompress_bad_suffix_is_usage_error(capsys, compressed, tmp_path):
    with pytest.raises(SystemExit) as exit_info:
        main(["decompress", str(compressed), "-o", str(tmp_path / "out.txt")])
    assert exit_info.value.code == 2
    assert ".safetensors" in capsys.readouterr().err


def test_decompress_damaged_file(capsys, damaged, tmp_path):
    path, section = damaged
    status, _, err = run(capsys, "decompress", path, "-o", tmp_path / "out.npz")

    assert status == 1
    assert_clean_error(err, f"section[{section['index']}]", "crc32")
    assert not (tmp_path / "out.npz").exists()


# --------------------------------------------------------------------------------------
# --force


@pytest.mark.parametrize("command, output_name", [("compress", "out.dcf"), ("decompress", "out.npz")])
def test_existing_output_needs_force(capsys, compressed, tmp_path, command, output_name):
    source = LENET300 if command == "compress" else compressed
    output = tmp_path / output_name
    output.write_bytes(b"keep me")

    status, out, err = run(capsys, command, source, "-o", output)
    assert status == 1
    assert out == ""
    assert_clean_error(err, str(output), "--force")
    assert output.read_bytes() == b"keep me"

    status, _, _ = run(capsys, command, source, "-o", output, "--force", "--quiet")
    assert status == 0
    assert output.read_bytes() != b"keep me"
    assert sorted(p.name for p in tmp_path.iterdir()) == [output_name]


def test_output_directory_rejected(capsys, tmp_path):
    folder = tmp_path / "looks_like.dcf"
    folder.mkdir()
    status, _, err = run(capsys, "compress", LENET300, "-o", folder, "--force")
    assert status == 1
    assert_clean_error(err, "is a directory")


# --------------------------------------------------------------------------------------
# inspect


def test_inspect_text(capsys, compressed):
    status, out, _ = run(capsys, "inspect", compressed)

    assert status == 0
    assert "version    1.0" in out
    assert "alignment  64 bytes" in out
    assert "required: zstd" in out
    for name in LENET300_NAMES:
        assert f"\n{name} " in out
    assert "sparse-shared" in out
    assert "assignments:" in out
    assert "MISMATCH" not in out
    assert '"encoder"' in out


def test_inspect_json(capsys, compressed):
    status, out, _ = run(capsys, "inspect", compressed, "--json")
    data = json.loads(out)
    decoded = dcformat.load(compressed)

    assert status == 0
    assert set(data) >= {"version", "flags", "alignment", "file_bytes", "directory", "sections",
                         "tensors", "metadata", "totals"}
    assert data["version"] == "1.0"
    assert data["alignment"] == 64
    assert data["file_bytes"] == compressed.stat().st_size
    assert "zstd" in data["flags"]["required"]
    assert data["metadata"]["encoder"]["name"] == "dcformat"
    assert data["directory"]["offset"] + data["directory"]["stored_bytes"] + 88 == data["file_bytes"]

    tensors = {t["name"]: t for t in data["tensors"]}
    assert sorted(tensors) == LENET300_NAMES
    for name, array in decoded.items():
        t = tensors[name]
        assert t["shape"] == list(array.shape)
        assert t["dtype"] == "float32"
        assert t["nnz"] == np.count_nonzero(array)
        assert t["density"] == pytest.approx(np.count_nonzero(array) / array.size)
        assert t["checksum"] == "ok"
        assert t["bits_per_weight"] == pytest.approx(8 * t["stored_bytes"] / array.size)
        assert t["stored_bytes"] == sum(data["sections"][i]["size"] for i in t["sections"])

    fc1 = tensors["fc1.weight"]
    assert fc1["encoding"] == "sparse-shared"
    assert fc1["bits"] == 5
    assert fc1["index_bits"] == 5
    assert 1 <= fc1["n_clusters"] <= 32
    assert [s["kind"] for s in fc1["streams"]] == ["assignments", "gaps"]
    assert all(s["form"] in ("packed", "huffman") for s in fc1["streams"])
    assert tensors["fc1.bias"]["encoding"] == "raw"
    assert tensors["fc1.bias"]["bits"] is None

    sections = data["sections"]
    assert [s["index"] for s in sections] == list(range(len(sections)))
    for section in sections:
        assert section["offset_hex"] == hex(section["offset"])
        assert section["offset"] % 64 == 0
        assert section["crc_ok"] is True
        assert section["crc32"] == f"{int(section['crc32'], 16):#010x}"
        assert section["owner"] in LENET300_NAMES


def test_inspect_damaged_file(capsys, damaged):
    path, section = damaged
    status, out, _ = run(capsys, "inspect", path, "--json")
    tensors = {t["name"]: t for t in json.loads(out)["tensors"]}

    assert status == 0  # inspect reports damage; verify is the command that fails on it
    assert tensors["fc1.weight"]["checksum"] == "mismatch"
    assert tensors["fc1.weight"]["damaged_sections"] == [section["index"]]
    assert "ChecksumError" in tensors["fc1.weight"]["error"]
    assert tensors["fc1.weight"]["nnz"] is None
    assert tensors["fc2.weight"]["checksum"] == "ok"


def test_inspect_not_a_dcf_file(capsys):
    status, out, err = run(capsys, "inspect", LENET300)

    assert status == 1
    assert out == ""
    assert_clean_error(err, "magic")


# --------------------------------------------------------------------------------------
# verify


def test_verify_ok(capsys, compressed):
    status, out, err = run(capsys, "verify", compressed)
    assert status == 0
    assert err == ""
    sections = len(inspect_file(compressed)["sections"])
    assert out.strip() == f"{compressed}: OK, {sections} sections and 6 tensors, SHA-256 digest matches"

    status, out, _ = run(capsys, "verify", compressed, "--json", "--decode")
    data = json.loads(out)
    assert status == 0
    assert data["ok"] is True
    assert data["digest_ok"] is True
    assert data["tensors"] == 6
    assert data["checked_sections"] == len(inspect_file(compressed)["sections"])
    assert data["problems"] == []


def test_verify_flipped_byte(capsys, damaged):
    path, section = damaged
    status, out, err = run(capsys, "verify", path)

    assert status == 1
    assert f"section[{section['index']}] (assignments) of fc1.weight" in out
    assert "CRC-32 mismatch" in out
    assert_clean_error(err, "failed verification")

    status, out, _ = run(capsys, "verify", path, "--json")
    data = json.loads(out)
    assert status == 1
    assert data["ok"] is False
    assert data["digest_ok"] is False
    parts = [p["part"] for p in data["problems"]]
    assert parts == [f"section[{section['index']}] (assignments) of fc1.weight", "digest"]
    assert data["problems"][0]["offset"] == section["offset"]


@pytest.mark.parametrize(
    "content, error",
    [(b"", "TruncatedError"), (b"not a DCF file" * 10, "BadMagicError"), (b"\x89DCF\r\n\x1a\n" + bytes(100), "")],
)
def test_verify_unopenable_file(capsys, tmp_path, content, error):
    path = tmp_path / "bad.dcf"
    path.write_bytes(content)
    status, out, _ = run(capsys, "verify", path, "--json")
    data = json.loads(out)

    assert status == 1
    assert data["opened"] is False
    assert len(data["problems"]) == 1
    assert data["problems"][0]["error"].endswith("Error")
    assert error in data["problems"][0]["error"]


def test_verify_quiet(capsys, damaged, compressed):
    path, _ = damaged
    assert run(capsys, "verify", compressed, "--quiet") == (0, "", "")
    status, out, err = run(capsys, "verify", path, "--quiet")
    assert status == 1
    assert out == ""
    assert_clean_error(err, "failed verification")


# --------------------------------------------------------------------------------------
# Usage and input errors


@pytest.mark.parametrize(
    "argv",
    [
        [],
        ["unknown-command"],
        ["compress", str(LENET300)],  # no -o
        ["compress", str(LENET300), "-o", "x.dcf", "--bogus"],
        ["compress", str(LENET300), "-o", "x.dcf", "--sparsity", "0.5", "--quality", "1"],
        ["compress", str(LENET300), "-o", "x.dcf", "--sparsity", "1.5"],
        ["compress", str(LENET300), "-o", "x.dcf", "--bits", "fc1.weight=40"],
        ["compress", str(LENET300), "-o", "x.dcf", "--encoding", "zip"],
        ["compress", str(LENET300), "-o", "x.dcf", "--metadata", "no-equals-sign"],
        ["inspect", "x.dcf", "--json", "--quiet"],
    ],
)
def test_bad_usage_exits_2(capsys, argv):
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    assert exit_info.value.code == 2
    assert "usage: dcformat" in capsys.readouterr().err


def test_help_gives_units(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["compress", "--help"])
    help_text = capsys.readouterr().out

    assert exit_info.value.code == 0
    assert "fraction" in help_text
    assert "bits per" in help_text
    assert "1 byte" in help_text


def test_missing_input(capsys, tmp_path):
    missing = tmp_path / "missing.safetensors"
    status, out, err = run(capsys, "compress", missing, "-o", tmp_path / "out.dcf")

    assert status == 1
    assert out == ""
    assert_clean_error(err, str(missing), "not found")

    status, _, err = run(capsys, "decompress", tmp_path / "missing.dcf", "-o", tmp_path / "out.npz")
    assert status == 1
    assert_clean_error(err, "No such file or directory")


def test_unknown_input_suffix(capsys, tmp_path):
    source = tmp_path / "model.onnx"
    source.write_bytes(b"onnx")
    status, _, err = run(capsys, "compress", source, "-o", tmp_path / "out.dcf")

    assert status == 1
    assert_clean_error(err, "'.onnx'", ".safetensors")


class TinyNet:
    """Built lazily by the tests below, so that the module does not need torch to import."""

    @staticmethod
    def make():
        import torch

        return torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.ReLU(), torch.nn.Linear(3, 2))


def test_pickled_module_rejected(capsys, tmp_path):
    torch = pytest.importorskip("torch")
    source = tmp_path / "whole_module.pt"
    torch.save(TinyNet.make(), source)
    status, _, err = run(capsys, "compress", source, "-o", tmp_path / "out.dcf")

    assert status == 1
    assert_clean_error(err, "torch.save(model.state_dict(), path)")
    assert not (tmp_path / "out.dcf").exists()


def test_state_dict_pt_accepted(capsys, tmp_path):
    torch = pytest.importorskip("torch")
    source = tmp_path / "state.pt"
    model = TinyNet.make()
    torch.save({"state_dict": model.state_dict(), "epoch": 3}, source)
    status, _, _ = run(capsys, "compress", source, "-o", tmp_path / "out.dcf", "--quiet")

    assert status == 0
    decoded = dcformat.load(tmp_path / "out.dcf")
    for name, tensor in model.state_dict().items():
        np.testing.assert_array_equal(decoded[name], tensor.numpy())  # small tensors stay raw


class _CreatesFile:
    def __init__(self, path: str) -> None:
        self.path = path

    def __reduce__(self):
        return (open, (self.path, "w"))


def test_crafted_pt_cannot_create_file(capsys, tmp_path):
    torch = pytest.importorskip("torch")
    target = tmp_path / "created_by_unpickling.txt"
    source = tmp_path / "crafted.pt"
    torch.save({"weight": torch.ones(3), "payload": _CreatesFile(str(target))}, source)

    status, _, err = run(capsys, "compress", source, "-o", tmp_path / "out.dcf")

    assert status == 1
    assert_clean_error(err, "state_dict")
    assert not target.exists()


# --------------------------------------------------------------------------------------
# python -m dcformat in a subprocess


def run_module(*argv) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
    return subprocess.run([sys.executable, "-m", "dcformat", *map(str, argv)], cwd=REPO_ROOT, env=env,
                          capture_output=True, text=True, timeout=120)


def test_module_exit_statuses(compressed, tmp_path):
    ok = run_module("verify", compressed)
    assert ok.returncode == 0, ok.stderr
    assert "OK" in ok.stdout

    usage = run_module("compress", "--no-such-option")
    assert usage.returncode == 2
    assert "usage: dcformat compress" in usage.stderr

    missing = run_module("compress", tmp_path / "missing.safetensors", "-o", tmp_path / "out.dcf")
    assert missing.returncode == 1
    assert missing.stdout == ""
    assert_clean_error(missing.stderr, "not found")


# --------------------------------------------------------------------------------------
# Helpers


@pytest.mark.parametrize(
    "text, expected",
    [
        ("fc1.weight", "fc1.weight"),
        ("größe", "größe"),
        ("a\x1bb", "a\\x1bb"),
        ("line\nbreak\ttab", "line\\nbreak\\ttab"),
        ("\u202eevil", "\\u202eevil"),
        ("back\\slash", "back\\\\slash"),
        ("\x00", "\\x00"),
    ],
)
def test_escape(text, expected):
    assert escape(text) == expected


@pytest.mark.parametrize(
    "text, expected",
    [
        ("0.5", 0.5),
        ("12", 12),
        ("true", True),
        ('{"top1": 0.97}', {"top1": 0.97}),
        ("[1, 2]", [1, 2]),
        ('"quoted"', "quoted"),
        ("plain text", "plain text"),
        ("null", "null"),
        ("NaN", "NaN"),
        ("-Infinity", "-Infinity"),
        ("", ""),
    ],
)
def test_parse_metadata_value(text, expected):
    assert parse_metadata_value(text) == expected


def test_progress_bar():
    stream = io.StringIO()
    bar = ProgressBar("compress", stream, width=10)
    bar.update("fc1.weight", 0, 4)
    bar.update("x", 2, 4)
    bar.close()
    text = stream.getvalue()

    assert "\r" in text
    assert "[.........." in text
    assert "[#####.....] 2/4 x" in text
    assert text.endswith("\r")
    final_line = text.split("\r")[-2]
    assert final_line.strip() == ""


def test_copy_of_fixture_is_untouched(compressed, tmp_path):
    # Guards the module fixture: tests that damage files work on copies.
    copy = tmp_path / "copy.dcf"
    shutil.copy(compressed, copy)
    assert dcformat.open(copy).verify().ok


def test_compress_rejects_non_dcf_output(tmp_path, capsys):
    output = tmp_path / "model.safetensors"
    with pytest.raises(SystemExit) as info:
        main(["compress", str(LENET300), "-o", str(output)])
    assert info.value.code == 2
    assert "does not end in .dcf" in capsys.readouterr().err
    assert not output.exists()
