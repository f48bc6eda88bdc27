"""Measure the test accuracy of LeNet weights stored as .safetensors or .dcf files.

Usage::

    python tools/evaluate.py FILE [FILE...] [--json] [--data fixtures/models/mnist5000.npz]

Each file must contain exactly the tensors of LeNet-300-100 or LeNet-5 as named in
``tools/lenet.py``. The model is recognised from those names and shapes, and its accuracy is
measured with the numpy forward pass on the 1,000 test images of the committed split. A
``.dcf`` file is decoded with ``dcformat.load``. The exit status is 1 when any file cannot be
read or is not one of these models, after the other files have been evaluated.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Mapping
from pathlib import Path

import numpy as np

import lenet

REPO_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_DATA = REPO_ROOT / "fixtures" / "models" / "mnist5000.npz"


class EvaluationError(Exception):
    """Error for a file that cannot be evaluated. The message names the file and the reason."""


def load_tensors(path: Path) -> dict[str, np.ndarray]:
    """Read every tensor of a .safetensors or .dcf file into numpy arrays."""
    suffix = path.suffix.lower()
    if suffix == ".safetensors":
        from safetensors import SafetensorError
        from safetensors.numpy import load_file

        try:
            return load_file(str(path))
        except (OSError, SafetensorError) as error:
            raise EvaluationError(f"{path}: cannot read as safetensors: {error}") from error
    if suffix == ".dcf":
        # Scripts run with tools/ on sys.path, so fall back to the checkout's dcformat when the
        # package is not installed. Appending keeps an installed dcformat first.
        if str(REPO_ROOT) not in sys.path:
            sys.path.append(str(REPO_ROOT))
        try:
            import dcformat
            from dcformat.errors import DCFormatError
        except ImportError as error:
            raise EvaluationError(f"{path}: reading .dcf files needs the dcformat package: {error}") from error

        # NOTE: this branch has not yet been run against a real .dcf file.
        try:
            return dict(dcformat.load(path))
        except (OSError, DCFormatError) as error:
            raise EvaluationError(f"{path}: cannot read as .dcf: {error}") from error
    raise EvaluationError(f"{path}: unsupported file type {path.suffix!r}; expected .safetensors or .dcf")


def evaluate_tensors(tensors: Mapping[str, np.ndarray], test_images: np.ndarray, test_labels: np.ndarray) -> dict:
    """Identify the model and return its name, accuracy and the number of correct predictions."""
    model_name = lenet.model_name_for(tensors)
    test_accuracy = lenet.accuracy(model_name, tensors, test_images, test_labels)
    return {
        "model": model_name,
        "test_accuracy": test_accuracy,
        "test_correct": round(test_accuracy * len(test_labels)),
        "test_size": int(len(test_labels)),
    }


def evaluate_file(path: Path, test_images: np.ndarray, test_labels: np.ndarray) -> dict:
    """Load one file and return :func:`evaluate_tensors`' result with the file name added."""
    tensors = load_tensors(path)
    try:
        result = evaluate_tensors(tensors, test_images, test_labels)
    except ValueError as error:
        raise EvaluationError(f"{path}: {error}") from error
    return {"file": str(path), **result}


def _parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="Print the MNIST test accuracy of LeNet-300-100 or LeNet-5 files.")
    parser.add_argument("files", nargs="+", type=Path, metavar="FILE", help=".safetensors or .dcf file")
    parser.add_argument("--json", action="store_true", help="print one JSON list of results instead of text")
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA,
                        help="npz with test_images and test_labels (default: fixtures/models/mnist5000.npz)")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = _parse_args(argv)
    try:
        with np.load(args.data, allow_pickle=False) as data:
            test_images, test_labels = data["test_images"], data["test_labels"]
    except (OSError, ValueError, KeyError) as error:
        print(f"error: cannot read test_images and test_labels from {args.data}: {error}", file=sys.stderr)
        return 1

    results = []
    failed = False
    for path in args.files:
        try:
            results.append(evaluate_file(path, test_images, test_labels))
        except EvaluationError as error:
            print(f"error: {error}", file=sys.stderr)
            failed = True

    if args.json:
        print(json.dumps(results, indent=2))
    else:
        for result in results:
            print(
                f"{result['file']}: {result['model']}, test accuracy {result['test_accuracy']:.4f} "
                f"({result['test_correct']}/{result['test_size']})"
            )
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
