"""Plots of a size audit: bytes per tensor by stream, and one tensor's weight histogram.

matplotlib is optional (``pip install dcformat[plot]``); it is imported only when a plot is
drawn, with the non-interactive Agg backend, so plotting works without a display.
"""

from __future__ import annotations

import logging
import os
from typing import Any

import numpy as np

from .audit import FileAudit, WeightDistribution
from .errors import InputError

__all__ = ["save_audit_plot", "default_plot_tensor", "plot_data", "require_matplotlib"]

logger = logging.getLogger(__name__)

# Stacked segments of the byte chart: label, colour, bytes of a tensor.
SEGMENTS = (
    ("codebook", "#4c72b0", lambda t: t.codebook_bytes),
    ("index (gaps)", "#dd8452", lambda t: t.index_bytes),
    ("values", "#55a868", lambda t: t.value_bytes),
    ("overhead (headers, padding)", "#8c8c8c", lambda t: t.header_bytes + t.padding_bytes),
)
HISTOGRAM_BINS = 200
# Above this many shared values, full-height lines would hide the histogram: mark them as ticks.
MAX_CENTROID_LINES = 64


def require_matplotlib() -> None:
    """Raise :class:`~dcformat.errors.InputError` unless matplotlib can be imported."""
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        raise InputError("plotting needs matplotlib, which is not installed; "
                         "install it with: pip install 'dcformat[plot]'") from None


def _pyplot():
    require_matplotlib()
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as pyplot

    return pyplot


def default_plot_tensor(audit: FileAudit) -> str:
    """Return the name of the tensor with the most parameters."""
    if not audit.tensors:
        raise InputError(f"{audit.source} has no tensors to plot")
    return max(audit.tensors, key=lambda t: t.parameters).name


def _human(size: float) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if size < 1000 or unit == "GB":
            return f"{size:,.0f} {unit}" if unit == "B" else f"{size:,.1f} {unit}"
        size /= 1000
    return f"{size:,.1f} GB"


def _bytes_chart(axes, audit: FileAudit) -> None:
    from matplotlib.ticker import FuncFormatter

    tensors = audit.tensors
    positions = np.arange(len(tensors))
    left = np.zeros(len(tensors))
    for label, colour, size_of in SEGMENTS:
        sizes = np.array([size_of(t) for t in tensors], dtype=float)
        if not sizes.any():
            continue
        axes.barh(positions, sizes, left=left, color=colour, label=label, height=0.75)
        left += sizes
    largest = left.max() if left.size else 0
    for position, tensor, end in zip(positions, tensors, left):
        axes.text(end + largest * 0.01, position, _human(tensor.total_bytes), va="center", fontsize=7)
    axes.set_yticks(positions, [t.name for t in tensors], fontsize=8)
    axes.set_ylim(len(tensors) - 0.5, -0.5)
    axes.set_xlim(0, largest * 1.15 if largest else 1)
    axes.set_xlabel("bytes in the file")
    axes.xaxis.set_major_formatter(FuncFormatter(lambda value, _: f"{value:,.0f}"))
    ratio = f", {audit.ratio:.1f}x smaller than float32" if audit.ratio else ""
    what = "compressed in memory (dry run)" if audit.dry_run else f".{audit.format} file"
    container = (f" (container parts, {_human(audit.container_bytes)}, not shown)"
                 if audit.container_bytes else "")
    axes.set_title(f"{os.path.basename(audit.source)}, {what}: {_human(audit.file_bytes)}{ratio}\n"
                   f"bytes per tensor{container}", fontsize=10)
    axes.legend(loc="best", fontsize=8)
    axes.grid(axis="x", alpha=0.3)


def _value_histogram(axes, distribution: WeightDistribution) -> int:
    """Draw a histogram of the values, bins inside the pruned range in grey; return the top count."""
    counts, edges = np.histogram(distribution.values, bins=HISTOGRAM_BINS)
    centres = (edges[:-1] + edges[1:]) / 2
    inside = np.zeros(centres.size, dtype=bool)
    if distribution.pruned_range is not None:
        inside = (centres > distribution.pruned_range[0]) & (centres < distribution.pruned_range[1])
    widths = np.diff(edges)
    label = "original weights" if distribution.from_original else "decoded non-zero values"
    axes.bar(centres[~inside], counts[~inside], width=widths[~inside], color="#4c72b0", label=label)
    if inside.any():
        axes.bar(centres[inside], counts[inside], width=widths[inside], color="#b0b0b0",
                 label="weights pruned to zero")
    return int(counts.max())


def _usage_stems(axes, distribution: WeightDistribution) -> int:
    """Draw one stem per shared value, as tall as the number of decoded weights that use it."""
    values, counts = np.unique(distribution.values, return_counts=True)
    axes.vlines(values, 0.5, counts, color="#4c72b0", linewidth=1.2, label="decoded weights per shared value")
    return int(counts.max())


def _histogram(axes, distribution: WeightDistribution) -> None:
    pruned_range = distribution.pruned_range
    top = 1
    if distribution.values.size:
        if distribution.from_original or not distribution.centroids.size:
            top = _value_histogram(axes, distribution)
        else:
            top = _usage_stems(axes, distribution)
    axes.set_yscale("log")
    # Head room above the tallest bar on the log scale keeps the legend off the data.
    axes.set_ylim(0.5, max(top, 1) * 60)

    centroids = distribution.centroids
    label = f"shared values ({centroids.size})"
    if distribution.from_original and centroids.size <= MAX_CENTROID_LINES:
        for index, centroid in enumerate(centroids):
            axes.axvline(centroid, color="#c44e52", linewidth=0.7, alpha=0.8, label=label if index == 0 else None)
    elif distribution.from_original:
        axes.plot(centroids, np.full(centroids.size, 0.7), "|", color="#c44e52", markersize=12, label=label)
    if pruned_range is not None:
        low, high = pruned_range
        share = 100 * distribution.pruned / distribution.parameters if distribution.parameters else 0
        what = "pruned range" if distribution.from_original else "range with no kept weight"
        axes.axvspan(low, high, color="#8c8c8c", alpha=0.15, zorder=0,
                     label=f"{what} [{low:.3g}, {high:.3g}]: {share:.1f} % of the weights are 0")
    axes.set_xlabel("weight value")
    stems = not distribution.from_original and distribution.centroids.size
    axes.set_ylabel("weights per shared value (log scale)" if stems else "weights per bin (log scale)")
    kept = 100 - (100 * distribution.pruned / distribution.parameters if distribution.parameters else 0)
    shared = f", {distribution.centroids.size} shared values" if distribution.centroids.size else ""
    axes.set_title(f"{distribution.name}: {distribution.parameters:,} parameters{shared}, {kept:.1f} % kept",
                   fontsize=10)
    axes.legend(loc="upper left", fontsize=8, framealpha=0.95)


def save_audit_plot(audit: FileAudit, output: str | os.PathLike,
                    distribution: WeightDistribution | None = None, *, dpi: int = 120) -> None:
    """Draw the byte chart of ``audit`` and, if given, the histogram of ``distribution``.

    The image format follows the suffix of ``output`` (PNG, SVG, PDF: what matplotlib
    supports). Raises :class:`~dcformat.errors.InputError` when matplotlib is not installed.
    """
    pyplot = _pyplot()
    rows = max(len(audit.tensors), 1)
    height = max(4.5, 0.24 * rows + 1.8)
    columns = 2 if distribution is not None else 1
    figure, axes = pyplot.subplots(1, columns, figsize=(7 * columns + 1, height), squeeze=False,
                                   gridspec_kw={"width_ratios": [1.1, 1][:columns]})
    try:
        _bytes_chart(axes[0][0], audit)
        if distribution is not None:
            _histogram(axes[0][1], distribution)
        figure.tight_layout()
        figure.savefig(output, dpi=dpi)
    finally:
        pyplot.close(figure)
    logger.debug("wrote the audit plot of %s to %s", audit.source, os.fspath(output))


def plot_data(audit: FileAudit) -> list[dict[str, Any]]:
    """Return the plotted bytes per tensor and segment, for tests and other plotting tools."""
    return [{"name": t.name, **{label: size_of(t) for label, _, size_of in SEGMENTS}} for t in audit.tensors]
