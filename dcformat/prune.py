"""Magnitude pruning: the first stage of Deep Compression.

A weight is pruned (set to zero) when its magnitude is small. The threshold comes from one of
two rules, chosen per call:

``quality``
    The rule of Han, Pool, Tran and Dally (NeurIPS 2015): ``threshold = quality * std``, where
    ``std`` is the standard deviation of all weights of the tensor, zeros included (of all
    selected tensors pooled for ``scope="global"``). A weight is pruned when
    ``|w| < threshold``, so a weight exactly at the threshold is kept and ``quality=0`` prunes
    only the exact zeros.

``sparsity``
    A target fraction of pruned weights in [0, 1). The tensor loses the
    ``round(sparsity * size)`` weights of smallest magnitude (halves round up), found with
    ``np.partition`` rather than a sort. ``threshold`` is the largest pruned magnitude: every
    weight below it is pruned and every weight above it is kept. Weights whose magnitude
    equals the threshold are pruned in flat (row-major) order until the count is met, so the
    achieved sparsity is exact, even when the tensor has many equal magnitudes (an
    already-quantised tensor). The one exception: weights that are already exactly zero
    always count as pruned, so a tensor with more zeros than the target keeps its higher
    sparsity.

Selection
    By default only floating-point tensors with two or more dimensions are pruned. Biases,
    normalisation scales and other 1-D or 0-d tensors are left alone, and so are integer and
    bool tensors. ``include`` patterns replace that default rule: when given, exactly the
    tensors matching an ``include`` pattern are pruned, whatever their rank or dtype.
    ``exclude`` patterns then remove tensors from the selection and win over ``include``.
    Patterns are ``fnmatch`` globs matched case-sensitively against the tensor name, except
    that a pattern equal to a tensor name matches only that name, so names containing ``[``,
    ``*`` or ``?`` can be listed literally.

``scope="global"`` uses one threshold for all selected tensors (ties broken by tensor order
in the mapping, then flat order), so layers with many small weights lose more of them.
"""

from __future__ import annotations

import fnmatch
import logging
import math
import numbers
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

import numpy as np

from .constants import FLOAT_DTYPES, dtype_code
from .errors import ConfigError, InputError

__all__ = ["PruneResult", "SCOPES", "magnitude_mask", "prune", "select_tensors"]

logger = logging.getLogger(__name__)

SCOPES = ("tensor", "global")


@dataclass(frozen=True, eq=False)
class PruneResult:
    """Masks and statistics of one :func:`prune` call, for the selected tensors only.

    ``masks`` maps each pruned tensor's name to a bool array of its shape, True where the
    weight is kept. Fine-tuning uses the masks to keep pruned weights at zero. ``sparsity`` is the
    achieved fraction of pruned weights per tensor (0.0 for an empty tensor) and
    ``thresholds`` the magnitude threshold used. Tensors that were not selected are absent.
    """

    masks: dict[str, np.ndarray]
    sparsity: dict[str, float]
    thresholds: dict[str, float]

    @property
    def overall_sparsity(self) -> float:
        """Fraction of pruned weights over all selected tensors together."""
        total = sum(mask.size for mask in self.masks.values())
        if total == 0:
            return 0.0
        kept = sum(int(np.count_nonzero(mask)) for mask in self.masks.values())
        return (total - kept) / total

    def apply(self, tensors: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Return a copy of ``tensors`` with the pruned weights set to zero.

        Tensors without a mask are passed through unchanged (the same array objects).
        """
        result = {}
        for name, array in tensors.items():
            mask = self.masks.get(name)
            result[name] = array if mask is None else np.where(mask, array, array.dtype.type(0))
        return result


def prune(
    tensors: Mapping[str, np.ndarray],
    *,
    sparsity: float | None = None,
    quality: float | None = None,
    scope: str = "tensor",
    include: str | Iterable[str] = (),
    exclude: str | Iterable[str] = (),
) -> PruneResult:
    """Prune the selected tensors by magnitude and return their masks.

    Give exactly one of ``sparsity`` (a fraction in [0, 1)) and ``quality`` (a multiple of
    the standard deviation, >= 0). ``scope`` is ``"tensor"`` (one threshold per tensor) or
    ``"global"`` (one threshold over all selected tensors). ``include`` and ``exclude`` are
    name patterns; see the module docstring for the selection rules. The input arrays are
    not modified; :meth:`PruneResult.apply` zeroes the pruned weights.

    Raises :class:`ConfigError` for an invalid setting, :class:`InputError` when a selected
    tensor contains NaN or infinity, and ``TypeError`` when ``tensors`` is not a mapping of
    names to numpy arrays.
    """
    rule, amount = _check_rule(sparsity, quality)
    if scope not in SCOPES:
        raise ConfigError(
            f"scope={scope!r} is not supported; expected one of {', '.join(SCOPES)}",
            field="scope",
            expected=SCOPES,
            found=scope,
        )
    names = select_tensors(tensors, include=include, exclude=exclude)
    for name in names:
        _check_finite(tensors[name], name)

    if scope == "tensor":
        masks, thresholds = {}, {}
        for name in names:
            masks[name], thresholds[name] = _tensor_mask(tensors[name], rule, amount)
    else:
        masks, thresholds = _global_masks({name: tensors[name] for name in names}, rule, amount)

    achieved = {name: _achieved_sparsity(mask) for name, mask in masks.items()}
    for name in names:
        logger.debug(
            "pruned %s: threshold %.6g, sparsity %.4f", name, thresholds[name], achieved[name]
        )
    return PruneResult(masks=masks, sparsity=achieved, thresholds=thresholds)


def magnitude_mask(
    weights: np.ndarray, *, sparsity: float | None = None, quality: float | None = None
) -> np.ndarray:
    """Return the keep-mask (True = kept) of one tensor pruned by magnitude.

    The rules are those of :func:`prune` with ``scope="tensor"``; any numeric dtype is
    accepted. Raises :class:`ConfigError` for an invalid setting and :class:`InputError` when
    the tensor contains NaN or infinity.
    """
    if not isinstance(weights, np.ndarray):
        raise TypeError(f"weights must be a numpy array, not {type(weights).__name__}")
    rule, amount = _check_rule(sparsity, quality)
    _check_finite(weights, "weights")
    return _tensor_mask(weights, rule, amount)[0]


def select_tensors(
    tensors: Mapping[str, np.ndarray],
    *,
    include: str | Iterable[str] = (),
    exclude: str | Iterable[str] = (),
) -> list[str]:
    """Return the names of the tensors that :func:`prune` prunes, in mapping order.

    A pattern that matches no tensor name is logged as a warning, since it is most likely a
    typing error.
    """
    if not isinstance(tensors, Mapping):
        raise TypeError(f"tensors must be a mapping of names to arrays, not {type(tensors)}")
    for name, array in tensors.items():
        if not isinstance(name, str):
            raise TypeError(f"tensor names must be str, not {type(name).__name__}")
        if not isinstance(array, np.ndarray):
            raise TypeError(f"tensor {name!r} must be a numpy array, not {type(array).__name__}")
    include = _patterns(include, "include")
    exclude = _patterns(exclude, "exclude")
    for pattern in include + exclude:
        if not any(_matches(name, [pattern], tensors) for name in tensors):
            logger.warning("pattern %r matches no tensor name", pattern)

    selected = []
    for name, array in tensors.items():
        chosen = _matches(name, include, tensors) if include else _prunable_by_default(array)
        if chosen and not _matches(name, exclude, tensors):
            selected.append(name)
    return selected


# ---------------------------------------------------------------------------------------------
# Masks


def _tensor_mask(weights: np.ndarray, rule: str, amount: float) -> tuple[np.ndarray, float]:
    magnitude = _magnitudes(weights)
    if rule == "quality":
        threshold = amount * _std([weights])
        kept = _mask_above(magnitude, threshold)
    else:
        kept, threshold = _mask_by_count(magnitude, _prune_count(amount, magnitude.size))
    return kept.reshape(weights.shape), threshold


def _global_masks(tensors: dict[str, np.ndarray], rule: str, amount: float):
    if not tensors:
        return {}, {}
    magnitudes = [_magnitudes(array) for array in tensors.values()]
    pooled = np.concatenate(magnitudes) if len(magnitudes) > 1 else magnitudes[0]
    if rule == "quality":
        threshold = amount * _std(list(tensors.values()))
        kept = _mask_above(pooled, threshold)
    else:
        kept, threshold = _mask_by_count(pooled, _prune_count(amount, pooled.size))

    masks = {}
    start = 0
    for name, array in tensors.items():
        masks[name] = kept[start : start + array.size].reshape(array.shape)
        start += array.size
    return masks, {name: threshold for name in tensors}


def _mask_above(magnitude: np.ndarray, threshold: float) -> np.ndarray:
    # np.float64 keeps the comparison in float64: a Python float would be rounded to the
    # dtype of a float32 array first.
    kept = magnitude >= np.float64(threshold)
    kept &= magnitude != 0
    return kept


def _mask_by_count(magnitude: np.ndarray, n_prune: int) -> tuple[np.ndarray, float]:
    """Prune the ``n_prune`` smallest magnitudes (at least all zeros); ties in flat order."""
    n_prune = max(n_prune, magnitude.size - int(np.count_nonzero(magnitude)))
    if n_prune == 0:
        return np.ones(magnitude.shape, dtype=bool), 0.0

    threshold = np.partition(magnitude, n_prune - 1)[n_prune - 1]
    kept = magnitude > threshold
    ties = np.flatnonzero(magnitude == threshold)
    below = magnitude.size - int(np.count_nonzero(kept)) - ties.size
    kept[ties[n_prune - below :]] = True
    return kept, float(threshold)


def _prune_count(sparsity: float, size: int) -> int:
    # floor(x + 0.5) rounds halves up, unlike round(), so the count is within half an
    # element of sparsity * size.
    return min(size, math.floor(sparsity * size + 0.5))


def _magnitudes(array: np.ndarray) -> np.ndarray:
    """Return |array| flattened, in a dtype that orders the magnitudes exactly."""
    flat = array.reshape(-1)
    if array.dtype.kind not in "biu" and not _is_float(array.dtype):
        raise TypeError(f"cannot prune a tensor of dtype {array.dtype}; expected a numeric dtype")
    if _is_float(array.dtype):
        if flat.dtype.itemsize < 4:
            flat = flat.astype(np.float32)  # float16 and bfloat16 convert exactly
        return np.abs(flat)
    # NOTE: integers above 2**53 in magnitude (int64, uint64) lose order in float64.
    return np.abs(flat.astype(np.float64))


def _std(arrays: list[np.ndarray]) -> float:
    """Return the population standard deviation of all elements of ``arrays``, in float64."""
    count = sum(array.size for array in arrays)
    if count == 0:
        return 0.0
    total = sum(float(np.sum(array, dtype=np.float64)) for array in arrays)
    mean = total / count
    # Two passes: subtracting the mean first avoids the cancellation of sum(x**2) - n*mean**2.
    squares = 0.0
    for array in arrays:
        deviation = array.astype(np.float64).reshape(-1) - mean
        squares += float(np.dot(deviation, deviation))
    return math.sqrt(squares / count)


def _achieved_sparsity(mask: np.ndarray) -> float:
    if mask.size == 0:
        return 0.0
    return 1.0 - int(np.count_nonzero(mask)) / mask.size


# ---------------------------------------------------------------------------------------------
# Argument checks


def _check_rule(sparsity, quality) -> tuple[str, float]:
    if (sparsity is None) == (quality is None):
        raise ConfigError(
            "give exactly one of sparsity (a fraction in [0, 1)) and quality (>= 0)",
            field="sparsity",
        )
    if sparsity is not None:
        value = _check_real("sparsity", sparsity)
        if not 0.0 <= value < 1.0:
            raise ConfigError(
                f"sparsity={sparsity!r} is out of range; expected a fraction in [0, 1)",
                field="sparsity",
                expected="[0, 1)",
                found=sparsity,
            )
        return "sparsity", value
    value = _check_real("quality", quality)
    if not (math.isfinite(value) and value >= 0.0):
        raise ConfigError(
            f"quality={quality!r} is out of range; expected a finite number >= 0",
            field="quality",
            expected=">= 0",
            found=quality,
        )
    return "quality", value


def _check_real(name: str, value) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a real number, not {type(value).__name__}")
    return float(value)


def _patterns(patterns, name: str) -> list[str]:
    if isinstance(patterns, str):
        return [patterns]
    result = list(patterns)
    for pattern in result:
        if not isinstance(pattern, str):
            raise TypeError(f"{name} patterns must be str, not {type(pattern).__name__}")
    return result


def _matches(name: str, patterns: list[str], names: Mapping[str, object]) -> bool:
    for pattern in patterns:
        if pattern in names:
            if name == pattern:
                return True
        elif fnmatch.fnmatchcase(name, pattern):
            return True
    return False


def _is_float(dtype: np.dtype) -> bool:
    try:
        return dtype_code(dtype) in FLOAT_DTYPES
    except TypeError:
        return False


def _prunable_by_default(array: np.ndarray) -> bool:
    return array.ndim >= 2 and _is_float(array.dtype)


def _check_finite(array: np.ndarray, name: str) -> None:
    if not _is_float(array.dtype) or array.size == 0:
        return
    flat = array.reshape(-1)
    if flat.dtype.itemsize < 4:
        flat = flat.astype(np.float32)
    if not np.isfinite(flat).all():
        raise InputError(
            f"tensor {name!r} contains NaN or infinity; magnitude pruning needs finite weights",
            field=name,
        )
