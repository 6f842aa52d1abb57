"""The architectures of "Connectivity Matters" (Vysogorets & Kempe), built from code.

LeNet-300-100, LeNet-5 and ``mlp`` (deeper fully connected nets) take MNIST-size inputs (1x28x28);
VGG-19 and ResNet-18, -34 and -50 are the CIFAR forms (3x32x32 input, 3x3 stem, no stem pooling;
:mod:`connectome.resnet`). Input shapes are in :data:`INPUT_SHAPES`.

Examples
--------
>>> import torch
>>> tuple(lenet_300_100()(torch.zeros(2, 1, 28, 28)).shape)
(2, 10)
>>> sum(p.numel() for p in resnet18_cifar().parameters() if p.dim() > 1)
11164352
"""

from __future__ import annotations

from collections.abc import Callable

from torch import nn

from .resnet import _check_width, resnet18_cifar, resnet34_cifar, resnet50_cifar

__all__ = [
    "lenet_300_100",
    "lenet_5",
    "mlp",
    "vgg19_cifar",
    "resnet18_cifar",
    "resnet34_cifar",
    "resnet50_cifar",
    "MODELS",
    "INPUT_SHAPES",
]


def lenet_300_100(num_classes: int = 10) -> nn.Module:
    """784-300-100-10 fully connected network with ReLU."""
    return nn.Sequential(
        nn.Flatten(), nn.Linear(784, 300), nn.ReLU(), nn.Linear(300, 100), nn.ReLU(), nn.Linear(100, num_classes)
    )


def mlp(hidden: tuple[int, ...] | list[int] = (300, 300, 300), num_classes: int = 10) -> nn.Module:
    """A fully connected ReLU network on 28x28 inputs with the given hidden widths (deeper than LeNet).

    >>> [m.out_features for m in mlp((200, 100, 50)) if isinstance(m, nn.Linear)]
    [200, 100, 50, 10]
    """
    layers: list[nn.Module] = [nn.Flatten()]
    width = 784
    for h in hidden:
        if not isinstance(h, int) or h < 1:
            raise ValueError(f"hidden widths must be positive integers, not {h!r}")
        layers += [nn.Linear(width, h), nn.ReLU()]
        width = h
    return nn.Sequential(*layers, nn.Linear(width, num_classes))


def lenet_5(num_classes: int = 10) -> nn.Module:
    """Two 5x5 conv layers (6, 16 channels) with max pooling, then 120-84-10 fully connected."""
    return nn.Sequential(
        nn.Conv2d(1, 6, 5, padding=2),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Conv2d(6, 16, 5),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Flatten(),
        nn.Linear(16 * 5 * 5, 120),
        nn.ReLU(),
        nn.Linear(120, 84),
        nn.ReLU(),
        nn.Linear(84, num_classes),
    )


_VGG19: list[int | str] = [
    64,
    64,
    "M",
    128,
    128,
    "M",
    256,
    256,
    256,
    256,
    "M",
    512,
    512,
    512,
    512,
    "M",
    512,
    512,
    512,
    512,
    "M",
]


def vgg19_cifar(num_classes: int = 10, batch_norm: bool = True, width: int = 64) -> nn.Module:
    """VGG-19 for 32x32 inputs: 16 conv layers (3x3) with BatchNorm, five max pools, one linear head.

    ``width`` is the first stage's channels (64 in the paper); every stage scales with it, so
    ``width=16`` is a quarter-width VGG-19 with about 1/16 of the weights and compute.

    >>> sum(p.numel() for p in vgg19_cifar(width=16).parameters() if p.dim() > 1)
    1252784
    """
    _check_width(width)
    layers: list[nn.Module] = []
    c = 3
    for v in _VGG19:
        if isinstance(v, str):  # "M": max pool
            layers.append(nn.MaxPool2d(2))
            continue
        v = v * width // 64
        layers += [nn.Conv2d(c, v, 3, padding=1, bias=not batch_norm)]
        layers += [nn.BatchNorm2d(v)] if batch_norm else []
        layers += [nn.ReLU(inplace=True)]
        c = v
    return nn.Sequential(*layers, nn.Flatten(), nn.Linear(c, num_classes))


MODELS: dict[str, Callable[..., nn.Module]] = {
    "lenet_300_100": lenet_300_100,
    "lenet_5": lenet_5,
    "mlp": mlp,
    "vgg19": vgg19_cifar,
    "resnet18": resnet18_cifar,
    "resnet34": resnet34_cifar,
    "resnet50": resnet50_cifar,
}
INPUT_SHAPES: dict[str, tuple[int, ...]] = {
    "lenet_300_100": (1, 1, 28, 28),
    "lenet_5": (1, 1, 28, 28),
    "mlp": (1, 1, 28, 28),
    "vgg19": (1, 3, 32, 32),
    "resnet18": (1, 3, 32, 32),
    "resnet34": (1, 3, 32, 32),
    "resnet50": (1, 3, 32, 32),
}
