import ml_dtypes
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sklearn.cluster import KMeans

from dcformat.errors import ConfigError, InputError
from dcformat.quantize import kmeans_1d, share_weights

BFLOAT16 = np.dtype(ml_dtypes.bfloat16)


def _laplace(n, seed=0, scale=0.05):
    return np.random.default_rng(seed).laplace(scale=scale, size=n)


def _sklearn_inertia(values, init):
    model = KMeans(
        n_clusters=init.size,
        init=init.reshape(-1, 1),
        n_init=1,
        max_iter=300,
        tol=0.0,
        algorithm="lloyd",
    )
    model.fit(values.reshape(-1, 1))
    return model.inertia_


def _brute_force_nearest(values, centroids):
    distance = np.abs(values[:, None] - centroids[None, :])
    return np.argmin(distance, axis=1)


# ---------------------------------------------------------------------------------------------
# kmeans_1d


@pytest.mark.parametrize("n_clusters", [2, 5, 16, 40])
@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("init", ["linear", "density", "random"])
def test_kmeans_not_worse_than_sklearn(n_clusters, seed, init):
    values = _laplace(1500, seed)
    # The same initial centroids, built from their documented definitions.
    if init == "linear":
        start = np.linspace(values.min(), values.max(), n_clusters)
    elif init == "density":
        start = np.quantile(values, np.linspace(0.0, 1.0, n_clusters))
    else:
        picks = np.random.default_rng(seed).choice(values.size, n_clusters, replace=False)
        start = values[picks]

    ours = kmeans_1d(values, n_clusters, init=init, seed=seed, max_iter=300)
    reference = _sklearn_inertia(values, start)
    assert ours.inertia <= reference * (1 + 1e-9) + 1e-12


@pytest.mark.parametrize("n_clusters", [3, 8, 32])
def test_kmeans_matches_sklearn_on_same_init_array(n_clusters):
    values = _laplace(2000, 7)
    start = np.random.default_rng(3).uniform(values.min(), values.max(), n_clusters)
    ours = kmeans_1d(values, n_clusters, init=start)
    reference = _sklearn_inertia(values, start)
    assert ours.converged
    assert ours.inertia <= reference * (1 + 1e-9)


def test_kmeans_converged_is_fixed_point():
    values = _laplace(3000, 4)
    result = kmeans_1d(values, 12)
    assert result.converged
    nearest = _brute_force_nearest(values, result.centroids)
    np.testing.assert_array_equal(result.assignments, nearest)
    for cluster, centroid in enumerate(result.centroids):
        members = values[result.assignments == cluster]
        assert members.size > 0
        assert centroid == pytest.approx(members.mean(), rel=1e-12, abs=1e-15)
    expected = np.sum((values - result.centroids[result.assignments]) ** 2)
    assert result.inertia == pytest.approx(expected, rel=1e-12)


def test_kmeans_centroids_sorted_and_in_range():
    values = _laplace(1000, 5)
    for init in ("linear", "density", "random"):
        result = kmeans_1d(values, 20, init=init, seed=3)
        assert np.all(np.diff(result.centroids) > 0)
        assert result.centroids.min() >= values.min()
        assert result.centroids.max() <= values.max()
        assert result.assignments.shape == values.shape


def test_kmeans_deterministic_for_seed():
    values = _laplace(2000, 6)
    first = kmeans_1d(values, 10, init="random", seed=42)
    second = kmeans_1d(values, 10, init="random", seed=42)
    np.testing.assert_array_equal(first.centroids, second.centroids)
    np.testing.assert_array_equal(first.assignments, second.assignments)
    assert first.iterations == second.iterations


def test_kmeans_max_iter_one():
    values = _laplace(2000, 8)
    result = kmeans_1d(values, 64, max_iter=1)
    assert result.iterations == 1
    assert not result.converged
    nearest = _brute_force_nearest(values, result.centroids)
    np.testing.assert_array_equal(result.assignments, nearest)


def test_kmeans_tol_stops_early():
    values = _laplace(5000, 9)
    strict = kmeans_1d(values, 32)
    loose = kmeans_1d(values, 32, tol=1e-3)
    assert loose.iterations < strict.iterations
    assert loose.converged


def test_kmeans_few_distinct_values_exact():
    values = np.array([0.5, -1.25, 0.5, 3.0, -1.25], dtype=np.float32)
    result = kmeans_1d(values, 8)
    np.testing.assert_array_equal(result.centroids, [-1.25, 0.5, 3.0])
    np.testing.assert_array_equal(result.centroids[result.assignments], values)
    assert result.inertia == 0.0
    assert result.iterations == 0


def test_kmeans_empty_clusters_relocated():
    # Duplicate initial centroids leave clusters empty; each must end up owning values.
    values = np.concatenate([np.full(500, 0.25), _laplace(500, 10)])
    start = np.array([0.25, 0.25, 0.25, 0.25, 0.3, 0.3])
    result = kmeans_1d(values, 6, init=start)
    counts = np.bincount(result.assignments, minlength=6)
    assert np.all(counts > 0)
    assert np.unique(result.centroids).size == 6
    assert result.inertia <= _sklearn_inertia(values, start) * (1 + 1e-9)


def test_kmeans_empty_input():
    result = kmeans_1d(np.zeros(0, dtype=np.float32), 4)
    assert result.centroids.size == 0
    assert result.assignments.size == 0
    assert result.inertia == 0.0


def test_kmeans_rejects_bad_arguments():
    values = _laplace(100)
    with pytest.raises(ConfigError, match="n_clusters=0"):
        kmeans_1d(values, 0)
    with pytest.raises(ConfigError, match="init='kmeans"):
        kmeans_1d(values, 4, init="kmeans++")
    with pytest.raises(ConfigError, match=r"expected \(4,\)"):
        kmeans_1d(values, 4, init=np.zeros(3))
    with pytest.raises(ConfigError, match="max_iter"):
        kmeans_1d(values, 4, max_iter=0)
    with pytest.raises(ConfigError, match="tol"):
        kmeans_1d(values, 4, tol=-1.0)
    with pytest.raises(ConfigError, match="1-D"):
        kmeans_1d(values.reshape(10, 10), 4)
    with pytest.raises(InputError, match="NaN"):
        kmeans_1d(np.array([1.0, np.nan]), 1)
    with pytest.raises(TypeError):
        kmeans_1d(np.arange(10), 2)
    with pytest.raises(TypeError):
        kmeans_1d(values, 2.0)
    with pytest.raises(TypeError):
        kmeans_1d(values, 2, seed=None)


# ---------------------------------------------------------------------------------------------
# share_weights


def _pruned(shape, sparsity, seed=0, dtype=np.float32):
    rng = np.random.default_rng(seed)
    weights = rng.laplace(scale=0.05, size=shape)
    weights[rng.random(shape) < sparsity] = 0.0
    return weights.astype(dtype)


def _assert_valid(shared, weights, bits):
    codebook, assignments = shared.codebook, shared.assignments
    assert codebook.size <= 2**bits
    assert assignments.shape == weights.shape
    assert assignments.dtype == (np.uint8 if bits <= 8 else np.uint16)
    assert np.all(assignments < codebook.size)

    zeros = weights == 0
    if shared.zero_slot is None:
        assert not zeros.any()
        assert np.all(np.diff(codebook.astype(np.float64)) >= 0)
    else:
        assert shared.zero_slot == 0
        assert codebook[0] == 0.0
        assert np.all(assignments[zeros] == 0)
        assert np.all(assignments[~zeros] != 0)
        assert np.all(np.diff(codebook[1:].astype(np.float64)) >= 0)

    reconstruction = shared.reconstruct()
    assert reconstruction.dtype == weights.dtype
    np.testing.assert_array_equal(reconstruction == 0, zeros)
    np.testing.assert_array_equal(reconstruction, codebook[assignments].astype(weights.dtype))
    error = weights.astype(np.float64) - reconstruction.astype(np.float64)
    assert shared.inertia == pytest.approx(float(np.sum(error**2)), rel=1e-9, abs=1e-30)


@pytest.mark.parametrize("bits", [1, 2, 4, 8])
@pytest.mark.parametrize("sparsity", [0.0, 0.5, 0.9])
def test_share_weights_valid(bits, sparsity):
    weights = _pruned((64, 50), sparsity, seed=bits)
    shared = share_weights(weights, bits)
    _assert_valid(shared, weights, bits)
    n_distinct = np.unique(weights[weights != 0]).size
    slots = 2**bits - (1 if sparsity else 0)
    assert shared.codebook.size - (1 if sparsity else 0) == min(slots, n_distinct)


@settings(max_examples=60, deadline=None)
@given(
    st.integers(0, 400),
    st.floats(0.0, 0.99),
    st.integers(1, 9),
    st.sampled_from(["linear", "density", "random"]),
    st.integers(0, 2**16),
)
def test_share_weights_property(size, sparsity, bits, init, seed):
    weights = _pruned((size,), sparsity, seed=seed)
    shared = share_weights(weights, bits, init=init, seed=seed)
    _assert_valid(shared, weights, bits)


def test_share_weights_never_moves_zeros():
    weights = _pruned((200, 30), 0.7, seed=3)
    weights[0, :5] = -0.0
    shared = share_weights(weights, 3)
    reconstruction = shared.reconstruct()
    assert np.all(reconstruction[weights == 0] == 0)
    assert np.all(reconstruction[weights != 0] != 0)
    # No centroid is pulled toward zero by the pruned positions: the centroids match a fit
    # on the non-zero weights alone.
    alone = kmeans_1d(weights[weights != 0], 7)
    np.testing.assert_array_equal(shared.codebook[1:], alone.centroids.astype(np.float32))


def test_share_weights_round_trips_quantised_tensor():
    rng = np.random.default_rng(11)
    levels = rng.normal(size=255).astype(np.float32)
    weights = levels[rng.integers(0, 255, size=(100, 80))]
    weights[rng.random(weights.shape) < 0.6] = 0.0
    shared = share_weights(weights, 8)
    reconstruction = shared.reconstruct()
    np.testing.assert_array_equal(reconstruction.view(np.uint32), weights.view(np.uint32))
    assert shared.inertia == 0.0
    assert shared.iterations == 0

    again = share_weights(reconstruction, 8)
    np.testing.assert_array_equal(again.codebook, shared.codebook)
    np.testing.assert_array_equal(again.assignments, shared.assignments)


@pytest.mark.parametrize("dtype", [np.float16, BFLOAT16, np.float32])
def test_share_weights_round_trips_narrow_dtypes(dtype):
    rng = np.random.default_rng(12)
    levels = rng.normal(size=15).astype(dtype)
    weights = levels[rng.integers(0, 15, size=(40, 40))]
    shared = share_weights(weights, 4)
    bits_view = np.uint32 if dtype == np.float32 else np.uint16
    np.testing.assert_array_equal(shared.reconstruct().view(bits_view), weights.view(bits_view))


@pytest.mark.parametrize("dtype", [np.float16, BFLOAT16, np.float32, np.float64])
@pytest.mark.parametrize("codebook_dtype", [np.float32, np.float16])
def test_share_weights_dtypes(dtype, codebook_dtype):
    weights = _pruned((50, 40), 0.5, seed=13, dtype=dtype)
    shared = share_weights(weights, 5, codebook_dtype=codebook_dtype)
    assert shared.codebook.dtype == np.dtype(codebook_dtype)
    _assert_valid(shared, weights, 5)
    # Every codebook entry survives the cast to the weights' dtype unchanged.
    entries = shared.codebook.astype(np.float64)
    np.testing.assert_array_equal(shared.codebook.astype(dtype).astype(np.float64), entries)


def test_share_weights_float16_codebook_nearest():
    weights = _pruned((80, 40), 0.3, seed=14)
    shared = share_weights(weights, 6, codebook_dtype=np.float16)
    nonzero = weights[weights != 0].astype(np.float64)
    entries = shared.codebook[1:].astype(np.float64)
    chosen = shared.assignments[weights != 0].astype(np.int64) - 1
    best = np.min(np.abs(nonzero[:, None] - entries[None, :]), axis=1)
    np.testing.assert_array_equal(np.abs(nonzero - entries[chosen]), best)


def test_share_weights_single_value_cluster_exact():
    # A run of one float32 value among spread values: its cluster must store it exactly,
    # though a float64 mean over prefix sums would be off in the last bits.
    rng = np.random.default_rng(15)
    value = np.float32(0.1)
    spread = rng.uniform(1.0, 2.0, 1000)
    weights = np.concatenate([np.full(100_000, value), spread]).astype(np.float32)
    shared = share_weights(weights, 2)
    assert value in shared.codebook
    assert np.all(shared.reconstruct()[:100_000] == value)


def test_share_weights_tiny_centroid_not_zero_in_float16():
    weights = np.array([1e-9, 2e-9, 3e-9, 0.5, 0.6, 0.0], dtype=np.float32)
    shared = share_weights(weights, 2, codebook_dtype=np.float16)
    reconstruction = shared.reconstruct()
    assert np.all(reconstruction[:5] != 0)
    assert reconstruction[5] == 0
    assert shared.codebook[1] == np.float16(np.finfo(np.float16).smallest_subnormal)


def test_share_weights_float16_overflow():
    weights = np.array([1e5, 2e5, 3.0, 4.0, 5.0], dtype=np.float32)
    with pytest.raises(ConfigError, match="codebook_dtype"):
        share_weights(weights, 1, codebook_dtype=np.float16)


def test_share_weights_deterministic():
    weights = _pruned((100, 100), 0.5, seed=16)
    for init in ("linear", "density", "random"):
        first = share_weights(weights, 4, init=init, seed=5)
        second = share_weights(weights, 4, init=init, seed=5)
        np.testing.assert_array_equal(first.codebook, second.codebook)
        np.testing.assert_array_equal(first.assignments, second.assignments)


def test_share_weights_inits_differ():
    # After one update the three initialisations must still show.
    weights = _pruned((100, 100), 0.0, seed=17)
    codebooks = [
        share_weights(weights, 5, init=init, seed=1, max_iter=1).codebook
        for init in ("linear", "density", "random")
    ]
    assert not np.array_equal(codebooks[0], codebooks[1])
    assert not np.array_equal(codebooks[0], codebooks[2])
    assert not np.array_equal(codebooks[1], codebooks[2])


def test_share_weights_bits_1():
    weights = np.array([[0.0, 1.0], [3.0, 0.0]], dtype=np.float32)
    shared = share_weights(weights, 1)
    np.testing.assert_array_equal(shared.codebook, [0.0, 2.0])
    np.testing.assert_array_equal(shared.assignments, [[0, 1], [1, 0]])

    dense = np.array([1.0, 2.0, 10.0, 11.0], dtype=np.float32)
    shared = share_weights(dense, 1)
    assert shared.zero_slot is None
    np.testing.assert_array_equal(shared.codebook, [1.5, 10.5])


def test_share_weights_bits_16():
    rng = np.random.default_rng(18)
    weights = rng.normal(size=70_000).astype(np.float32)
    weights[:100] = 0.0
    shared = share_weights(weights, 16, max_iter=20)
    assert shared.assignments.dtype == np.uint16
    assert shared.codebook.size == 2**16
    _assert_valid(shared, weights, 16)

    small = _pruned((30, 30), 0.5, seed=19)
    exact = share_weights(small, 16)
    np.testing.assert_array_equal(exact.reconstruct(), small)


def test_share_weights_all_zero():
    weights = np.zeros((4, 5), dtype=np.float32)
    shared = share_weights(weights, 4)
    np.testing.assert_array_equal(shared.codebook, [0.0])
    assert shared.zero_slot == 0
    assert np.all(shared.assignments == 0)
    assert shared.inertia == 0.0


def test_share_weights_one_value():
    shared = share_weights(np.full((3, 3), 0.75, dtype=np.float32), 4)
    np.testing.assert_array_equal(shared.codebook, [0.75])
    assert shared.zero_slot is None
    np.testing.assert_array_equal(shared.reconstruct(), np.full((3, 3), 0.75))

    with_zero = np.array([0.75, 0.0, 0.75], dtype=np.float32)
    shared = share_weights(with_zero, 4)
    np.testing.assert_array_equal(shared.codebook, [0.0, 0.75])
    np.testing.assert_array_equal(shared.assignments, [1, 0, 1])


@pytest.mark.parametrize("shape", [(0,), (0, 3)])
def test_share_weights_empty(shape):
    weights = np.zeros(shape, dtype=np.float32)
    shared = share_weights(weights, 8)
    np.testing.assert_array_equal(shared.codebook, [0.0])
    assert shared.zero_slot == 0
    assert shared.assignments.shape == shape
    assert shared.reconstruct().shape == shape


def test_share_weights_rejects_bad_arguments():
    weights = _pruned((10, 10), 0.5)
    for bits in (0, 17):
        with pytest.raises(ConfigError, match=f"bits={bits} is out of range; expected 1..16"):
            share_weights(weights, bits)
    with pytest.raises(TypeError):
        share_weights(weights, True)
    with pytest.raises(TypeError):
        share_weights(weights.astype(np.int32), 4)
    with pytest.raises(TypeError):
        share_weights(weights.tolist(), 4)
    with pytest.raises(ConfigError, match="codebook_dtype"):
        share_weights(weights, 4, codebook_dtype=np.float64)
    with pytest.raises(ConfigError, match=r"expected \(15,\)"):
        share_weights(weights, 4, init=np.zeros(16))
    weights[3, 3] = np.inf
    with pytest.raises(InputError, match="NaN or infinity"):
        share_weights(weights, 4)


def test_share_weights_array_init():
    weights = _pruned((60, 60), 0.5, seed=20)
    start = np.linspace(-0.1, 0.1, 7)
    shared = share_weights(weights, 3, init=start)
    reference = kmeans_1d(weights[weights != 0], 7, init=start)
    np.testing.assert_array_equal(shared.codebook[1:], reference.centroids.astype(np.float32))
