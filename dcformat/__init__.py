"""dcformat: Deep Compression for trained neural networks, in a file format of its own.

The public API is four functions and the lazy reader they return::

    import dcformat

    report = dcformat.save({"fc1.weight": w, "fc1.bias": b}, "model.dcf")
    tensors = dcformat.load("model.dcf")            # dict of numpy arrays
    with dcformat.open("model.dcf") as f:            # lazy: decodes by name
        w = f.get("fc1.weight")
        csr = f.get_sparse("fc1.weight")             # scipy.sparse.csr_array

``save`` prunes, clusters and entropy-codes each weight tensor according to a
:class:`Config` (Deep Compression's defaults when none is given) and stores biases and
buffers losslessly. The byte layout is specified in ``spec/FORMAT.md``.
"""

from __future__ import annotations

import os
from typing import Any, BinaryIO, Mapping

__version__ = "0.1.0"

from .config import Config, Rule, TensorSettings  # noqa: E402
from .constants import DEFAULT_MAX_TENSOR_BYTES  # noqa: E402
from .errors import DCFormatError  # noqa: E402
from .reader import DCFReader  # noqa: E402

__all__ = [
    "save",
    "load",
    "open",
    "Config",
    "Rule",
    "TensorSettings",
    "DCFReader",
    "DCFormatError",
    "__version__",
]


def save(
    tensors: Mapping[str, Any],
    path: str | os.PathLike | BinaryIO,
    config: Config | None = None,
    *,
    metadata: Mapping[str, Any] | None = None,
):
    """Compress ``tensors`` (names to numpy arrays or torch tensors) into a DCF file.

    Args:
        tensors: the tensors to store; every name and array is checked before anything is
            written, and all problems are reported at once.
        path: destination path, written atomically (temporary file, fsync, rename), or a
            binary file object written in place.
        config: per-tensor settings; ``None`` uses Deep Compression's defaults (see
            :class:`Config`).
        metadata: free keys stored under ``"user"`` in the file's metadata, for example the
            accuracy measured; values must be strings, finite numbers, booleans, lists or
            dicts.

    Returns:
        A :class:`~dcformat.encoder.CompressionReport` with per-tensor sizes and settings.

    Example:
        >>> report = dcformat.save(state_dict, "model.dcf")  # doctest: +SKIP
        >>> print(f"{report.ratio:.1f}x")  # doctest: +SKIP
    """
    from .encoder import compress

    report, _ = compress(tensors, path, config, metadata=metadata)
    return report


def open(source, *, max_tensor_bytes: int = DEFAULT_MAX_TENSOR_BYTES) -> DCFReader:
    """Open a DCF file lazily from a path (memory-mapped), ``bytes`` or a binary file object.

    Only the preamble, footer and directory are read; each tensor is decoded on
    :meth:`~DCFReader.get`. ``max_tensor_bytes`` caps the decoded size of one tensor
    (4 GiB by default) so that a small file cannot make the reader allocate gigabytes.
    """
    return DCFReader(source, max_tensor_bytes=max_tensor_bytes)


def load(source, *, max_tensor_bytes: int = DEFAULT_MAX_TENSOR_BYTES) -> dict:
    """Decode every tensor of a DCF file into a dict of numpy arrays, in file order."""
    with DCFReader(source, max_tensor_bytes=max_tensor_bytes) as reader:
        return {name: reader.get(name) for name in reader.keys()}
