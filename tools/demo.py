"""Compare an uncompressed LeNet with its .dcf: sizes, ratio and test accuracy.

Usage: python tools/demo.py ORIGINAL.safetensors COMPRESSED.dcf [--json]

Sizes: "original" is the tensors as float32 (the baseline Deep Compression reports against),
"compressed" is the whole .dcf file, headers and checksums included. Accuracy is measured on
the 1,000 held-out test images in fixtures/models/mnist5000.npz.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

import lenet  # noqa: E402
from evaluate import load_tensors  # noqa: E402

DATA = Path(__file__).resolve().parent.parent / "fixtures" / "models" / "mnist5000.npz"


def compare(original: Path, compressed: Path) -> dict:
    """Measure both files on the test split and return the figures."""
    with np.load(DATA) as data:
        images, labels = data["test_images"], data["test_labels"]
    before = load_tensors(original)
    after = load_tensors(compressed)
    model = lenet.model_name_for(before)
    original_bytes = sum(4 * int(np.prod(a.shape)) for a in before.values())
    compressed_bytes = os.path.getsize(compressed)
    return {
        "model": model,
        "original_file": str(original),
        "compressed_file": str(compressed),
        "original_bytes": original_bytes,
        "compressed_bytes": compressed_bytes,
        "ratio": original_bytes / compressed_bytes,
        "accuracy_before": lenet.accuracy(model, before, images, labels),
        "accuracy_after": lenet.accuracy(model, after, images, labels),
        "test_images": int(len(labels)),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("original", type=Path, help="uncompressed .safetensors file")
    parser.add_argument("compressed", type=Path, help="the .dcf made from it")
    parser.add_argument("--json", action="store_true", help="print the figures as JSON")
    args = parser.parse_args(argv)
    result = compare(args.original, args.compressed)
    if args.json:
        print(json.dumps(result, indent=2))
        return 0
    change = 100 * (result["accuracy_after"] - result["accuracy_before"])
    print(f"model:              {result['model']}")
    print(f"original size:      {result['original_bytes']:>9,} bytes (float32)")
    print(f"compressed size:    {result['compressed_bytes']:>9,} bytes ({result['compressed_file']})")
    print(f"ratio:              {result['ratio']:>9.1f}x")
    print(f"accuracy before:    {100 * result['accuracy_before']:>9.1f} % ({result['test_images']} test images)")
    print(f"accuracy after:     {100 * result['accuracy_after']:>9.1f} % ({change:+.1f} points)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
