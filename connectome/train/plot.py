"""A run's plot: accuracy per epoch beside direct and effective sparsity over training (matplotlib)."""

from __future__ import annotations

import io
from typing import Any

from ..io.files import write_atomic

__all__ = ["plot_history"]


def plot_history(history: list[dict[str, Any]], path: str, title: str = "") -> None:
    """Write a PNG of ``history`` (the records of :func:`connectome.train.train`) to ``path``.

    >>> import os, tempfile
    >>> h = [{"event": "epoch", "epoch": 1, "step": 10, "val_acc": 0.9, "test_acc": 0.91,
    ...       "direct_sparsity": 0.9, "effective_sparsity": 0.92}]
    >>> p = os.path.join(tempfile.mkdtemp(), "run.png"); plot_history(h, p); os.path.getsize(p) > 0
    True
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    epochs = [r for r in history if r.get("event") == "epoch"]
    marks = [r for r in history if "effective_sparsity" in r]
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 4))
    for key, label in (("val_acc", "validation"), ("test_acc", "test")):
        left.plot([r["epoch"] for r in epochs], [100 * r[key] for r in epochs], marker="o", label=label)
    left.set(xlabel="epoch", ylabel="accuracy (%)", title="accuracy")
    left.legend()
    steps = [r["step"] for r in marks]
    right.plot(steps, [100 * r["direct_sparsity"] for r in marks], label="direct")
    right.plot(steps, [100 * r["effective_sparsity"] for r in marks], label="effective")
    right.set(xlabel="step", ylabel="sparsity (%)", title="sparsity over training")
    right.legend()
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100)
    plt.close(fig)
    write_atomic(path, buf.getvalue())
