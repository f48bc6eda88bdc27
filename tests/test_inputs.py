"""Encoder inputs at their edges, each with the result or message it must give.

The cases: non-finite values; empty and 0-d tensors; integer, bool, float16 and bfloat16
buffers; non-contiguous and strided arrays and torch tensors; tied tensors; duplicate and
unusual names and the name-size cap. Crafted files declare more tensors or elements than
the reader allows.
"""

from __future__ import annotations

import io
import struct
import tracemalloc
import warnings
from collections.abc import Mapping

import ml_dtypes
import numpy as np
import pytest

import dcformat
from dcformat import encodings
from dcformat.constants import MAX_NAME_BYTES, DType, Encoding, SectionKind, StreamForm
from dcformat.container import ContainerWriter, SectionData, TensorEntry
from dcformat.errors import InputError, InvalidFieldError, LimitExceededError, TensorNotFoundError

BFLOAT16 = np.dtype(ml_dtypes.bfloat16)


def _save(tensors, config=None, **kwargs) -> bytes:
    buffer = io.BytesIO()
    dcformat.save(tensors, buffer, config, **kwargs)
    return buffer.getvalue()


def _weights(shape, dtype=np.float32, seed=0) -> np.ndarray:
    return np.random.default_rng(seed).laplace(0, 0.05, size=shape).astype(dtype)


# --------------------------------------------------------------------------------------
# NaN and infinity


def test_nonfinite_weight_kept_raw_with_warning():
    w = _weights((16, 32))
    w[0, :3] = [np.nan, np.inf, -np.inf]
    w[5, 5] = np.float32(np.nan) * -1  # a NaN with the sign bit set
    with pytest.warns(UserWarning, match=r"tensor 'fc\.weight' has 4 NaN or infinite values; storing it raw"):
        data = _save({"fc.weight": w})
    with dcformat.open(data) as reader:
        assert reader.tensor_info("fc.weight").encoding == "raw"
        assert reader.get("fc.weight").tobytes() == w.tobytes()


@pytest.mark.parametrize("dtype", [np.float16, BFLOAT16, np.float64])
def test_nonfinite_other_float_dtypes(dtype):
    w = _weights((16, 32), dtype)
    w[2, 2] = np.inf
    with pytest.warns(UserWarning, match=r"'w' has 1 NaN or infinite values"):
        data = _save({"w": w})
    decoded = dcformat.load(data)["w"]
    assert decoded.dtype == w.dtype
    assert decoded.tobytes() == w.tobytes()


def test_nonfinite_error_policy_names_tensor_and_count():
    w = _weights((16, 32))
    w[1, 1:4] = np.nan
    with pytest.raises(InputError, match=r"tensor 'layer\.w' has 3 NaN or infinite values"):
        _save({"layer.w": w, "ok": _weights((16, 32))}, dcformat.Config(nonfinite="error"))


def test_nonfinite_small_tensor_lossless_without_warning():
    bias = np.array([np.nan, 1.0, np.inf], dtype=np.float32)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        data = _save({"bias": bias})
    assert dcformat.load(data)["bias"].tobytes() == bias.tobytes()


def test_nonfinite_tensor_left_out_of_global_pruning():
    clean = _weights((32, 32), seed=1)
    dirty = _weights((32, 32), seed=2)
    dirty[0, 0] = np.nan
    with pytest.warns(UserWarning, match="'dirty'"):
        data = _save({"clean": clean, "dirty": dirty})
    decoded = dcformat.load(data)
    assert decoded["dirty"].tobytes() == dirty.tobytes()
    assert np.count_nonzero(decoded["clean"]) < clean.size  # still pruned


# --------------------------------------------------------------------------------------
# Empty tensors, 0-d scalars, integer and bool buffers


@pytest.mark.parametrize("shape", [(0,), (0, 5), (3, 0, 2), (1, 0)])
@pytest.mark.parametrize("dtype", [np.float32, np.int64, np.bool_, BFLOAT16])
def test_empty_tensor_shape_and_dtype_kept(shape, dtype):
    array = np.zeros(shape, dtype=dtype)
    decoded = dcformat.load(_save({"empty": array}))["empty"]
    assert decoded.shape == shape
    assert decoded.dtype == array.dtype


@pytest.mark.parametrize("value", [
    np.array(3.5, dtype=np.float32), np.float64(-0.0), np.array(7, dtype=np.int8),
    np.array(True), np.uint64(2**64 - 1), np.array(1.5, dtype=BFLOAT16),
])
def test_scalar_kept_as_0d(value):
    decoded = dcformat.load(_save({"s": value}))["s"]
    assert decoded.shape == ()
    assert decoded.dtype == np.asarray(value).dtype
    assert decoded.tobytes() == np.asarray(value).tobytes()


@pytest.mark.parametrize("dtype", ["int8", "int16", "int32", "int64", "uint8", "uint16", "uint32", "uint64"])
def test_integer_buffer_raw_even_when_lossy_requested(dtype):
    info = np.iinfo(dtype)
    array = np.random.default_rng(3).integers(info.min, info.max, size=(32, 32), dtype=dtype, endpoint=True)
    array[0, :2] = [info.min, info.max]
    data = _save({"buffer": array}, dcformat.Config(defaults={"encoding": "shared", "bits": 2}))
    with dcformat.open(data) as reader:
        assert reader.tensor_info("buffer").encoding == "raw"
        assert reader.get("buffer").tobytes() == array.tobytes()


def test_bool_buffer_raw():
    mask = np.random.default_rng(4).random((40, 40)) > 0.3
    data = _save({"mask": mask}, dcformat.Config(defaults={"encoding": "sparse-shared"}))
    decoded = dcformat.load(data)["mask"]
    assert decoded.dtype == np.bool_
    np.testing.assert_array_equal(decoded, mask)


@pytest.mark.parametrize("dtype", [np.float16, BFLOAT16])
def test_half_precision_weights_keep_dtype(dtype):
    w = _weights((64, 64), dtype)
    data = _save({"w": w, "b": w[0].copy()})
    with dcformat.open(data) as reader:
        assert reader.tensor_info("w").encoding != "raw"
        assert reader.get("w").dtype == w.dtype
        assert reader.get("b").tobytes() == w[0].tobytes()  # small: raw, bit for bit


# --------------------------------------------------------------------------------------
# Memory layouts: non-contiguous, strided, reversed, broadcast, big-endian


def _layouts(base: np.ndarray) -> dict[str, np.ndarray]:
    return {
        "transposed": base.T,
        "every other column": base[:, ::2],
        "reversed": base[::-1, ::-1],
        "fortran order": np.asfortranarray(base),
        "big-endian": base.astype(base.dtype.newbyteorder(">")),
        "broadcast": np.broadcast_to(base[:1], base.shape),
    }


@pytest.mark.parametrize("layout", list(_layouts(np.zeros((2, 2)))))
def test_layout_same_file_as_contiguous_copy(layout):
    array = _layouts(_weights((48, 64)))[layout]
    contiguous = np.ascontiguousarray(array, dtype=np.float32)
    assert _save({"w": array}) == _save({"w": contiguous})
    decoded = dcformat.load(_save({"w": array, "raw": array[:4, :4]}))
    assert decoded["raw"].tobytes() == contiguous[:4, :4].tobytes()


def test_torch_strided_and_noncontiguous():
    torch = pytest.importorskip("torch")
    base = torch.from_numpy(_weights((48, 64)))
    cases = {
        "t": base.t(), "step": base[:, ::3], "narrow": base.narrow(1, 5, 20),
        "expanded": base[:1].expand(48, 64), "bf16": base.t().to(torch.bfloat16),
        "grad": base.clone().requires_grad_(True), "scalar": torch.tensor(2.5),
    }
    decoded = dcformat.load(_save(cases, dcformat.Config(defaults={"encoding": "raw"})))
    for name, tensor in cases.items():
        expected = tensor.detach().contiguous()
        if expected.dtype == torch.bfloat16:
            expected_bytes = expected.view(torch.int16).numpy().tobytes()
        else:
            expected_bytes = expected.numpy().tobytes()
        assert decoded[name].shape == tuple(tensor.shape), name
        assert decoded[name].tobytes() == expected_bytes, name


@pytest.mark.filterwarnings("ignore:torch.quantize_per_tensor:UserWarning")
def test_torch_tensors_without_numpy_dtype_named_together():
    torch = pytest.importorskip("torch")
    tensors = {
        "meta": torch.empty(3, device="meta"),
        "quantized": torch.quantize_per_tensor(torch.ones(3), 0.1, 0, torch.qint8),
        "ok": torch.ones(3),
    }
    with pytest.raises(InputError) as raised:
        _save(tensors)
    message = str(raised.value)
    assert "'meta': a tensor on the meta device" in message
    assert "'quantized': quantized tensors" in message
    assert "'ok'" not in message


# --------------------------------------------------------------------------------------
# Tied tensors and duplicate names


def test_tied_torch_tensors_both_decode():
    torch = pytest.importorskip("torch")
    embedding = torch.nn.Embedding(300, 16)
    head = torch.nn.Linear(16, 300, bias=False)
    head.weight = embedding.weight  # tied, as in language models
    state = {"embed.weight": embedding.weight, "head.weight": head.weight}
    assert state["embed.weight"].data_ptr() == state["head.weight"].data_ptr()

    decoded = dcformat.load(_save(state, dcformat.Config(defaults={"encoding": "raw"})))
    expected = embedding.weight.detach().numpy()
    # A .dcf file cannot point two tensor records at one set of sections. So a tied tensor
    # is stored once per name, and both names decode to the same values.
    assert decoded["embed.weight"].tobytes() == expected.tobytes()
    assert decoded["head.weight"].tobytes() == expected.tobytes()

    lossy = dcformat.load(_save(state))
    np.testing.assert_array_equal(lossy["embed.weight"], lossy["head.weight"])


def test_numpy_views_of_one_buffer():
    base = _weights((32, 32))
    decoded = dcformat.load(_save({"a": base, "b": base}))
    np.testing.assert_array_equal(decoded["a"], decoded["b"])
    lossless = dcformat.load(_save({"a": base, "top": base[:16]}, dcformat.Config(defaults={"encoding": "raw"})))
    assert lossless["top"].tobytes() == base[:16].tobytes()


class _RepeatedKeys(Mapping):
    """A Mapping whose keys repeat: no dict can be built like this, but a Mapping can."""

    def __init__(self, items):
        self._items = items

    def __getitem__(self, key):
        return dict(self._items)[key]

    def __iter__(self):
        return iter(key for key, _ in self._items)

    def __len__(self):
        return len(self._items)


def test_duplicate_names_rejected():
    tensors = _RepeatedKeys([("w", np.ones(3, np.float32)), ("w", np.zeros(3, np.float32))])
    with pytest.raises(InputError, match="'w': the name appears more than once"):
        _save(tensors)


def test_list_of_pairs_is_type_error():
    with pytest.raises(TypeError, match="mapping of names to arrays, not list"):
        _save([("w", np.ones(3)), ("w", np.zeros(3))])


def test_writer_rejects_duplicate_name():
    writer = ContainerWriter(io.BytesIO())
    writer.add_tensor(encodings.encode_raw("w", np.ones(2, np.float32)))
    with pytest.raises(InvalidFieldError, match="unique tensor names"):
        writer.add_tensor(encodings.encode_raw("w", np.zeros(2, np.float32)))


# --------------------------------------------------------------------------------------
# Names


@pytest.mark.parametrize("name", [
    "layer/0/weight", "a.b.c", "name with spaces", " leading and trailing ", "重み.名前", "émoji 🙂",
    "../../etc/passwd", "C:\\Windows\\system32", "tab\tand\nnewline", "x" * 1000,
])
def test_names_are_opaque(name):
    array = np.arange(6, dtype=np.float32)
    with dcformat.open(_save({name: array, "other": array})) as reader:
        assert reader.keys() == [name, "other"]
        assert reader.get(name).tolist() == array.tolist()


@pytest.mark.parametrize("character", ["a", "é", "€", "🙂"])
def test_name_of_65535_bytes_accepted(character):
    width = len(character.encode("utf-8"))
    name = character * (MAX_NAME_BYTES // width) + "a" * (MAX_NAME_BYTES % width)
    assert len(name.encode("utf-8")) == MAX_NAME_BYTES
    assert dcformat.load(_save({name: np.ones(2, np.float32)}))[name].tolist() == [1.0, 1.0]


@pytest.mark.parametrize("character", ["a", "€"])
def test_name_of_65536_bytes_rejected(character):
    width = len(character.encode("utf-8"))
    name = character * (MAX_NAME_BYTES // width) + "a" * (MAX_NAME_BYTES % width + 1)
    assert len(name.encode("utf-8")) == MAX_NAME_BYTES + 1
    with pytest.raises(InputError, match="the name is 65536 bytes of UTF-8; at most 65535 are allowed"):
        _save({name: np.ones(2, np.float32)})


@pytest.mark.parametrize("name, fragment", [
    ("", "tensor names must not be empty"),
    ("bad\ud800", "lone surrogate"),
    (7, "names must be str, not int"),
])
def test_invalid_names(name, fragment):
    with pytest.raises(InputError, match=fragment):
        _save({name: np.ones(2, np.float32)})


def test_name_lookup_is_exact():
    with dcformat.open(_save({"a/b": np.ones(2, np.float32)})) as reader:
        for other in ("a", "a/b/", "./a/b", "A/B"):
            with pytest.raises(TensorNotFoundError):
                reader.get(other)


@pytest.mark.parametrize("metadata, fragment", [
    ({"k": "\udc00"}, "lone surrogate"),
    ({"k": 10**5000}, "at most 4300 digits"),
    ({"k": float("nan")}, "finite number"),
    ({"k": None}, "null"),
])
def test_metadata_values_rejected(metadata, fragment):
    with pytest.raises(InvalidFieldError, match=fragment):
        _save({"w": np.ones(2, np.float32)}, metadata=metadata)


# --------------------------------------------------------------------------------------
# Crafted files beyond the reader's caps


def _single_symbol_stream(width: int, count: int) -> bytes:
    """A Huffman stream of ``count`` zeros: one symbol of code length 1, no payload."""
    return (bytes([StreamForm.HUFFMAN, width, 1, 0]) + struct.pack("<QIIQ", count, 1, 0xFFFFFFFF, 0)
            + bytes([1 << 3]))  # the 5-bit code length 1, then zero padding


def test_tensor_count_above_cap_rejected(monkeypatch):
    data = _save({f"t{i}": np.ones(2, np.float32) for i in range(4)})
    monkeypatch.setattr("dcformat.container.MAX_TENSORS", 3)
    with pytest.raises(LimitExceededError, match="tensor_count") as raised:
        dcformat.open(data)
    assert raised.value.found == 4
    assert raised.value.expected == "at most 3"


def test_huge_tensor_opens_get_raises():
    shape = (65536, 65537)  # 4,295,032,832 elements: 17 GB as float32
    entry = TensorEntry(
        name="huge", dtype=DType.FLOAT32, shape=shape, encoding=Encoding.SHARED, encoding_version=1,
        params=struct.pack("<BBBBI", 0, 1, 0, 0, 1),
        sections=[SectionData(SectionKind.CODEBOOK, np.array([0.5], "<f4").tobytes()),
                  SectionData(SectionKind.ASSIGNMENTS, _single_symbol_stream(1, shape[0] * shape[1]))],
    )
    buffer = io.BytesIO()
    writer = ContainerWriter(buffer)
    writer.add_tensor(entry)
    writer.close({})
    data = buffer.getvalue()
    assert len(data) < 1024

    with dcformat.open(data) as reader:
        assert reader.tensor_info("huge").size == shape[0] * shape[1]
        assert reader.verify().ok
        tracemalloc.start()
        try:
            for call in (reader.get, reader.get_entries, reader.get_sparse):
                with pytest.raises(LimitExceededError, match="max_tensor_bytes") as raised:
                    call("huge")
                assert raised.value.found == 4 * shape[0] * shape[1]
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
    assert peak < 1 << 20, f"{peak} bytes allocated before the limit was checked"
