"""A large batch analysed as a small one, where the unit graph does not depend on the batch.

The walk keeps liveness per position, and the batch is one more position dimension, so its memory
grows with the batch. Every input element is alive, so when the model treats each example alike the
effective masks are the same for any batch: a batch of a million costs what a batch of two does.
That holds only where the model keeps the batch apart, so it is checked, not assumed. The model is
traced with batches of 2 and 3, and the batch may be set aside when

- both traces run the same ops;
- every tensor computed from the inputs has the batch as its first dimension and nowhere else;
- every tensor computed without them (a positional table sliced by the input's length) has one shape;
- both analyses give the same effective masks, dead units and collapse.

Anything else (sequence-first inputs, reductions over the batch, a flatten of the whole batch) is
analysed at the batch given, under the memory budget.

Examples
--------
>>> import torch
>>> m = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.ReLU(), torch.nn.Linear(3, 2))
>>> pair = reduced(lambda **kw: trace(m, **kw), None, (10**7, 4), None)
>>> [tuple(t.vals[t.inputs[0]].shape) for t in pair]
[(2, 4), (3, 4)]
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

from .graph.trace import InputShape, Traced, TraceError, as_inputs, trace  # noqa: F401  (trace: the example)

__all__ = ["reduced", "same_results", "leading_batch", "input_shapes", "smaller_shape_hint", "SMALL", "WORTH"]

SMALL = (2, 3)  # the batches traced; not 1, which squeeze() and export treat as special
WORTH = 2**22  # input elements: below this a batch is analysed as given


def leading_batch(inputs: tuple) -> int | None:
    """The first dimension that every input shares, when there is one and it is over 3."""
    dims = {int(x.shape[0]) if isinstance(x, torch.Tensor) and x.dim() else None for x in inputs}
    if len(dims) != 1 or None in dims:
        return None
    b = dims.pop()
    return b if b is not None and b > max(SMALL) else None


def _with_batch(example_inputs: Any, input_shape: InputShape | None, dtype: Any, b: int) -> dict:
    if example_inputs is not None:
        return {"example_inputs": tuple(x[:b] for x in as_inputs(example_inputs))}
    assert input_shape is not None
    one = not isinstance(input_shape[0], (list, tuple))
    shapes: list[Any] = [input_shape] if one else list(input_shape)
    small = [(b, *tuple(s)[1:]) for s in shapes]
    return {"input_shape": small[0] if one else small, "input_dtype": dtype}


def reduced(
    trace_fn: Callable[..., Traced],
    example_inputs: Any,
    input_shape: InputShape | None,
    input_dtype: torch.dtype | None,
) -> tuple[Traced, Traced] | None:
    """Traces at the two small batches when the batch of the inputs given may be set aside, else None.

    ``trace_fn`` takes :func:`~connectome.graph.trace.trace`'s keywords for the inputs. The caller
    still compares the two analyses (:func:`same_results`) before trusting them.
    """
    inputs = as_inputs(example_inputs, input_shape, input_dtype, device="meta")
    b = leading_batch(inputs)
    if b is None or sum(x.numel() for x in inputs) < WORTH:
        return None
    try:
        a, c = (trace_fn(**_with_batch(example_inputs, input_shape, input_dtype, n)) for n in SMALL)
    except TraceError:  # the model needs its batch (a view to a fixed size): analyse it as given
        return None
    return (a, c) if _same_but_batch(a, c) else None


def _same_but_batch(a: Traced, c: Traced) -> bool:
    na, nc = list(a.graph.nodes), list(c.graph.nodes)
    if len(na) != len(nc) or a.tracer != c.tracer:
        return False
    dep = a.depends_on_input()
    for x, y in zip(na, nc):
        if x.op != y.op or str(x.target) != str(y.target):
            return False
        if not _shapes_agree(a.vals.get(x), c.vals.get(y), dep.get(x, True)):
            return False
    return True


def _shapes_agree(u: Any, v: Any, dep: bool) -> bool:
    if isinstance(u, (tuple, list)) or isinstance(v, (tuple, list)):
        return (
            isinstance(u, (tuple, list))
            and isinstance(v, (tuple, list))
            and len(u) == len(v)
            and all(_shapes_agree(p, q, dep) for p, q in zip(u, v))
        )
    if isinstance(u, torch.Tensor) != isinstance(v, torch.Tensor):
        return False
    if not isinstance(u, torch.Tensor):
        return True
    su, sv = tuple(u.shape), tuple(v.shape)
    if not dep:
        return su == sv
    return len(su) == len(sv) >= 1 and (su[0], sv[0]) == SMALL and su[1:] == sv[1:]


def same_results(run: Callable[[Traced], Any], pair: tuple[Traced, Traced]) -> Any:
    """The analysis at the first small batch when it equals the one at the second, else None."""
    first, second = (run(t) for t in pair)
    if first.collapsed != second.collapsed or set(first.effective_masks) != set(second.effective_masks):
        return None
    if any(not torch.equal(first.effective_masks[k], second.effective_masks[k]) for k in first.effective_masks):
        return None
    rows = [
        [(r["name"], r["dead_in"], r["dead_out"], r["units_in"], r["units_out"]) for r in x.layers]
        for x in (first, second)
    ]
    return first if rows[0] == rows[1] else None


def input_shapes(example_inputs: Any, input_shape: Any, dtype: Any) -> list[tuple[int, ...]]:
    try:
        inputs = as_inputs(example_inputs, input_shape, dtype, device="meta")
    except (TraceError, TypeError, ValueError, RuntimeError):
        return []
    return [tuple(x.shape) for x in inputs if isinstance(x, torch.Tensor)]


def smaller_shape_hint(shapes: list[tuple[int, ...]], need: int, lim: int) -> str:
    """A smaller input that fits: the batch first, then the positions (height, width, length)."""
    ratio = lim / max(need, 1) * 0.8
    out = []
    for s in shapes:
        r, dims = ratio, list(s)
        if len(dims) >= 2 and dims[0] > 1:
            r, dims[0] = r * dims[0], 1
        rest = dims[2:] if len(dims) > 2 else dims[1:] if len(dims) == 2 and dims[0] == 1 and s[0] == 1 else []
        k = len(rest)
        if r < 1 and k:
            scale = r ** (1 / k)
            start = len(dims) - k
            dims[start:] = [max(1, int(d * scale)) for d in dims[start:]]
        out.append(",".join(map(str, dims)))
    if out and out != [",".join(map(str, s)) for s in shapes]:
        return f"use a smaller --input-shape, such as {';'.join(out)}, or raise --max-memory"
    return "raise --max-memory if the machine has room"
