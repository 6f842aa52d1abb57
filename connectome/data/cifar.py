"""CIFAR-10 files, in either of the forms the dataset is distributed in.

- python: ``cifar-10-batches-py/{data_batch_1..5,test_batch}``, pickled dicts with ``data``
  (N x 3072 bytes: the red plane, then green, then blue, each row-major 32 x 32) and ``labels``;
- binary: ``cifar-10-batches-bin/{data_batch_1..5,test_batch}.bin``, records of one label byte
  followed by the same 3072 bytes.

The pickles are read by an unpickler that builds numpy arrays and nothing else, so a file in the
dataset's place cannot run code. The files are opened only when they are regular files, and their
total size must fit the memory budget before any of them is read.
"""

from __future__ import annotations

import contextlib
import os
import pickle
from typing import BinaryIO

import numpy as np

from ..memory import check, human, reserve
from .common import DataError, check_labels, open_file, pick, read_exactly, size_of

_BATCHES = {"train": [f"data_batch_{i}" for i in range(1, 6)], "test": ["test_batch"]}
_RECORD = 1 + 3 * 32 * 32
_ALLOWED = {
    ("numpy", "ndarray"),
    ("numpy", "dtype"),
    ("numpy.core.multiarray", "_reconstruct"),
    ("numpy._core.multiarray", "_reconstruct"),
    ("numpy.core.multiarray", "scalar"),
    ("numpy._core.multiarray", "scalar"),
    ("_codecs", "encode"),
}


def read_folder(folder: str, split: str, n: int | None, seed: int):
    """(images ``(N, 3072)`` uint8, labels) from ``folder`` or the batch folder inside it, or None."""
    names = _BATCHES[split]
    for sub in ("", "cifar-10-batches-py", "cifar-10-batches-bin"):
        where = os.path.join(folder, sub) if sub else folder
        forms = [("", _read_pickle), (".bin", _read_binary)]
        present = {suffix: [os.path.lexists(os.path.join(where, b + suffix)) for b in names] for suffix, _ in forms}
        for suffix, read in forms:
            if all(present[suffix]):
                images, labels = _read_batches(where, [os.path.join(where, b + suffix) for b in names], read)
                return pick(images, labels, n, seed)
        for suffix, _ in forms:
            if any(present[suffix]):
                missing = ", ".join(b + suffix for b, there in zip(names, present[suffix]) if not there)
                raise DataError(
                    f"{where} holds part of the CIFAR-10 {split} split but not {missing}: "
                    "unpack the whole archive there"
                )
    return None


def file_names(split: str) -> str:
    """The files :func:`read_folder` looks for, in words (for a message)."""
    names = _BATCHES[split]
    files = names[0] if len(names) == 1 else f"{names[0]} to {names[-1]}"
    return f"{files} (or the same with .bin)"


def _read_batches(where: str, paths: list[str], read) -> tuple[np.ndarray, np.ndarray]:
    """All of a split's batches, once their total size fits the memory budget."""
    with contextlib.ExitStack() as stack:
        files = [stack.enter_context(open_file(p)) for p in paths]
        total = sum(size_of(f) for f in files)
        # a batch's arrays, their concatenation, and the pickle's own copy of the pixels while it loads
        reserve(3 * total, f"reading {human(total)} of CIFAR-10 batches from {where}")
        parts = [read(f, p) for f, p in zip(files, paths)]
    images = np.concatenate([p[0] for p in parts])
    labels = np.concatenate([p[1] for p in parts])
    return images, labels


class _ArraysOnly(pickle.Unpickler):
    path: str  # the file, for the error message (set after construction)

    def find_class(self, module, name):
        if (module, name) not in _ALLOWED:
            raise DataError(
                f"{self.path} asks to build {module}.{name}: a CIFAR-10 batch holds only arrays and "
                "lists; replace the file with the original"
            )
        return super().find_class(module, name)


def _read_pickle(f: BinaryIO, path: str) -> tuple[np.ndarray, np.ndarray]:
    reader = _ArraysOnly(f, encoding="latin1")  # the original batches are Python 2 pickles
    reader.path = path
    try:
        entry = reader.load()
    except (DataError, MemoryError):
        raise
    except Exception as e:
        raise DataError(f"{path} is not a CIFAR-10 python batch ({type(e).__name__}: {e})") from None
    check(f"reading {path}")
    if not isinstance(entry, dict):
        raise DataError(f"{path} is not a CIFAR-10 python batch (no data/labels dict)")
    entry = {k.decode("latin1") if isinstance(k, bytes) else k: v for k, v in entry.items()}
    if "data" not in entry or "labels" not in entry:
        raise DataError(f"{path} is not a CIFAR-10 python batch (it lacks 'data' or 'labels')")
    try:
        images = np.asarray(entry["data"], dtype=np.uint8)
        labels = np.asarray(entry["labels"], dtype=np.int64)
    except (TypeError, ValueError, OverflowError) as e:
        raise DataError(f"{path} is not a CIFAR-10 python batch ({type(e).__name__}: {e})") from None
    if images.ndim != 2 or images.shape[1] != _RECORD - 1 or labels.ndim != 1 or len(labels) != len(images):
        raise DataError(f"{path}: expected N x 3072 pixels and N labels, found {images.shape} and {labels.shape}")
    check_labels(labels, path)
    return images, labels


def _read_binary(f: BinaryIO, path: str) -> tuple[np.ndarray, np.ndarray]:
    size = size_of(f)
    if size == 0 or size % _RECORD:
        raise DataError(
            f"{path} is not a CIFAR-10 binary batch: {size} bytes is not a whole number of {_RECORD}-byte records"
        )
    rows = read_exactly(f, size, path).reshape(-1, _RECORD)
    labels = rows[:, 0].astype(np.int64)
    check_labels(labels, path)
    return rows[:, 1:], labels
