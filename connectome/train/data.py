"""Training data: a data set's splits as tensors, a held-out validation split, the CIFAR form (32x32,
3 channels) for models built for CIFAR-10, the usual crop-and-flip augmentation, and seeded batches.

Examples
--------
>>> d = Data.load("mnist", val_size=1000, limit=3000)
>>> tuple(d.train[0].shape), tuple(d.val[0].shape), tuple(d.test[0].shape[1:])
((2000, 1, 28, 28), (1000, 1, 28, 28), (1, 28, 28))
>>> tuple(Data.load("mnist", limit=100, val_size=10, cifar_form=True).train[0].shape)
(90, 3, 32, 32)
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from .. import data as datasets
from .masked import TrainError

__all__ = ["Data", "batches", "augment"]

Split = tuple[torch.Tensor, torch.Tensor]


def _cifar_form(x: torch.Tensor) -> torch.Tensor:
    """28x28 grey images padded to 32x32 and repeated over 3 channels."""
    if x.shape[1:] == (3, 32, 32):
        return x
    pad = [(32 - x.shape[-1]) // 2, (32 - x.shape[-1] + 1) // 2, (32 - x.shape[-2]) // 2, (32 - x.shape[-2] + 1) // 2]
    return F.pad(x, pad, value=float(x.min())).expand(-1, 3, -1, -1).contiguous()


@dataclass
class Data:
    """Train, validation and test splits (images, labels) of one data set, and whether to augment."""

    name: str
    train: Split
    val: Split
    test: Split
    augment: bool = False

    @staticmethod
    def load(
        name: str,
        val_size: int = 5000,
        root: str | None = None,
        download: bool = False,
        cifar_form: bool = False,
        limit: int | None = None,
        seed: int = 0,
    ) -> Data:
        """The splits of ``name`` (mnist, fashion-mnist, cifar10): the last ``val_size`` examples of a
        seeded permutation of the training split are held out; ``limit`` keeps only the first examples
        of that permutation (and of the test split), for small runs."""
        if name not in datasets.DATASETS:
            raise TrainError(f"unknown data set {name!r}: choose from {', '.join(datasets.DATASETS)}")
        x, y = datasets.load(name, "train", root, download)
        tx, ty = datasets.load(name, "test", root, download)
        order = torch.randperm(len(x), generator=torch.Generator().manual_seed(seed))
        if limit is not None:
            order, tx, ty = order[:limit], tx[:limit], ty[:limit]
        if not 0 <= val_size < len(order):
            raise TrainError(f"--val-size must lie in [0, {len(order)}), not {val_size}")
        tr, va = order[: len(order) - val_size], order[len(order) - val_size :]
        if cifar_form:
            x, tx = _cifar_form(x), _cifar_form(tx)
        return Data(name, (x[tr], y[tr]), (x[va], y[va]), (tx, ty), augment=name == "cifar10")


def augment(x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Random 4-pixel-padded crops and horizontal flips, one draw per image (seeded)."""
    n, _, h, w = x.shape
    padded = F.pad(x, (4, 4, 4, 4))
    dy = torch.randint(0, 9, (n,), generator=generator)
    dx = torch.randint(0, 9, (n,), generator=generator)
    rows = (dy[:, None] + torch.arange(h)[None, :])[:, None, :, None].expand(n, x.shape[1], h, w + 8)
    out = padded.gather(2, rows)
    cols = (dx[:, None] + torch.arange(w)[None, :])[:, None, None, :].expand(n, x.shape[1], h, w)
    out = out.gather(3, cols)
    flip = torch.rand(n, generator=generator) < 0.5
    out[flip] = out[flip].flip(-1)
    return out


def batches(split: Split, size: int, generator: torch.Generator | None = None) -> Iterator[Split]:
    """Batches of ``size``; shuffled by ``generator`` when given, in order otherwise."""
    x, y = split
    order = torch.randperm(len(x), generator=generator) if generator is not None else torch.arange(len(x))
    for i in range(0, len(x), size):
        idx = order[i : i + size]
        yield x[idx], y[idx]
