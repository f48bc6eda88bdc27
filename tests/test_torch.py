"""Tests of dcformat.torch: tensor conversion, sparse CSR export and state dict round trips."""

from __future__ import annotations

import io
import warnings
from pathlib import Path

import ml_dtypes
import numpy as np
import pytest
import scipy.sparse
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

torch = pytest.importorskip("torch")

# torch warns once per process that its sparse CSR support is in beta.
pytestmark = pytest.mark.filterwarnings("ignore:Sparse CSR tensor support is in beta state")

import dcformat  # noqa: E402
from dcformat.io import read_tensors  # noqa: E402
from dcformat.torch import (  # noqa: E402
    csr_to_torch,
    load_state_dict,
    numpy_to_tensor,
    save_model,
    tensor_to_numpy,
)

MODELS = Path(__file__).resolve().parent.parent / "fixtures" / "models"
LENET300 = MODELS / "lenet300.safetensors"
MNIST = MODELS / "mnist5000.npz"

TORCH_TO_NUMPY = {
    torch.float32: np.dtype(np.float32),
    torch.float16: np.dtype(np.float16),
    torch.bfloat16: np.dtype(ml_dtypes.bfloat16),
    torch.float64: np.dtype(np.float64),
    torch.int8: np.dtype(np.int8),
    torch.int16: np.dtype(np.int16),
    torch.int32: np.dtype(np.int32),
    torch.int64: np.dtype(np.int64),
    torch.uint8: np.dtype(np.uint8),
    torch.uint16: np.dtype(np.uint16),
    torch.uint32: np.dtype(np.uint32),
    torch.uint64: np.dtype(np.uint64),
    torch.bool: np.dtype(np.bool_),
}
SHAPES = [(), (0,), (0, 3), (3, 4)]


def make_tensor(dtype, shape) -> torch.Tensor:
    generator = torch.Generator().manual_seed(0)
    if dtype == torch.bool:
        return torch.rand(shape, generator=generator) < 0.5
    if dtype.is_floating_point:
        values = torch.randn(shape, generator=generator, dtype=torch.float64).to(dtype)
        if values.numel() >= 3:
            values.view(-1)[:3] = torch.tensor([float("nan"), -0.0, float("inf")], dtype=dtype)
        return values
    return torch.randint(0, 100, shape, generator=generator, dtype=torch.int64).to(dtype)


def same_bits(tensor: torch.Tensor, array: np.ndarray) -> bool:
    raw = tensor.contiguous().view(-1).view(torch.uint8) if tensor.numel() else torch.zeros(0, dtype=torch.uint8)
    return raw.numpy().tobytes() == np.ascontiguousarray(array).tobytes()


class LeNet300(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc1 = torch.nn.Linear(784, 300)
        self.fc2 = torch.nn.Linear(300, 100)
        self.fc3 = torch.nn.Linear(100, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc3(torch.relu(self.fc2(torch.relu(self.fc1(x)))))


# --------------------------------------------------------------------------------------
# tensor_to_numpy and numpy_to_tensor


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("dtype", list(TORCH_TO_NUMPY))
def test_tensor_round_trip(dtype, shape):
    tensor = make_tensor(dtype, shape)

    array = tensor_to_numpy(tensor)
    back = numpy_to_tensor(array)

    assert array.dtype == TORCH_TO_NUMPY[dtype]
    assert array.shape == shape
    assert same_bits(tensor, array)
    assert back.dtype == dtype
    assert tuple(back.shape) == shape
    assert same_bits(back, array)


def test_tensor_to_numpy_bfloat16_values():
    tensor = torch.tensor([1.5, -2.25, 3.0e38], dtype=torch.bfloat16)
    array = tensor_to_numpy(tensor)

    np.testing.assert_array_equal(array.astype(np.float32), tensor.float().numpy())


def test_tensor_to_numpy_non_contiguous_and_grad():
    base = torch.arange(12, dtype=torch.float32).reshape(3, 4).requires_grad_()
    array = tensor_to_numpy(base.t())

    assert array.flags.c_contiguous
    np.testing.assert_array_equal(array, np.arange(12, dtype=np.float32).reshape(3, 4).T)


def test_tensor_to_numpy_sparse_tensor():
    dense = torch.tensor([[0.0, 2.0], [3.0, 0.0]])
    np.testing.assert_array_equal(tensor_to_numpy(dense.to_sparse()), dense.numpy())
    np.testing.assert_array_equal(tensor_to_numpy(dense.to_sparse_csr()), dense.numpy())


def test_tensor_to_numpy_negative_view():
    tensor = torch.tensor([1.0, -2.0])
    np.testing.assert_array_equal(tensor_to_numpy(tensor._neg_view()), [-1.0, 2.0])


def _quantized() -> torch.Tensor:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # quantized dtypes are deprecated in torch 2.13
        return torch.quantize_per_tensor(torch.ones(2), 0.1, 0, torch.qint8)


@pytest.mark.parametrize(
    "make, message",
    [
        (lambda: np.ones(2), "torch.Tensor"),
        (lambda: torch.zeros(2, dtype=torch.float8_e4m3fn), "numpy equivalent"),
        (lambda: torch.empty(2, device="meta"), "meta"),
        (_quantized, "quantized"),
    ],
)
def test_tensor_to_numpy_rejects(make, message):
    with pytest.raises(TypeError, match=message):
        tensor_to_numpy(make())


def test_numpy_to_tensor_read_only_array():
    array = np.arange(4, dtype=np.float32)
    array.flags.writeable = False
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        tensor = numpy_to_tensor(array)
    tensor += 1  # a copy, so the read-only array is untouched

    np.testing.assert_array_equal(array, np.arange(4, dtype=np.float32))


def test_numpy_to_tensor_layouts():
    big_endian = np.arange(4, dtype=">i4")
    reversed_view = np.arange(5, dtype=np.float32)[::-1]
    scalar = np.float16(2.5)

    assert numpy_to_tensor(big_endian).tolist() == [0, 1, 2, 3]
    assert numpy_to_tensor(reversed_view).tolist() == [4.0, 3.0, 2.0, 1.0, 0.0]
    assert numpy_to_tensor(scalar).dtype == torch.float16
    assert numpy_to_tensor(scalar).shape == ()


def test_numpy_to_tensor_shares_memory():
    array = np.zeros(3, np.float32)
    numpy_to_tensor(array)[0] = 7.0

    assert array[0] == 7.0


@pytest.mark.parametrize("value", [[1.0, 2.0], np.array(["a"]), np.array([object()])])
def test_numpy_to_tensor_rejects(value):
    with pytest.raises(TypeError):
        numpy_to_tensor(value)


NUMPY_DTYPES = [np.dtype(d) for d in TORCH_TO_NUMPY.values()]


@settings(max_examples=60, deadline=None)
@given(
    hnp.arrays(
        dtype=st.sampled_from([d for d in NUMPY_DTYPES if d != np.dtype(ml_dtypes.bfloat16)]),
        shape=hnp.array_shapes(min_dims=0, max_dims=4, min_side=0, max_side=5),
    )
)
def test_numpy_round_trip_property(array):
    back = tensor_to_numpy(numpy_to_tensor(array))

    assert back.dtype == array.dtype
    assert back.shape == array.shape
    assert back.tobytes() == array.tobytes()


@settings(max_examples=30, deadline=None)
@given(st.lists(st.integers(0, 0xFFFF), max_size=20))
def test_bfloat16_round_trip_property(bits):
    array = np.array(bits, dtype=np.uint16).view(ml_dtypes.bfloat16)
    tensor = numpy_to_tensor(array)

    assert tensor.dtype == torch.bfloat16
    assert tensor_to_numpy(tensor).view(np.uint16).tolist() == bits


# --------------------------------------------------------------------------------------
# csr_to_torch


# SciPy has no float16 or bfloat16 sparse arrays, so those dtypes cannot reach csr_to_torch.
@pytest.mark.parametrize("dtype", [np.float32, np.float64, np.int32, np.bool_])
@pytest.mark.parametrize("shape, density", [((5, 7), 0.3), ((4, 4), 0.0), ((0, 3), 0.5), ((3, 6), 1.0)])
def test_csr_to_torch_matches_dense(dtype, shape, density):
    rng = np.random.default_rng(1)
    dense = np.where(rng.random(shape) < density, rng.standard_normal(shape) * 10 + 20, 0).astype(dtype)
    matrix = scipy.sparse.csr_array(dense)

    tensor = csr_to_torch(matrix)

    assert tensor.layout == torch.sparse_csr
    assert tuple(tensor.shape) == shape
    assert tensor.crow_indices().dtype == torch.int64
    assert tensor.values().dtype == numpy_to_tensor(dense).dtype
    np.testing.assert_array_equal(tensor.to_dense().numpy(), dense)


def test_csr_to_torch_non_canonical():
    # Column indices out of order and a duplicate (summed) in row 0.
    data = np.array([1.0, 2.0, 3.0, 4.0], np.float32)
    indices = np.array([2, 0, 2, 1])
    indptr = np.array([0, 3, 4])
    matrix = scipy.sparse.csr_array((data, indices, indptr), shape=(2, 3))

    tensor = csr_to_torch(matrix)

    np.testing.assert_array_equal(tensor.to_dense().numpy(), [[2.0, 0.0, 4.0], [0.0, 4.0, 0.0]])
    assert matrix.indices.tolist() == [2, 0, 2, 1]  # the caller's matrix is not modified


def test_csr_to_torch_accepts_csr_matrix():
    dense = np.array([[0, 1.5], [2.5, 0]], dtype=np.float32)
    tensor = csr_to_torch(scipy.sparse.csr_matrix(dense))

    np.testing.assert_array_equal(tensor.to_dense().numpy(), dense)


@pytest.mark.parametrize("value", [np.ones((2, 2)), scipy.sparse.coo_array(np.eye(2)), torch.eye(2)])
def test_csr_to_torch_rejects(value):
    with pytest.raises(TypeError, match="CSR"):
        csr_to_torch(value)


# --------------------------------------------------------------------------------------
# save_model and load_state_dict


@pytest.fixture(scope="module")
def lenet300(tmp_path_factory):
    model = LeNet300()
    weights = read_tensors(LENET300)
    model.load_state_dict({name: torch.from_numpy(array) for name, array in weights.items()})
    path = tmp_path_factory.mktemp("torch") / "lenet300.dcf"
    report = save_model(model, path, metadata={"source": "test"})
    return model, path, report


def test_save_model_report(lenet300):
    model, path, report = lenet300

    assert [t.name for t in report.tensors] == list(model.state_dict())
    assert report.file_bytes == path.stat().st_size
    assert dcformat.open(path).metadata()["user"] == {"source": "test"}


def test_load_state_dict_into_module(lenet300):
    _, path, _ = lenet300
    decoded = dcformat.load(path)
    state_dict = load_state_dict(path)
    fresh = LeNet300()

    result = fresh.load_state_dict(state_dict, strict=True)

    assert result.missing_keys == []
    assert result.unexpected_keys == []
    for name, tensor in fresh.state_dict().items():
        assert tensor.dtype == torch.float32
        np.testing.assert_array_equal(tensor.numpy(), decoded[name])


def test_loaded_model_predicts_like_original(lenet300):
    model, path, _ = lenet300
    fresh = LeNet300()
    fresh.load_state_dict(load_state_dict(path))
    with np.load(MNIST, allow_pickle=False) as data:
        images = torch.from_numpy(data["test_images"][:200].astype(np.float32) / 255.0)
        labels = torch.from_numpy(data["test_labels"][:200].astype(np.int64))

    with torch.no_grad():
        original = model(images).argmax(dim=1)
        compressed = fresh(images).argmax(dim=1)

    # Lossy compression may flip borderline predictions; the bound leaves room for that
    # while catching a model whose weights were scrambled (about 10 % agreement).
    assert (original == compressed).float().mean() >= 0.9
    assert (compressed == labels).float().mean() >= 0.85


def test_get_sparse_torch_matches_dense(lenet300):
    _, path, _ = lenet300
    with dcformat.open(path) as reader:
        dense = reader.get("fc1.weight")
        tensor = reader.get_sparse("fc1.weight", format="torch")

    assert tensor.layout == torch.sparse_csr
    np.testing.assert_array_equal(tensor.to_dense().numpy(), dense)
    assert tensor.values().numel() == np.count_nonzero(dense)


class Buffers(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.embed = torch.nn.Embedding(32, 16)
        self.head = torch.nn.Linear(16, 32, bias=False)
        self.head.weight = self.embed.weight  # tied: two names, one storage
        self.register_buffer("scale", torch.tensor([0.5, 1.5, -2.0], dtype=torch.bfloat16))
        self.register_buffer("steps", torch.tensor(12345678901, dtype=torch.int64))
        self.register_buffer("mask", torch.tensor([True, False, True]))
        self.register_buffer("empty", torch.zeros(0, 4, dtype=torch.float16))


def test_buffers_and_tied_weights_round_trip(tmp_path):
    module = Buffers()
    path = tmp_path / "buffers.dcf"
    save_model(module, path)

    state_dict = load_state_dict(path)
    fresh = Buffers()
    fresh.load_state_dict(state_dict)

    assert set(state_dict) == {"embed.weight", "head.weight", "scale", "steps", "mask", "empty"}
    for name in ("scale", "steps", "mask", "empty"):
        assert state_dict[name].dtype == module.state_dict()[name].dtype, name
        assert torch.equal(state_dict[name], module.state_dict()[name]), name
    assert torch.equal(state_dict["embed.weight"], state_dict["head.weight"])


def test_save_model_accepts_state_dict_and_file_object(tmp_path):
    buffer = io.BytesIO()
    save_model({"w": torch.arange(6, dtype=torch.float32)}, buffer)

    state_dict = load_state_dict(buffer.getvalue())

    assert torch.equal(state_dict["w"], torch.arange(6, dtype=torch.float32))


def test_save_model_rejects_other_types(tmp_path):
    with pytest.raises(TypeError, match="torch.nn.Module"):
        save_model([torch.ones(2)], tmp_path / "x.dcf")


def test_load_state_dict_device(lenet300):
    _, path, _ = lenet300
    state_dict = load_state_dict(path, device=torch.device("cpu"))

    assert all(t.device.type == "cpu" for t in state_dict.values())
