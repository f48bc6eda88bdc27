"""Benchmark decoding .dcf files against loading the same tensors from other formats.

Usage: python tools/bench_decode.py [--repeat N] [--out FILE.json]

For each bundled LeNet (and the SqueezeNet release weights when ../shared is present) it
compresses with the default settings, then times, best of N runs in this process:
- dcformat.load of the .dcf (every tensor decoded to dense numpy);
- dcformat.open + get of the largest tensor only (the lazy path);
- get_sparse (CSR) of the largest tensor;
- safetensors.numpy.load_file of the uncompressed tensors (the baseline);
- numpy.load of an .npz compressed with zlib (a common "just zip it" baseline).
Ratios are times relative to the safetensors baseline measured in the same run. Prints JSON.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from safetensors.numpy import load_file, save_file

import dcformat

ROOT = Path(__file__).resolve().parent.parent
MODELS = ROOT / "fixtures" / "models"
SQUEEZENET = ROOT.parent / "shared" / "real" / "squeezenet-dc" / "squeezenet_dc_weights.safetensors"


def best_time(function, repeat: int) -> float:
    best = float("inf")
    for _ in range(repeat):
        start = time.perf_counter()
        function()
        best = min(best, time.perf_counter() - start)
    return best


def bench_model(name: str, source: Path, folder: Path, repeat: int) -> dict:
    tensors = load_file(str(source))
    largest = max(tensors, key=lambda key: tensors[key].size)
    dcf = folder / f"{name}.dcf"
    st = folder / f"{name}.safetensors"
    npz = folder / f"{name}.npz"
    dcformat.save(tensors, dcf)
    save_file(tensors, str(st))
    np.savez_compressed(npz, **{key.replace("/", "_"): value for key, value in tensors.items()})

    def lazy_one():
        with dcformat.open(dcf) as reader:
            reader.get(largest)

    def sparse_one():
        with dcformat.open(dcf) as reader:
            reader.get_sparse(largest)

    def load_npz():
        with np.load(npz) as data:
            {key: data[key] for key in data.files}

    times = {
        "dcf_load_all": best_time(lambda: dcformat.load(dcf), repeat),
        "dcf_get_largest": best_time(lazy_one, repeat),
        "dcf_get_sparse_largest": best_time(sparse_one, repeat),
        "safetensors_load_all": best_time(lambda: load_file(str(st)), repeat),
        "npz_zlib_load_all": best_time(load_npz, repeat),
    }
    baseline = times["safetensors_load_all"]
    return {
        "model": name,
        "parameters": int(sum(a.size for a in tensors.values())),
        "largest_tensor": largest,
        "bytes": {"dcf": dcf.stat().st_size, "safetensors": st.stat().st_size, "npz_zlib": npz.stat().st_size},
        "seconds": times,
        "ratio_to_safetensors": {key: value / baseline for key, value in times.items()},
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=20, help="runs per measurement; the fastest counts")
    parser.add_argument("--out", type=Path, help="also write the JSON here")
    args = parser.parse_args(argv)
    models = [("lenet300", MODELS / "lenet300.safetensors"), ("lenet5", MODELS / "lenet5.safetensors")]
    if SQUEEZENET.exists():
        models.append(("squeezenet", SQUEEZENET))
    with tempfile.TemporaryDirectory() as folder:
        results = [bench_model(name, path, Path(folder), args.repeat) for name, path in models]
    report = {
        "machine": {"processor": platform.processor() or platform.machine(), "cpus": os.cpu_count(),
                    "python": platform.python_version(), "numpy": np.__version__},
        "results": results,
    }
    text = json.dumps(report, indent=2)
    print(text)
    if args.out:
        args.out.write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
