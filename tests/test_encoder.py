"""Encoder: per-tensor choice, configuration, and decode == encoder reconstruction."""

from __future__ import annotations

import io
import json
import warnings

import ml_dtypes
import numpy as np
import pytest

import dcformat
from dcformat import Config, Rule
from dcformat.config import parse_assignment
from dcformat.encoder import compress
from dcformat.errors import ConfigError, InputError


def _weights(shape, seed=0, scale=0.05):
    rng = np.random.default_rng(seed)
    return (rng.laplace(0, scale, size=shape)).astype(np.float32)


def _model():
    return {
        "conv.weight": _weights((8, 4, 3, 3), 1),
        "conv.bias": _weights((8,), 2),
        "fc.weight": _weights((64, 128), 3),
        "fc.bias": _weights((64,), 4),
        "steps": np.array(1234, dtype=np.int64),
        "mask": np.ones((4, 4), dtype=bool),
    }


def _round_trip(tensors, config=None):
    buffer = io.BytesIO()
    report, recon = compress(tensors, buffer, config, keep_reconstruction=True)
    return report, recon, buffer.getvalue()


def test_decoded_equals_reconstruction_exactly():
    tensors = _model()
    report, recon, data = _round_trip(tensors)
    decoded = dcformat.load(data)
    assert list(decoded) == list(tensors)
    for name in tensors:
        assert decoded[name].dtype == tensors[name].dtype, name
        assert decoded[name].shape == tensors[name].shape, name
        np.testing.assert_array_equal(decoded[name], recon[name], err_msg=name)
    assert report.file_bytes == len(data)


def test_default_kinds():
    report, _, _ = _round_trip(_model())
    by_name = {t.name: t for t in report.tensors}
    assert by_name["conv.bias"].encoding == "raw"
    assert by_name["fc.bias"].encoding == "raw"
    assert by_name["steps"].encoding == "raw"
    assert by_name["mask"].encoding == "raw"
    assert by_name["fc.weight"].encoding in ("sparse-shared", "shared", "uniform")
    assert by_name["fc.weight"].sparsity > 0.3


def test_lossless_tensors_are_exact():
    tensors = _model()
    decoded = dcformat.load(_round_trip(tensors)[2])
    for name in ("conv.bias", "fc.bias", "steps", "mask"):
        np.testing.assert_array_equal(decoded[name], tensors[name])


@pytest.mark.parametrize("encoding", ["raw", "shared", "sparse-shared", "uniform", "lowrank", "float16", "bfloat16"])
def test_fixed_encoding_round_trip(encoding):
    tensors = {"w": _weights((32, 48), 7)}
    settings = {"encoding": encoding}
    if encoding == "lowrank":
        settings["rank"] = 8
    report, recon, data = _round_trip(tensors, Config(defaults=settings))
    assert report.tensors[0].encoding == encoding
    with dcformat.open(data) as reader:
        assert reader.keys() == ["w"]
        decoded = reader.get("w")
        assert reader.verify().ok
    np.testing.assert_array_equal(decoded, recon["w"])
    assert decoded.shape == (32, 48)


def test_sparse_shared_fillers_and_sparse_views():
    w = _weights((40, 50), 9)
    w[:, :45] = 0  # long zero runs force fillers at 3 index bits
    config = Config(defaults={"encoding": "sparse-shared", "index_bits": 3, "bits": 4, "prune": False})
    report, recon, data = _round_trip({"w": w}, config)
    assert report.tensors[0].fillers > 0
    with dcformat.open(data) as reader:
        dense = reader.get("w")
        csr = reader.get_sparse("w")
        coo = reader.get_sparse("w", format="coo")
    np.testing.assert_array_equal(dense, recon["w"])
    np.testing.assert_array_equal(csr.toarray(), dense)
    np.testing.assert_array_equal(coo.toarray(), dense)
    assert csr.nnz == np.count_nonzero(dense)


def test_already_quantised_tensor_round_trips_bit_exactly():
    levels = np.array([-0.5, -0.125, 0.0, 0.25, 0.75], dtype=np.float32)
    w = np.random.default_rng(3).choice(levels, size=(30, 30)).astype(np.float32)
    config = Config(defaults={"prune": False, "encoding": "shared", "bits": 3})
    decoded = dcformat.load(_round_trip({"w": w}, config)[2])["w"]
    np.testing.assert_array_equal(decoded, w)


@pytest.mark.parametrize("dtype", [np.float16, ml_dtypes.bfloat16, np.float64])
def test_float_dtypes_kept(dtype):
    w = _weights((16, 32), 5).astype(dtype)
    report, recon, data = _round_trip({"w": w})
    decoded = dcformat.load(data)["w"]
    assert decoded.dtype == np.dtype(dtype)
    np.testing.assert_array_equal(decoded.astype(np.float64), recon["w"].astype(np.float64))


def test_nonfinite_kept_raw_with_warning():
    w = _weights((16, 32))
    w[0, 0] = -np.inf
    w[1, 1] = np.nan
    with pytest.warns(UserWarning, match=r"'w' has 2 NaN or infinite values"):
        report, _, data = _round_trip({"w": w})
    assert report.tensors[0].encoding == "raw"
    decoded = dcformat.load(data)["w"]
    assert decoded.tobytes() == w.tobytes()


def test_nonfinite_error_policy():
    w = _weights((16, 32))
    w[3, 3] = np.nan
    with pytest.raises(InputError, match=r"'w' has 1 NaN"):
        _round_trip({"w": w}, Config(nonfinite="error"))


def test_bad_inputs_reported_together():
    with pytest.raises(InputError) as info:
        _round_trip({"ok": np.zeros(3, np.float32), "c": np.zeros(3, np.complex64), 5: np.zeros(1), "s": "text"})
    message = str(info.value)
    assert "'c'" in message
    assert "complex64" in message
    assert "5" in message
    assert "'s'" in message


def test_failed_save_leaves_no_file(tmp_path):
    path = tmp_path / "m.dcf"
    with pytest.raises(InputError):
        dcformat.save({"w": np.zeros(3, np.complex64)}, path)
    assert not path.exists()
    assert list(tmp_path.iterdir()) == []


def test_deterministic_bytes():
    assert _round_trip(_model())[2] == _round_trip(_model())[2]


def test_settings_recorded_in_metadata():
    _, _, data = _round_trip({"fc.weight": _weights((64, 128))})
    with dcformat.open(data) as reader:
        metadata = reader.metadata()
    assert metadata["encoder"]["name"] == "dcformat"
    settings = metadata["settings"]["fc.weight"]
    assert settings["bits"] == 5
    assert settings["init"] == "linear"
    assert "iterations" in settings


def test_smallest_file_options():
    tensors = _model()
    default = _round_trip(tensors)[2]
    smallest = _round_trip(tensors, Config(alignment=1, record_settings=False))[2]
    assert len(smallest) < len(default)
    np.testing.assert_array_equal(dcformat.load(smallest)["fc.weight"], dcformat.load(default)["fc.weight"])


def test_rules_override_by_pattern():
    tensors = _model()
    config = Config(rules=(Rule("fc.*", {"encoding": "raw"}), Rule("conv.weight", {"bits": 2})))
    report, _, _ = _round_trip(tensors, config)
    by_name = {t.name: t for t in report.tensors}
    assert by_name["fc.weight"].encoding == "raw"
    assert by_name["conv.weight"].bits in (2, None) or by_name["conv.weight"].encoding == "uniform"


def test_sparsity_setting_reached():
    config = Config(defaults={"sparsity": 0.9}, scope="tensor")
    report, _, _ = _round_trip({"fc.weight": _weights((64, 128))}, config)
    assert abs(report.tensors[0].sparsity - 0.9) <= 1 / (64 * 128) + 1e-12


@pytest.mark.parametrize("settings, fragment", [
    ({"bits": 0}, "bits=0: expected an integer from 1 to 16"),
    ({"bits": 17}, "bits=17"),
    ({"sparsity": 1.0}, r"sparsity=1.0: expected a number in \[0.0, 1.0\)"),
    ({"sparsity": -0.1}, "sparsity=-0.1"),
    ({"sparsity": 0.5, "quality": 1.0}, "at most one pruning criterion"),
    ({"init": "kmeans++"}, "init='kmeans\\+\\+': expected one of linear, density, random"),
    ({"encoding": "zip"}, "encoding='zip'"),
    ({"colour": 1}, "unknown setting 'colour'"),
])
def test_config_errors_name_key_value_and_range(settings, fragment):
    with pytest.raises(ConfigError, match=fragment):
        Config(defaults=settings)


def test_config_from_toml_and_json(tmp_path):
    toml = tmp_path / "c.toml"
    toml.write_text('bits = 6\nscope = "tensor"\n[[rules]]\npattern = "fc.*"\nbits = 3\nindex_bits = 4\n')
    config = Config.from_file(toml)
    assert config.scope == "tensor"
    assert config.settings_for("fc.weight", (4, 300), True).bits == 3
    assert config.settings_for("conv.weight", (4, 3, 5, 5), True).bits == 6
    js = tmp_path / "c.json"
    js.write_text(json.dumps({"rules": {"conv*": {"encoding": "raw"}}}))
    assert Config.from_file(js).settings_for("conv1.weight", (4, 3, 5, 5), True).encoding == "raw"
    bad = tmp_path / "bad.toml"
    bad.write_text("bits = 99\n")
    with pytest.raises(ConfigError, match="bits=99"):
        Config.from_file(bad)


def test_paper_defaults_by_layer_kind():
    config = Config()
    assert config.settings_for("conv1.weight", (20, 1, 5, 5), True).bits == 8
    assert config.settings_for("conv1.weight", (20, 1, 5, 5), True).index_bits == 8
    assert config.settings_for("fc1.weight", (300, 784), True).bits == 5
    assert config.settings_for("fc1.weight", (300, 784), True).index_bits == 5
    assert config.settings_for("fc1.bias", (300,), True).encoding == "raw"
    assert config.settings_for("tiny", (3, 3), True).encoding == "raw"


def test_cli_assignment_parsing():
    assert parse_assignment("fc*=4", "bits", int).settings == {"bits": 4}
    assert parse_assignment("6", "bits", int).pattern == "*"
    with pytest.raises(ConfigError, match="--bits"):
        parse_assignment("fc*=four", "bits", int)


def test_uniform_candidate_never_worse_error_than_kmeans():
    w = _weights((64, 128), 11)
    report, recon, _ = _round_trip({"w": w}, Config(defaults={"prune": False}))
    shared_only, shared_recon, _ = _round_trip({"w": w}, Config(defaults={"prune": False, "encoding": "shared"}))
    chosen = report.tensors[0]
    if chosen.encoding == "uniform":
        assert chosen.mse <= shared_only.tensors[0].mse * (1 + 1e-9)
    assert chosen.stored_bytes <= shared_only.tensors[0].stored_bytes


def test_no_warnings_on_clean_model():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        _round_trip(_model())


@pytest.mark.parametrize("dtype_code, dtype", [(0, np.float32), (1, np.float16)])
def test_codebook_delta_coding_round_trips_any_bits(dtype_code, dtype):
    from dcformat import encodings

    rng = np.random.default_rng(4)
    special = np.array([0.0, -0.0, np.inf, -np.inf, 1e-30, -1e-30], dtype=dtype)
    sorted_values = np.sort(rng.standard_normal(250).astype(dtype))
    for codebook in (np.concatenate([special, sorted_values]), rng.permutation(sorted_values)):
        coding, data = encodings.encode_codebook(codebook, dtype_code, "delta")
        assert coding == encodings.CODEBOOK_DELTA_ZSTD
        params = encodings.SharedParams(dtype_code, 8, len(codebook), coding)
        section = dcformat.container.Section(0, 64, len(data), 0, 2)
        record = dcformat.container.TensorRecord(0, "w", 0, (1,), 1, 1, 0, 0, 1, b"", 0)
        decoded = encodings.read_codebook(record, params, lambda i: (memoryview(data), section))
        assert decoded.tobytes() == codebook.tobytes()


def test_sorted_codebook_delta_is_smaller():
    from dcformat import encodings

    codebook = np.concatenate([[0.0], np.sort(np.random.default_rng(5).laplace(0, 0.05, 255))]).astype(np.float32)
    coding, data = encodings.encode_codebook(codebook, 0, "auto")
    assert coding == encodings.CODEBOOK_DELTA_ZSTD
    assert len(data) < codebook.nbytes
