"""LeNet-300-100 and LeNet-5, the two MNIST networks of Deep Compression (Han et al., 2016).

Each model has a pure-numpy forward pass, used to measure accuracy without torch, and a
PyTorch module with the same parameter names, used for training. Both take 28x28 grey images
flattened to rows of 784 pixels, scaled from 0..255 to [0, 1] as float32 with no other
normalisation. :func:`scale_images` does that scaling.

LeNet-5 here is the variant in Caffe's ``examples/mnist/lenet_train_test.prototxt``: two 5x5
convolutions (20 and 50 channels, stride 1, no padding), each followed by 2x2 max pooling with
stride 2 and no ReLU, then fully connected layers 800 -> 500 -> ReLU -> 10.

torch is imported only by :func:`make_torch_model`, so the numpy part works without it.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping

import numpy as np

__all__ = [
    "MODEL_SHAPES",
    "MODEL_NAMES",
    "IMAGE_SIDE",
    "parameter_count",
    "model_name_for",
    "scale_images",
    "forward",
    "predict",
    "accuracy",
    "make_torch_model",
]

IMAGE_SIDE = 28

# Parameter names and shapes in PyTorch's (out, in) and (out, in, kh, kw) layouts.
MODEL_SHAPES: dict[str, dict[str, tuple[int, ...]]] = {
    "lenet300": {
        "fc1.weight": (300, 784),
        "fc1.bias": (300,),
        "fc2.weight": (100, 300),
        "fc2.bias": (100,),
        "fc3.weight": (10, 100),
        "fc3.bias": (10,),
    },
    "lenet5": {
        "conv1.weight": (20, 1, 5, 5),
        "conv1.bias": (20,),
        "conv2.weight": (50, 20, 5, 5),
        "conv2.bias": (50,),
        "fc1.weight": (500, 800),
        "fc1.bias": (500,),
        "fc2.weight": (10, 500),
        "fc2.bias": (10,),
    },
}
MODEL_NAMES = tuple(MODEL_SHAPES)

# Bounds the im2col buffer of conv2 (batch x 8 x 8 x 500 float32, 32 MB at 256 images).
_NUMPY_BATCH = 256


def parameter_count(model_name: str) -> int:
    """Return the number of scalar parameters of a model (266,610 or 431,080)."""
    shapes = _shapes_of(model_name)
    return sum(int(np.prod(shape)) for shape in shapes.values())


def model_name_for(tensors: Mapping[str, np.ndarray]) -> str:
    """Identify which LeNet a set of tensors belongs to from their names and shapes.

    Raises ValueError, naming the missing, unexpected and mis-shaped tensors of the closest
    model, when the tensors are not exactly one of the models in :data:`MODEL_SHAPES`.
    """
    if not isinstance(tensors, Mapping):
        raise TypeError(f"tensors must be a mapping of name to array, not {type(tensors).__name__}")

    found_shapes = {name: tuple(np.shape(value)) for name, value in tensors.items()}
    problems_by_model = {}
    for model_name, expected_shapes in MODEL_SHAPES.items():
        problems = _shape_problems(expected_shapes, found_shapes)
        if not problems:
            return model_name
        problems_by_model[model_name] = problems

    # Report against the model that shares the most tensor names, the likely intended one.
    closest = max(MODEL_SHAPES, key=lambda name: len(MODEL_SHAPES[name].keys() & found_shapes.keys()))
    raise ValueError(
        f"tensors are not one of {', '.join(MODEL_NAMES)}. Compared with {closest}: "
        + "; ".join(problems_by_model[closest])
    )


def _shape_problems(
    expected_shapes: Mapping[str, tuple[int, ...]], found_shapes: Mapping[str, tuple[int, ...]]
) -> list[str]:
    problems = []
    missing = [name for name in expected_shapes if name not in found_shapes]
    unexpected = sorted(name for name in found_shapes if name not in expected_shapes)
    if missing:
        problems.append(f"missing {', '.join(missing)}")
    if unexpected:
        problems.append(f"unexpected {', '.join(unexpected)}")
    for name, shape in expected_shapes.items():
        if name in found_shapes and found_shapes[name] != shape:
            problems.append(f"{name} has shape {found_shapes[name]}, expected {shape}")
    return problems


def _shapes_of(model_name: str) -> dict[str, tuple[int, ...]]:
    try:
        return MODEL_SHAPES[model_name]
    except KeyError:
        raise ValueError(f"unknown model {model_name!r}, expected one of {', '.join(MODEL_NAMES)}") from None


def scale_images(images: np.ndarray) -> np.ndarray:
    """Convert uint8 images of shape (N, 784) to the float32 [0, 1] input of both models.

    Floating-point input is taken as already scaled and only cast to float32. Raises
    ValueError for another shape or for floating-point values outside [0, 1].
    """
    images = np.asarray(images)
    if images.ndim != 2 or images.shape[1] != IMAGE_SIDE * IMAGE_SIDE:
        raise ValueError(f"images must have shape (N, {IMAGE_SIDE * IMAGE_SIDE}), found {images.shape}")
    if images.dtype == np.uint8:
        return images.astype(np.float32) / np.float32(255)
    if not np.issubdtype(images.dtype, np.floating):
        raise ValueError(f"images must be uint8 (0..255) or floating point in [0, 1], found {images.dtype}")
    if images.size and (images.min() < 0 or images.max() > 1):
        raise ValueError(
            f"floating-point images must lie in [0, 1], found range [{images.min()}, {images.max()}]. "
            "Pass uint8 pixels or divide by 255."
        )
    return images.astype(np.float32, copy=False)


def forward(model_name: str, tensors: Mapping[str, np.ndarray], images: np.ndarray) -> np.ndarray:
    """Compute float32 logits of shape (N, 10) in numpy.

    ``images`` are uint8 or scaled float rows of 784 pixels (see :func:`scale_images`).
    Tensors of any floating dtype are cast to float32 first.
    """
    expected_shapes = _shapes_of(model_name)
    problems = _shape_problems(expected_shapes, {name: tuple(np.shape(v)) for name, v in tensors.items()})
    if problems:
        raise ValueError(f"tensors do not fit {model_name}: " + "; ".join(problems))
    params = {name: np.asarray(tensors[name], dtype=np.float32) for name in expected_shapes}
    inputs = scale_images(images)

    if model_name == "lenet300":
        return _forward_lenet300(params, inputs)
    batches = [
        _forward_lenet5(params, inputs[start : start + _NUMPY_BATCH])
        for start in range(0, len(inputs), _NUMPY_BATCH)
    ]
    return np.concatenate(batches) if batches else np.zeros((0, 10), np.float32)


def predict(model_name: str, tensors: Mapping[str, np.ndarray], images: np.ndarray) -> np.ndarray:
    """Return the predicted digit of each image as an int64 array of shape (N,)."""
    return forward(model_name, tensors, images).argmax(axis=1)


def accuracy(
    model_name: str, tensors: Mapping[str, np.ndarray], images: np.ndarray, labels: np.ndarray
) -> float:
    """Return the fraction of images whose predicted digit equals its label."""
    labels = np.asarray(labels)
    if labels.shape != (len(images),):
        raise ValueError(f"labels must have shape ({len(images)},), found {labels.shape}")
    if len(labels) == 0:
        raise ValueError("accuracy needs at least one image")
    correct = int(np.count_nonzero(predict(model_name, tensors, images) == labels))
    return correct / len(labels)


def _linear(x: np.ndarray, weight: np.ndarray, bias: np.ndarray) -> np.ndarray:
    return x @ weight.T + bias


def _forward_lenet300(params: Mapping[str, np.ndarray], x: np.ndarray) -> np.ndarray:
    x = np.maximum(_linear(x, params["fc1.weight"], params["fc1.bias"]), 0)
    x = np.maximum(_linear(x, params["fc2.weight"], params["fc2.bias"]), 0)
    return _linear(x, params["fc3.weight"], params["fc3.bias"])


def _conv2d(x: np.ndarray, weight: np.ndarray, bias: np.ndarray) -> np.ndarray:
    """Apply a stride-1, unpadded cross-correlation, as torch.nn.Conv2d does, to (N, C, H, W)."""
    kernel_h, kernel_w = weight.shape[2:]
    # windows has shape (N, C, H_out, W_out, kh, kw) and is a view, so no copy until tensordot.
    windows = np.lib.stride_tricks.sliding_window_view(x, (kernel_h, kernel_w), axis=(2, 3))
    out = np.tensordot(windows, weight, axes=([1, 4, 5], [1, 2, 3]))  # (N, H_out, W_out, C_out)
    out += bias
    return out.transpose(0, 3, 1, 2)


def _max_pool_2x2(x: np.ndarray) -> np.ndarray:
    n, c, h, w = x.shape
    return x.reshape(n, c, h // 2, 2, w // 2, 2).max(axis=(3, 5))


def _forward_lenet5(params: Mapping[str, np.ndarray], x: np.ndarray) -> np.ndarray:
    x = x.reshape(-1, 1, IMAGE_SIDE, IMAGE_SIDE)
    x = _max_pool_2x2(_conv2d(x, params["conv1.weight"], params["conv1.bias"]))  # (N, 20, 12, 12)
    x = _max_pool_2x2(_conv2d(x, params["conv2.weight"], params["conv2.bias"]))  # (N, 50, 4, 4)
    # Channel-major flattening, the order of torch.flatten on (N, 50, 4, 4).
    x = x.reshape(len(x), -1)
    x = np.maximum(_linear(x, params["fc1.weight"], params["fc1.bias"]), 0)
    return _linear(x, params["fc2.weight"], params["fc2.bias"])


def make_torch_model(model_name: str, tensors: Mapping[str, np.ndarray] | None = None):
    """Build the PyTorch module of a model, loading ``tensors`` into it when given.

    The module takes float32 input of shape (N, 784) scaled to [0, 1] and returns logits.
    Its ``state_dict`` has exactly the names and shapes of :data:`MODEL_SHAPES`.
    """
    import torch

    _shapes_of(model_name)
    model = _torch_classes()[model_name]()
    if tensors is not None:
        model_name_found = model_name_for(tensors)
        if model_name_found != model_name:
            raise ValueError(f"tensors are for {model_name_found}, not {model_name}")
        state = {name: torch.from_numpy(np.array(value, dtype=np.float32)) for name, value in tensors.items()}
        model.load_state_dict(state, strict=True)
    return model


@functools.cache
def _torch_classes() -> dict[str, type]:
    import torch
    from torch import nn

    class LeNet300(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.fc1 = nn.Linear(784, 300)
            self.fc2 = nn.Linear(300, 100)
            self.fc3 = nn.Linear(100, 10)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            x = torch.relu(self.fc1(x))
            x = torch.relu(self.fc2(x))
            return self.fc3(x)

    class LeNet5(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv1 = nn.Conv2d(1, 20, kernel_size=5)
            self.conv2 = nn.Conv2d(20, 50, kernel_size=5)
            self.fc1 = nn.Linear(800, 500)
            self.fc2 = nn.Linear(500, 10)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            x = x.reshape(-1, 1, IMAGE_SIDE, IMAGE_SIDE)
            x = torch.max_pool2d(self.conv1(x), kernel_size=2, stride=2)
            x = torch.max_pool2d(self.conv2(x), kernel_size=2, stride=2)
            x = torch.relu(self.fc1(torch.flatten(x, 1)))
            return self.fc2(x)

    return {"lenet300": LeNet300, "lenet5": LeNet5}
