"""What the dataset readers share: the error type and seeded sampling."""

from __future__ import annotations

import numpy as np
import torch


class DataError(ValueError):
    """The dataset's files were not found or are damaged; the message says how to provide them."""


def pick(images: np.ndarray, labels: np.ndarray, n: int | None, seed: int) -> tuple[np.ndarray, torch.Tensor]:
    """All rows (``n`` None) or ``n`` rows drawn without replacement by ``seed``, kept in file order."""
    if n is not None:
        idx = np.sort(np.random.default_rng(seed).choice(len(images), size=min(n, len(images)), replace=False))
        images, labels = images[idx], labels[idx]
    return images.reshape(len(images), -1), torch.from_numpy(np.asarray(labels).astype(np.int64))
