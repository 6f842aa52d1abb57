"""Weights computed from parameters: ``W.t()``, ``W.view(...)``, ``s * W``, a standardised ``W``, a
parametrization that torch.export inlined.

The op reads the computed tensor ``C``; its connectivity is ``C``'s support (a standardisation makes
zero entries nonzero). The weights to report are the parameters ``C`` is computed from, and an entry of
a parameter is effective iff some effective entry of ``C`` depends on it:

- ``C`` only moves the parameter's entries (a view, a transpose, a slice): an exact index map, read off
  by running the computation on numbered entries, and checked with a second numbering;
- otherwise the dependence comes from autograd in float64: ``grad(sum(C * r * E), W) != 0`` for an
  effective mask ``E`` and fixed random ``r > 0``, so that no sum cancels by accident. A parameter
  whose shape differs from its key's (weight norm's ``g`` under a parametrization) is mapped by
  broadcasting, or else as a whole.

Examples
--------
>>> import torch
>>> from connectome import analyze
>>> class Shared(torch.nn.Module):
...     def __init__(self):
...         super().__init__()
...         self.w, self.s = torch.nn.Parameter(torch.ones(2, 3)), torch.nn.Parameter(torch.tensor(0.5))
...     def forward(self, x):
...         return torch.nn.functional.linear(x, self.s * self.w)
>>> m = Shared()
>>> with torch.no_grad(): m.w[1] = 0
>>> res = analyze(m, input_shape=(1, 3))
>>> res.effective_masks["w"].sum().item(), res.params_total
(3, 6)
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import torch
from torch import fx

from .weight import Weight

if TYPE_CHECKING:
    from .base import Ctx

__all__ = ["computed_weight"]


def computed_weight(ctx: Ctx, arg: Any, kind: str) -> Weight | None:
    """The :class:`Weight` behind a weight operand computed from parameters, or None.

    None when the operand depends on the model inputs, or is computed from no parameter of two or
    more dimensions (then it is a constant, not a weight).
    """
    traced = ctx.traced
    if not isinstance(arg, fx.Node) or traced.depends_on_input().get(arg, True):
        return None
    names = ctx.masks.names
    sources = traced.param_ancestors(arg)
    weights = []
    for n in sources:
        a = traced.attr_name(n)
        value = traced.attr(a) if a is not None else None
        if a is not None and names.is_param(a) and isinstance(value, torch.Tensor) and value.dim() >= 2:
            weights.append((n, names.key(a), value))
    if not weights:
        return None
    if len(weights) == 1 and weights[0][1] not in names.parametrized:  # a parametrization's key is its output
        w = _moved(ctx, arg, *weights[0], kind)
        if w is not None:
            return w
    keys = {k for _, k, _ in weights}
    if len(keys) == 1 and keys <= names.parametrized:  # a parametrization's output, inlined by torch.export
        key = next(iter(keys))
        try:
            same = _is_output(traced, key, traced.constant(arg, {}))
        except Exception:
            same = False
        if same:
            return ctx.named_weight(key, kind)
    if _piecewise_constant(arg):
        return _as_a_whole(ctx, arg, weights, kind)
    try:
        return _through_autograd(ctx, arg, sources, weights, kind)
    except Exception:  # a computation autograd cannot follow: never call these weights ineffective
        traced.opaque_weights.update(k for _, k, _ in weights)
        return None


def _moved(ctx: Ctx, arg: fx.Node, node: fx.Node, key: str, value: torch.Tensor, kind: str) -> Weight | None:
    """A weight operand that only moves the entries of one parameter: an exact index map."""
    mask = ctx.masks.get(key)
    if mask is None or tuple(mask.shape) != tuple(value.shape):
        return None
    n = value.numel()
    results = []
    # positive numbers decode the map; negative fractional ones and zeros reject what only looks like a
    # move on positive integers (relu, clamp(min=eps), rounding); a value that is zero must stay zero
    for scale, shift in ((1.0, 1.0), (-2.0, -1.0 / 3), (0.0, 0.0)):
        numbered = (torch.arange(n, dtype=torch.float64) * scale + shift).reshape(value.shape)
        try:
            r = ctx.traced.constant(arg, {node: numbered})
        except Exception:
            return None
        if not isinstance(r, torch.Tensor) or r.dtype != torch.float64:
            return None
        results.append(r)
    first, second, zeros = results
    index = first - 1
    if (
        not ((index >= 0) & (index < n) & (index == index.round())).all()
        or bool(zeros.any())
        or not torch.equal(second, -2.0 * index - 1.0 / 3)
    ):
        return None
    index = index.long()
    return Weight(key, kind, mask.reshape(-1)[index], index)


# ops whose derivative is zero almost everywhere: autograd sees no dependence where there is one
_PIECEWISE = frozenset(
    {
        "sign",
        "round",
        "floor",
        "ceil",
        "trunc",
        "frac",
        "gt",
        "lt",
        "ge",
        "le",
        "eq",
        "ne",
        "__gt__",
        "__lt__",
        "__ge__",
        "__le__",
        "__eq__",
        "__ne__",
        "argmax",
        "argmin",
        "argsort",
        "topk",
        "sort",
        "bool",
        "long",
        "int",
        "heaviside",
        "where",
        "masked_fill",
        "bucketize",
        "searchsorted",
        "fake_quantize_per_tensor_affine",
        "fake_quantize_per_channel_affine",
        "quantize_per_tensor",
        "dequantize",
        "remainder",
        "fmod",
        "floor_divide",
        "__floordiv__",
        "__mod__",
        "to",
        "type",
    }
)


def _piecewise_constant(arg: fx.Node) -> bool:
    """Whether the computation of a weight operand goes through a step function (sign, round, a threshold)."""
    seen, todo = set(), [arg]
    while todo:
        n = todo.pop()
        if n in seen or not isinstance(n, fx.Node):
            continue
        seen.add(n)
        name = n.target if isinstance(n.target, str) else getattr(n.target, "__name__", "")
        if str(name).split(".")[0] in _PIECEWISE:
            return True
        todo.extend(n.all_input_nodes)
    return False


def _as_a_whole(ctx: Ctx, arg: fx.Node, weights: list, kind: str) -> Weight:
    """A weight computed through step functions (a binarised or quantised weight): its support is computed,
    and each parameter behind it counts as a whole as soon as any entry of the operand is effective."""
    c = ctx.traced.constant(arg, {})
    support = (c != 0) if isinstance(c, torch.Tensor) else torch.ones(ctx.shape(arg), dtype=torch.bool)
    masks = ctx.masks
    keys = tuple(dict.fromkeys(k for _, k, _ in weights))
    for k in keys:  # read when the effective masks are: this op depends on them all the same
        masks.note_reader(k)

    def backmap(eff: torch.Tensor) -> dict[str, torch.Tensor]:
        hit = bool(eff.any())
        return {k: masks[k].clone() if hit else torch.zeros_like(masks[k]) for k in keys}

    return Weight(keys[0], kind, support.reshape(ctx.shape(arg)), keys=keys, backmap=backmap)


def _through_autograd(ctx: Ctx, arg: fx.Node, sources: list[fx.Node], weights: list, kind: str) -> Weight | None:
    traced, masks = ctx.traced, ctx.masks
    overrides: dict[fx.Node, Any] = {}
    leaves: list[tuple[str, torch.Tensor]] = []
    weight_nodes = {n for n, _, _ in weights}
    for n in sources:
        name = traced.attr_name(n)
        found = traced.attr(name) if name is not None else None
        if name is None or found is None:  # not a parameter's node: the caller treats the operand as opaque
            raise LookupError(f"no tensor behind {n}")
        value = found.detach()
        if value.is_floating_point():
            value = value.to(torch.float64)
        if n in weight_nodes:
            key = masks.names.key(name)
            masks.note_reader(key)
            explicit = masks.explicit.get(key)
            if explicit is not None and explicit.shape == value.shape:
                value = value * explicit
            value = value.clone().requires_grad_(True)
            leaves.append((key, value))
        overrides[n] = value
    c = traced.constant(arg, overrides, grad=True)
    out = ctx.val(arg)
    if not isinstance(c, torch.Tensor) or not c.requires_grad or tuple(c.shape) != tuple(out.shape):
        return None
    gen = torch.Generator().manual_seed(0)
    r = torch.rand(c.shape, generator=gen, dtype=c.dtype) + 0.5
    support = c.detach() != 0
    shapes = {key: tuple(masks[key].shape) for key, _ in leaves}

    def depends(eff: torch.Tensor) -> dict[str, torch.Tensor]:
        found = {key: torch.zeros(shapes[key], dtype=torch.bool) for key, _ in leaves}
        if not eff.any():
            return found
        grads = torch.autograd.grad(
            (c * r * eff.to(c.dtype)).sum(), [v for _, v in leaves], retain_graph=True, allow_unused=True
        )
        for (key, _), g in zip(leaves, grads):
            if g is not None:
                found[key] |= _to_shape(g != 0, shapes[key])
        return found

    sup = depends(support)
    keep = {key: masks[key] | sup[key] for key in sup}
    # a parametrization's key is its output, not its originals: the operand is that output itself, or
    # (another computation of it) the whole output counts as soon as any of it does
    outputs = {key: _is_output(traced, key, c) for key in sup if key in masks.names.parametrized}

    def backmap(eff: torch.Tensor) -> dict[str, torch.Tensor]:
        found = {key: m & keep[key] for key, m in depends(eff).items() if key not in outputs}
        for key, same in outputs.items():
            found[key] = (
                eff & masks[key] if same else (masks[key].clone() if eff.any() else torch.zeros_like(masks[key]))
            )
        return found

    keys = tuple(sup)
    return Weight(keys[0], kind, support, keys=keys, backmap=backmap, support=sup)


def _is_output(traced, key: str, c: torch.Tensor) -> bool:
    """Whether the computed operand ``c`` is the parametrized weight ``key`` itself."""
    value = traced.attr(key)
    # c is computed in float64 from the originals, the module's weight in its own precision
    return (
        isinstance(value, torch.Tensor)
        and tuple(value.shape) == tuple(c.shape)
        and torch.allclose(value.detach().to(c.dtype), c.detach(), rtol=1e-4, atol=1e-6)
    )


def _to_shape(m: torch.Tensor, shape: tuple) -> torch.Tensor:
    """A dependence mask on a parameter as one on its key's tensor: equal shapes, broadcast, or whole."""
    if tuple(m.shape) == shape:
        return m
    try:
        return torch.broadcast_to(m, shape).clone()
    except RuntimeError:
        return torch.full(shape, bool(m.any()))
