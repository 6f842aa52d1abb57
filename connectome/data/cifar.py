"""CIFAR-10 files, in either of the forms the dataset is distributed in.

- python: ``cifar-10-batches-py/{data_batch_1..5,test_batch}``, pickled dicts with ``data``
  (N x 3072 bytes: the red plane, then green, then blue, each row-major 32 x 32) and ``labels``;
- binary: ``cifar-10-batches-bin/{data_batch_1..5,test_batch}.bin``, records of one label byte
  followed by the same 3072 bytes.

The pickles are read by an unpickler that builds numpy arrays and nothing else, so a file in the
dataset's place cannot run code.
"""

from __future__ import annotations

import os
import pickle

import numpy as np

from .common import DataError, pick

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
    for sub in ("", "cifar-10-batches-py", "cifar-10-batches-bin"):
        where = os.path.join(folder, sub)
        names = _BATCHES[split]
        if all(os.path.isfile(os.path.join(where, b)) for b in names):
            parts = [_read_pickle(os.path.join(where, b)) for b in names]
        elif all(os.path.isfile(os.path.join(where, b + ".bin")) for b in names):
            parts = [_read_binary(os.path.join(where, b + ".bin")) for b in names]
        else:
            continue
        images = np.concatenate([p[0] for p in parts])
        labels = np.concatenate([p[1] for p in parts])
        return pick(images, labels, n, seed)
    return None


class _ArraysOnly(pickle.Unpickler):
    path: str  # the file, for the error message (set after construction)

    def find_class(self, module, name):
        if (module, name) not in _ALLOWED:
            raise DataError(
                f"{self.path} asks to build {module}.{name}: a CIFAR-10 batch holds only arrays and "
                "lists; replace the file with the original"
            )
        return super().find_class(module, name)


def _read_pickle(path: str) -> tuple[np.ndarray, np.ndarray]:
    with open(path, "rb") as f:
        reader = _ArraysOnly(f, encoding="latin1")  # the original batches are Python 2 pickles
        reader.path = path
        try:
            entry = reader.load()
        except DataError:
            raise
        except Exception as e:
            raise DataError(f"{path} is not a CIFAR-10 python batch ({type(e).__name__}: {e})") from None
    if not isinstance(entry, dict):
        raise DataError(f"{path} is not a CIFAR-10 python batch (no data/labels dict)")
    entry = {k.decode("latin1") if isinstance(k, bytes) else k: v for k, v in entry.items()}
    if "data" not in entry or "labels" not in entry:
        raise DataError(f"{path} is not a CIFAR-10 python batch (it lacks 'data' or 'labels')")
    images = np.asarray(entry["data"], dtype=np.uint8)
    labels = np.asarray(entry["labels"], dtype=np.int64)
    if images.ndim != 2 or images.shape[1] != _RECORD - 1 or len(labels) != len(images):
        raise DataError(f"{path}: expected N x 3072 pixels and N labels, found {images.shape} and {len(labels)}")
    return images, labels


def _read_binary(path: str) -> tuple[np.ndarray, np.ndarray]:
    raw = np.fromfile(path, dtype=np.uint8)
    if raw.size == 0 or raw.size % _RECORD:
        raise DataError(
            f"{path} is not a CIFAR-10 binary batch: {raw.size} bytes is not a whole number of {_RECORD}-byte records"
        )
    rows = raw.reshape(-1, _RECORD)
    return rows[:, 1:], rows[:, 0].astype(np.int64)
