"""The architectures of "Connectivity Matters" (Vysogorets & Kempe), built from code.

LeNet-300-100, LeNet-5 and ``mlp`` (deeper fully connected nets) take MNIST-size inputs (1x28x28);
VGG-19 and ResNet-18 are the CIFAR forms (3x32x32 input, 3x3 stem, no stem pooling). Input shapes
are in :data:`INPUT_SHAPES`.

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

import torch
from torch import nn

__all__ = ["lenet_300_100", "lenet_5", "mlp", "vgg19_cifar", "resnet18_cifar", "MODELS", "INPUT_SHAPES"]


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


def _check_width(width: int) -> None:
    if not isinstance(width, int) or width < 1:
        raise ValueError(f"width must be a positive integer (the first stage's channels), not {width!r}")


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


class BasicBlock(nn.Module):
    def __init__(self, c_in: int, c_out: int, stride: int):
        super().__init__()
        self.conv1 = nn.Conv2d(c_in, c_out, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(c_out)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(c_out)
        self.shortcut = nn.Sequential()
        if stride != 1 or c_in != c_out:
            self.shortcut = nn.Sequential(nn.Conv2d(c_in, c_out, 1, stride, bias=False), nn.BatchNorm2d(c_out))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = torch.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return torch.relu(out + self.shortcut(x))


class ResNetCifar(nn.Module):
    def __init__(self, blocks: tuple[int, ...] = (2, 2, 2, 2), num_classes: int = 10, width: int = 64):
        super().__init__()
        _check_width(width)
        self.conv1 = nn.Conv2d(3, width, 3, 1, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        stages, c = [], width
        for i, n in enumerate(blocks):
            w = width * 2**i
            stage = [BasicBlock(c if j == 0 else w, w, (1 if i == 0 else 2) if j == 0 else 1) for j in range(n)]
            stages.append(nn.Sequential(*stage))
            c = w
        self.layer1, self.layer2, self.layer3, self.layer4 = stages
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(c, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.relu(self.bn1(self.conv1(x)))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return self.fc(torch.flatten(self.pool(x), 1))


def resnet18_cifar(num_classes: int = 10, width: int = 64) -> nn.Module:
    """ResNet-18 for 32x32 inputs: 3x3 stem without pooling, four stages of two basic blocks.

    ``width`` is the stem's and first stage's channels (64 in the paper; each stage doubles it).

    >>> sum(p.numel() for p in resnet18_cifar(width=16).parameters() if p.dim() > 1)
    699056
    """
    return ResNetCifar((2, 2, 2, 2), num_classes, width)


MODELS: dict[str, Callable[..., nn.Module]] = {
    "lenet_300_100": lenet_300_100,
    "lenet_5": lenet_5,
    "mlp": mlp,
    "vgg19": vgg19_cifar,
    "resnet18": resnet18_cifar,
}
INPUT_SHAPES: dict[str, tuple[int, ...]] = {
    "lenet_300_100": (1, 1, 28, 28),
    "lenet_5": (1, 1, 28, 28),
    "mlp": (1, 1, 28, 28),
    "vgg19": (1, 3, 32, 32),
    "resnet18": (1, 3, 32, 32),
}
