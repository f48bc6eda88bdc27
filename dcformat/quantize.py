"""Weight sharing: 1-D k-means over the non-zero weights of a tensor.

This is the second stage of Deep Compression (Han, Mao and Dally, ICLR 2016). Each tensor's
non-zero weights are clustered with k-means into at most ``2**bits`` shared values. The tensor
is then stored as a codebook plus one ``bits``-wide cluster index (assignment) per weight.

Codebook layout
    A tensor that contains zeros (pruned or exactly zero) gets a zero slot: codebook entry 0 is
    exactly 0.0 and every zero maps to it. The remaining ``2**bits - 1`` entries are centroids
    of the non-zero weights only, sorted ascending. No non-zero weight is assigned the zero
    slot and no centroid is fitted on a zero, so pruned weights stay exactly zero. A tensor
    without zeros uses all ``2**bits`` entries for centroids. A tensor with no more distinct
    non-zero values than there are centroid slots keeps exactly those values, so an
    already-quantised tensor round-trips bit-exactly (when the codebook dtype can represent
    its values). The codebook is then shorter than ``2**bits``.

Algorithm
    In one dimension the nearest-centroid regions are intervals, so k-means needs no n x k
    distance matrix. The values are sorted once. Assigning is a binary search of the
    midpoints between sorted centroids in the sorted values (``np.searchsorted``), which gives
    each cluster as a contiguous run. Updating is a difference of prefix sums (``np.cumsum``)
    at the run boundaries. An iteration without empty clusters therefore costs O(k log n)
    after the O(n log n) sort. Iteration stops when the assignments stop changing, when the
    largest centroid move is at most ``tol`` (only when ``tol > 0``), or after ``max_iter``
    updates. The returned centroids are the means of the last assignment, summed directly
    rather than as prefix sum differences, and a cluster whose members are all one value
    gets exactly that value. The returned assignments are the nearest of those centroids,
    which is the last assignment again when the iteration converged.

Empty clusters
    When an assignment leaves ``e`` clusters empty, the ``e`` values farthest from their
    centroids (ties broken in a fixed order) each move into one empty cluster, which is then
    centred on that value, and leave the cluster they came from. This is the rule of
    scikit-learn's Lloyd solver (checked against scikit-learn 1.9), so both follow the same
    path from the same initial centroids unless floating-point rounding decides a near-tie
    differently. It is deterministic.

Ties
    A value exactly halfway between two centroids is assigned to the lower centroid. Of
    several equal centroids, the first takes all the values nearest to them.
"""

from __future__ import annotations

import logging
import numbers
from dataclasses import dataclass

import numpy as np

from .constants import FLOAT_DTYPES, MAX_STREAM_WIDTH, NUMPY_DTYPES, DType, dtype_code
from .errors import ConfigError, InputError

__all__ = ["INITS", "KMeansResult", "SharedWeights", "kmeans_1d", "share_weights"]

logger = logging.getLogger(__name__)

INITS = ("linear", "density", "random")
DEFAULT_MAX_ITER = 300
CODEBOOK_DTYPES = (DType.FLOAT32, DType.FLOAT16)


@dataclass(frozen=True, eq=False)
class KMeansResult:
    """Result of :func:`kmeans_1d`.

    ``centroids`` are float64 and sorted ascending; there are fewer than ``n_clusters`` when
    the input has fewer distinct values. ``assignments`` contains the centroid index of each
    input value (``np.intp``). ``inertia`` is the sum of squared distances from each value to
    its centroid. ``iterations`` counts centroid updates, which is 0 when the distinct values
    were taken as centroids. ``converged`` is False when ``max_iter`` ran out first.
    """

    centroids: np.ndarray
    assignments: np.ndarray
    inertia: float
    iterations: int
    converged: bool


@dataclass(frozen=True, eq=False)
class SharedWeights:
    """A tensor encoded as a codebook and one cluster index per weight.

    ``codebook`` has ``codebook_dtype`` and at most ``2**bits`` entries. ``assignments`` has
    the shape of the weights and dtype uint8 for ``bits <= 8``, uint16 otherwise.
    ``zero_slot`` is 0 when the tensor contains zeros (or is empty) and the codebook starts
    with the zero entry, None otherwise. ``inertia`` is the squared error of
    :meth:`reconstruct` against the weights, in float64. ``dtype`` is the dtype of the
    weights.
    """

    codebook: np.ndarray
    assignments: np.ndarray
    zero_slot: int | None
    inertia: float
    iterations: int
    converged: bool
    dtype: np.dtype

    def reconstruct(self) -> np.ndarray:
        """Return ``codebook[assignments]`` cast to the weights' dtype.

        The cast is exact because every codebook entry is representable in that dtype.
        """
        return self.codebook[self.assignments].astype(self.dtype)


def kmeans_1d(
    values,
    n_clusters: int,
    *,
    init="linear",
    seed: int = 0,
    max_iter: int = DEFAULT_MAX_ITER,
    tol: float = 0.0,
) -> KMeansResult:
    """Cluster a 1-D array of floats with Lloyd's k-means, exploiting sorted order.

    ``init`` is ``"linear"`` (centroids evenly spaced between the minimum and the maximum),
    ``"density"`` (centroids at evenly spaced quantiles, minimum and maximum included),
    ``"random"`` (Forgy: the values at ``n_clusters`` distinct positions drawn with ``seed``),
    or an array of ``n_clusters`` initial centroids. The result is deterministic for a given
    input and seed. Every value takes part, zeros included, because the zero slot is the
    business of :func:`share_weights`.

    Raises :class:`ConfigError` for an invalid setting, :class:`InputError` when a value is
    NaN or infinite, and ``TypeError`` when ``values`` is not a float array.
    """
    values = _float_vector(values, "values")
    n_clusters = _check_int("n_clusters", n_clusters, 1, None)
    max_iter = _check_int("max_iter", max_iter, 1, None)
    tol = _check_tol(tol)
    init = _check_init(init, n_clusters)
    seed = _check_seed(seed)

    _check_finite(values, "values")

    order = np.argsort(values)
    sorted_values = values[order].astype(np.float64)

    fit = _fit_sorted(sorted_values, values, n_clusters, init, seed, max_iter, tol)
    counts = _run_lengths(sorted_values, fit.centroids)
    assignments = _scatter_runs(order, counts, np.intp)
    inertia = _inertia_sorted(sorted_values, fit.centroids, counts)
    return KMeansResult(fit.centroids, assignments, inertia, fit.iterations, fit.converged)


def share_weights(
    weights: np.ndarray,
    bits: int,
    *,
    init="linear",
    seed: int = 0,
    max_iter: int = DEFAULT_MAX_ITER,
    tol: float = 0.0,
    codebook_dtype=np.float32,
) -> SharedWeights:
    """Quantise a float tensor to ``2**bits`` shared values, keeping its zeros exactly zero.

    ``weights`` may be float16, bfloat16, float32 or float64. The k-means runs in float64 on
    the non-zero weights (see the module docstring for the codebook layout and the
    algorithm). ``init``, ``seed``, ``max_iter`` and ``tol`` are passed on as in
    :func:`kmeans_1d`; an array ``init`` gives the non-zero centroids, so it has
    ``2**bits - 1`` entries when the tensor has zeros and ``2**bits`` otherwise.

    ``codebook_dtype`` is float32 (default) or float16, the two dtypes the file format
    stores. The fitted centroids are rounded to it, and also to the weights' dtype when that
    is a 16-bit float, so that :meth:`SharedWeights.reconstruct` is exact. Every non-zero
    weight is then reassigned to the nearest rounded non-zero entry, because rounding, most
    of all to float16, can move a centroid past a midpoint. Two centroids that round to the
    same value leave the second entry unused. A non-zero centroid that would round to 0.0 is
    stored as the smallest subnormal of its sign instead, so a kept weight never decodes to
    zero. A negative zero counts as a zero and decodes to +0.0.

    An empty tensor is treated like an all-zero one: its codebook is ``[0.0]`` with zero
    slot 0, since the file format needs at least one codebook entry.

    Raises :class:`ConfigError` for an invalid setting or a centroid that overflows
    ``codebook_dtype``, :class:`InputError` when a weight is NaN or infinite, and
    ``TypeError`` when ``weights`` is not a float array.
    """
    if not isinstance(weights, np.ndarray):
        raise TypeError(f"weights must be a numpy array, not {type(weights).__name__}")
    weight_dtype = _float_dtype(weights.dtype, "weights")
    bits = _check_int("bits", bits, 1, MAX_STREAM_WIDTH)
    store_dtype = _codebook_dtype(codebook_dtype)
    max_iter = _check_int("max_iter", max_iter, 1, None)
    tol = _check_tol(tol)
    seed = _check_seed(seed)

    flat = _widen(weights.reshape(-1))
    _check_finite(flat, "weights")
    nonzero = flat != 0
    values = flat[nonzero]
    has_zeros = values.size < flat.size or flat.size == 0
    n_clusters = (1 << bits) - int(has_zeros)
    init = _check_init(init, n_clusters)
    index_dtype = np.uint8 if bits <= 8 else np.uint16

    # Fit the non-zero centroids in sorted order.
    order = np.argsort(values)
    sorted_values = values[order].astype(np.float64)
    fit = _fit_sorted(sorted_values, values, n_clusters, init, seed, max_iter, tol)

    # Round to what the file stores, then reassign against the rounded entries.
    entries = _round_centroids(fit.centroids, store_dtype, weight_dtype)
    entries64 = entries.astype(np.float64)
    counts = _run_lengths(sorted_values, entries64)
    inertia = _inertia_sorted(sorted_values, entries64, counts)
    slots = _scatter_runs(order, counts, index_dtype)

    if has_zeros:
        codebook = np.concatenate([np.zeros(1, dtype=store_dtype), entries])
        assignments = np.zeros(flat.size, dtype=index_dtype)
        assignments[nonzero] = slots + index_dtype(1)
        zero_slot = 0
    else:
        codebook = entries
        assignments = slots
        zero_slot = None

    logger.debug(
        "shared %d weights (%d non-zero) into %d entries: %d iterations, converged=%s, "
        "inertia %.6g",
        flat.size,
        values.size,
        codebook.size,
        fit.iterations,
        fit.converged,
        inertia,
    )
    return SharedWeights(
        codebook=codebook,
        assignments=assignments.reshape(weights.shape),
        zero_slot=zero_slot,
        inertia=inertia,
        iterations=fit.iterations,
        converged=fit.converged,
        dtype=weight_dtype,
    )


# ---------------------------------------------------------------------------------------------
# k-means on sorted values


@dataclass(frozen=True, eq=False)
class _Fit:
    centroids: np.ndarray
    iterations: int
    converged: bool


def _fit_sorted(sorted_values, values, n_clusters, init, seed, max_iter, tol) -> _Fit:
    """Fit at most ``n_clusters`` sorted float64 centroids to ``sorted_values``.

    ``values`` is the same data in input order. The Forgy initialisation draws from it, so
    a seed picks the same input positions whatever the values.
    """
    if sorted_values.size == 0:
        return _Fit(np.zeros(0), 0, True)

    # Few distinct values: they are the optimal centroids (inertia 0), kept exactly.
    is_new = np.empty(sorted_values.size, dtype=bool)
    is_new[0] = True
    np.not_equal(sorted_values[1:], sorted_values[:-1], out=is_new[1:])
    if np.count_nonzero(is_new) <= n_clusters:
        return _Fit(sorted_values[is_new], 0, True)

    centroids = np.sort(_initial_centroids(sorted_values, values, n_clusters, init, seed))
    centroids, bounds, iterations, converged = _lloyd(sorted_values, centroids, max_iter, tol)
    centroids = _exact_means(sorted_values, bounds, centroids)
    if not converged:
        logger.debug("k-means stopped after max_iter=%d updates before converging", max_iter)
    return _Fit(centroids, iterations, converged)


def _initial_centroids(sorted_values, values, n_clusters, init, seed) -> np.ndarray:
    if isinstance(init, np.ndarray):
        return init
    if init == "linear":
        return np.linspace(sorted_values[0], sorted_values[-1], n_clusters)
    if init == "density":
        # Linear interpolation between order statistics, as np.quantile(method="linear").
        position = np.linspace(0.0, sorted_values.size - 1, n_clusters)
        lower = np.floor(position).astype(np.int64)
        upper = np.minimum(lower + 1, sorted_values.size - 1)
        fraction = position - lower
        low, high = sorted_values[lower], sorted_values[upper]
        return low + fraction * (high - low)
    rng = np.random.default_rng(seed)
    picks = rng.choice(values.size, size=n_clusters, replace=False)
    return values[picks].astype(np.float64)


def _lloyd(sorted_values, centroids, max_iter, tol):
    """Run Lloyd iterations; return centroids, run bounds, iterations and convergence."""
    prefix = np.empty(sorted_values.size + 1)
    prefix[0] = 0.0
    np.cumsum(sorted_values, out=prefix[1:])

    bounds = _run_bounds(sorted_values, centroids)
    for iteration in range(1, max_iter + 1):
        updated = _update(sorted_values, prefix, bounds, centroids)
        new_bounds = _run_bounds(sorted_values, updated)
        shift = float(np.max(np.abs(updated - centroids)))
        centroids = updated
        if np.array_equal(new_bounds, bounds):
            return centroids, bounds, iteration, True
        bounds = new_bounds
        if tol > 0 and shift <= tol:
            return centroids, bounds, iteration, True
    return centroids, bounds, max_iter, False


def _midpoints(centroids) -> np.ndarray:
    # Halving first cannot overflow for float64 values near the largest finite float.
    return 0.5 * centroids[:-1] + 0.5 * centroids[1:]


def _run_bounds(sorted_values, centroids) -> np.ndarray:
    """Return the k + 1 boundaries of each centroid's run of nearest sorted values.

    A value equal to a midpoint goes to the lower centroid (side="right"). Among equal
    centroids the first takes the whole run and the others stay empty, as with an argmin
    over distances, so that the empty-cluster rule can move them.
    """
    if centroids.size == 0:
        return np.full(1, sorted_values.size, dtype=np.int64)
    first = np.empty(centroids.size, dtype=bool)
    first[0] = True
    np.not_equal(centroids[1:], centroids[:-1], out=first[1:])

    distinct_bounds = np.empty(int(np.count_nonzero(first)) + 1, dtype=np.int64)
    distinct_bounds[0] = 0
    distinct_bounds[-1] = sorted_values.size
    distinct_bounds[1:-1] = np.searchsorted(
        sorted_values, _midpoints(centroids[first]), side="right"
    )

    group = np.cumsum(first) - 1
    bounds = np.empty(centroids.size + 1, dtype=np.int64)
    bounds[:-1] = np.where(first, distinct_bounds[group], distinct_bounds[group + 1])
    bounds[-1] = sorted_values.size
    return bounds


def _run_lengths(sorted_values, centroids) -> np.ndarray:
    return np.diff(_run_bounds(sorted_values, centroids))


def _update(sorted_values, prefix, bounds, centroids) -> np.ndarray:
    """Move each centroid to the mean of its run, relocating empty clusters first."""
    starts, ends = bounds[:-1], bounds[1:]
    counts = ends - starts
    sums = prefix[ends] - prefix[starts]
    empty = np.flatnonzero(counts == 0)
    if empty.size:
        _relocate_empty(sorted_values, bounds, centroids, empty, sums, counts)
    updated = centroids.copy()
    occupied = counts > 0
    updated[occupied] = sums[occupied] / counts[occupied]
    return np.sort(updated)


def _relocate_empty(sorted_values, bounds, centroids, empty, sums, counts) -> None:
    """Give each empty cluster one of the values farthest from their current centroid.

    ``sums`` and ``counts`` are updated in place: each chosen value leaves its cluster and
    becomes the only member of an empty one. Distances are to the centroids that defined
    ``bounds``. Within a run they fall from either end toward the centroid, so the ``e``
    farthest values overall are among the ``e`` outermost values at each end of each run.
    """
    n_empty = empty.size
    starts, ends = bounds[:-1], bounds[1:]
    occupied = np.flatnonzero(ends > starts)
    low_stop = np.minimum(starts[occupied] + n_empty, ends[occupied])
    high_start = np.maximum(ends[occupied] - n_empty, low_stop)
    index = np.concatenate(
        [_ranges(starts[occupied], low_stop), _ranges(high_start, ends[occupied])]
    )
    owner = np.concatenate(
        [
            np.repeat(occupied, low_stop - starts[occupied]),
            np.repeat(occupied, ends[occupied] - high_start),
        ]
    )
    distance = np.abs(sorted_values[index] - centroids[owner])
    chosen = np.argsort(-distance, kind="stable")[:n_empty]

    # An empty cluster owns no candidate, so no cluster is both a donor and a target.
    moved = sorted_values[index[chosen]]
    donors = owner[chosen]
    np.subtract.at(sums, donors, moved)
    np.subtract.at(counts, donors, 1)
    targets = empty[: chosen.size]
    sums[targets] = moved
    counts[targets] = 1


def _ranges(starts: np.ndarray, stops: np.ndarray) -> np.ndarray:
    """Return the concatenation of ``arange(start, stop)`` for each pair, without a loop."""
    lengths = stops - starts
    offsets = starts - (np.cumsum(lengths) - lengths)
    return np.repeat(offsets, lengths) + np.arange(int(lengths.sum()), dtype=np.int64)


def _exact_means(sorted_values, bounds, centroids) -> np.ndarray:
    """Recompute each occupied centroid as the mean of its run with direct sums.

    Prefix sum differences lose low-order bits on long inputs, so the final centroids are
    summed per run instead, and a run of one repeated value gets exactly that value.
    """
    starts, ends = bounds[:-1], bounds[1:]
    occupied = np.flatnonzero(ends > starts)
    result = centroids.copy()
    if occupied.size == 0:
        return result

    run_starts = starts[occupied]
    run_ends = ends[occupied]
    # The runs of occupied clusters tile the array, so reduceat sums exactly one run each.
    sums = np.add.reduceat(sorted_values, run_starts)
    result[occupied] = sums / (run_ends - run_starts)
    single = sorted_values[run_starts] == sorted_values[run_ends - 1]
    result[occupied[single]] = sorted_values[run_starts[single]]
    return np.sort(result)


def _inertia_sorted(sorted_values, centroids, counts) -> float:
    if sorted_values.size == 0:
        return 0.0
    residual = sorted_values - np.repeat(centroids, counts)
    return float(np.dot(residual, residual))


def _scatter_runs(order, counts, dtype) -> np.ndarray:
    """Return, in input order, the cluster index of each value from its sorted run lengths."""
    assignments = np.empty(order.size, dtype=dtype)
    assignments[order] = np.repeat(np.arange(counts.size, dtype=dtype), counts)
    return assignments


# ---------------------------------------------------------------------------------------------
# Rounding to the stored dtypes


def _round_centroids(centroids, store_dtype: np.dtype, weight_dtype: np.dtype) -> np.ndarray:
    """Round float64 centroids to values representable in the codebook and weight dtypes."""
    chain = [store_dtype]
    if weight_dtype.itemsize < store_dtype.itemsize or (
        weight_dtype.itemsize == store_dtype.itemsize and weight_dtype != store_dtype
    ):
        chain.append(weight_dtype)

    rounded = centroids
    for dtype in chain + [store_dtype]:
        with np.errstate(over="ignore"):
            rounded = rounded.astype(dtype)
    rounded = rounded.astype(store_dtype)

    overflow = ~np.isfinite(rounded)
    if overflow.any():
        worst = float(centroids[np.flatnonzero(overflow)[0]])
        names = " and ".join(str(dtype) for dtype in chain)
        raise ConfigError(
            f"codebook_dtype: centroid {worst!r} is out of the range of {names}; "
            "use a wider codebook_dtype",
            field="codebook_dtype",
            found=worst,
        )

    collapsed = (rounded == 0) & (centroids != 0)
    if collapsed.any():
        # The largest of the smallest subnormals is a power of two every dtype in the chain
        # can represent.
        tiny = max(float(_finfo(dtype).smallest_subnormal) for dtype in chain)
        rounded[collapsed] = np.copysign(tiny, centroids[collapsed]).astype(store_dtype)
    return rounded


def _finfo(dtype: np.dtype):
    if dtype.kind == "f":
        return np.finfo(dtype)
    import ml_dtypes  # bfloat16 is not a numpy float kind, so np.finfo rejects it

    return ml_dtypes.finfo(dtype)


# ---------------------------------------------------------------------------------------------
# Argument checks


def _float_dtype(dtype: np.dtype, name: str) -> np.dtype:
    try:
        code = dtype_code(dtype)
    except TypeError:
        code = None
    if code not in FLOAT_DTYPES:
        raise TypeError(
            f"{name} must have a float dtype (float16, bfloat16, float32 or float64), "
            f"not {dtype}"
        )
    return np.dtype(dtype)


def _codebook_dtype(codebook_dtype) -> np.dtype:
    try:
        code = dtype_code(np.dtype(codebook_dtype))
    except TypeError:
        code = None
    if code not in CODEBOOK_DTYPES:
        raise ConfigError(
            f"codebook_dtype {codebook_dtype!r} is not supported; expected float32 or float16",
            field="codebook_dtype",
            expected="float32 or float16",
            found=codebook_dtype,
        )
    return NUMPY_DTYPES[code]


def _widen(array: np.ndarray) -> np.ndarray:
    """Cast float16 and bfloat16 to float32 (exactly) for sorting and arithmetic."""
    if array.dtype.itemsize < 4:
        return array.astype(np.float32)
    return array


def _float_vector(values, name: str) -> np.ndarray:
    if not isinstance(values, np.ndarray):
        raise TypeError(f"{name} must be a numpy array, not {type(values).__name__}")
    _float_dtype(values.dtype, name)
    if values.ndim != 1:
        raise ConfigError(
            f"{name} must be 1-D, got shape {values.shape}", field=name, found=values.shape
        )
    return _widen(values)


def _check_finite(array: np.ndarray, name: str) -> None:
    if array.size and not np.isfinite(array).all():
        raise InputError(
            f"{name} contain NaN or infinity; k-means needs finite values", field=name
        )


def _check_int(name: str, value, low: int, high: int | None) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name} must be an int, not {type(value).__name__}")
    value = int(value)
    if value < low or (high is not None and value > high):
        allowed = f"{low}..{high}" if high is not None else f">= {low}"
        raise ConfigError(
            f"{name}={value} is out of range; expected {allowed}",
            field=name,
            expected=allowed,
            found=value,
        )
    return value


def _check_tol(tol) -> float:
    if isinstance(tol, bool) or not isinstance(tol, numbers.Real):
        raise TypeError(f"tol must be a real number, not {type(tol).__name__}")
    if not (np.isfinite(tol) and tol >= 0):
        raise ConfigError(
            f"tol={tol} is out of range; expected a finite number >= 0",
            field="tol",
            found=tol,
        )
    return float(tol)


def _check_seed(seed) -> int:
    if isinstance(seed, bool) or not isinstance(seed, numbers.Integral):
        raise TypeError(f"seed must be an int, not {type(seed).__name__}")
    return int(seed)


def _check_init(init, n_clusters: int):
    if isinstance(init, str):
        if init not in INITS:
            raise ConfigError(
                f"init={init!r} is not supported; expected one of {', '.join(INITS)} "
                "or an array of initial centroids",
                field="init",
                found=init,
            )
        return init
    if not isinstance(init, np.ndarray):
        raise TypeError(f"init must be a str or a numpy array, not {type(init).__name__}")
    centroids = np.asarray(init, dtype=np.float64).reshape(-1)
    if centroids.size != n_clusters or init.ndim != 1:
        raise ConfigError(
            f"init array has shape {init.shape}; expected ({n_clusters},)",
            field="init",
            expected=(n_clusters,),
            found=init.shape,
        )
    if not np.isfinite(centroids).all():
        raise ConfigError("init array contains NaN or infinity", field="init")
    return centroids
