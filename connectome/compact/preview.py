"""What compaction would give, for the audit: "compacting removes them: parameters X -> Y".

Examples
--------
>>> import torch
>>> from torch import nn
>>> from connectome.analysis import analyze
>>> m = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 2))
>>> with torch.no_grad(): _ = m[2].weight[:, :5].zero_()
>>> message, section = preview(m, (1, 4))
>>> message
'compacting removes 5 dead units: parameters 58 -> 23 (connectome compact; outputs checked equal)'
>>> section["layers"]["0"]
{'out': [3, 8], 'in': [4, 4]}
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

from ..io.tensors import first_line

__all__ = ["preview"]


def preview(
    model: nn.Module, input_shape: Any, masks: Mapping[str, torch.Tensor] | None = None, input_dtype: Any = None
) -> tuple[str, dict[str, Any] | None]:
    """A one-line finding and the compaction's ``to_dict()`` (None where it cannot be computed: the line
    then says why)."""
    from . import Compaction, compact

    try:
        small = compact(model, input_shape=input_shape, masks=masks, input_dtype=input_dtype)
    except Exception as e:  # the audit stands without it
        return f"compaction not computed: {first_line(e, 160)}", None
    c: Compaction = small.compaction  # type: ignore[assignment]
    return (
        f"compacting removes {c.removed_units:,} dead units: parameters {c.params[0]:,} -> {c.params[1]:,} "
        "(connectome compact; outputs checked equal)",
        c.to_dict(),
    )
