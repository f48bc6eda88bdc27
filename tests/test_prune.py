import logging
import math

import ml_dtypes
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dcformat.errors import ConfigError, InputError
from dcformat.prune import PruneResult, magnitude_mask, prune, select_tensors

BFLOAT16 = np.dtype(ml_dtypes.bfloat16)


def _weights(shape, seed=0, dtype=np.float32, scale=1.0):
    return (np.random.default_rng(seed).normal(scale=scale, size=shape)).astype(dtype)


def _expected_pruned(sparsity, size, zeros=0):
    return max(math.floor(sparsity * size + 0.5), zeros)


@st.composite
def tensors_with_ties(draw):
    size = draw(st.integers(0, 2000))
    levels = draw(st.integers(1, 50))
    seed = draw(st.integers(0, 2**32 - 1))
    rng = np.random.default_rng(seed)
    # Few distinct levels make many equal magnitudes, as in an already-quantised tensor.
    values = rng.integers(-levels, levels + 1, size=size).astype(np.float32) / 7
    return values


@settings(max_examples=200, deadline=None)
@given(tensors_with_ties(), st.floats(0.0, 0.999))
def test_sparsity_reached_within_one_element(values, sparsity):
    kept = magnitude_mask(values, sparsity=sparsity)
    pruned = values.size - int(np.count_nonzero(kept))
    zeros = int(np.count_nonzero(values == 0))

    assert pruned == _expected_pruned(sparsity, values.size, zeros)
    if zeros <= sparsity * values.size:
        assert abs(pruned - sparsity * values.size) <= 1
    # Pruned weights are never larger than kept ones, and every zero is pruned.
    magnitude = np.abs(values)
    if pruned and kept.any():
        assert magnitude[~kept].max() <= magnitude[kept].min()
    assert not kept[values == 0].any()


def test_ties_pruned_in_flat_order():
    values = np.full((4, 5), 0.5, dtype=np.float32)
    kept = magnitude_mask(values, sparsity=0.25)
    expected = np.ones(20, dtype=bool)
    expected[:5] = False
    np.testing.assert_array_equal(kept.reshape(-1), expected)


def test_sparsity_rounds_half_up():
    values = np.arange(1, 11, dtype=np.float32)
    assert np.count_nonzero(~magnitude_mask(values, sparsity=0.25)) == 3  # 2.5 -> 3
    assert np.count_nonzero(~magnitude_mask(values, sparsity=0.24)) == 2
    assert np.count_nonzero(~magnitude_mask(values, sparsity=0.0)) == 0


def test_sparsity_prunes_smallest_magnitudes():
    values = np.array([[-3.0, 0.1, 2.0], [-0.2, 5.0, 0.05]], dtype=np.float32)
    kept = magnitude_mask(values, sparsity=0.5)
    np.testing.assert_array_equal(kept, [[True, False, True], [False, True, False]])


def test_existing_zeros_count_as_pruned():
    values = _weights((100, 10), seed=1)
    values[:60] = 0.0
    result = prune({"w": values}, sparsity=0.5)
    assert result.sparsity["w"] == pytest.approx(0.6)
    assert result.thresholds["w"] == 0.0
    assert not result.masks["w"][:60].any()
    assert result.masks["w"][60:].all()


def test_quality_rule():
    values = _weights((50, 40), seed=2)
    values[0, :3] = 0.0
    quality = 0.7
    result = prune({"w": values}, quality=quality)
    threshold = quality * np.std(values.astype(np.float64))
    assert result.thresholds["w"] == pytest.approx(threshold, rel=1e-12)
    expected = (np.abs(values) >= threshold) & (values != 0)
    np.testing.assert_array_equal(result.masks["w"], expected)


def test_quality_keeps_weight_at_threshold():
    values = np.array([[2.0, -2.0], [2.0, -2.0]], dtype=np.float32)
    result = prune({"w": values}, quality=1.0)
    assert result.thresholds["w"] == 2.0  # the standard deviation is exactly 2
    assert result.masks["w"].all()


def test_quality_zero_prunes_only_zeros():
    values = _weights((10, 10), seed=3)
    values[2, 2] = 0.0
    kept = magnitude_mask(values, quality=0.0)
    assert np.count_nonzero(~kept) == 1
    assert not kept[2, 2]


def test_default_selection():
    tensors = {
        "conv.weight": _weights((4, 3, 3, 3)),
        "conv.bias": _weights((4,)),
        "bn.weight": _weights((4,)),
        "bn.num_batches_tracked": np.array(7, dtype=np.int64),
        "embed.ids": np.arange(12, dtype=np.int32).reshape(3, 4),
        "mask": np.ones((3, 3), dtype=bool),
        "fc.weight": _weights((10, 36), dtype=BFLOAT16),
        "scalar": np.array(1.5, dtype=np.float32),
    }
    assert select_tensors(tensors) == ["conv.weight", "fc.weight"]
    result = prune(tensors, sparsity=0.5)
    assert set(result.masks) == {"conv.weight", "fc.weight"}


def test_include_and_exclude_patterns():
    tensors = {
        "features.0.weight": _weights((8, 3, 3, 3)),
        "features.0.bias": _weights((8,)),
        "classifier.weight": _weights((10, 8)),
        "classifier.bias": _weights((10,)),
    }
    assert select_tensors(tensors, exclude="classifier.*") == ["features.0.weight"]
    assert select_tensors(tensors, include="*.bias") == ["features.0.bias", "classifier.bias"]
    assert select_tensors(tensors, include=["*"], exclude=["classifier.*"]) == [
        "features.0.weight",
        "features.0.bias",
    ]
    # Exclude wins over include, and matching is case-sensitive.
    chosen = select_tensors(tensors, include="classifier.*", exclude="*.bias")
    assert chosen == ["classifier.weight"]
    assert select_tensors(tensors, include="Classifier.*") == []


def test_include_exact_name_with_glob_characters():
    tensors = {"layers[0].weight": _weights((3, 3)), "layers0.weight": _weights((3, 3))}
    assert select_tensors(tensors, include=["layers[0].weight"]) == ["layers[0].weight"]
    assert select_tensors(tensors, include=["layers[0]*"]) == ["layers0.weight"]
    assert select_tensors(tensors, exclude=["layers[0].weight"]) == ["layers0.weight"]


def test_unmatched_pattern_warns(caplog):
    with caplog.at_level(logging.WARNING, logger="dcformat.prune"):
        select_tensors({"a.weight": _weights((2, 2))}, exclude="b.*")
    assert "'b.*' matches no tensor name" in caplog.text


def test_include_prunes_integer_tensor():
    tensors = {"ids": np.array([[5, -1, 3, 0], [-7, 2, 1, 9]], dtype=np.int8)}
    result = prune(tensors, sparsity=0.5, include="ids")
    np.testing.assert_array_equal(
        result.masks["ids"], [[True, False, True, False], [True, False, False, True]]
    )


def test_global_scope_one_threshold():
    tensors = {
        "small": _weights((100, 20), seed=4, scale=0.1),
        "large": _weights((100, 20), seed=5, scale=1.0),
    }
    result = prune(tensors, sparsity=0.5, scope="global")
    assert result.thresholds["small"] == result.thresholds["large"]
    assert result.overall_sparsity == 0.5
    assert result.sparsity["small"] > 0.8
    assert result.sparsity["large"] < 0.2
    threshold = result.thresholds["small"]
    for name, values in tensors.items():
        magnitude = np.abs(values)
        assert np.all(magnitude[~result.masks[name]] <= threshold)
        assert np.all(magnitude[result.masks[name]] >= threshold)


def test_global_scope_ties_follow_mapping_order():
    tensors = {"b": np.full((2, 5), 2.0), "a": np.full((2, 5), 2.0)}
    result = prune(tensors, sparsity=0.25, scope="global")
    assert result.sparsity["b"] == 0.5
    assert result.sparsity["a"] == 0.0


def test_global_scope_quality_uses_pooled_std():
    tensors = {"x": _weights((30, 30), seed=6), "y": _weights((20, 10), seed=7, scale=3.0)}
    result = prune(tensors, quality=0.5, scope="global")
    pooled = np.concatenate([array.reshape(-1) for array in tensors.values()]).astype(np.float64)
    assert result.thresholds["x"] == pytest.approx(0.5 * pooled.std(), rel=1e-12)
    for name, values in tensors.items():
        expected = np.abs(values) >= result.thresholds[name]
        np.testing.assert_array_equal(result.masks[name], expected)


def test_tensor_scope_matches_magnitude_mask():
    tensors = {"a": _weights((30, 30), seed=8), "b": _weights((5, 7, 3), seed=9)}
    result = prune(tensors, sparsity=0.7)
    for name, values in tensors.items():
        np.testing.assert_array_equal(result.masks[name], magnitude_mask(values, sparsity=0.7))
        assert result.masks[name].shape == values.shape
        assert result.masks[name].dtype == np.bool_
        assert abs(result.sparsity[name] * values.size - 0.7 * values.size) <= 1


@pytest.mark.parametrize("dtype", [np.float16, BFLOAT16, np.float32, np.float64])
def test_float_dtypes(dtype):
    values = _weights((40, 25), seed=10, dtype=dtype)
    kept = magnitude_mask(values, sparsity=0.8)
    assert np.count_nonzero(~kept) == 800
    magnitude = np.abs(values.astype(np.float64))
    assert magnitude[~kept].max() <= magnitude[kept].min()


def test_apply_zeroes_pruned_and_keeps_input():
    tensors = {"w": _weights((10, 10), seed=11), "b": _weights((10,), seed=12)}
    original = tensors["w"].copy()
    result = prune(tensors, sparsity=0.3)
    pruned = result.apply(tensors)
    np.testing.assert_array_equal(tensors["w"], original)
    assert pruned["b"] is tensors["b"]
    assert pruned["w"].dtype == np.float32
    assert np.count_nonzero(pruned["w"]) == 70
    np.testing.assert_array_equal(pruned["w"] != 0, result.masks["w"])


def test_empty_tensor_and_empty_selection():
    result = prune({"w": np.zeros((0, 4), dtype=np.float32)}, sparsity=0.5)
    assert result.masks["w"].shape == (0, 4)
    assert result.sparsity["w"] == 0.0
    assert result.overall_sparsity == 0.0
    assert prune({}, sparsity=0.5, scope="global").masks == {}
    assert isinstance(prune({"b": _weights((3,))}, quality=1.0), PruneResult)


def test_threshold_selection_does_not_sort(monkeypatch):
    def fail_if_called(*args, **kwargs):
        raise AssertionError("pruning must not sort")

    values = _weights((300, 300), seed=13)
    monkeypatch.setattr(np, "sort", fail_if_called)
    monkeypatch.setattr(np, "argsort", fail_if_called)
    kept = magnitude_mask(values, sparsity=0.9)
    assert np.count_nonzero(~kept) == 81000


@pytest.mark.parametrize("sparsity", [1.0, -0.1, 5, 1.5, math.nan])
def test_sparsity_out_of_range(sparsity):
    message = r"sparsity=.* is out of range; expected a fraction in \[0, 1\)"
    with pytest.raises(ConfigError, match=message):
        prune({"w": _weights((3, 3))}, sparsity=sparsity)


def test_rejects_bad_arguments():
    tensors = {"w": _weights((3, 3))}
    with pytest.raises(ConfigError, match="exactly one of sparsity"):
        prune(tensors)
    with pytest.raises(ConfigError, match="exactly one of sparsity"):
        prune(tensors, sparsity=0.5, quality=1.0)
    with pytest.raises(ConfigError, match="quality=-1"):
        prune(tensors, quality=-1.0)
    with pytest.raises(ConfigError, match="scope='layer'"):
        prune(tensors, sparsity=0.5, scope="layer")
    with pytest.raises(TypeError):
        prune(tensors, sparsity=True)
    with pytest.raises(TypeError):
        prune(tensors, sparsity="0.5")
    with pytest.raises(TypeError):
        prune([("w", tensors["w"])], sparsity=0.5)
    with pytest.raises(TypeError):
        prune({"w": [[1.0, 2.0]]}, sparsity=0.5)
    with pytest.raises(TypeError):
        prune(tensors, sparsity=0.5, include=[3])
    with pytest.raises(TypeError):
        magnitude_mask(np.array([["a", "b"]]), sparsity=0.5)


def test_rejects_non_finite():
    values = _weights((4, 4))
    values[1, 2] = np.nan
    with pytest.raises(InputError, match="'w' contains NaN or infinity"):
        prune({"w": values}, sparsity=0.5)
    # An unselected tensor is not inspected.
    prune({"w": values, "v": _weights((4, 4))}, sparsity=0.5, exclude="w")
