"""End to end on the bundled real models: compress, decode every way, check accuracy."""

from __future__ import annotations

import io
import sys
from pathlib import Path

import numpy as np
import pytest
from safetensors.numpy import load_file

import dcformat
from dcformat.encoder import compress

ROOT = Path(__file__).resolve().parent.parent
MODELS = ROOT / "fixtures" / "models"
sys.path.insert(0, str(ROOT / "tools"))

import lenet  # noqa: E402

MODEL_NAMES = ["lenet300", "lenet5"]


@pytest.fixture(scope="module")
def test_split():
    with np.load(MODELS / "mnist5000.npz") as data:
        return data["test_images"], data["test_labels"]


@pytest.fixture(scope="module", params=MODEL_NAMES)
def compressed(request, tmp_path_factory):
    name = request.param
    tensors = load_file(str(MODELS / f"{name}.safetensors"))
    path = tmp_path_factory.mktemp(name) / f"{name}.dcf"
    report, reconstruction = compress(tensors, path, keep_reconstruction=True)
    return name, tensors, path, report, reconstruction


def _sources(path: Path):
    data = path.read_bytes()
    return {
        "path": path,
        "str": str(path),
        "bytes": data,
        "file object": io.BytesIO(data),
        "open file": open(path, "rb"),
    }


def test_every_source_decodes_to_reconstruction(compressed):
    name, tensors, path, report, reconstruction = compressed
    for kind, source in _sources(path).items():
        decoded = dcformat.load(source)
        assert list(decoded) == list(tensors), kind
        for key in tensors:
            assert decoded[key].dtype == tensors[key].dtype, (kind, key)
            np.testing.assert_array_equal(decoded[key], reconstruction[key], err_msg=f"{kind} {key}")
        if hasattr(source, "close"):
            source.close()


def test_sparse_views_match_dense(compressed):
    _, tensors, path, _, reconstruction = compressed
    with dcformat.open(path) as reader:
        for key in tensors:
            expected = reconstruction[key]
            matrix = expected.reshape(expected.shape[0], -1) if expected.ndim else expected.reshape(1, 1)
            csr = reader.get_sparse(key)
            assert csr.shape == matrix.shape
            np.testing.assert_array_equal(csr.toarray(), matrix)
            np.testing.assert_array_equal(reader.get_sparse(key, format="coo").toarray(), matrix)
            assert csr.nnz == np.count_nonzero(matrix)


def test_lazy_get_by_name(compressed):
    _, tensors, path, _, reconstruction = compressed
    last = list(tensors)[-1]
    with dcformat.open(path) as reader:
        np.testing.assert_array_equal(reader.get(last), reconstruction[last])
        assert reader.verify().ok


def test_accuracy_and_ratio(compressed, test_split):
    name, tensors, path, report, _ = compressed
    images, labels = test_split
    before = lenet.accuracy(name, tensors, images, labels)
    after = lenet.accuracy(name, dcformat.load(path), images, labels)
    float32_bytes = sum(4 * a.size for a in tensors.values())
    ratio = float32_bytes / path.stat().st_size
    assert after >= before - 0.01, f"{name}: {before:.3f} -> {after:.3f}"
    if name == "lenet300":
        assert ratio >= 20, f"{name}: {ratio:.1f}x"
    assert report.file_bytes == path.stat().st_size


def test_torch_round_trip(compressed):
    torch = pytest.importorskip("torch")
    import dcformat.torch as dct

    name, tensors, path, _, reconstruction = compressed
    model = lenet.make_torch_model(name)
    model.load_state_dict(dct.load_state_dict(path))
    for key, value in model.state_dict().items():
        np.testing.assert_array_equal(value.numpy(), reconstruction[key])
    csr = dcformat.open(path).get_sparse(list(tensors)[0], format="torch")
    assert csr.layout == torch.sparse_csr


def test_spec_only_decoder_agrees(compressed):
    import decode_by_hand

    _, _, path, _, reconstruction = compressed
    decoded = decode_by_hand.decode_all(path.read_bytes())
    for key, expected in reconstruction.items():
        np.testing.assert_array_equal(decoded[key], expected, err_msg=key)


@pytest.mark.parametrize("suffix", [".safetensors", ".npz", ".pt"])
def test_cli_round_trip(compressed, tmp_path, suffix):
    from dcformat.cli import main
    from dcformat.io import read_tensors

    if suffix == ".pt":
        pytest.importorskip("torch")
    name, _, api_path, _, reconstruction = compressed
    cli_path = tmp_path / f"{name}.dcf"
    assert main(["compress", str(MODELS / f"{name}.safetensors"), "-o", str(cli_path), "--quiet"]) == 0
    assert cli_path.read_bytes() == api_path.read_bytes()

    restored = tmp_path / f"{name}{suffix}"
    assert main(["decompress", str(cli_path), "-o", str(restored), "--quiet"]) == 0
    decoded = read_tensors(restored)
    assert list(decoded) == list(reconstruction)
    for key, expected in reconstruction.items():
        np.testing.assert_array_equal(decoded[key], expected, err_msg=key)


def test_decoder_imports_and_decodes_without_torch(compressed):
    import subprocess

    _, _, path, _, _ = compressed
    script = (
        "import sys; sys.modules['torch'] = None\n"
        "import dcformat, dcformat.cli, dcformat.audit, dcformat.inspection\n"
        f"tensors = dcformat.load({str(path)!r})\n"
        "assert 'torch' not in [m for m in sys.modules if sys.modules[m] is not None]\n"
        "print(len(tensors))\n"
    )
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stderr
    assert int(result.stdout) > 0
