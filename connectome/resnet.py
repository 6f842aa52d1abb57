"""CIFAR-form ResNets (3x3 stem, no stem pooling, 32x32 inputs): ResNet-18 and -34 of basic blocks,
ResNet-50 of bottlenecks, with a choice of activation and EAST's weight sharing.

**Sharing** (``share=r``): in each stage, the blocks from index ``r`` on reuse the convolution weights of
block ``r - 1`` (the same tensors), each convolution multiplied by the block's own learnable scalar; norms
and activations stay the block's own. A shared tensor is one weight with several uses: one mask for all
of them, and gradients from every use.

**Activations** (``act``): a function from a channel count to a module, ``nn.ReLU`` by default (EAST uses
:class:`connectome.train.east.DyReLU`).

Examples
--------
>>> sum(p.numel() for p in resnet34_cifar(width=8).parameters() if p.dim() > 1)
333016
>>> sum(p.numel() for p in resnet34_cifar(width=8, share=2).parameters() if p.dim() > 1)   # counted once
175192
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

__all__ = [
    "BasicBlock",
    "Bottleneck",
    "ResNetCifar",
    "ShareError",
    "resnet18_cifar",
    "resnet34_cifar",
    "resnet50_cifar",
]

Act = Callable[[int], nn.Module]


class ShareError(ValueError):
    """Sharing asked where no block would share (too few blocks per stage, or no stages)."""


def _relu(channels: int) -> nn.Module:
    return nn.ReLU()


class BasicBlock(nn.Module):
    expansion = 1

    def __init__(self, c_in: int, planes: int, stride: int, act: Act = _relu):
        super().__init__()
        self.conv1 = nn.Conv2d(c_in, planes, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.act1, self.act2 = act(planes), act(planes)
        self.shortcut = nn.Sequential()
        if stride != 1 or c_in != planes:
            self.shortcut = nn.Sequential(nn.Conv2d(c_in, planes, 1, stride, bias=False), nn.BatchNorm2d(planes))
        self.scales = nn.ParameterList()  # one per convolution when it reuses another block's (sharing)

    def convs(self) -> list[nn.Conv2d]:
        return [self.conv1, self.conv2]

    def _conv(self, i: int, x: torch.Tensor) -> torch.Tensor:
        out = self.convs()[i](x)
        return out * self.scales[i] if len(self.scales) else out

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.act1(self.bn1(self._conv(0, x)))
        out = self.bn2(self._conv(1, out))
        return self.act2(out + self.shortcut(x))


class Bottleneck(BasicBlock):
    expansion = 4

    def __init__(self, c_in: int, planes: int, stride: int, act: Act = _relu):
        nn.Module.__init__(self)
        out = planes * self.expansion
        self.conv1 = nn.Conv2d(c_in, planes, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = nn.Conv2d(planes, out, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(out)
        self.act1, self.act2, self.act3 = act(planes), act(planes), act(out)
        self.shortcut = nn.Sequential()
        if stride != 1 or c_in != out:
            self.shortcut = nn.Sequential(nn.Conv2d(c_in, out, 1, stride, bias=False), nn.BatchNorm2d(out))
        self.scales = nn.ParameterList()

    def convs(self) -> list[nn.Conv2d]:
        return [self.conv1, self.conv2, self.conv3]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.act1(self.bn1(self._conv(0, x)))
        out = self.act2(self.bn2(self._conv(1, out)))
        out = self.bn3(self._conv(2, out))
        return self.act3(out + self.shortcut(x))


class ResNetCifar(nn.Module):
    def __init__(
        self,
        blocks: tuple[int, ...] = (2, 2, 2, 2),
        num_classes: int = 10,
        width: int = 64,
        block: type[BasicBlock] = BasicBlock,
        act: Act = _relu,
        share: int | None = None,
    ):
        super().__init__()
        self.conv1 = nn.Conv2d(3, width, 3, 1, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.act = act(width)
        stages, c = [], width
        for i, n in enumerate(blocks):
            planes = width * 2**i
            stage = []
            for j in range(n):
                stage.append(block(c, planes, (1 if i == 0 else 2) if j == 0 else 1, act))
                c = planes * block.expansion
            stages.append(nn.Sequential(*stage))
        self.layer1, self.layer2, self.layer3, self.layer4 = stages
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(c, num_classes)
        if share is not None:
            _share(stages, share)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.act(self.bn1(self.conv1(x)))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return self.fc(torch.flatten(self.pool(x), 1))


def _share(stages: list[nn.Sequential], ratio: int) -> None:
    if ratio < 1:
        raise ShareError(f"the sharing ratio must be at least 1, not {ratio}")
    sharing = 0
    for stage in stages:
        if len(stage) <= ratio:
            continue
        source = stage[ratio - 1]
        for j in range(ratio, len(stage)):
            blk = stage[j]
            assert isinstance(blk, BasicBlock) and isinstance(source, BasicBlock)
            for mine, theirs in zip(blk.convs(), source.convs()):
                mine.weight = theirs.weight  # the same tensor: one weight, several uses
                blk.scales.append(nn.Parameter(torch.ones(())))
            sharing += 1
    if not sharing:
        raise ShareError(
            f"no block would share: every stage has at most {ratio} blocks; choose a deeper ResNet "
            "(resnet34, resnet50) or a smaller ratio"
        )


def _check_width(width: int) -> None:
    if not isinstance(width, int) or width < 1:
        raise ValueError(f"width must be a positive integer (the first stage's channels), not {width!r}")


def resnet18_cifar(num_classes: int = 10, width: int = 64, act: Act = _relu, share: int | None = None) -> nn.Module:
    """ResNet-18 for 32x32 inputs: 3x3 stem without pooling, four stages of two basic blocks.

    ``width`` is the stem's and first stage's channels (64 in the paper; each stage doubles it).

    >>> sum(p.numel() for p in resnet18_cifar(width=16).parameters() if p.dim() > 1)
    699056
    """
    _check_width(width)
    return ResNetCifar((2, 2, 2, 2), num_classes, width, BasicBlock, act, share)


def resnet34_cifar(num_classes: int = 10, width: int = 64, act: Act = _relu, share: int | None = None) -> nn.Module:
    """ResNet-34 for 32x32 inputs: stages of 3, 4, 6 and 3 basic blocks."""
    _check_width(width)
    return ResNetCifar((3, 4, 6, 3), num_classes, width, BasicBlock, act, share)


def resnet50_cifar(num_classes: int = 10, width: int = 64, act: Act = _relu, share: int | None = None) -> nn.Module:
    """ResNet-50 for 32x32 inputs: stages of 3, 4, 6 and 3 bottlenecks (1x1, 3x3, 1x1; 4x wider out).

    >>> sum(p.numel() for p in resnet50_cifar().parameters() if p.dim() > 1)
    23467712
    """
    _check_width(width)
    return ResNetCifar((3, 4, 6, 3), num_classes, width, Bottleneck, act, share)
