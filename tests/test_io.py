"""Tests of dcformat.io: model files in every supported format, round trips and bad inputs."""

from __future__ import annotations

import os
import pickle
import sys
import zipfile

import ml_dtypes
import numpy as np
import pytest

import dcformat
from dcformat.errors import InputError
from dcformat.io import READ_SUFFIXES, WRITE_SUFFIXES, read_tensors, write_tensors

DTYPES = [
    np.float32, np.float16, ml_dtypes.bfloat16, np.float64,
    np.int8, np.int16, np.int32, np.int64,
    np.uint8, np.uint16, np.uint32, np.uint64, np.bool_,
]
SHAPES = [(), (0,), (0, 3), (3, 4)]


def make_array(dtype, shape, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    dtype = np.dtype(dtype)
    if dtype == np.bool_:
        return np.asarray(rng.random(shape) < 0.5)
    if dtype.kind in "iu":
        info = np.iinfo(dtype)
        return np.asarray(rng.integers(info.min, info.max, size=shape, dtype=dtype, endpoint=True))
    values = np.asarray(rng.standard_normal(shape)).astype(dtype)
    if values.size >= 4:
        # Special values must survive bit for bit.
        flat = values.reshape(-1)
        flat[:4] = np.array([np.nan, -0.0, np.inf, -np.inf]).astype(dtype)
    return values


def all_dtype_tensors(include_bfloat16: bool = True) -> dict[str, np.ndarray]:
    tensors = {}
    for dtype in DTYPES:
        if not include_bfloat16 and np.dtype(dtype) == np.dtype(ml_dtypes.bfloat16):
            continue
        for shape in SHAPES:
            name = f"{np.dtype(dtype).name}.{'x'.join(map(str, shape)) or 'scalar'}"
            tensors[name] = make_array(dtype, shape, seed=len(tensors))
    return tensors


def assert_same_tensors(actual: dict, expected: dict, *, ordered: bool = True) -> None:
    if ordered:
        assert list(actual) == list(expected)
    else:
        assert sorted(actual) == sorted(expected)
    for name, array in expected.items():
        got = actual[name]
        assert got.dtype == array.dtype, name
        assert got.shape == array.shape, name
        assert got.tobytes() == array.tobytes(), name


@pytest.mark.parametrize("suffix", [".safetensors", ".pt", ".pth", ".npz"])
def test_round_trip_every_dtype(tmp_path, suffix):
    if suffix in (".pt", ".pth"):
        pytest.importorskip("torch")
    tensors = all_dtype_tensors(include_bfloat16=suffix != ".npz")
    path = tmp_path / f"model{suffix}"

    write_tensors(tensors, path)
    loaded = read_tensors(path)

    # safetensors stores tensors in its own order (by dtype alignment, then name).
    assert_same_tensors(loaded, tensors, ordered=suffix != ".safetensors")


def test_pt_read_as_bin(tmp_path):
    pytest.importorskip("torch")
    tensors = all_dtype_tensors()
    pt_path = tmp_path / "model.pt"
    write_tensors(tensors, pt_path)
    bin_path = tmp_path / "pytorch_model.bin"
    os.rename(pt_path, bin_path)

    assert_same_tensors(read_tensors(bin_path), tensors)


def test_dcf_read(tmp_path):
    # Tensors below the 256-element threshold are stored raw, so the round trip is exact.
    tensors = all_dtype_tensors()
    path = tmp_path / "model.dcf"
    dcformat.save(tensors, path)

    assert_same_tensors(read_tensors(path), tensors)


def test_suffix_case_insensitive(tmp_path):
    tensors = {"w": np.arange(6, dtype=np.float32).reshape(2, 3)}
    path = tmp_path / "MODEL.SafeTensors"
    write_tensors(tensors, path)

    assert_same_tensors(read_tensors(path), tensors)


def test_npz_reserved_keyword_names(tmp_path):
    tensors = {"file": np.ones(2, np.float32), "allow_pickle": np.zeros(3, np.int8), "a/b.c": np.ones(1)}
    path = tmp_path / "names.npz"
    write_tensors(tensors, path)

    assert_same_tensors(read_tensors(path), tensors)


def test_write_accepts_torch_tensors(tmp_path):
    torch = pytest.importorskip("torch")
    tensors = {"w": torch.arange(6, dtype=torch.bfloat16).reshape(2, 3).t(), "n": torch.tensor(3)}
    path = tmp_path / "t.safetensors"
    write_tensors(tensors, path)
    loaded = read_tensors(path)

    assert loaded["w"].dtype == ml_dtypes.bfloat16
    np.testing.assert_array_equal(loaded["w"].astype(np.float32), tensors["w"].float().numpy())
    assert loaded["n"].shape == ()
    assert loaded["n"] == 3


# --------------------------------------------------------------------------------------
# Errors


def test_read_missing_file(tmp_path):
    with pytest.raises(InputError, match="not found"):
        read_tensors(tmp_path / "missing.safetensors")


def test_read_directory(tmp_path):
    folder = tmp_path / "folder.npz"
    folder.mkdir()
    with pytest.raises(InputError, match="directory"):
        read_tensors(folder)


@pytest.mark.parametrize("name", ["model.onnx", "model"])
def test_read_unknown_suffix(tmp_path, name):
    path = tmp_path / name
    path.write_bytes(b"data")
    with pytest.raises(InputError) as error:
        read_tensors(path)
    message = str(error.value)
    assert (path.suffix or "no suffix") in message
    for suffix in READ_SUFFIXES:
        assert suffix in message


@pytest.mark.parametrize("name", ["out.dcf", "out.onnx", "out"])
def test_write_unknown_suffix(tmp_path, name):
    with pytest.raises(InputError) as error:
        write_tensors({"w": np.ones(2)}, tmp_path / name)
    for suffix in WRITE_SUFFIXES:
        assert suffix in str(error.value)
    assert not (tmp_path / name).exists()


def test_write_type_errors(tmp_path):
    with pytest.raises(TypeError):
        write_tensors([("w", np.ones(2))], tmp_path / "a.npz")
    with pytest.raises(TypeError):
        write_tensors({"w": np.ones(2)}, 3)
    with pytest.raises(InputError, match="'w'"):
        write_tensors({"w": [1.0, 2.0]}, tmp_path / "a.npz")


def test_npz_rejects_bfloat16(tmp_path):
    path = tmp_path / "b.npz"
    with pytest.raises(InputError, match="bfloat16"):
        write_tensors({"w": np.ones(2, ml_dtypes.bfloat16)}, path)
    assert list(tmp_path.iterdir()) == []


def test_npz_object_array_rejected(tmp_path):
    path = tmp_path / "objects.npz"
    np.savez(path, w=np.array([{"a": 1}], dtype=object))
    with pytest.raises(InputError, match="objects.npz"):
        read_tensors(path)


def test_npy_with_npz_suffix_rejected(tmp_path):
    path = tmp_path / "single.npz"
    with open(path, "wb") as handle:
        np.save(handle, np.ones(3))
    with pytest.raises(InputError, match="single .npy"):
        read_tensors(path)


@pytest.mark.parametrize("content", [b"", b"PK\x03\x04 truncated zip", b"not a zip at all"])
def test_npz_damaged(tmp_path, content):
    path = tmp_path / "damaged.npz"
    path.write_bytes(content)
    with pytest.raises(InputError, match="damaged.npz"):
        read_tensors(path)


@pytest.mark.parametrize("content", [b"", b"\xff" * 16, b"\x10\x00\x00\x00\x00\x00\x00\x00{not json}     "])
def test_safetensors_damaged(tmp_path, content):
    path = tmp_path / "damaged.safetensors"
    path.write_bytes(content)
    with pytest.raises(InputError, match="invalid safetensors"):
        read_tensors(path)


def test_failed_write_keeps_old_file(tmp_path, monkeypatch):
    import dcformat.io as io_module

    path = tmp_path / "model.npz"
    write_tensors({"w": np.ones(3, np.float32)}, path)
    before = path.read_bytes()

    def write_half(arrays, handle):
        handle.write(b"PK\x03\x04 partial")
        raise RuntimeError("disk full")

    monkeypatch.setattr(io_module, "_write_npz", write_half)
    with pytest.raises(RuntimeError, match="disk full"):
        write_tensors({"w": np.zeros(3, np.float32)}, path)

    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["model.npz"]


def test_overwrite_replaces_file(tmp_path):
    path = tmp_path / "model.safetensors"
    write_tensors({"w": np.ones(3, np.float32)}, path)
    write_tensors({"v": np.zeros(2, np.int8)}, path)

    assert_same_tensors(read_tensors(path), {"v": np.zeros(2, np.int8)})
    assert [p.name for p in tmp_path.iterdir()] == ["model.safetensors"]


# --------------------------------------------------------------------------------------
# bfloat16 through torch when the safetensors numpy API lacks it


def test_safetensors_bfloat16_torch_fallback(tmp_path, monkeypatch):
    pytest.importorskip("torch")
    import safetensors.numpy

    tensors = {"b": make_array(ml_dtypes.bfloat16, (3, 4)), "f": make_array(np.float32, (2,))}
    path = tmp_path / "bf16.safetensors"

    def no_bfloat16_save(arrays, *args, **kwargs):
        raise TypeError("unsupported dtype bfloat16")

    def no_bfloat16_load(filename, *args, **kwargs):
        raise TypeError("data type 'bfloat16' not understood")

    monkeypatch.setattr(safetensors.numpy, "save", no_bfloat16_save)
    monkeypatch.setattr(safetensors.numpy, "load_file", no_bfloat16_load)
    write_tensors(tensors, path)
    loaded = read_tensors(path)

    assert sorted(loaded) == sorted(tensors)
    for name in tensors:
        assert loaded[name].dtype == tensors[name].dtype
        assert loaded[name].tobytes() == tensors[name].tobytes()


def test_torch_formats_without_torch(tmp_path, monkeypatch):
    path = tmp_path / "model.pt"
    path.write_bytes(b"unused")
    monkeypatch.setitem(sys.modules, "torch", None)  # makes "import torch" raise ImportError

    with pytest.raises(InputError, match="needs PyTorch"):
        read_tensors(path)
    with pytest.raises(InputError, match="needs PyTorch"):
        write_tensors({"w": np.ones(2)}, tmp_path / "out.pt")


# --------------------------------------------------------------------------------------
# PyTorch files: state dicts only, never code


def test_pt_whole_module_rejected(tmp_path):
    torch = pytest.importorskip("torch")
    model = torch.nn.Sequential(torch.nn.Linear(3, 2))
    path = tmp_path / "module.pt"
    torch.save(model, path)

    with pytest.raises(InputError) as error:
        read_tensors(path)
    assert "torch.save(model.state_dict(), path)" in str(error.value)


class _CreatesFile:
    """Unpickling this object would call open(path, "w")."""

    def __init__(self, path: str) -> None:
        self.path = path

    def __reduce__(self):
        return (open, (self.path, "w"))


def test_pt_code_execution_blocked(tmp_path):
    torch = pytest.importorskip("torch")
    target = tmp_path / "created_by_unpickling.txt"
    path = tmp_path / "crafted.pt"
    torch.save({"w": torch.ones(2), "payload": _CreatesFile(str(target))}, path)

    with pytest.raises(InputError, match="state_dict"):
        read_tensors(path)
    assert not target.exists()


def test_pt_legacy_pickle_code_execution_blocked(tmp_path):
    pytest.importorskip("torch")
    target = tmp_path / "created_by_unpickling.txt"
    path = tmp_path / "crafted_legacy.pt"
    path.write_bytes(pickle.dumps({"payload": _CreatesFile(str(target))}, protocol=2))

    with pytest.raises(InputError):
        read_tensors(path)
    assert not target.exists()


@pytest.mark.parametrize("wrapper", ["state_dict", "model_state_dict", "model"])
def test_pt_checkpoint_unwrapped(tmp_path, wrapper):
    torch = pytest.importorskip("torch")
    state_dict = {"fc.weight": torch.ones(2, 3), "fc.bias": torch.zeros(2)}
    checkpoint = {wrapper: state_dict, "optimizer": {"state": {}, "param_groups": []}, "epoch": 7}
    path = tmp_path / "checkpoint.pt"
    torch.save(checkpoint, path)

    loaded = read_tensors(path)

    assert list(loaded) == ["fc.weight", "fc.bias"]
    np.testing.assert_array_equal(loaded["fc.weight"], np.ones((2, 3), np.float32))


def test_pt_ambiguous_checkpoint(tmp_path):
    torch = pytest.importorskip("torch")
    state_dict = {"w": torch.ones(2)}
    path = tmp_path / "checkpoint.pt"
    torch.save({"model": state_dict, "state_dict": state_dict}, path)

    with pytest.raises(InputError, match="ambiguous"):
        read_tensors(path)


def test_pt_non_tensor_values(tmp_path):
    torch = pytest.importorskip("torch")
    path = tmp_path / "mixed.pt"
    torch.save({"w": torch.ones(2), "step": 3}, path)

    with pytest.raises(InputError, match="'step'"):
        read_tensors(path)


def test_pt_not_a_dict(tmp_path):
    torch = pytest.importorskip("torch")
    path = tmp_path / "list.pt"
    torch.save([torch.ones(2)], path)

    with pytest.raises(InputError, match="found list"):
        read_tensors(path)


@pytest.mark.parametrize("content", [b"", b"garbage bytes", b"PK\x03\x04 truncated"])
def test_pt_damaged(tmp_path, content):
    pytest.importorskip("torch")
    path = tmp_path / "damaged.pt"
    path.write_bytes(content)
    with pytest.raises(InputError, match="damaged.pt"):
        read_tensors(path)


def test_pt_tied_tensors(tmp_path):
    torch = pytest.importorskip("torch")
    shared = torch.arange(12, dtype=torch.float32).reshape(3, 4)
    path = tmp_path / "tied.pt"
    torch.save({"embed.weight": shared, "head.weight": shared, "head.view": shared[1]}, path)

    loaded = read_tensors(path)

    np.testing.assert_array_equal(loaded["embed.weight"], shared.numpy())
    np.testing.assert_array_equal(loaded["head.weight"], shared.numpy())
    np.testing.assert_array_equal(loaded["head.view"], shared[1].numpy())


def test_pt_empty_state_dict(tmp_path):
    torch = pytest.importorskip("torch")
    path = tmp_path / "empty.pt"
    torch.save({}, path)

    assert read_tensors(path) == {}


def test_pt_unsupported_dtype(tmp_path):
    torch = pytest.importorskip("torch")
    path = tmp_path / "fp8.pt"
    torch.save({"w": torch.zeros(2, dtype=torch.float8_e4m3fn)}, path)

    with pytest.raises(InputError, match="'w'"):
        read_tensors(path)


def test_npz_is_zip_of_npy(tmp_path):
    path = tmp_path / "plain.npz"
    write_tensors({"w": np.arange(3)}, path)

    with zipfile.ZipFile(path) as archive:
        assert archive.namelist() == ["w.npy"]
    with np.load(path, allow_pickle=False) as archive:
        np.testing.assert_array_equal(archive["w"], np.arange(3))


def test_npz_rejects_names_that_escape_the_archive(tmp_path):
    from dcformat.errors import InputError
    from dcformat.io import write_tensors

    for name in ("../x", "/abs", "a/../../b"):
        with pytest.raises(InputError, match="outside the archive"):
            write_tensors({name: np.zeros(2, np.float32)}, tmp_path / "out.npz")
    assert not (tmp_path / "out.npz").exists()


def test_outputs_get_umask_permissions(tmp_path):
    import dcformat
    from dcformat.io import write_tensors

    old = os.umask(0o022)
    try:
        write_tensors({"a": np.zeros(2, np.float32)}, tmp_path / "a.safetensors")
        dcformat.save({"a": np.zeros(2, np.float32)}, tmp_path / "a.dcf")
    finally:
        os.umask(old)
    assert (tmp_path / "a.safetensors").stat().st_mode & 0o777 == 0o644
    assert (tmp_path / "a.dcf").stat().st_mode & 0o777 == 0o644
