import math

import ml_dtypes
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dcformat.errors import ConfigError, IndexOutOfRangeError, InputError, InvalidFieldError
from dcformat.sparse import (
    matrix_shape,
    positions_from_gaps,
    relative_index,
    relative_index_length,
    to_coo,
    to_csr,
    to_dense,
)


def _check_round_trip(positions, size, index_bits):
    gaps, source = relative_index(positions, index_bits)
    span = 1 << index_bits

    assert gaps.dtype == (np.uint8 if index_bits <= 8 else np.uint16)
    assert gaps.shape == source.shape
    assert np.all(gaps < span)
    assert relative_index_length(positions, index_bits) == gaps.size

    decoded = positions_from_gaps(gaps, size)
    stored = source >= 0
    np.testing.assert_array_equal(decoded[stored], positions)
    np.testing.assert_array_equal(source[stored], np.arange(positions.size))

    # Fillers carry the largest gap, land on zeros, and never trail the last stored entry.
    assert np.all(gaps[~stored] == span - 1)
    assert not np.isin(decoded[~stored], positions).any()
    if gaps.size:
        assert source[-1] == positions.size - 1

    zeros_before = np.diff(positions, prepend=-1) - 1
    assert np.count_nonzero(~stored) == int(np.sum(zeros_before // span))


@st.composite
def sparse_positions(draw):
    size = draw(st.integers(0, 3000))
    density = draw(st.sampled_from([0.0, 0.001, 0.05, 0.5, 0.95, 1.0]))
    seed = draw(st.integers(0, 2**32 - 1))
    mask = np.random.default_rng(seed).random(size) < density
    return np.flatnonzero(mask), size


@settings(max_examples=150, deadline=None)
@given(sparse_positions(), st.integers(1, 16))
def test_relative_index_round_trip(case, index_bits):
    positions, size = case
    _check_round_trip(positions, size, index_bits)


@pytest.mark.parametrize("index_bits", [1, 2, 4, 5, 8, 16])
def test_relative_index_long_zero_runs(index_bits):
    size = 300_000
    positions = np.array([0, 1, 70_000, 70_001, 200_000, size - 1])
    _check_round_trip(positions, size, index_bits)


@pytest.mark.parametrize("index_bits", [1, 3, 8, 16])
def test_relative_index_first_position_far(index_bits):
    positions = np.array([100_000])
    gaps, source = relative_index(positions, index_bits)
    span = 1 << index_bits
    assert gaps.size == 100_000 // span + 1
    assert gaps[-1] == 100_000 % span
    _check_round_trip(positions, 100_001, index_bits)


def test_relative_index_exact_span_boundary():
    # 8 zeros with 3 index bits is one filler (advancing 8) and a final gap of 0.
    gaps, source = relative_index(np.array([8]), 3)
    np.testing.assert_array_equal(gaps, [7, 0])
    np.testing.assert_array_equal(source, [-1, 0])
    # 7 zeros still fit in one gap.
    gaps, source = relative_index(np.array([7]), 3)
    np.testing.assert_array_equal(gaps, [7])
    np.testing.assert_array_equal(source, [0])


def test_relative_index_empty():
    gaps, source = relative_index(np.zeros(0, dtype=np.int64), 4)
    assert gaps.size == 0
    assert source.size == 0
    assert positions_from_gaps(gaps, 0).size == 0
    assert positions_from_gaps(gaps, 10).size == 0


def test_relative_index_all_kept():
    gaps, source = relative_index(np.arange(1000), 1)
    assert np.all(gaps == 0)
    np.testing.assert_array_equal(source, np.arange(1000))


def test_relative_index_known_vector():
    # 16 zeros between positions 3 and 20 are two fillers of 8 positions each, then gap 0.
    gaps, source = relative_index(np.array([0, 3, 20, 21]), 3)
    np.testing.assert_array_equal(gaps, [0, 2, 7, 7, 0, 0])
    np.testing.assert_array_equal(source, [0, 1, -1, -1, 2, 3])


@pytest.mark.parametrize("index_bits", [0, 17, -1])
def test_relative_index_bits_out_of_range(index_bits):
    with pytest.raises(ConfigError, match="index_bits"):
        relative_index(np.array([1, 2]), index_bits)


def test_relative_index_rejects_bad_positions():
    with pytest.raises(InputError, match="strictly increasing"):
        relative_index(np.array([3, 3]), 4)
    with pytest.raises(InputError, match="strictly increasing"):
        relative_index(np.array([5, 2]), 4)
    with pytest.raises(InputError, match="non-negative"):
        relative_index(np.array([-1, 2]), 4)
    with pytest.raises(TypeError):
        relative_index(np.array([1.0, 2.0]), 4)
    with pytest.raises(TypeError):
        relative_index([1, 2], 4)
    with pytest.raises(TypeError):
        relative_index(np.array([1, 2]), True)


def test_gaps_past_end_raise():
    gaps = np.array([0, 0, 5, 0], dtype=np.uint8)  # positions 0, 1, 7, 8
    with pytest.raises(IndexOutOfRangeError) as caught:
        positions_from_gaps(gaps, 8, section="fc1.weight.gaps", offset=128)
    error = caught.value
    assert error.found == 8
    assert error.offset == 128
    assert error.section == "fc1.weight.gaps"
    assert "entry 3" in str(error)
    assert "position 8" in str(error)
    assert "8 elements" in str(error)
    np.testing.assert_array_equal(positions_from_gaps(gaps, 9), [0, 1, 7, 8])


def test_gaps_first_entry_past_end():
    with pytest.raises(IndexOutOfRangeError, match="entry 0 decodes to position 200"):
        positions_from_gaps(np.array([200], dtype=np.uint8), 100)


def test_gaps_more_entries_than_elements():
    with pytest.raises(IndexOutOfRangeError, match="entry 10 decodes to position 10"):
        positions_from_gaps(np.zeros(1_000_000, dtype=np.uint8), 10)


def test_gaps_out_of_stream_range():
    with pytest.raises(InvalidFieldError, match="gap -1"):
        positions_from_gaps(np.array([0, -1], dtype=np.int16), 100)
    with pytest.raises(InvalidFieldError, match="gap 65536"):
        positions_from_gaps(np.array([65536], dtype=np.uint32), 10**9)
    with pytest.raises(InvalidFieldError):
        positions_from_gaps(np.array([2**63], dtype=np.uint64), 10**9)
    with pytest.raises(TypeError):
        positions_from_gaps(np.array([1.0]), 10)


@pytest.mark.parametrize(
    "shape, expected",
    [((4, 5), (4, 5)), ((3, 2, 2), (3, 4)), ((7,), (7, 1)), ((), (1, 1)), ((0, 3), (0, 3))],
)
def test_matrix_shape(shape, expected):
    assert matrix_shape(shape) == expected


SHAPES = [(4, 5), (3, 2, 2), (7,), (), (0, 3), (3, 0), (1, 1, 1, 9)]


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("dtype", [np.float32, np.float16, ml_dtypes.bfloat16, np.float64])
def test_csr_coo_match_dense(shape, dtype):
    rng = np.random.default_rng(len(shape))
    size = math.prod(shape)
    positions = np.flatnonzero(rng.random(size) < 0.4)
    values = (rng.normal(size=positions.size) + 3.0).astype(dtype)

    dense = to_dense(positions, values, shape)
    assert dense.shape == shape
    assert dense.dtype == np.dtype(dtype)
    np.testing.assert_array_equal(dense.reshape(-1)[positions], values)
    assert np.count_nonzero(dense) == positions.size

    rows, columns = matrix_shape(shape)
    expected = dense.astype(np.float64).reshape(rows, columns)
    csr = to_csr(positions, values, shape)
    coo = to_coo(positions, values, shape)
    assert csr.shape == (rows, columns)
    assert coo.shape == (rows, columns)
    assert csr.nnz == positions.size
    assert csr.has_sorted_indices
    np.testing.assert_array_equal(csr.toarray().astype(np.float64), expected)
    np.testing.assert_array_equal(coo.toarray().astype(np.float64), expected)


def test_keep_drops_fillers():
    positions = np.array([0, 40])
    gaps, source = relative_index(positions, 3)
    decoded = positions_from_gaps(gaps, 50)
    codebook = np.array([0.0, 1.5, -2.0], dtype=np.float32)
    assignments = np.zeros(gaps.size, dtype=np.uint8)
    assignments[source >= 0] = [1, 2]
    values = codebook[assignments]
    keep = assignments != 0

    csr_all = to_csr(decoded, values, (5, 10))
    csr_kept = to_csr(decoded, values, (5, 10), keep=keep)
    assert csr_all.nnz == gaps.size
    assert csr_kept.nnz == 2
    np.testing.assert_array_equal(csr_all.toarray(), csr_kept.toarray())
    dense = to_dense(decoded, values, (5, 10), keep=keep)
    np.testing.assert_array_equal(dense, csr_kept.toarray())
    assert dense[0, 0] == 1.5
    assert dense[4, 0] == -2.0
    assert to_coo(decoded, values, (5, 10), keep=keep).nnz == 2


def test_to_dense_dtype_argument():
    dense = to_dense(np.array([1]), np.array([2.5]), (3,), np.float32)
    assert dense.dtype == np.float32
    np.testing.assert_array_equal(dense, [0.0, 2.5, 0.0])


def test_to_dense_rejects_bad_entries():
    with pytest.raises(IndexOutOfRangeError, match="position 6"):
        to_dense(np.array([1, 6]), np.ones(2), (2, 3))
    with pytest.raises(IndexOutOfRangeError):
        to_csr(np.array([6]), np.ones(1), (2, 3))
    with pytest.raises(InputError, match="strictly increasing"):
        to_dense(np.array([2, 1]), np.ones(2), (2, 3))
    with pytest.raises(InputError, match="one value per position"):
        to_dense(np.array([1, 2]), np.ones(3), (2, 3))
    with pytest.raises(InputError, match="one flag per position"):
        to_coo(np.array([1, 2]), np.ones(2), (2, 3), keep=np.ones(3, dtype=bool))
    with pytest.raises(TypeError):
        to_dense(np.array([1, 2]), np.ones(2), (2, 3), keep=np.ones(2))
    with pytest.raises(InputError, match="negative dimension"):
        to_dense(np.array([1]), np.ones(1), (2, -3))
