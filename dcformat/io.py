"""Model files in and out: safetensors, PyTorch state dicts, ``.npz`` and ``.dcf``.

:func:`read_tensors` and :func:`write_tensors` pick the format by the file's suffix:

| suffix | read | write | notes |
| --- | --- | --- | --- |
| ``.safetensors`` | yes | yes | through the ``safetensors`` library and its header checks |
| ``.pt``, ``.pth``, ``.bin`` | yes | ``.pt``, ``.pth`` | PyTorch state dicts; needs torch |
| ``.npz`` | yes | yes | numpy archives without pickled objects; no bfloat16 |
| ``.dcf`` | yes | no | decoded with :func:`dcformat.load`; write with :func:`dcformat.save` |

PyTorch files are read only with ``torch.load(..., weights_only=True)``, which restricts
unpickling to tensors and plain containers, so that reading a model file cannot run code
from it. Writes go to a temporary file in the destination folder that is renamed over the
destination once complete, so an error never leaves a half-written file behind.
"""

from __future__ import annotations

import logging
import os
import pickle
import tempfile
import zipfile
from pathlib import Path
from typing import Any, Callable, Mapping

import numpy as np

from .container import new_file_mode
from .errors import InputError

logger = logging.getLogger(__name__)

READ_SUFFIXES = (".safetensors", ".pt", ".pth", ".bin", ".npz", ".dcf")
WRITE_SUFFIXES = (".safetensors", ".pt", ".pth", ".npz")
TORCH_SUFFIXES = (".pt", ".pth", ".bin")

# Keys under which training scripts commonly nest a state dict in a checkpoint. A checkpoint
# is unwrapped only when exactly one of them contains a dict of tensors.
STATE_DICT_KEYS = ("state_dict", "model_state_dict", "model", "module", "net")

STATE_DICT_HINT = "save the weights alone with torch.save(model.state_dict(), path)"


def _is_bfloat16(dtype: np.dtype) -> bool:
    return dtype.name == "bfloat16"


def _suffix(path: Path) -> str:
    return path.suffix.lower()


def _import_torch(path: Path, purpose: str):
    try:
        import torch
    except ImportError:
        raise InputError(
            f"{path}: {purpose} needs PyTorch; install it (pip install 'dcformat[torch]') "
            "or convert the file to .safetensors or .npz"
        ) from None
    return torch


# --------------------------------------------------------------------------------------
# Reading


def read_tensors(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """Read every tensor of a model file into numpy arrays, in file order.

    The format follows the suffix (see the module docstring). bfloat16 tensors come back as
    ``ml_dtypes.bfloat16`` arrays with their exact bits.

    Raises:
        InputError: the file is missing, has an unsupported suffix, cannot be parsed, or is
            a PyTorch file that is not a state dict (for example a pickled whole module).
    """
    if not isinstance(path, (str, os.PathLike)):
        raise TypeError(f"path must be a str or os.PathLike, not {type(path).__name__}")
    path = Path(path)
    suffix = _suffix(path)
    if suffix not in READ_SUFFIXES:
        raise InputError(
            f"{path}: unsupported file type {suffix or '(no suffix)'!r}; "
            f"expected one of {', '.join(READ_SUFFIXES)}"
        )
    if not path.exists():
        raise InputError(f"{path}: file not found")
    if path.is_dir():
        raise InputError(f"{path}: is a directory, expected a model file")

    if suffix == ".safetensors":
        tensors = _read_safetensors(path)
    elif suffix in TORCH_SUFFIXES:
        tensors = _read_torch(path)
    elif suffix == ".npz":
        tensors = _read_npz(path)
    else:
        from . import load

        tensors = load(path)
    logger.debug("read %d tensors from %s", len(tensors), path)
    return tensors


def _read_safetensors(path: Path) -> dict[str, np.ndarray]:
    from safetensors import SafetensorError
    from safetensors.numpy import load_file

    try:
        return load_file(str(path))
    except SafetensorError as error:
        raise InputError(f"{path}: invalid safetensors file: {error}") from None
    except (TypeError, ValueError) as error:
        # safetensors 0.8 reads BF16 as ml_dtypes.bfloat16. Where the numpy API cannot
        # (older releases may not), torch reads it exactly.
        # NOTE: this fallback is tested only with a mocked failure of the numpy API.
        if "BF16" not in _safetensors_dtypes(path):
            raise InputError(f"{path}: cannot read as numpy arrays: {error}") from None
    return _read_safetensors_torch(path)


def _safetensors_dtypes(path: Path) -> set[str]:
    from safetensors import safe_open

    with safe_open(str(path), framework="numpy") as handle:
        return {handle.get_slice(name).get_dtype() for name in handle.keys()}


def _read_safetensors_torch(path: Path) -> dict[str, np.ndarray]:
    _import_torch(path, "reading bfloat16 tensors with this safetensors version")
    from safetensors.torch import load_file

    from .torch import tensor_to_numpy

    return {name: tensor_to_numpy(tensor) for name, tensor in load_file(str(path)).items()}


def _read_torch(path: Path) -> dict[str, np.ndarray]:
    torch = _import_torch(path, f"reading {path.suffix} files")
    try:
        # weights_only=True restricts unpickling to torch's allowlist of types, so a crafted
        # file cannot make the unpickler call open(), os.system() or any other function.
        loaded = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as error:
        first_line = str(error).strip().splitlines()[-1] if str(error).strip() else ""
        raise InputError(
            f"{path}: not a plain state dict; it contains Python objects that are not loaded "
            f"for safety ({first_line.strip()}); {STATE_DICT_HINT}"
        ) from None
    # torch.load reports damaged files through several exception types (KeyError for a
    # non-pickle file, EOFError for an empty one, RuntimeError for a broken zip archive).
    except (RuntimeError, EOFError, KeyError, ValueError, IndexError) as error:
        raise InputError(f"{path}: cannot read as a PyTorch file: {type(error).__name__}: {error}") from None

    state_dict = _unwrap_state_dict(loaded, path)
    from .torch import tensor_to_numpy

    arrays: dict[str, np.ndarray] = {}
    problems: list[str] = []
    for name, tensor in state_dict.items():
        try:
            arrays[name] = tensor_to_numpy(tensor)
        except TypeError as error:
            problems.append(f"{name!r}: {error}")
    if problems:
        raise InputError(f"{path}: cannot convert these tensors to numpy:\n  " + "\n  ".join(problems))
    return arrays


def _is_tensor_dict(value: Any, torch) -> bool:
    return (
        isinstance(value, Mapping)
        and len(value) > 0
        and all(isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in value.items())
    )


def _unwrap_state_dict(loaded: Any, path: Path) -> Mapping[str, Any]:
    """Return the state dict inside ``loaded``: itself, or one known wrapper key's value."""
    import torch

    if not isinstance(loaded, Mapping):
        raise InputError(
            f"{path}: expected a state dict (a dict of tensors), found {type(loaded).__name__}; "
            f"{STATE_DICT_HINT}"
        )
    if not loaded or _is_tensor_dict(loaded, torch):
        return loaded

    candidates = [key for key in STATE_DICT_KEYS if _is_tensor_dict(loaded.get(key), torch)]
    if len(candidates) == 1:
        logger.info("%s: using the state dict under key %r", path, candidates[0])
        return loaded[candidates[0]]
    if len(candidates) > 1:
        raise InputError(
            f"{path}: ambiguous checkpoint, several keys hold state dicts "
            f"({', '.join(repr(k) for k in candidates)}); save the one to compress with "
            "torch.save(checkpoint[KEY], path)"
        )
    not_tensors = [
        f"{key!r} ({type(value).__name__})" for key, value in loaded.items() if not isinstance(value, torch.Tensor)
    ]
    listed = ", ".join(not_tensors[:5]) + (" ..." if len(not_tensors) > 5 else "")
    raise InputError(
        f"{path}: expected a dict of tensors, but these values are not tensors: {listed}; {STATE_DICT_HINT}"
    )


def _read_npz(path: Path) -> dict[str, np.ndarray]:
    try:
        archive = np.load(path, allow_pickle=False)
        if not isinstance(archive, np.lib.npyio.NpzFile):
            raise InputError(f"{path}: expected a .npz archive, found a single .npy array")
        with archive:
            return {name: archive[name] for name in archive.files}
    except InputError:
        raise
    except ValueError as error:
        # numpy raises ValueError for object arrays (pickles) and for malformed headers.
        raise InputError(f"{path}: cannot read as .npz: {error}") from None
    except (zipfile.BadZipFile, EOFError) as error:
        raise InputError(f"{path}: cannot read as .npz: {error or 'empty or truncated file'}") from None


# --------------------------------------------------------------------------------------
# Writing


def check_write_suffix(path: str | os.PathLike) -> str:
    """Return the lower-case suffix of ``path``, raising InputError if it cannot be written."""
    suffix = _suffix(Path(path))
    if suffix not in WRITE_SUFFIXES:
        hint = "; write .dcf files with dcformat.save or the compress command" if suffix == ".dcf" else ""
        raise InputError(
            f"{path}: cannot write {suffix or 'files without a suffix'!r}; "
            f"expected one of {', '.join(WRITE_SUFFIXES)}{hint}"
        )
    return suffix


def write_tensors(tensors: Mapping[str, Any], path: str | os.PathLike) -> None:
    """Write numpy arrays (or torch tensors) to a model file chosen by ``path``'s suffix.

    The file is written to a temporary name in the same folder and renamed over ``path``
    when complete. bfloat16 arrays are stored as bfloat16 in ``.safetensors`` and, through
    torch, in ``.pt``. ``.npz`` has no bfloat16 type, so they are rejected there rather than
    silently widened.

    Raises:
        InputError: the suffix is not writable, or a tensor cannot be stored in the format.
    """
    if not isinstance(path, (str, os.PathLike)):
        raise TypeError(f"path must be a str or os.PathLike, not {type(path).__name__}")
    if not isinstance(tensors, Mapping):
        raise TypeError(f"tensors must be a mapping of names to arrays, not {type(tensors).__name__}")
    path = Path(path)
    suffix = check_write_suffix(path)
    arrays = _as_arrays(tensors)

    if suffix == ".safetensors":
        _write_atomic(path, lambda handle: _write_safetensors(arrays, handle, path))
    elif suffix == ".npz":
        bfloat16 = [name for name, array in arrays.items() if _is_bfloat16(array.dtype)]
        if bfloat16:
            raise InputError(
                f"{path}: .npz has no bfloat16 type ({', '.join(repr(n) for n in bfloat16[:5])}); "
                "write .safetensors or .pt instead"
            )
        _write_atomic(path, lambda handle: _write_npz(arrays, handle))
    else:
        torch = _import_torch(path, f"writing {suffix} files")
        from .torch import numpy_to_tensor

        state_dict = {name: numpy_to_tensor(array) for name, array in arrays.items()}
        _write_atomic(path, lambda handle: torch.save(state_dict, handle))
    logger.debug("wrote %d tensors to %s", len(arrays), path)


def _as_arrays(tensors: Mapping[str, Any]) -> dict[str, np.ndarray]:
    arrays: dict[str, np.ndarray] = {}
    problems: list[str] = []
    for name, value in tensors.items():
        if not isinstance(name, str) or not name:
            problems.append(f"{name!r}: names must be non-empty str")
        elif isinstance(value, np.ndarray):
            arrays[name] = value
        elif type(value).__module__.startswith("torch"):
            from .torch import tensor_to_numpy

            arrays[name] = tensor_to_numpy(value)
        else:
            problems.append(f"{name!r}: expected a numpy array or torch tensor, not {type(value).__name__}")
    if problems:
        raise InputError("cannot write these tensors:\n  " + "\n  ".join(problems))
    return arrays


def _write_safetensors(arrays: Mapping[str, np.ndarray], handle, path: Path) -> None:
    from safetensors.numpy import save

    # Not np.ascontiguousarray, which turns a 0-d array into shape (1,).
    contiguous = {
        name: array if array.flags.c_contiguous else array.copy(order="C") for name, array in arrays.items()
    }
    try:
        data = save(contiguous)
    except (TypeError, ValueError) as error:
        # As for reading, older safetensors releases may not serialise ml_dtypes.bfloat16.
        if not any(_is_bfloat16(array.dtype) for array in contiguous.values()):
            raise InputError(f"{path}: cannot write as safetensors: {error}") from None
        _import_torch(path, "writing bfloat16 tensors with this safetensors version")
        from safetensors.torch import save as save_torch

        from .torch import numpy_to_tensor

        data = save_torch({name: numpy_to_tensor(array) for name, array in contiguous.items()})
    handle.write(data)


def _write_npz(arrays: Mapping[str, np.ndarray], handle) -> None:
    # Written member by member instead of np.savez(**arrays), whose own keyword arguments
    # ("file", "allow_pickle") would collide with tensors of those names.
    for name in arrays:
        parts = name.replace("\\", "/").split("/")
        if name.startswith(("/", "\\")) or ".." in parts:
            raise InputError(
                f"tensor name {name!r} would be a path outside the archive in .npz (a leading '/' "
                "or a '..' part); rename the tensor or write .safetensors or .pt instead"
            )
    with zipfile.ZipFile(handle, mode="w", compression=zipfile.ZIP_STORED, allowZip64=True) as archive:
        for name, array in arrays.items():
            with archive.open(name + ".npy", mode="w", force_zip64=True) as member:
                np.lib.format.write_array(member, np.asanyarray(array), allow_pickle=False)


def _write_atomic(path: Path, write: Callable[[Any], None]) -> None:
    """Call ``write(handle)`` on a temporary file next to ``path``, then rename it over ``path``."""
    destination = path.resolve()
    handle_fd, temp_name = tempfile.mkstemp(prefix=f".{destination.name}.", suffix=".tmp", dir=destination.parent)
    try:
        with os.fdopen(handle_fd, "wb") as handle:
            write(handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(temp_name, new_file_mode())
        os.replace(temp_name, destination)
    except BaseException:
        try:
            os.unlink(temp_name)
        except FileNotFoundError:
            pass
        raise


__all__ = [
    "read_tensors",
    "write_tensors",
    "check_write_suffix",
    "READ_SUFFIXES",
    "WRITE_SUFFIXES",
]
