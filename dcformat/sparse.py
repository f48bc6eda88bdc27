"""The relative-index sparse layout, and conversions of its entries to dense and SciPy arrays.

A sparse tensor is flattened in row-major order and only its stored entries are listed, in
increasing position. Entry i carries a gap ``g_i`` in ``0 .. 2**index_bits - 1``, the number
of positions skipped before it: ``pos_i = pos_(i-1) + g_i + 1`` with ``pos_(-1) = -1``.
Positions never listed hold zero.

When ``D`` zeros separate two kept weights and ``D`` does not fit in ``index_bits``, the
encoder inserts ``D // 2**index_bits`` filler entries before the kept weight. A filler has the
largest gap, ``2**index_bits - 1``, so each one advances the position by ``2**index_bits``,
and its value is the codebook's zero slot, which decodes to 0.0. The kept weight then gets
the remaining gap ``D - fillers * 2**index_bits``. Nothing follows the last kept weight.
Deep Compression (Han, Mao and Dally, ICLR 2016) stores its sparse layers this way, with 8
index bits for convolutional layers and 5 for fully connected ones.

For the 2-D SciPy views, rows are the first dimension and columns the product of the others.
A 1-D tensor of n elements is an (n, 1) matrix and a 0-d tensor a (1, 1) matrix.
"""

from __future__ import annotations

import math
import numbers

import numpy as np

from .constants import MAX_STREAM_WIDTH
from .errors import ConfigError, IndexOutOfRangeError, InputError, InvalidFieldError

__all__ = [
    "matrix_shape",
    "positions_from_gaps",
    "relative_index",
    "relative_index_length",
    "to_coo",
    "to_csr",
    "to_dense",
]

MAX_GAP = (1 << MAX_STREAM_WIDTH) - 1


def relative_index(positions: np.ndarray, index_bits: int) -> tuple[np.ndarray, np.ndarray]:
    """Encode sorted flat positions as gaps, inserting filler entries where a gap overflows.

    ``positions`` is a 1-D integer array, non-negative and strictly increasing. Returns
    ``(gaps, source)``: ``gaps`` has dtype uint8 for ``index_bits <= 8`` and uint16 otherwise,
    and ``source[i]`` is the index into ``positions`` of entry i, or -1 for a filler.

    Raises :class:`ConfigError` for ``index_bits`` outside 1..16, :class:`InputError` for
    positions that are negative or not strictly increasing, and ``TypeError`` for a
    non-integer array.
    """
    positions = _check_positions(positions)
    index_bits = _check_index_bits(index_bits)
    gap_dtype = np.uint8 if index_bits <= 8 else np.uint16

    zeros_before = np.diff(positions, prepend=-1) - 1
    fillers = zeros_before >> index_bits
    # Entry index of each stored position: its own fillers and all earlier entries precede it.
    entry = np.cumsum(fillers + 1) - 1
    count = int(entry[-1]) + 1 if entry.size else 0

    gaps = np.full(count, (1 << index_bits) - 1, dtype=gap_dtype)
    gaps[entry] = zeros_before & ((1 << index_bits) - 1)
    source = np.full(count, -1, dtype=np.int64)
    source[entry] = np.arange(positions.size, dtype=np.int64)
    return gaps, source


def relative_index_length(positions: np.ndarray, index_bits: int) -> int:
    """Return the number of entries, fillers included, that :func:`relative_index` emits.

    An encoder can call this for each candidate ``index_bits`` without building the gaps.
    """
    positions = _check_positions(positions)
    index_bits = _check_index_bits(index_bits)
    zeros_before = np.diff(positions, prepend=-1) - 1
    return positions.size + int(np.sum(zeros_before >> index_bits))


def positions_from_gaps(
    gaps: np.ndarray, size: int, *, section: str = "gaps", offset: int | None = None
) -> np.ndarray:
    """Decode gaps into int64 flat positions and check them against the tensor size.

    Every position is checked before the caller writes anything. ``size`` is the number of
    elements of the tensor; ``section`` and ``offset`` (the byte offset of the gap stream)
    only label errors. Checking each gap against ``2**index_bits`` is the stream decoder's
    job.

    Raises :class:`IndexOutOfRangeError`, naming the entry, its position and the size, when
    an entry decodes to a position at or past ``size``, and :class:`InvalidFieldError` when a
    gap is negative or larger than 65535.
    """
    if not isinstance(gaps, np.ndarray) or gaps.dtype.kind not in "iu":
        raise TypeError(f"gaps must be a numpy integer array, not {_describe(gaps)}")
    if gaps.ndim != 1:
        raise InvalidFieldError(
            f"{section}: gaps must be 1-D, got shape {gaps.shape}",
            section=section,
            field="gaps",
            offset=offset,
            found=gaps.shape,
        )
    size = _check_size(size)
    if gaps.size == 0:
        return np.zeros(0, dtype=np.int64)

    # Entry i lies at position i or later, so entry ``size`` is out of range whatever the
    # gaps. Decoding at most ``size + 1`` entries still finds the first one out of range.
    head = gaps[: size + 1]
    if head.dtype.itemsize > 2 or head.dtype.kind == "i":
        low, high = int(head.min()), int(head.max())
        if low < 0 or high > MAX_GAP:
            raise InvalidFieldError(
                f"{section}: gap {low if low < 0 else high} is out of range; "
                f"expected 0..{MAX_GAP}",
                section=section,
                field="gaps",
                offset=offset,
                expected=f"0..{MAX_GAP}",
                found=low if low < 0 else high,
            )
    # In place, so that decoding keeps one int64 array per entry rather than four.
    positions = head.astype(np.int64)
    positions += 1
    np.cumsum(positions, out=positions)
    positions -= 1

    if positions[-1] >= size:
        entry = int(np.searchsorted(positions, size, side="left"))
        position = int(positions[entry])
        where = f" (gap stream at offset {offset})" if offset is not None else ""
        raise IndexOutOfRangeError(
            f"{section}: gap entry {entry} decodes to position {position}, past the end of "
            f"a tensor of {size} elements{where}",
            section=section,
            field="gaps",
            offset=offset,
            expected=f"position < {size}",
            found=position,
        )
    return positions


def matrix_shape(shape: tuple[int, ...]) -> tuple[int, int]:
    """Return the (rows, columns) of the 2-D view of a tensor of ``shape``."""
    shape = _check_shape(shape)
    if len(shape) == 0:
        return 1, 1
    return shape[0], math.prod(shape[1:])


def to_dense(
    positions: np.ndarray,
    values: np.ndarray,
    shape: tuple[int, ...],
    dtype=None,
    *,
    keep: np.ndarray | None = None,
) -> np.ndarray:
    """Scatter entries into a new zero array of ``shape`` and ``dtype`` (default: values').

    ``positions`` are flat row-major positions, strictly increasing, as returned by
    :func:`positions_from_gaps`. ``keep`` is an optional bool mask over the entries; entries
    where it is False are skipped. Filler entries hold 0.0, so writing them is harmless here.

    Raises :class:`IndexOutOfRangeError` for a position outside the tensor and
    :class:`InputError` for mismatched lengths or positions that are not strictly increasing.
    """
    positions, values = _select_entries(positions, values, keep)
    shape = _check_shape(shape)
    size = math.prod(shape)
    _check_in_range(positions, size)
    dense = np.zeros(size, dtype=values.dtype if dtype is None else np.dtype(dtype))
    dense[positions] = values
    return dense.reshape(shape)


def to_csr(positions, values, shape, *, keep=None):
    """Return the entries as a ``scipy.sparse.csr_array`` over the 2-D view of ``shape``.

    Every entry becomes a stored element, so pass ``keep`` (for example
    ``assignments != zero_slot``) to drop fillers and other explicit zeros. float16 and
    bfloat16 values are converted to float32, which SciPy supports and which represents
    them exactly. Arguments and errors are those of :func:`to_dense`.
    """
    from scipy.sparse import csr_array

    rows, columns, row, column, data = _coordinates(positions, values, shape, keep)
    indptr = np.searchsorted(row, np.arange(rows + 1, dtype=np.int64), side="left")
    return csr_array((data, column, indptr), shape=(rows, columns))


def to_coo(positions, values, shape, *, keep=None):
    """Return the entries as a ``scipy.sparse.coo_array`` over the 2-D view of ``shape``.

    Same arguments, conversions and errors as :func:`to_csr`.
    """
    from scipy.sparse import coo_array

    rows, columns, row, column, data = _coordinates(positions, values, shape, keep)
    return coo_array((data, (row, column)), shape=(rows, columns))


# ---------------------------------------------------------------------------------------------
# Helpers


def _coordinates(positions, values, shape, keep):
    positions, values = _select_entries(positions, values, keep)
    rows, columns = matrix_shape(shape)
    _check_in_range(positions, rows * columns)
    if values.dtype.itemsize == 2 and values.dtype.kind in "fV":
        # float16 or bfloat16 (which numpy reports as kind "V"): SciPy rejects both.
        values = values.astype(np.float32)
    if columns == 0:
        row = column = positions  # both empty, since the tensor has no elements
    else:
        row, column = np.divmod(positions, columns)
    return rows, columns, row, column, values


def _select_entries(positions, values, keep):
    positions = _check_positions(positions)
    if not isinstance(values, np.ndarray):
        raise TypeError(f"values must be a numpy array, not {_describe(values)}")
    if values.ndim != 1 or values.size != positions.size:
        raise InputError(
            f"values must be 1-D with one value per position ({positions.size}), "
            f"got shape {values.shape}"
        )
    if keep is not None:
        if not isinstance(keep, np.ndarray) or keep.dtype != np.bool_:
            raise TypeError(f"keep must be a numpy bool array, not {_describe(keep)}")
        if keep.shape != positions.shape:
            raise InputError(
                f"keep must have one flag per position ({positions.size}), got shape "
                f"{keep.shape}"
            )
        positions, values = positions[keep], values[keep]
    return positions, values


def _check_positions(positions) -> np.ndarray:
    if not isinstance(positions, np.ndarray) or positions.dtype.kind not in "iu":
        raise TypeError(f"positions must be a numpy integer array, not {_describe(positions)}")
    if positions.ndim != 1:
        raise InputError(f"positions must be 1-D, got shape {positions.shape}")
    int64_max = np.iinfo(np.int64).max
    if positions.dtype == np.uint64 and positions.size and positions.max() > int64_max:
        raise InputError("positions must be below 2**63")
    positions = positions.astype(np.int64, copy=False)
    if positions.size == 0:
        return positions
    if positions[0] < 0:
        raise InputError(f"positions must be non-negative, found {int(positions[0])}")
    step = np.diff(positions)
    if step.size and step.min() <= 0:
        entry = int(np.argmax(step <= 0)) + 1
        raise InputError(
            f"positions must be strictly increasing; entry {entry} is {int(positions[entry])} "
            f"after {int(positions[entry - 1])}"
        )
    return positions


def _check_in_range(positions: np.ndarray, size: int) -> None:
    if positions.size and positions[-1] >= size:
        entry = int(np.searchsorted(positions, size, side="left"))
        raise IndexOutOfRangeError(
            f"position {int(positions[entry])} of entry {entry} is past the end of a tensor "
            f"of {size} elements",
            field="positions",
            expected=f"position < {size}",
            found=int(positions[entry]),
        )


def _check_index_bits(index_bits) -> int:
    if isinstance(index_bits, bool) or not isinstance(index_bits, numbers.Integral):
        raise TypeError(f"index_bits must be an int, not {_describe(index_bits)}")
    if not 1 <= index_bits <= MAX_STREAM_WIDTH:
        raise ConfigError(
            f"index_bits={index_bits} is out of range; expected 1..{MAX_STREAM_WIDTH}",
            field="index_bits",
            expected=f"1..{MAX_STREAM_WIDTH}",
            found=int(index_bits),
        )
    return int(index_bits)


def _check_size(size) -> int:
    if isinstance(size, bool) or not isinstance(size, numbers.Integral):
        raise TypeError(f"size must be an int, not {_describe(size)}")
    if size < 0:
        raise InputError(f"size must be non-negative, found {size}")
    return int(size)


def _check_shape(shape) -> tuple[int, ...]:
    if isinstance(shape, numbers.Integral) and not isinstance(shape, bool):
        shape = (shape,)
    try:
        dims = tuple(shape)
    except TypeError:
        raise TypeError(f"shape must be a tuple of ints, not {_describe(shape)}") from None
    for dim in dims:
        if isinstance(dim, bool) or not isinstance(dim, numbers.Integral):
            raise TypeError(f"shape must be a tuple of ints, found {_describe(dim)}")
        if dim < 0:
            raise InputError(f"shape {dims} has a negative dimension")
    return tuple(int(dim) for dim in dims)


def _describe(value) -> str:
    if isinstance(value, np.ndarray):
        return f"an array of dtype {value.dtype}"
    return type(value).__name__
