"""Measure size and accuracy of the bundled LeNets over pruning settings, without fine-tuning.

Usage: python tools/sweep_defaults.py [--models lenet300 lenet5] [--out FILE.json]

For each model, pruning quality (threshold = quality x standard deviation) and scope
(one threshold per tensor, or one global threshold), it compresses with the Deep Compression
bit widths, decodes, and measures test accuracy on fixtures/models/mnist5000.npz. This is the
measurement behind dcformat's default pruning settings. Prints JSON.
"""

from __future__ import annotations

import argparse
import io
import json
import sys
from pathlib import Path

import numpy as np
from safetensors.numpy import load_file

sys.path.insert(0, str(Path(__file__).resolve().parent))

import dcformat  # noqa: E402
import lenet  # noqa: E402
from dcformat import Config  # noqa: E402

MODELS = Path(__file__).resolve().parent.parent / "fixtures" / "models"


def sweep(model: str, qualities: list[float], scopes: list[str]) -> list[dict]:
    tensors = load_file(str(MODELS / f"{model}.safetensors"))
    with np.load(MODELS / "mnist5000.npz") as data:
        images, labels = data["test_images"], data["test_labels"]
    baseline = lenet.accuracy(model, tensors, images, labels)
    float32_bytes = sum(4 * a.size for a in tensors.values())
    rows = []
    for scope in scopes:
        for quality in qualities:
            buffer = io.BytesIO()
            report = dcformat.save(tensors, buffer, Config(defaults={"quality": quality}, scope=scope))
            decoded = dcformat.load(buffer.getvalue())
            accuracy = lenet.accuracy(model, decoded, images, labels)
            rows.append({
                "model": model,
                "scope": scope,
                "quality": quality,
                "file_bytes": report.file_bytes,
                "ratio": float32_bytes / report.file_bytes,
                "accuracy": accuracy,
                "accuracy_change_points": 100 * (accuracy - baseline),
                "weights": {t.name: {"encoding": t.encoding, "sparsity": round(t.sparsity, 4)}
                            for t in report.tensors if t.name.endswith("weight")},
            })
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=["lenet300", "lenet5"])
    parser.add_argument("--qualities", nargs="+", type=float, default=[0.6, 0.8, 1.0, 1.2])
    parser.add_argument("--scopes", nargs="+", default=["tensor", "global"])
    parser.add_argument("--out", type=Path, help="also write the JSON to this file")
    args = parser.parse_args(argv)
    rows = [row for model in args.models for row in sweep(model, args.qualities, args.scopes)]
    text = json.dumps(rows, indent=2)
    print(text)
    if args.out:
        args.out.write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
