"""Benchmark dcformat's 1-D k-means against scikit-learn's KMeans and write JSON.

Usage::

    python tools/bench_kmeans.py [--size N] [--clusters 32 256] [--max-iter 300]
                                 [--weights FILE] [--output FILE]

Both sides start from the same linear initialisation (centroids evenly spaced between the
minimum and the maximum), run once (``n_init=1``) with the same ``max_iter``, and are timed on
the same values. The values are the non-zero weights of the SqueezeNet that the Deep
Compression authors pruned and quantised, read from ``--weights`` and tiled to ``--size``
values. Where that file is absent, a seeded Laplace sample of ``--size`` values replaces it,
and the JSON records which data were used. Both inertias are recomputed here in float64 from
each side's own centroids and assignments, so the ratio compares like with like.

dcformat runs to convergence (``tol=0``) or ``max_iter``. scikit-learn runs with its default
``tol`` unless ``--sklearn-tol`` is given, on float32 input, its faster path. Each result
records ``speed_ratio``, scikit-learn seconds over dcformat seconds, and ``inertia_ratio``,
dcformat inertia over scikit-learn inertia. An inertia ratio of at most 1 means that
dcformat fits at least as well.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np

REPO_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO_ROOT))

from dcformat.quantize import kmeans_1d  # noqa: E402

DEFAULT_WEIGHTS = (
    REPO_ROOT.parent / "shared" / "real" / "squeezenet-dc" / "squeezenet_dc_weights.safetensors"
)
DEFAULT_SIZE = 5_000_000


def load_values(weights: Path, size: int, seed: int) -> tuple[np.ndarray, dict]:
    """Return ``size`` float32 values and a description of where they came from."""
    if weights.is_file():
        from safetensors.numpy import load_file

        tensors = load_file(str(weights))
        parts = [array.reshape(-1) for name, array in sorted(tensors.items()) if array.ndim >= 2]
        pool = np.concatenate(parts).astype(np.float32)
        pool = pool[pool != 0]
        repeats = -(-size // pool.size)
        values = np.tile(pool, repeats)[:size]
        source = {
            "kind": "squeezenet-dc",
            "file": str(weights),
            "non_zero_weights": int(pool.size),
            "tiled": repeats,
        }
    else:
        rng = np.random.default_rng(seed)
        values = rng.laplace(scale=0.02, size=size).astype(np.float32)
        source = {"kind": "laplace", "scale": 0.02, "seed": seed, "missing_file": str(weights)}
    source["size"] = int(values.size)
    source["distinct_values"] = int(np.unique(values).size)
    return values, source


def inertia(values: np.ndarray, centroids: np.ndarray, labels: np.ndarray) -> float:
    residual = values.astype(np.float64) - centroids.astype(np.float64)[labels]
    return float(np.dot(residual, residual))


def bench_ours(values: np.ndarray, clusters: int, max_iter: int, repeat: int) -> dict:
    best = float("inf")
    for _ in range(repeat):
        start = time.perf_counter()
        result = kmeans_1d(values, clusters, init="linear", max_iter=max_iter)
        best = min(best, time.perf_counter() - start)
    return {
        "seconds": best,
        "inertia": inertia(values, result.centroids, result.assignments),
        "iterations": result.iterations,
        "converged": result.converged,
    }


def bench_sklearn(values: np.ndarray, clusters: int, max_iter: int, tol: float) -> dict:
    from sklearn.cluster import KMeans

    initial = np.linspace(float(values.min()), float(values.max()), clusters)
    model = KMeans(
        n_clusters=clusters,
        init=initial.reshape(-1, 1).astype(values.dtype),
        n_init=1,
        max_iter=max_iter,
        tol=tol,
        algorithm="lloyd",
        random_state=0,
    )
    start = time.perf_counter()
    model.fit(values.reshape(-1, 1))
    seconds = time.perf_counter() - start
    return {
        "seconds": seconds,
        "inertia": inertia(values, model.cluster_centers_.reshape(-1), model.labels_),
        "iterations": int(model.n_iter_),
        "tol": tol,
    }


def environment() -> dict:
    import sklearn

    return {
        "python": platform.python_version(),
        "numpy": np.__version__,
        "scikit_learn": sklearn.__version__,
        "machine": platform.machine(),
        "processor": platform.processor() or None,
        "cpu_count": os.cpu_count(),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", type=int, default=DEFAULT_SIZE,
                        help="number of values to cluster (default: %(default)s)")
    parser.add_argument("--clusters", type=int, nargs="+", default=[32, 256],
                        help="numbers of clusters k to run (default: 32 256)")
    parser.add_argument("--max-iter", type=int, default=300,
                        help="maximum Lloyd iterations for both (default: %(default)s)")
    parser.add_argument("--sklearn-tol", type=float, default=1e-4,
                        help="scikit-learn's relative tolerance (default: its own, %(default)s)")
    parser.add_argument("--repeat", type=int, default=3,
                        help="dcformat runs per k; the fastest is reported (default: %(default)s)")
    parser.add_argument("--weights", type=Path, default=DEFAULT_WEIGHTS,
                        help="safetensors file whose non-zero weights are clustered")
    parser.add_argument("--seed", type=int, default=0,
                        help="seed of the Laplace sample used without --weights (default: 0)")
    parser.add_argument("--skip-sklearn", action="store_true",
                        help="time dcformat only")
    parser.add_argument("--output", type=Path, help="write the JSON here instead of stdout")
    args = parser.parse_args(argv)
    if args.size < 1 or args.max_iter < 1 or args.repeat < 1:
        parser.error("--size, --max-iter and --repeat must be at least 1")

    values, source = load_values(args.weights, args.size, args.seed)
    # All dcformat runs come first, so that scikit-learn's OpenMP threads, which may still
    # busy-wait after a fit, do not share the CPUs with a dcformat run.
    results = []
    for clusters in args.clusters:
        ours = bench_ours(values, clusters, args.max_iter, args.repeat)
        results.append({"clusters": clusters, "dcformat": ours})
    if not args.skip_sklearn:
        for entry in results:
            entry["sklearn"] = bench_sklearn(
                values, entry["clusters"], args.max_iter, args.sklearn_tol
            )
            entry["speed_ratio"] = entry["sklearn"]["seconds"] / entry["dcformat"]["seconds"]
            entry["inertia_ratio"] = entry["dcformat"]["inertia"] / entry["sklearn"]["inertia"]

    report = {
        "benchmark": "kmeans_1d",
        "init": "linear",
        "max_iter": args.max_iter,
        "data": source,
        "environment": environment(),
        "results": results,
    }
    text = json.dumps(report, indent=2)
    if args.output:
        args.output.write_text(text + "\n")
    else:
        print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
