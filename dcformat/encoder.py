"""The encoder: turns named tensors into a DCF file, choosing an encoding per tensor.

For each tensor the encoder resolves its settings (:mod:`dcformat.config`), prunes it by
magnitude, clusters the kept weights with 1-D k-means and then stores whichever of
``sparse-shared``, ``shared``, ``uniform`` and ``raw`` is smallest, unless the settings fix
the encoding. ``uniform`` enters that comparison at a step chosen so that its squared error
is no larger than the k-means error, so the choice never trades accuracy for size.

Tensors are encoded and written one at a time, so memory stays bounded by the largest
tensor rather than the model.
"""

from __future__ import annotations

import hashlib
import logging
import math
import os
import warnings
from dataclasses import asdict, dataclass, field
from typing import Any, BinaryIO, Callable, Mapping

import numpy as np

from . import __version__, encodings, huffman, prune, quantize, streams
from .config import Config, TensorSettings
from .constants import (
    DTYPE_NAMES,
    FLOAT_DTYPES,
    NUMPY_DTYPES,
    SectionKind,
    StreamForm,
    dtype_code,
)
from .container import ContainerWriter, TensorEntry
from .errors import InputError

logger = logging.getLogger(__name__)

STREAM_KINDS = (SectionKind.ASSIGNMENTS, SectionKind.GAPS, SectionKind.LEVELS)
FORMS = {"auto": None, "packed": StreamForm.PACKED, "huffman": StreamForm.HUFFMAN}
# Gap widths tried for index_bits = "auto".
AUTO_INDEX_BITS = tuple(range(2, 9))
# Bisection steps when matching the uniform step to the k-means error; 2^-30 relative precision.
UNIFORM_SEARCH_STEPS = 30
# Metadata key of the per-tensor content hashes: tensor name -> tensor_sha256() of its decoded
# values. `dcformat compare` uses them to tell changed tensors without decoding either file.
HASHES_KEY = "tensor_sha256"


def tensor_sha256(array: np.ndarray) -> str:
    """Return the SHA-256 (hex) of ``array``'s elements in C order and little-endian bytes.

    Shape and dtype are not hashed; compare them separately. For a decoded tensor this is the
    hash of exactly the bytes :meth:`dcformat.DCFReader.get` returns.
    """
    array = np.asarray(array)
    if array.dtype.byteorder == ">":
        array = array.astype(array.dtype.newbyteorder("<"))
    return hashlib.sha256(np.ascontiguousarray(array).tobytes()).hexdigest()


@dataclass
class StreamReport:
    """One integer stream as stored: form, size, and the order-0 entropy bound of its symbols."""

    kind: str
    form: str
    count: int
    width: int
    stored_bytes: int
    payload_bytes: int
    entropy_bits: float

    @property
    def bits_per_symbol(self) -> float:
        return 8 * self.stored_bytes / self.count if self.count else 0.0


@dataclass
class TensorReport:
    """Record of what the encoder did to one tensor, for audits and the CLI."""

    name: str
    shape: tuple[int, ...]
    dtype: str
    encoding: str
    original_bytes: int
    stored_bytes: int
    size: int
    nnz: int
    sparsity: float
    bits: int | None = None
    index_bits: int | None = None
    n_clusters: int | None = None
    entries: int | None = None
    fillers: int | None = None
    mse: float = 0.0
    streams: list[StreamReport] = field(default_factory=list)
    sections: dict[str, int] = field(default_factory=dict)
    settings: dict[str, Any] = field(default_factory=dict)
    note: str = ""
    sha256: str = ""  # tensor_sha256() of the tensor as a reader decodes it

    @property
    def bits_per_weight(self) -> float:
        return 8 * self.stored_bytes / self.size if self.size else 0.0

    def as_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["shape"] = list(self.shape)
        data["bits_per_weight"] = self.bits_per_weight
        return data


@dataclass
class CompressionReport:
    """Totals of one compression run and a :class:`TensorReport` per tensor."""

    tensors: list[TensorReport]
    file_bytes: int
    original_bytes: int

    @property
    def ratio(self) -> float:
        return self.original_bytes / self.file_bytes if self.file_bytes else math.inf

    @property
    def float32_bytes(self) -> int:
        """Size of every tensor as float32, the baseline Deep Compression reports against."""
        return sum(4 * t.size for t in self.tensors)

    def as_dict(self) -> dict[str, Any]:
        return {
            "file_bytes": self.file_bytes,
            "original_bytes": self.original_bytes,
            "ratio": self.ratio,
            "tensors": [t.as_dict() for t in self.tensors],
        }


@dataclass
class EncodedTensor:
    entry: TensorEntry
    report: TensorReport
    reconstruction: np.ndarray | None


# --------------------------------------------------------------------------------------
# Input checks


def check_tensors(tensors: Mapping[str, Any]) -> dict[str, np.ndarray]:
    """Validate names and arrays of ``tensors`` up front and return numpy arrays.

    Every problem is collected and raised once, naming each offending key.
    """
    if not isinstance(tensors, Mapping):
        raise TypeError(f"tensors must be a mapping of names to arrays, not {type(tensors).__name__}")
    arrays: dict[str, np.ndarray] = {}
    problems: list[str] = []
    for name, value in tensors.items():
        if not isinstance(name, str):
            problems.append(f"{name!r}: names must be str, not {type(name).__name__}")
            continue
        if not name:
            problems.append("'': tensor names must not be empty")
            continue
        if name in arrays:
            # A Mapping whose items() repeats a key; a dict cannot, but a custom one can.
            problems.append(f"{name!r}: the name appears more than once")
            continue
        encoded_size = len(name.encode("utf-8", errors="surrogatepass"))
        if encoded_size > 65535:
            problems.append(f"{name[:40]!r}...: the name is {encoded_size} bytes of UTF-8; "
                            "at most 65535 are allowed")
            continue
        try:
            name.encode("utf-8")
        except UnicodeEncodeError:
            problems.append(f"{name!r}: the name is not valid Unicode (lone surrogate)")
            continue
        try:
            array = _as_numpy(value)
        except TypeError as error:  # a torch tensor without a numpy dtype (meta, quantized, float8)
            problems.append(f"{name!r}: {error}")
            continue
        if array is None:
            problems.append(f"{name!r}: expected a numpy array or torch tensor, not {type(value).__name__}")
            continue
        try:
            dtype_code(array.dtype)
        except TypeError as error:
            problems.append(f"{name!r}: {error}")
            continue
        if array.ndim > 32:
            problems.append(f"{name!r}: {array.ndim} dimensions, at most 32 are supported")
            continue
        arrays[name] = array
    if problems:
        raise InputError("cannot compress these tensors:\n  " + "\n  ".join(problems))
    return arrays


def _as_numpy(value: Any) -> np.ndarray | None:
    if isinstance(value, np.ndarray):
        return value
    if isinstance(value, np.generic):
        return np.asarray(value)
    module = type(value).__module__
    if module.startswith("torch"):
        from .torch import tensor_to_numpy

        return tensor_to_numpy(value)
    return None


# --------------------------------------------------------------------------------------
# Per-tensor encoding


def _stored_bytes(entry: TensorEntry) -> int:
    """Bytes of the tensor's sections (and its factors'), as ``inspect`` counts them."""
    own = sum(len(s.data) for s in entry.sections)
    return own + sum(_stored_bytes(f) for f in entry.factors)


def _stream_reports(entry: TensorEntry, symbols: Mapping[int, np.ndarray]) -> list[StreamReport]:
    reports = []
    for section in entry.sections:
        if section.kind not in STREAM_KINDS:
            continue
        info = streams.read_stream_info(section.data, section=SectionKind(section.kind).name.lower())
        values = np.asarray(symbols[section.kind]).reshape(-1)
        counts = np.bincount(values.astype(np.int64), minlength=1) if values.size else np.zeros(1, np.int64)
        reports.append(StreamReport(
            kind=SectionKind(section.kind).name.lower(),
            form=StreamForm(info.form).name.lower(),
            count=info.count,
            width=info.width,
            stored_bytes=len(section.data),
            payload_bytes=info.payload_bytes,
            entropy_bits=float(huffman.entropy_bits(counts)),
        ))
    return reports


def _trim_codebook(shared: quantize.SharedWeights) -> tuple[np.ndarray, np.ndarray, int | None]:
    """Drop codebook entries no weight uses (k-means can leave some empty) and renumber."""
    flat = shared.assignments.reshape(-1)
    used = np.bincount(flat, minlength=len(shared.codebook)) > 0
    if shared.zero_slot is not None:
        used[shared.zero_slot] = True
    if used.all():
        return shared.codebook, shared.assignments, shared.zero_slot
    remap = np.cumsum(used) - 1
    codebook = shared.codebook[used]
    assignments = remap[shared.assignments].astype(shared.assignments.dtype)
    zero_slot = None if shared.zero_slot is None else int(remap[shared.zero_slot])
    return codebook, assignments, zero_slot


def _uniform_levels(values: np.ndarray, step: float, bits_cap: int = 16):
    """Round ``values`` to multiples of ``step``; return (levels, zero_point, bits) or None."""
    q = np.rint(values / step)
    low = int(q.min()) if q.size else 0
    high = int(q.max()) if q.size else 0
    span = high - low
    bits = max(1, span.bit_length())
    if bits > bits_cap:
        return None
    levels = (q - low).astype(np.uint16 if bits > 8 else np.uint8)
    return levels, -low, bits


def _uniform_reconstruct(levels: np.ndarray, zero_points: np.ndarray, scales: np.ndarray,
                         channels: int) -> np.ndarray:
    grid = levels.reshape(channels, -1).astype(np.int64) - zero_points.astype(np.int64)[:, None]
    return grid.astype(np.float32) * scales.astype(np.float32)[:, None]


def _quantize_uniform(values: np.ndarray, step_of: Callable[[np.ndarray], float], per_channel: bool):
    """Quantise ``values`` (float64) with a step per tensor or per row; None if out of range."""
    rows = values.reshape(values.shape[0], -1) if per_channel and values.ndim else values.reshape(1, -1)
    all_levels, zero_points, scales, bits = [], [], [], 1
    for row in rows:
        step = float(np.float32(step_of(row)))
        if not step > 0 or not math.isfinite(step):
            step = 1.0
        result = _uniform_levels(row, step)
        if result is None:
            return None
        levels, zero_point, row_bits = result
        bits = max(bits, row_bits)
        all_levels.append(levels.astype(np.uint16))
        zero_points.append(zero_point)
        scales.append(step)
    levels = np.concatenate(all_levels) if all_levels else np.zeros(0, np.uint16)
    levels = levels.astype(np.uint16 if bits > 8 else np.uint8)
    return levels, np.array(zero_points, np.int32), np.array(scales, np.float32), bits


def _uniform_for_error(values: np.ndarray, target_sse: float, per_channel: bool):
    """Find the coarsest per-tensor step whose squared error stays within ``target_sse``."""
    scale = float(np.std(values)) or 1.0
    low, high = 1e-6 * scale, 8.0 * scale
    best = None
    for _ in range(UNIFORM_SEARCH_STEPS):
        step = math.sqrt(low * high)
        result = _quantize_uniform(values, lambda row: step, per_channel)
        if result is not None:
            levels, zero_points, scales, bits = result
            recon = _uniform_reconstruct(levels, zero_points, scales, len(scales))
            sse = float(np.sum((recon.reshape(-1).astype(np.float64) - values.reshape(-1)) ** 2))
            if sse <= target_sse:
                best = result
                low = step
                continue
        high = step
    return best


def nonfinite_count(array: np.ndarray) -> int:
    """Number of NaN and infinite elements of a float array (0 for other dtypes)."""
    if dtype_code(array.dtype) not in FLOAT_DTYPES or array.size == 0:
        return 0
    values = array.astype(np.float32) if array.dtype == NUMPY_DTYPES[2] else array
    return int(array.size - np.count_nonzero(np.isfinite(values)))


def _nonfinite_error(name: str, count: int) -> InputError:
    return InputError(f"tensor {name!r} has {count} NaN or infinite values; "
                      "pass nonfinite='raw' to store such tensors losslessly")


def encode_tensor(name: str, array: np.ndarray, settings: TensorSettings, *,
                  mask: np.ndarray | None = None, nonfinite: str = "raw",
                  keep_reconstruction: bool = False) -> EncodedTensor:
    """Encode one tensor with ``settings``; ``mask`` (True = kept) replaces per-tensor pruning."""
    array = np.asarray(array)
    dtype = array.dtype
    code = dtype_code(dtype)
    form = FORMS[settings.stream]
    size = int(array.size)
    original_bytes = array.nbytes
    report = TensorReport(
        name=name, shape=tuple(array.shape), dtype=DTYPE_NAMES[code], encoding="raw",
        original_bytes=original_bytes, stored_bytes=0, size=size,
        nnz=int(np.count_nonzero(array)) if size else 0, sparsity=0.0,
    )

    def finish(entry: TensorEntry, recon: np.ndarray | None) -> EncodedTensor:
        report.stored_bytes = _stored_bytes(entry)
        report.sections = {SectionKind(s.kind).name.lower(): len(s.data) for s in entry.sections}
        if recon is not None and code in FLOAT_DTYPES and size and report.encoding != "raw":
            diff = recon.astype(np.float64).reshape(-1) - array.astype(np.float64).reshape(-1)
            report.mse = float(np.mean(diff * diff))
        report.sparsity = 1.0 - (report.nnz / size) if size else 0.0
        if recon is not None:
            report.sha256 = tensor_sha256(recon)
        return EncodedTensor(entry, report, recon if keep_reconstruction else None)

    def raw(reason: str = "") -> EncodedTensor:
        report.encoding = "raw"
        report.note = reason
        entry = encodings.encode_raw(name, array)
        return finish(entry, array)

    is_float = code in FLOAT_DTYPES
    if settings.encoding == "raw" or not is_float or size == 0 or array.ndim == 0:
        return raw()

    count = nonfinite_count(array)
    if count:
        if nonfinite == "error":
            raise _nonfinite_error(name, count)
        message = f"tensor {name!r} has {count} NaN or infinite values; storing it raw and lossless"
        warnings.warn(message, stacklevel=3)
        return raw(f"{count} non-finite values")

    if settings.encoding in ("float16", "bfloat16"):
        target = np.float16 if settings.encoding == "float16" else NUMPY_DTYPES[2]
        cast = array.astype(target)
        entry = encodings.encode_raw(name, cast)
        report.encoding = settings.encoding
        report.dtype = settings.encoding
        report.nnz = int(np.count_nonzero(cast))
        return finish(entry, cast)

    if settings.encoding == "lowrank":
        return _encode_lowrank(name, array, settings, report, finish)

    # Pruning: a mask from the caller (global scope), else per tensor by the settings.
    values = array.astype(np.float64)
    if mask is None and settings.prune is not False and (settings.sparsity or settings.quality):
        mask = prune.magnitude_mask(values, sparsity=settings.sparsity, quality=settings.quality)
    if mask is not None:
        values = np.where(mask, values, 0.0)
    report.nnz = int(np.count_nonzero(values))
    if report.nnz == 0 and np.count_nonzero(array):
        warnings.warn(f"tensor {name!r}: pruning removed every weight; lower its sparsity or quality",
                      stacklevel=3)

    if settings.encoding == "uniform":
        return _encode_uniform_fixed(name, array, values, settings, report, finish, form)

    bits = settings.bits
    # Cluster in the tensor's own dtype so the codebook is rounded to it (exact for the pruned
    # values, which all came from that dtype).
    shared = quantize.share_weights(
        values.astype(dtype), bits, init=settings.init, seed=settings.seed,
        max_iter=settings.max_iter, codebook_dtype=np.float16 if settings.codebook_dtype == "float16" else np.float32,
    )
    codebook, assignments, zero_slot = _trim_codebook(shared)
    recon = codebook.astype(dtype)[assignments]
    report.bits, report.n_clusters = bits, len(codebook)
    report.settings = {
        "bits": bits, "init": settings.init, "seed": settings.seed, "iterations": shared.iterations,
        "max_iter": settings.max_iter, "codebook_dtype": settings.codebook_dtype,
    }
    if settings.sparsity is not None:
        report.settings["target_sparsity"] = settings.sparsity
    if settings.quality is not None:
        report.settings["quality"] = settings.quality

    candidates: list[tuple[str, TensorEntry, np.ndarray, dict]] = []
    if settings.encoding in ("auto", "sparse-shared") and zero_slot is not None:
        widths = AUTO_INDEX_BITS if settings.index_bits == "auto" else (settings.index_bits,)
        entries = [
            encodings.encode_sparse_shared(name, dtype, array.shape, codebook, assignments, bits,
                                           width, zero_slot, stream_form=form)
            for width in widths
        ]
        index_bits, entry = min(zip(widths, entries), key=lambda pair: _stored_bytes(pair[1]))
        candidates.append(("sparse-shared", entry, recon, {"index_bits": index_bits}))
    if settings.encoding in ("auto", "shared") or (settings.encoding == "sparse-shared" and zero_slot is None):
        entry = encodings.encode_shared(name, dtype, array.shape, codebook, assignments, bits, stream_form=form)
        candidates.append(("shared", entry, recon, {}))
    if settings.encoding == "auto":
        target_sse = float(np.sum((recon.astype(np.float64).reshape(-1) - values.reshape(-1)) ** 2))
        uniform = _uniform_for_error(values, target_sse, settings.per_channel)
        if uniform is not None:
            levels, zero_points, scales, ubits = uniform
            entry = encodings.encode_uniform(name, dtype, array.shape, levels, ubits, scales, zero_points,
                                             per_channel=settings.per_channel and len(scales) > 1,
                                             stream_form=form)
            urecon = _uniform_reconstruct(levels, zero_points, scales, len(scales)).astype(dtype).reshape(array.shape)
            candidates.append(("uniform", entry, urecon, {"bits": ubits, "step": float(scales.max())}))
        raw_entry = encodings.encode_raw(name, array)
        candidates.append(("raw", raw_entry, array, {}))

    # Smallest wins; on a tie the earlier candidate (raw is last, but lossless) is kept,
    # except that raw wins any tie against a lossy encoding.
    chosen = min(candidates, key=lambda c: (_stored_bytes(c[1]), c[0] != "raw"))
    kind, entry, recon, extra = chosen
    report.encoding = kind
    if kind == "raw":
        report.bits = report.n_clusters = None
        report.nnz = int(np.count_nonzero(array))
        report.note = "raw was smallest"
        return finish(entry, array)
    if kind == "uniform":
        report.bits, report.n_clusters = extra["bits"], None
        report.settings = {"bits": extra["bits"], "step": extra["step"], "per_channel": settings.per_channel}
    if kind == "sparse-shared":
        report.index_bits = extra["index_bits"]
        report.settings["index_bits"] = extra["index_bits"]
        report.entries = entry.symbols[SectionKind.GAPS].size
        report.fillers = report.entries - int(np.count_nonzero(entry.symbols[SectionKind.ASSIGNMENTS] != zero_slot))
    report.settings["encoding"] = kind
    report.streams = _stream_reports(entry, entry.symbols)
    return finish(entry, recon)


def _encode_uniform_fixed(name, array, values, settings, report, finish, form) -> EncodedTensor:
    """Uniform quantisation with a fixed step (in standard deviations) or a fixed bit width."""
    per_channel = settings.per_channel and array.ndim >= 1
    if settings.uniform_step is not None:
        k = settings.uniform_step

        def step_of(row):
            return k * (float(np.std(row)) or 1.0)
    else:
        levels_count = (1 << settings.bits) - 1

        def step_of(row):
            span = float(max(row.max(), 0.0) - min(row.min(), 0.0)) if row.size else 0.0
            return span / levels_count if span > 0 else 1.0

    result = _quantize_uniform(values, step_of, per_channel)
    if result is None:
        raise InputError(f"tensor {name!r}: uniform step {settings.uniform_step} needs more than 16 bits of levels")
    levels, zero_points, scales, bits = result
    entry = encodings.encode_uniform(name, array.dtype, array.shape, levels, bits, scales, zero_points,
                                     per_channel=per_channel, stream_form=form)
    recon = _uniform_reconstruct(levels, zero_points, scales, len(scales)).astype(array.dtype).reshape(array.shape)
    report.encoding = "uniform"
    report.bits = bits
    report.nnz = int(np.count_nonzero(recon))
    report.settings = {"encoding": "uniform", "bits": bits, "per_channel": per_channel,
                       "step": float(scales.max())}
    report.streams = _stream_reports(entry, entry.symbols)
    return finish(entry, recon)


def _encode_lowrank(name, array, settings, report, finish) -> EncodedTensor:
    """Truncated SVD: left = U_r * S_r, right = V_r^T, each stored raw as float32."""
    if array.ndim < 2:
        raise InputError(f"tensor {name!r}: lowrank needs at least 2 dimensions, found shape {array.shape}")
    matrix = array.astype(np.float64).reshape(array.shape[0], -1)
    rank = settings.rank or max(1, min(matrix.shape) // 4)
    rank = min(rank, min(matrix.shape))
    u, s, vt = np.linalg.svd(matrix, full_matrices=False)
    left = (u[:, :rank] * s[:rank]).astype(np.float32)
    right = np.ascontiguousarray(vt[:rank]).astype(np.float32)
    left_entry = encodings.encode_raw(f"{name}::lowrank.left", left)
    right_entry = encodings.encode_raw(f"{name}::lowrank.right", right)
    entry = encodings.encode_lowrank(name, array.dtype, array.shape, left_entry, right_entry, rank)
    recon = (left.astype(np.float64) @ right.astype(np.float64)).astype(array.dtype).reshape(array.shape)
    report.encoding = "lowrank"
    report.nnz = int(np.count_nonzero(recon))
    report.settings = {"encoding": "lowrank", "rank": rank}
    return finish(entry, recon)


# --------------------------------------------------------------------------------------
# Whole-model compression


def compute_global_masks(arrays: Mapping[str, np.ndarray], config: Config,
                         settings: Mapping[str, TensorSettings]) -> dict[str, np.ndarray]:
    """Compute one magnitude threshold across the tensors pruned by the default criterion.

    This is ``scope="global"``.

    A tensor whose rules set its own ``sparsity`` or ``quality`` is left out here and pruned
    on its own by :func:`encode_tensor`, so "later rules win" applies in both scopes.
    """
    sparsity, quality = config.pruning_criterion()
    selected = {
        name: arrays[name] for name, s in settings.items()
        if s.encoding not in ("raw", "float16", "bfloat16", "lowrank") and s.prune is not False
        and (s.sparsity, s.quality) == (sparsity, quality) and (sparsity or quality) and arrays[name].size
        and dtype_code(arrays[name].dtype) in FLOAT_DTYPES and not nonfinite_count(arrays[name])
    }
    if not selected:
        return {}
    result = prune.prune(
        {k: v.astype(np.float32) for k, v in selected.items()}, sparsity=sparsity, quality=quality,
        scope="global", include=tuple(selected),
    )
    return dict(result.masks)


def compress(
    tensors: Mapping[str, Any],
    target: str | os.PathLike | BinaryIO,
    config: Config | None = None,
    *,
    metadata: Mapping[str, Any] | None = None,
    keep_reconstruction: bool = False,
    progress: Callable[[str, int, int], None] | None = None,
) -> tuple[CompressionReport, dict[str, np.ndarray]]:
    """Compress ``tensors`` into a DCF file at ``target``; return the report and reconstructions.

    The reconstructions (the encoder's own view of each decoded tensor) are returned only
    with ``keep_reconstruction``; otherwise the dict is empty. With ``config.record_settings``
    (the default) the metadata stores each tensor's settings and, under :data:`HASHES_KEY`,
    its :func:`tensor_sha256`.
    """
    config = config or Config()
    if not isinstance(config, Config):
        raise TypeError(f"config must be a dcformat.Config, not {type(config).__name__}")
    arrays = check_tensors(tensors)
    if metadata is not None and not isinstance(metadata, Mapping):
        raise TypeError(f"metadata must be a mapping, not {type(metadata).__name__}")
    settings = {
        name: config.settings_for(name, tuple(a.shape), dtype_code(a.dtype) in FLOAT_DTYPES)
        for name, a in arrays.items()
    }
    if config.nonfinite == "error":
        for name, array in arrays.items():
            count = nonfinite_count(array)
            if count:
                raise _nonfinite_error(name, count)
    for pattern in config.unmatched_patterns(arrays):
        warnings.warn(f"rule pattern {pattern!r} matches no tensor name; check it for a typo", stacklevel=3)
    masks = compute_global_masks(arrays, config, settings) if config.scope == "global" else {}

    reports: list[TensorReport] = []
    reconstructions: dict[str, np.ndarray] = {}
    writer = ContainerWriter(target, alignment_log2=config.alignment_log2)
    try:
        for index, (name, array) in enumerate(arrays.items()):
            if progress is not None:
                progress(name, index, len(arrays))
            encoded = encode_tensor(
                name, array, settings[name], mask=masks.get(name), nonfinite=config.nonfinite,
                keep_reconstruction=keep_reconstruction,
            )
            writer.add_tensor(encoded.entry)
            reports.append(encoded.report)
            if keep_reconstruction:
                reconstructions[name] = encoded.reconstruction
            logger.info("%s: %s, %d -> %d bytes", name, encoded.report.encoding,
                        encoded.report.original_bytes, encoded.report.stored_bytes)
        document: dict[str, Any] = {"encoder": {"name": "dcformat", "version": __version__}}
        if config.record_settings:
            document["settings"] = {r.name: r.settings for r in reports if r.settings}
            # NOTE: a lowrank hash is of this machine's float64 product. Another reader may
            # differ in the last bit (spec section 9.5), so it would see the tensor as changed.
            document[HASHES_KEY] = {r.name: r.sha256 for r in reports}
        if metadata:
            document["user"] = dict(metadata)
        file_bytes = writer.close(document)
    except BaseException:
        writer.abort()
        raise
    if progress is not None:
        progress("", len(arrays), len(arrays))
    report = CompressionReport(reports, file_bytes, sum(r.original_bytes for r in reports))
    return report, reconstructions

