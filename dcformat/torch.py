"""PyTorch glue: tensor conversion, sparse CSR export, saving and loading state dicts.

This module imports torch at the top and so can only be imported where torch is installed.
The rest of the package imports it lazily, inside the functions that receive or return
torch tensors, so that dcformat works without torch.

Example::

    from dcformat.torch import save_model, load_state_dict

    report = save_model(model, "model.dcf")
    model.load_state_dict(load_state_dict("model.dcf"))
"""

from __future__ import annotations

import os
import warnings
from typing import Any, BinaryIO, Mapping

import ml_dtypes
import numpy as np
import torch

from .config import Config

__all__ = ["tensor_to_numpy", "numpy_to_tensor", "csr_to_torch", "save_model", "load_state_dict"]

_BFLOAT16 = np.dtype(ml_dtypes.bfloat16)


def tensor_to_numpy(tensor: torch.Tensor) -> np.ndarray:
    """Convert a torch tensor to a numpy array with the same dtype, shape and bits.

    The tensor is detached, moved to the CPU and made contiguous; sparse tensors are made
    dense. bfloat16 becomes ``ml_dtypes.bfloat16`` through a 16-bit integer view, so no value
    is rounded. For a tensor that is already a contiguous dense CPU tensor, the array shares
    its memory.

    Raises:
        TypeError: ``tensor`` is not a torch tensor, or its dtype has no numpy equivalent
            (quantized and float8 types, for example).
    """
    if not isinstance(tensor, torch.Tensor):
        raise TypeError(f"expected a torch.Tensor, not {type(tensor).__name__}")
    if tensor.is_quantized:
        raise TypeError(f"quantized tensors ({tensor.dtype}) are not supported; dequantize them first")
    if tensor.device.type == "meta":
        raise TypeError("a tensor on the meta device has no data to convert")
    detached = tensor.detach()
    if detached.layout != torch.strided:
        detached = detached.to_dense()
    detached = detached.cpu().resolve_conj().resolve_neg().contiguous()
    if detached.dtype == torch.bfloat16:
        return detached.view(torch.int16).numpy().view(_BFLOAT16)
    try:
        return detached.numpy()
    except TypeError:
        raise TypeError(f"torch dtype {detached.dtype} has no numpy equivalent") from None


def numpy_to_tensor(array: np.ndarray) -> torch.Tensor:
    """Convert a numpy array (``ml_dtypes.bfloat16`` included) to a CPU torch tensor.

    The tensor shares memory with ``array`` when the array is writable, C-contiguous and in
    native byte order; otherwise it is built from a copy. bfloat16 goes through a 16-bit
    integer view, so its bits are kept exactly.

    Raises:
        TypeError: ``array`` is not a numpy array, or its dtype has no torch equivalent.
    """
    if isinstance(array, np.generic):
        array = np.asarray(array)
    if not isinstance(array, np.ndarray):
        raise TypeError(f"expected a numpy array, not {type(array).__name__}")
    if not array.dtype.isnative:
        array = array.astype(array.dtype.newbyteorder("="))
    # torch.from_numpy rejects negative strides and warns on read-only arrays, so copy both.
    if not array.flags.c_contiguous or not array.flags.writeable:
        array = array.copy(order="C")
    if array.dtype == _BFLOAT16:
        return torch.from_numpy(array.view(np.int16)).view(torch.bfloat16)
    try:
        return torch.from_numpy(array)
    except TypeError:
        raise TypeError(f"numpy dtype {array.dtype} has no torch equivalent") from None


def csr_to_torch(matrix) -> torch.Tensor:
    """Convert a 2-D ``scipy.sparse`` CSR array or matrix to a ``torch`` sparse CSR tensor.

    The index arrays become int64, as torch expects; the values keep their dtype. A matrix
    with unsorted or duplicate column indices is first brought to canonical form (on a copy),
    and torch then checks the CSR invariants, so a malformed matrix raises instead of
    producing a tensor that reads out of bounds.
    """
    import scipy.sparse

    if not scipy.sparse.issparse(matrix) or matrix.format != "csr":
        raise TypeError(f"expected a scipy.sparse CSR array or matrix, not {type(matrix).__name__}")
    if not matrix.has_canonical_format:
        matrix = matrix.copy()
        matrix.sum_duplicates()
    crow_indices = torch.from_numpy(np.asarray(matrix.indptr, dtype=np.int64))
    col_indices = torch.from_numpy(np.asarray(matrix.indices, dtype=np.int64))
    values = numpy_to_tensor(np.asarray(matrix.data))
    # torch warns once per process that sparse CSR support is in beta. The caller requested
    # exactly that layout, so the warning carries no information here.
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Sparse CSR tensor support is in beta", category=UserWarning)
        return torch.sparse_csr_tensor(crow_indices, col_indices, values, size=tuple(matrix.shape),
                                       check_invariants=True)


def save_model(
    module: torch.nn.Module | Mapping[str, torch.Tensor],
    path: str | os.PathLike | BinaryIO,
    config: Config | None = None,
    *,
    metadata: Mapping[str, Any] | None = None,
):
    """Compress the state dict of ``module`` (or a state dict itself) into a DCF file.

    This is :func:`dcformat.save` applied to ``module.state_dict()``; see it for ``config``
    and ``metadata``. Tensors on other devices are copied to the CPU first. Two names that
    share storage (tied weights) are stored twice.

    Returns:
        The :class:`~dcformat.encoder.CompressionReport` of the run.
    """
    from . import save

    if isinstance(module, torch.nn.Module):
        state_dict = module.state_dict()
    elif isinstance(module, Mapping):
        state_dict = module
    else:
        raise TypeError(f"module must be a torch.nn.Module or a state dict, not {type(module).__name__}")
    return save(state_dict, path, config, metadata=metadata)


def load_state_dict(path, device: str | torch.device = "cpu") -> dict[str, torch.Tensor]:
    """Decode a DCF file into a state dict of torch tensors for ``module.load_state_dict``.

    ``path`` is anything :func:`dcformat.open` accepts (a path, ``bytes`` or a binary file
    object). Each tensor keeps its stored dtype and shape and is moved to ``device``.
    """
    from . import load

    return {name: numpy_to_tensor(array).to(device) for name, array in load(path).items()}


# The fine-tuning stages (masks that stay pruned, trained centroids, export) live in
# dcformat.training; they are re-exported here so that one import serves torch users.
from .training import (  # noqa: E402
    Mask,
    PolynomialSchedule,
    SharedWeight,
    StepSchedule,
    codebooks,
    export_model,
    masks,
    prune_model,
    share_model_weights,
)

__all__ += [
    "Mask",
    "SharedWeight",
    "StepSchedule",
    "PolynomialSchedule",
    "prune_model",
    "share_model_weights",
    "masks",
    "codebooks",
    "export_model",
]
