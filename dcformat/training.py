"""Fine-tuning for Deep Compression in PyTorch: masks that stay pruned, trained shared weights.

Deep Compression (Han, Mao and Dally, ICLR 2016) retrains the network after each lossy
stage: after pruning with the pruned weights held at zero, and after weight sharing with the
assignments held fixed while the shared values (centroids) are trained. This module provides
both on any ``torch.nn.Module``, and writes the result to a ``.dcf`` file without clustering
again.

Masks
    :func:`prune_model` computes keep-masks with :mod:`dcformat.prune` itself (the numpy
    functions, run on a copy of the weights, so the ``quality`` and ``sparsity`` rules are
    exactly the ones :func:`dcformat.save` uses) and applies them with
    ``torch.nn.utils.parametrize``: the module's weight becomes
    ``torch.where(mask, original, 0)``. A pruned weight is therefore exactly 0.0 in every
    forward pass and gets a zero gradient, whatever an optimiser does to ``original``
    (momentum and weight decay included). The mask is a buffer, so it is part of the
    ``state_dict``. Pruning again replaces the mask in place, so a module wrapped in
    ``DistributedDataParallel`` keeps working. :class:`StepSchedule` and
    :class:`PolynomialSchedule` set when to prune and how much.

Shared weights
    :func:`share_model_weights` clusters each chosen weight with
    :func:`dcformat.quantize.share_weights` and replaces it by ``codebook[assignments]``
    (:class:`SharedWeight`). The codebook entries other than the zero slot form one
    ``nn.Parameter``, ``centroids``; the assignments are a fixed ``int64`` buffer. The
    backward pass of the gather that builds the weight adds up the gradients of all weights
    assigned to a centroid, which is the centroid gradient of Deep Compression, so an
    ordinary optimiser step trains the codebook. Pruned weights map to the zero slot, a constant 0.0 that is
    not trained.

Export
    :func:`export_model` stores each shared weight as its trained codebook and assignments
    (``sparse-shared``, or ``shared`` where that is smaller, with the gap width that makes the
    tensor smallest) and every other tensor raw and lossless. ``dcformat.load`` then returns
    exactly the weights the module computes.

Distributed training
    Register the masks (or share the weights) before wrapping the module in
    ``DistributedDataParallel``: the wrapper then all-reduces the gradients of ``original``
    and of ``centroids`` like those of any parameter. Sharing replaces parameters, so wrap the
    module again after :func:`share_model_weights`. When ``torch.distributed`` is
    initialised, :func:`prune_model` and :func:`share_model_weights` broadcast the new masks,
    codebooks and assignments from rank 0, so every rank must call them.
"""

from __future__ import annotations

import logging
import math
import numbers
import os
import warnings
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, BinaryIO

import ml_dtypes
import numpy as np
import torch
from torch import nn
from torch.nn.utils import parametrize

from . import __version__, encodings, prune, quantize
from .constants import DEFAULT_ALIGNMENT_LOG2, DTYPE_NAMES, SectionKind, dtype_code
from .container import ContainerWriter, TensorEntry
from .encoder import CompressionReport, TensorReport, _stored_bytes, _stream_reports
from .errors import ConfigError, InputError

__all__ = [
    "CRITERIA",
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

logger = logging.getLogger(__name__)

CRITERIA = ("sparsity", "quality")
# Gap widths tried per tensor by export_model, as the encoder does for index_bits="auto".
EXPORT_INDEX_BITS = tuple(range(2, 9))

_BFLOAT16 = np.dtype(ml_dtypes.bfloat16)


# --------------------------------------------------------------------------------------
# Parametrizations


class Mask(nn.Module):
    """Parametrization that zeroes the pruned weights: ``torch.where(mask, weight, 0)``.

    ``mask`` is a bool buffer of the weight's shape, True where the weight is kept.
    """

    def __init__(self, mask: torch.Tensor) -> None:
        super().__init__()
        if not isinstance(mask, torch.Tensor):
            raise TypeError(f"mask must be a torch.Tensor, not {type(mask).__name__}")
        self.register_buffer("mask", mask.detach().to(torch.bool).clone())

    def forward(self, weight: torch.Tensor) -> torch.Tensor:
        # torch.where rather than a product: 0 * inf would be NaN, and a product keeps -0.0.
        return torch.where(self.mask, weight, weight.new_zeros(()))

    def extra_repr(self) -> str:
        kept = int(self.mask.sum())
        return f"shape={tuple(self.mask.shape)}, kept={kept}/{self.mask.numel()}"


class SharedWeight(nn.Module):
    """Parametrization that computes a weight as ``codebook[assignments]``.

    ``centroids`` (an ``nn.Parameter``) contains every codebook entry except the zero slot;
    :attr:`codebook` inserts the constant 0.0 at ``zero_slot`` (``None`` when the weight had
    no zeros). ``assignments`` is an ``int64`` buffer of the weight's shape. ``bits`` is the
    width the codebook was sized for (at most ``2**bits`` entries). The original tensor that
    ``parametrize`` passes to :meth:`forward` is ignored.
    """

    def __init__(self, codebook: torch.Tensor, assignments: torch.Tensor, zero_slot: int | None,
                 bits: int) -> None:
        super().__init__()
        if not isinstance(codebook, torch.Tensor) or not isinstance(assignments, torch.Tensor):
            raise TypeError("codebook and assignments must be torch tensors")
        if codebook.ndim != 1 or not codebook.is_floating_point():
            raise ConfigError(
                f"codebook must be a 1-D float tensor, found shape {tuple(codebook.shape)} "
                f"and dtype {codebook.dtype}",
                field="codebook", found=str(codebook.dtype),
            )
        if assignments.is_floating_point() or assignments.is_complex() or assignments.dtype == torch.bool:
            raise TypeError(f"assignments must have an integer dtype, not {assignments.dtype}")
        size = codebook.numel()
        if assignments.numel() and (int(assignments.min()) < 0 or int(assignments.max()) >= size):
            raise ConfigError(
                f"assignments must lie in 0..{size - 1} (the codebook has {size} entries), "
                f"found {int(assignments.min())}..{int(assignments.max())}",
                field="assignments", expected=f"0..{size - 1}",
                found=f"{int(assignments.min())}..{int(assignments.max())}",
            )
        if zero_slot is not None:
            if not 0 <= zero_slot < size or float(codebook[zero_slot]) != 0.0:
                raise ConfigError(
                    f"zero_slot={zero_slot} must index a 0.0 entry of the codebook",
                    field="zero_slot", found=zero_slot,
                )
        if not 1 <= bits <= 16 or size > 1 << bits:
            raise ConfigError(
                f"bits={bits} cannot index {size} codebook entries; expected 1..16 with "
                f"2**bits >= {size}", field="bits", found=bits,
            )
        self.zero_slot = zero_slot
        self.bits = bits
        trainable = codebook.detach().clone()
        if zero_slot is not None:
            trainable = torch.cat([trainable[:zero_slot], trainable[zero_slot + 1 :]])
        self.centroids = nn.Parameter(trainable)
        self.register_buffer("assignments", assignments.detach().to(torch.int64).clone())

    @property
    def codebook(self) -> torch.Tensor:
        """The full codebook, zero slot included, differentiable in ``centroids``."""
        if self.zero_slot is None:
            return self.centroids
        zero = self.centroids.new_zeros(1)
        return torch.cat([self.centroids[: self.zero_slot], zero, self.centroids[self.zero_slot :]])

    @property
    def mask(self) -> torch.Tensor:
        """True where a weight is not assigned to the zero slot."""
        if self.zero_slot is None:
            return torch.ones_like(self.assignments, dtype=torch.bool)
        return self.assignments != self.zero_slot

    def forward(self, original: torch.Tensor) -> torch.Tensor:
        # The backward pass of gather is a scatter_add, so each centroid receives the sum of
        # the gradients of the weights assigned to it. On the CPU it is several times faster
        # than indexing (codebook[assignments]), whose backward is index_put with accumulate.
        flat = self.codebook.gather(0, self.assignments.reshape(-1))
        return flat.reshape(self.assignments.shape)

    def extra_repr(self) -> str:
        return (f"entries={self.centroids.numel() + (self.zero_slot is not None)}, bits={self.bits}, "
                f"zero_slot={self.zero_slot}, shape={tuple(self.assignments.shape)}")


# --------------------------------------------------------------------------------------
# Schedules


def _check_amount(value, criterion: str, field: str) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{field} must be a real number, not {type(value).__name__}")
    value = float(value)
    if criterion == "sparsity" and not 0.0 <= value < 1.0:
        raise ConfigError(
            f"{field}={value!r} is out of range; a sparsity is a fraction in [0, 1)",
            field=field, expected="[0, 1)", found=value,
        )
    if criterion == "quality" and not (math.isfinite(value) and value >= 0.0):
        raise ConfigError(
            f"{field}={value!r} is out of range; a quality is a finite number >= 0",
            field=field, expected=">= 0", found=value,
        )
    return value


def _check_amounts(value, criterion: str, field: str) -> float | dict[str, float]:
    """Validate a float or a mapping of tensor names to floats; return a float or a dict copy."""
    if isinstance(value, Mapping):
        result = {}
        for name, amount in value.items():
            if not isinstance(name, str):
                raise TypeError(f"{field} keys must be tensor names (str), not {type(name).__name__}")
            result[name] = _check_amount(amount, criterion, f"{field}[{name!r}]")
        return result
    return _check_amount(value, criterion, field)


def _check_criterion(criterion) -> str:
    if criterion not in CRITERIA:
        raise ConfigError(
            f"criterion={criterion!r} is not supported; expected one of {', '.join(CRITERIA)}",
            field="criterion", expected=CRITERIA, found=criterion,
        )
    return criterion


def _check_step(value, field: str, minimum: int = 0) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{field} must be an int, not {type(value).__name__}")
    if value < minimum:
        raise ConfigError(f"{field}={value} is out of range; expected >= {minimum}",
                          field=field, expected=f">= {minimum}", found=int(value))
    return int(value)


@dataclass(frozen=True, eq=False)
class StepSchedule:
    """Fixed steps of iterative pruning: prune to ``amounts[i]`` at step ``steps[i]``.

    ``criterion`` sets the meaning of an amount: a target ``"sparsity"`` (fraction pruned) or a
    ``"quality"`` (threshold in standard deviations), as in :func:`dcformat.prune.prune`.
    An amount is a float for every selected tensor or a dict of tensor names to floats.
    ``steps`` default to 0, 1, 2, ...; a step is whatever unit the training loop counts
    (epochs, rounds or iterations).

    Example: ``StepSchedule((0.5, 0.7, 0.9), steps=(0, 4, 8))`` prunes to 50 % at step 0,
    70 % at step 4 and 90 % at step 8.
    """

    amounts: tuple
    steps: tuple[int, ...] = ()
    criterion: str = "sparsity"

    def __post_init__(self) -> None:
        criterion = _check_criterion(self.criterion)
        if isinstance(self.amounts, (str, bytes, Mapping)) or not isinstance(self.amounts, Iterable):
            raise TypeError(f"amounts must be a sequence, not {type(self.amounts).__name__}")
        amounts = tuple(_check_amounts(a, criterion, f"amounts[{i}]") for i, a in enumerate(self.amounts))
        if not amounts:
            raise ConfigError("amounts must not be empty", field="amounts", found=0)
        steps = tuple(self.steps) if self.steps else tuple(range(len(amounts)))
        steps = tuple(_check_step(s, f"steps[{i}]") for i, s in enumerate(steps))
        if len(steps) != len(amounts):
            raise ConfigError(
                f"steps has {len(steps)} entries but amounts has {len(amounts)}",
                field="steps", expected=len(amounts), found=len(steps),
            )
        if any(b <= a for a, b in zip(steps, steps[1:])):
            raise ConfigError(f"steps must increase strictly, found {list(steps)}",
                              field="steps", found=list(steps))
        object.__setattr__(self, "amounts", amounts)
        object.__setattr__(self, "steps", steps)

    @property
    def pruning_steps(self) -> tuple[int, ...]:
        """The steps at which :meth:`amount_at` returns an amount."""
        return self.steps

    def amount_at(self, step: int) -> float | dict[str, float] | None:
        """Return the amount to prune to at ``step``, or None when ``step`` prunes nothing."""
        if step in self.steps:
            return self.amounts[self.steps.index(step)]
        return None

    def apply(self, model: nn.Module, step: int, **options) -> prune.PruneResult | None:
        """Prune ``model`` when ``step`` is a pruning step; ``options`` go to :func:`prune_model`."""
        amount = self.amount_at(step)
        if amount is None:
            return None
        return prune_model(model, **{self.criterion: amount}, **options)

    def as_dict(self) -> dict[str, Any]:
        """Describe the schedule as JSON-compatible data, for metadata."""
        return {"kind": "step", "criterion": self.criterion, "steps": list(self.steps),
                "amounts": [a if isinstance(a, float) else dict(a) for a in self.amounts]}


@dataclass(frozen=True, eq=False)
class PolynomialSchedule:
    """Gradual pruning (Zhu and Gupta, "To prune, or not to prune", 2017).

    At steps ``begin``, ``begin + frequency``, ... up to and including ``end`` the amount is
    ``final + (initial - final) * (1 - (step - begin) / (end - begin)) ** power``, so it rises
    fast at first and levels off at ``final`` (power 3 is the paper's cubic schedule).
    ``end`` is a pruning step even when ``end - begin`` is not a multiple of ``frequency``.
    ``final`` and ``initial`` are floats or dicts of tensor names to floats. A float
    ``initial`` applies to every name of a dict ``final``. ``criterion`` is as in
    :class:`StepSchedule`.
    """

    final: Any
    end: int
    begin: int = 0
    frequency: int = 1
    initial: Any = 0.0
    power: int = 3
    criterion: str = "sparsity"

    def __post_init__(self) -> None:
        criterion = _check_criterion(self.criterion)
        final = _check_amounts(self.final, criterion, "final")
        initial = _check_amounts(self.initial, criterion, "initial")
        if isinstance(initial, dict) and (not isinstance(final, dict) or initial.keys() != final.keys()):
            raise ConfigError("a dict initial needs a dict final with the same tensor names",
                              field="initial", found=sorted(initial))
        begin = _check_step(self.begin, "begin")
        end = _check_step(self.end, "end", minimum=begin)
        _check_step(self.frequency, "frequency", minimum=1)
        _check_step(self.power, "power", minimum=1)
        object.__setattr__(self, "final", final)
        object.__setattr__(self, "initial", initial)
        object.__setattr__(self, "end", end)

    @property
    def pruning_steps(self) -> tuple[int, ...]:
        steps = list(range(self.begin, self.end + 1, self.frequency))
        if steps[-1] != self.end:
            steps.append(self.end)
        return tuple(steps)

    def _value(self, initial: float, final: float, step: int) -> float:
        # The ends are returned as given, free of rounding, so the last step hits final exactly.
        if step == self.end:
            return final
        if step == self.begin:
            return initial
        progress = (step - self.begin) / (self.end - self.begin)
        return final + (initial - final) * (1.0 - progress) ** self.power

    def amount_at(self, step: int) -> float | dict[str, float] | None:
        """Return the amount to prune to at ``step``, or None when ``step`` prunes nothing."""
        if step not in self.pruning_steps:
            return None
        if isinstance(self.final, dict):
            return {
                name: self._value(self.initial[name] if isinstance(self.initial, dict) else self.initial,
                                  final, step)
                for name, final in self.final.items()
            }
        return self._value(self.initial, self.final, step)

    def apply(self, model: nn.Module, step: int, **options) -> prune.PruneResult | None:
        """Prune ``model`` when ``step`` is a pruning step; ``options`` go to :func:`prune_model`."""
        amount = self.amount_at(step)
        if amount is None:
            return None
        return prune_model(model, **{self.criterion: amount}, **options)

    def as_dict(self) -> dict[str, Any]:
        """Describe the schedule as JSON-compatible data, for metadata."""
        return {"kind": "polynomial", "criterion": self.criterion, "begin": self.begin, "end": self.end,
                "frequency": self.frequency, "power": self.power,
                "initial": self.initial if isinstance(self.initial, float) else dict(self.initial),
                "final": self.final if isinstance(self.final, float) else dict(self.final)}


# --------------------------------------------------------------------------------------
# Module access


def _unwrap(model) -> nn.Module:
    """Return the module inside a DistributedDataParallel or DataParallel wrapper."""
    if isinstance(model, (nn.parallel.DistributedDataParallel, nn.DataParallel)):
        return model.module
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, not {type(model).__name__}")
    return model


def _parametrizations(module: nn.Module, attr: str):
    if parametrize.is_parametrized(module, attr):
        return module.parametrizations[attr]
    return ()


def _mask_of(module: nn.Module, attr: str) -> Mask | None:
    return next((p for p in _parametrizations(module, attr) if isinstance(p, Mask)), None)


def _shared_of(module: nn.Module, attr: str) -> SharedWeight | None:
    return next((p for p in _parametrizations(module, attr) if isinstance(p, SharedWeight)), None)


def _named_weights(model: nn.Module) -> dict[str, tuple[nn.Module, str]]:
    """Map each parameter's plain name (``fc1.weight``, parametrized or not) to its owner."""
    result = {}
    for path, module in model.named_modules():
        parts = path.split(".") if path else []
        if "parametrizations" in parts:
            continue
        prefix = path + "." if path else ""
        for attr, value in module._parameters.items():
            if value is not None:
                result[prefix + attr] = (module, attr)
        if parametrize.is_parametrized(module):
            for attr in module.parametrizations.keys():
                result[prefix + attr] = (module, attr)
    return result


def _to_numpy(tensor: torch.Tensor) -> np.ndarray:
    """Copy a tensor to a numpy array of the same dtype and bits (bfloat16 included)."""
    detached = tensor.detach().cpu().contiguous()
    if detached.dtype == torch.bfloat16:
        return detached.view(torch.int16).numpy().copy().view(_BFLOAT16)
    try:
        return detached.numpy().copy()
    except TypeError:
        raise TypeError(f"torch dtype {detached.dtype} has no numpy equivalent") from None


def _numpy_dtype(dtype: torch.dtype) -> np.dtype:
    return _to_numpy(torch.empty(0, dtype=dtype)).dtype


def _float_weights(model: nn.Module, *, skip_shared: bool) -> dict[str, np.ndarray]:
    """Numpy copies of the effective floating-point weights, by plain name."""
    weights = {}
    for name, (module, attr) in _named_weights(model).items():
        if skip_shared and _shared_of(module, attr) is not None:
            continue
        with torch.no_grad():
            value = getattr(module, attr)
        if value.is_floating_point():
            weights[name] = _to_numpy(value)
    return weights


def _distributed(broadcast: bool | None) -> bool:
    ready = torch.distributed.is_available() and torch.distributed.is_initialized()
    if broadcast and not ready:
        raise ConfigError("broadcast=True needs an initialised torch.distributed process group",
                          field="broadcast", found=True)
    return ready if broadcast is None else bool(broadcast)


def _broadcast(tensor: torch.Tensor) -> torch.Tensor:
    """Return rank 0's copy of ``tensor`` (bool tensors travel as uint8, which gloo supports)."""
    payload = tensor.to(torch.uint8) if tensor.dtype == torch.bool else tensor.clone()
    torch.distributed.broadcast(payload, src=0)
    return payload.to(torch.bool) if tensor.dtype == torch.bool else payload


# --------------------------------------------------------------------------------------
# Pruning


def prune_model(
    model: nn.Module,
    *,
    sparsity: float | Mapping[str, float] | None = None,
    quality: float | Mapping[str, float] | None = None,
    scope: str = "tensor",
    include: str | Iterable[str] = (),
    exclude: str | Iterable[str] = (),
    broadcast: bool | None = None,
) -> prune.PruneResult:
    """Prune ``model``'s weights by magnitude and hold the pruned ones at zero from now on.

    Give exactly one of ``sparsity`` and ``quality``, as in :func:`dcformat.prune.prune`.
    A float applies to every selected tensor. ``scope`` is ``"tensor"`` or ``"global"``, and
    ``include`` and ``exclude`` are name patterns; by default every floating-point parameter
    with two or more dimensions is selected. A dict of parameter names (``"fc1.weight"``) to
    floats prunes exactly those tensors, each with its own amount. The rules run on the
    current effective weights, in which earlier pruned weights are zero, so a pruned weight
    stays pruned. Weights already shared by :func:`share_model_weights` are not selected.

    The first call registers a :class:`Mask` parametrization on each pruned tensor and
    zeroes the pruned entries of ``original``; later calls replace the mask in place. With
    ``broadcast`` (default: whenever ``torch.distributed`` is initialised) the masks of
    rank 0 are used on every rank. Returns the :class:`~dcformat.prune.PruneResult` of the
    masks applied.
    """
    module = _unwrap(model)
    per_tensor = isinstance(sparsity, Mapping) or isinstance(quality, Mapping)
    weights = _float_weights(module, skip_shared=True)

    # Masks from dcformat.prune, on numpy copies of the effective weights.
    if not per_tensor:
        result = prune.prune(weights, sparsity=sparsity, quality=quality, scope=scope,
                             include=include, exclude=exclude)
    else:
        result = _prune_per_tensor(module, weights, sparsity, quality, scope, include, exclude)

    masks_by_name = {name: torch.from_numpy(np.ascontiguousarray(mask)) for name, mask in result.masks.items()}
    if _distributed(broadcast):
        received = {name: _broadcast(mask) for name, mask in masks_by_name.items()}
        changed = [name for name in received if not torch.equal(received[name], masks_by_name[name])]
        if changed:
            logger.warning("rank %d: masks of %s differ from rank 0; using rank 0's",
                           torch.distributed.get_rank(), ", ".join(changed))
            rank_zero_masks = {name: mask.numpy() for name, mask in received.items()}
            result = prune.PruneResult(
                masks=rank_zero_masks,
                sparsity={name: 1.0 - float(m.mean()) if m.size else 0.0 for name, m in rank_zero_masks.items()},
                thresholds=result.thresholds,
            )
        masks_by_name = received

    owners = _named_weights(module)
    for name, mask in masks_by_name.items():
        owner, attr = owners[name]
        _apply_mask(owner, attr, mask)
        logger.info("pruned %s to sparsity %.4f (threshold %.6g)", name, result.sparsity[name],
                    result.thresholds[name])
    return result


def _prune_per_tensor(module, weights, sparsity, quality, scope, include, exclude) -> prune.PruneResult:
    if (sparsity is None) == (quality is None):
        raise ConfigError("give exactly one of sparsity and quality", field="sparsity")
    if scope != "tensor":
        raise ConfigError(f"scope={scope!r} needs one amount for all tensors; a dict of amounts "
                          "prunes each tensor on its own (scope='tensor')", field="scope", found=scope)
    if include or exclude:
        raise ConfigError("include and exclude select tensors for one amount; a dict of amounts "
                          "selects its own keys", field="include")
    criterion, amounts = ("sparsity", sparsity) if sparsity is not None else ("quality", quality)
    owners = _named_weights(module)
    masks, achieved, thresholds = {}, {}, {}
    for name, amount in amounts.items():
        if name not in weights:
            if name in owners and _shared_of(*owners[name]) is not None:
                reason = "it is already shared; prune before share_model_weights"
            elif name in owners:
                reason = "it is not a floating-point tensor"
            else:
                reason = "the model has no parameter of that name"
            raise ConfigError(f"cannot prune {name!r}: {reason}", field=criterion, found=name)
        single = prune.prune({name: weights[name]}, include=[name], **{criterion: amount})
        masks.update(single.masks)
        achieved.update(single.sparsity)
        thresholds.update(single.thresholds)
    return prune.PruneResult(masks=masks, sparsity=achieved, thresholds=thresholds)


def _apply_mask(owner: nn.Module, attr: str, mask: torch.Tensor) -> None:
    existing = _mask_of(owner, attr)
    with torch.no_grad():
        if existing is not None:
            existing.mask.copy_(mask.to(existing.mask.device))
            mask = existing.mask
        else:
            device = getattr(owner, attr).device
            parametrize.register_parametrization(owner, attr, Mask(mask.to(device)))
            mask = owner.parametrizations[attr][-1].mask
        # Zeroing the pruned entries of original as well means that removing the mask with
        # leave_parametrized=False does not bring back the old values, unless momentum has
        # moved them since. Only a mask that is the whole chain maps original to the weight.
        if len(owner.parametrizations[attr]) == 1:
            owner.parametrizations[attr].original.masked_fill_(~mask, 0)


def masks(model: nn.Module) -> dict[str, torch.Tensor]:
    """Return the keep-mask of every masked or shared weight, by parameter name (copies)."""
    module = _unwrap(model)
    result = {}
    for name, (owner, attr) in _named_weights(module).items():
        shared = _shared_of(owner, attr)
        if shared is not None:
            result[name] = shared.mask.detach().clone()
            continue
        mask = _mask_of(owner, attr)
        if mask is not None:
            result[name] = mask.mask.detach().clone()
    return result


# --------------------------------------------------------------------------------------
# Weight sharing


def share_model_weights(
    model: nn.Module,
    bits: int | Mapping[str, int],
    *,
    include: str | Iterable[str] = (),
    exclude: str | Iterable[str] = (),
    init="linear",
    seed: int = 0,
    max_iter: int = quantize.DEFAULT_MAX_ITER,
    broadcast: bool | None = None,
) -> dict[str, SharedWeight]:
    """Replace chosen weights by trainable shared weights (``codebook[assignments]``).

    ``bits`` is one width for every selected tensor, or a dict of parameter names to widths
    that selects exactly those tensors. Otherwise the selection is that of
    :func:`prune_model`: ``include`` and ``exclude`` name patterns, by default every
    floating-point parameter with two or more dimensions. Each effective weight (pruned
    entries are zero) is clustered by :func:`dcformat.quantize.share_weights` with ``init``,
    ``seed`` and ``max_iter``; zeros go to the zero slot, which stays 0.0. Any existing
    parametrization of the tensor (a :class:`Mask`) is folded into the new one.

    The centroids take the parameter's dtype; a float16 parameter gets a float16 codebook.
    With ``broadcast`` (default: whenever ``torch.distributed`` is initialised) the codebooks
    and assignments of rank 0 are used on every rank. Returns the new
    :class:`SharedWeight` parametrizations by parameter name.
    """
    module = _unwrap(model)
    weights = _float_weights(module, skip_shared=True)
    if isinstance(bits, Mapping):
        if include or exclude:
            raise ConfigError("include and exclude select tensors for one width; a dict of bits "
                              "selects its own keys", field="include")
        missing = [name for name in bits if name not in weights]
        if missing:
            raise ConfigError(f"cannot share {', '.join(map(repr, missing))}: no unshared floating-point "
                              "parameter of that name", field="bits", found=missing)
        widths = dict(bits)
    else:
        names = prune.select_tensors(weights, include=include, exclude=exclude)
        widths = {name: bits for name in names}
    distributed = _distributed(broadcast)

    owners = _named_weights(module)
    result = {}
    for name, width in widths.items():
        owner, attr = owners[name]
        array = weights[name]
        codebook_dtype = np.float16 if array.dtype == np.float16 else np.float32
        shared = quantize.share_weights(array, width, init=init, seed=seed, max_iter=max_iter,
                                        codebook_dtype=codebook_dtype)
        device = getattr(owner, attr).device
        dtype = getattr(owner, attr).dtype
        codebook = torch.from_numpy(shared.codebook.astype(np.float32)).to(device=device, dtype=dtype)
        assignments = torch.from_numpy(shared.assignments.astype(np.int64)).to(device)
        if distributed:
            codebook = _broadcast(codebook)
            assignments = _broadcast(assignments)
        parametrization = SharedWeight(codebook, assignments, shared.zero_slot, width)

        # Fold any mask into the plain parameter, then parametrize it afresh.
        if parametrize.is_parametrized(owner, attr):
            parametrize.remove_parametrizations(owner, attr, leave_parametrized=True)
        parametrize.register_parametrization(owner, attr, parametrization)
        # The weight no longer depends on original; leaving it trainable would make DDP
        # wait for a gradient that never comes.
        owner.parametrizations[attr].original.requires_grad_(False)
        result[name] = owner.parametrizations[attr][0]
        logger.info("shared %s: %d entries (%d bits), %d k-means iterations", name,
                    shared.codebook.size, width, shared.iterations)
    return result


def codebooks(model: nn.Module) -> dict[str, torch.Tensor]:
    """Return the full codebook (zero slot included) of every shared weight, by name (copies)."""
    module = _unwrap(model)
    result = {}
    for name, (owner, attr) in _named_weights(module).items():
        shared = _shared_of(owner, attr)
        if shared is not None:
            result[name] = shared.codebook.detach().clone()
    return result


# --------------------------------------------------------------------------------------
# Export


def _export_names(module: nn.Module) -> list[tuple[str, nn.Module, str]]:
    """List (plain name, owner, attribute) for every tensor of the state dict, in its order."""
    result = []
    seen = set()
    for key, value in module.state_dict(keep_vars=True).items():
        if not isinstance(value, torch.Tensor):
            continue
        parts = key.split(".")
        if "parametrizations" in parts:
            at = parts.index("parametrizations")
            owner_parts, attr = parts[:at], parts[at + 1]
        else:
            owner_parts, attr = parts[:-1], parts[-1]
        name = ".".join(owner_parts + [attr])
        if name in seen:
            continue
        seen.add(name)
        owner = module.get_submodule(".".join(owner_parts)) if owner_parts else module
        result.append((name, owner, attr))
    return result


def _codebook_for_file(shared: SharedWeight, name: str) -> np.ndarray:
    """Return the codebook in a dtype the file stores (float32, or float16 for float16 weights)."""
    values = shared.codebook.detach().cpu()
    if values.dtype == torch.float16:
        return values.numpy().copy()
    stored = values.to(torch.float32)
    if values.dtype == torch.float64 and not torch.equal(stored.to(torch.float64), values):
        message = (f"{name}: the float64 codebook is rounded to float32 for the file, so the "
                   "decoded weights differ from the module's in the last bits")
        warnings.warn(message, stacklevel=3)
        logger.warning(message)
    return stored.numpy().copy()


def _trim(codebook: np.ndarray, assignments: np.ndarray, zero_slot: int | None):
    """Drop codebook entries no weight uses (the zero slot stays) and renumber."""
    used = np.bincount(assignments.reshape(-1), minlength=codebook.size) > 0
    if zero_slot is not None:
        used[zero_slot] = True
    if used.all():
        return codebook, assignments, zero_slot
    remap = np.cumsum(used) - 1
    zero = None if zero_slot is None else int(remap[zero_slot])
    return codebook[used], remap[assignments], zero


def _encode_shared_tensor(name: str, shared: SharedWeight, dtype: np.dtype,
                          index_bits: Iterable[int]) -> tuple[TensorEntry, TensorReport]:
    codebook = _codebook_for_file(shared, name)
    assignments = shared.assignments.detach().cpu().numpy()
    codebook, assignments, zero_slot = _trim(codebook, assignments, shared.zero_slot)
    bits = max(1, (codebook.size - 1).bit_length())
    symbols = assignments.astype(np.uint8 if bits <= 8 else np.uint16)
    shape = tuple(assignments.shape)

    # The smallest of sparse-shared at each gap width and dense shared.
    candidates = []
    if zero_slot is not None:
        for width in index_bits:
            entry = encodings.encode_sparse_shared(name, dtype, shape, codebook, symbols, bits, width, zero_slot)
            candidates.append(("sparse-shared", width, entry))
    candidates.append(("shared", None, encodings.encode_shared(name, dtype, shape, codebook, symbols, bits)))
    encoding, width, entry = min(candidates, key=lambda c: _stored_bytes(c[2]))

    size = int(assignments.size)
    nnz = size if zero_slot is None else int(np.count_nonzero(assignments != zero_slot))
    report = TensorReport(
        name=name, shape=shape, dtype=DTYPE_NAMES[dtype_code(dtype)], encoding=encoding,
        original_bytes=size * dtype.itemsize, stored_bytes=_stored_bytes(entry), size=size, nnz=nnz,
        sparsity=1.0 - nnz / size if size else 0.0, bits=bits, index_bits=width, n_clusters=int(codebook.size),
        streams=_stream_reports(entry, entry.symbols),
        sections={SectionKind(s.kind).name.lower(): len(s.data) for s in entry.sections},
        settings={"encoding": encoding, "bits": bits, "trained_bits": shared.bits, "n_clusters": int(codebook.size)},
    )
    if width is not None:
        report.settings["index_bits"] = width
        report.entries = int(entry.symbols[SectionKind.GAPS].size)
        report.fillers = report.entries - nnz
    return entry, report


def _encode_raw_tensor(name: str, value: torch.Tensor) -> tuple[TensorEntry, TensorReport]:
    array = _to_numpy(value)
    try:
        dtype_name = DTYPE_NAMES[dtype_code(array.dtype)]
    except TypeError as error:
        raise InputError(f"cannot export {name!r}: {error}") from None
    entry = encodings.encode_raw(name, array)
    report = TensorReport(
        name=name, shape=tuple(array.shape), dtype=dtype_name, encoding="raw", original_bytes=array.nbytes,
        stored_bytes=_stored_bytes(entry), size=int(array.size), nnz=int(np.count_nonzero(array)),
        sparsity=1.0 - np.count_nonzero(array) / array.size if array.size else 0.0,
        sections={SectionKind(s.kind).name.lower(): len(s.data) for s in entry.sections},
    )
    return entry, report


def export_model(
    model: nn.Module,
    target: str | os.PathLike | BinaryIO,
    *,
    metadata: Mapping[str, Any] | None = None,
    index_bits: Iterable[int] = EXPORT_INDEX_BITS,
    alignment_log2: int = DEFAULT_ALIGNMENT_LOG2,
    record_settings: bool = True,
) -> CompressionReport:
    """Write ``model``'s state to a DCF file, storing trained shared weights as they are.

    Every tensor of the state dict is stored under its plain name (``fc1.weight``, not the
    ``parametrizations`` keys). A weight shared by :func:`share_model_weights` is stored as
    its codebook and assignments, without clustering again: as ``sparse-shared`` at the gap
    width from ``index_bits`` that makes it smallest, or as ``shared`` when that is smaller,
    with unused codebook entries dropped. Every other tensor, a pruned but unshared weight
    included, is stored raw and lossless. ``dcformat.load`` therefore returns exactly the
    weights the module computes. The one exception is a float64 codebook, which the file
    stores as float32, with a warning.

    ``target`` is a path (written atomically) or a binary file object. ``metadata`` goes to
    the file's ``user`` metadata, for example the pruning schedule and epochs;
    ``record_settings`` also stores each tensor's encoding settings. ``alignment_log2`` sets
    the section alignment (0 packs sections without padding). Returns the
    :class:`~dcformat.encoder.CompressionReport`.
    """
    module = _unwrap(model)
    if metadata is not None and not isinstance(metadata, Mapping):
        raise TypeError(f"metadata must be a mapping, not {type(metadata).__name__}")
    widths = tuple(index_bits)
    for width in widths:
        _check_step(width, "index_bits", minimum=1)
        if width > 16:
            raise ConfigError(f"index_bits={width} is out of range; expected 1..16",
                              field="index_bits", expected="1..16", found=width)
    if not widths:
        raise ConfigError("index_bits must offer at least one width", field="index_bits")

    reports: list[TensorReport] = []
    writer = ContainerWriter(target, alignment_log2=alignment_log2)
    try:
        for name, owner, attr in _export_names(module):
            shared = _shared_of(owner, attr)
            chain = _parametrizations(owner, attr)
            with torch.no_grad():
                value = getattr(owner, attr)
            if shared is not None and len(chain) == 1:
                entry, report = _encode_shared_tensor(name, shared, _numpy_dtype(value.dtype), widths)
            else:
                if shared is not None:
                    logger.warning("%s: a shared weight under further parametrizations is stored raw", name)
                entry, report = _encode_raw_tensor(name, value)
            writer.add_tensor(entry)
            reports.append(report)
            logger.info("%s: %s, %d -> %d bytes", name, report.encoding, report.original_bytes,
                        report.stored_bytes)
        document: dict[str, Any] = {"encoder": {"name": "dcformat", "version": __version__}}
        if record_settings:
            document["settings"] = {r.name: r.settings for r in reports if r.settings}
        if metadata:
            document["user"] = dict(metadata)
        file_bytes = writer.close(document)
    except BaseException:
        writer.abort()
        raise
    return CompressionReport(reports, file_bytes, sum(r.original_bytes for r in reports))
