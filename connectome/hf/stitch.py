"""The trace of a deep decoder stack from the traces of its two- and three-layer copies.

``torch.export`` costs time in proportion to the graph: 10 s for a 32-layer 7B model, the largest
share of an audit of a folder in the page cache. Its layers are copies of one block, so the graph of
``N`` layers is the graph of three with the last block repeated ``N - 3`` times: each copy reads its
own parameters (``layers.i.``), the previous copy's output where the last block read its
predecessor's, and the same shared nodes (rotary tables, the attention mask); the nodes after the
stack read the last copy. This is done only where it is exact:

- every layer of the full model is the same module type, with the same parameter names, shapes and
  dtypes and the same plain attributes on every submodule (``layer_idx`` aside): a sliding-window
  layer among full ones, a dense layer among MoE ones, refuses;
- the two-layer trace, stitched to three, must equal the three-layer trace node for node (op, target,
  arguments, shapes); else the model is traced whole.

Examples
--------
>>> import torch, transformers
>>> from connectome.hf.skeleton import placeholders
>>> cfg = transformers.LlamaConfig(vocab_size=32, hidden_size=8, intermediate_size=16, num_hidden_layers=6,
...                                num_attention_heads=2, num_key_value_heads=1, use_cache=False)
>>> def make(n):
...     return placeholders(transformers.LlamaForCausalLM(cfg.__class__(**{**cfg.to_dict(), "num_hidden_layers": n})))
>>> t = stitched(make(6), make, input_shape=(1, 4), input_dtype=torch.long)
>>> sorted({name.split(".")[2] for name in t.param_nodes.values() if ".layers." in name})
['0', '1', '2', '3', '4', '5']
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

from torch import fx, nn

from ..analysis import Analyzer
from ..graph.trace import Traced, trace

__all__ = ["StackAnalyzer", "stitched", "decoder_stack", "with_layers"]

_STACK = re.compile(r"^(.*\.)?(layers|h|blocks|block|layer|decoder_layers)$")


def decoder_stack(model: nn.Module) -> tuple[str, nn.ModuleList] | None:
    """The model's longest list of decoder layers (``model.layers``, ``transformer.h``...), by name."""
    found = [(n, m) for n, m in model.named_modules() if isinstance(m, nn.ModuleList) and _STACK.match(n)]
    return max(found, key=lambda f: len(f[1]), default=None)


def stitched(model: nn.Module, make: Callable[[int], nn.Module], **inputs: Any) -> Traced | None:
    """The trace of ``model`` built from the traces of ``make(2)`` and ``make(3)`` (the same model with 2
    and 3 layers), or None where that would not be exact (see the module docs)."""
    stack = decoder_stack(model)
    if stack is None or len(stack[1]) < 4 or not _uniform(stack[1]):
        return None
    prefix, layers = stack
    try:
        two, three = trace(make(2), **inputs), trace(make(3), **inputs)
    except Exception:  # the small copies cannot be built or traced: trace the model whole
        return None
    if not _extend(two, prefix, 3) or _signature(two) != _signature(three):
        return None
    if not _extend(three, prefix, len(layers)):
        return None
    three.model = model
    return three


def _uniform(layers: nn.ModuleList) -> bool:
    first = _fingerprint(layers[0])
    return all(_fingerprint(m) == first for m in layers[1:])


def _fingerprint(layer: nn.Module) -> tuple:
    params = tuple((n, tuple(p.shape), p.dtype) for n, p in layer.named_parameters(remove_duplicate=False))
    buffers = tuple((n, tuple(b.shape), b.dtype) for n, b in layer.named_buffers(remove_duplicate=False))
    attrs = []
    for name, mod in layer.named_modules():
        plain = {
            k: v
            for k, v in vars(mod).items()
            if k != "layer_idx" and not k.startswith("_") and isinstance(v, (int, float, str, bool, type(None)))
        }
        attrs.append((name, type(mod).__name__, tuple(sorted(plain.items()))))
    return params, buffers, tuple(attrs)


def _block_of(traced: Traced, prefix: str) -> dict[fx.Node, int | None]:
    pat = re.compile(re.escape(prefix) + r"\.(\d+)(\.|$)")
    out: dict[fx.Node, int | None] = {}
    for n in traced.graph.nodes:
        where = traced.param_nodes.get(n)
        if where is None:
            paths = [p for p, _ in (n.meta.get("nn_module_stack") or {}).values()]
            where = next((p for p in paths if pat.search(p)), None)
        m = pat.search(where) if where else None
        out[n] = int(m.group(1)) if m else None
    return out


def _extend(t: Traced, prefix: str, total: int) -> bool:
    """Repeat ``t``'s last block until the stack has ``total`` layers, in place; False where the last
    two blocks are not node-for-node alike or the graph reads per-layer values the copy cannot rename."""
    block = _block_of(t, prefix)
    k = 1 + max((b for b in block.values() if b is not None), default=-1)
    if k < 2:
        return False
    nodes = list(t.graph.nodes)
    last = [n for n in nodes if block[n] == k - 1 and n.op != "placeholder"]
    prev = [n for n in nodes if block[n] == k - 2 and n.op != "placeholder"]
    if len(last) != len(prev) or any(a.op != b.op or a.target != b.target for a, b in zip(last, prev)):
        return False
    if any(n.op == "get_attr" for n in last) or any(prefix in name for name in t.constants):
        return False
    own = {n: name for n, name in t.param_nodes.items() if block[n] == k - 1}
    if any(n.op == "placeholder" and block[n] == k - 1 and n not in own for n in nodes):
        return False
    index_prev = {n: i for i, n in enumerate(prev)}
    in_last = set(last)
    tail = [n for n in nodes if block[n] is None and any(a in in_last for a in n.all_input_nodes)]
    before = f"{prefix}.{k - 1}."
    anchor = [n for n in nodes if n.op == "placeholder"][-1]
    src = last
    for i in range(k, total):
        params: dict[fx.Node, fx.Node] = {}
        for node, name in own.items():
            new_name = f"{prefix}.{i}." + name[len(before) :]
            with t.graph.inserting_after(anchor):  # placeholders stay ahead of every other node
                p = t.graph.placeholder(_safe(new_name))
            p.meta = dict(node.meta)
            t.param_nodes[p], t.vals[p], params[node] = new_name, t.vals.get(node), p
            anchor = p
        src = _copy(t, last, params, src, index_prev, before, f"{prefix}.{i}.")
        t.opaque_weights |= {f"{prefix}.{i}." + w[len(before) :] for w in t.opaque_weights if w.startswith(before)}
    for n in tail:
        for a in list(n.all_input_nodes):
            if a in in_last:
                n.replace_input_with(a, src[last.index(a)])
    t._dep = None
    return True


def _copy(
    t: Traced,
    last: list[fx.Node],
    params: dict[fx.Node, fx.Node],
    src: list[fx.Node],
    index_prev: dict[fx.Node, int],
    before: str,
    after_name: str,
) -> list[fx.Node]:
    """One more copy of the block ``last`` after ``src`` (the copy before it); returns its nodes."""
    made: dict[fx.Node, fx.Node] = {}

    def remap(a: fx.Node) -> fx.Node:
        if a in made:  # this copy's own node
            return made[a]
        if a in params:
            return params[a]
        if a in index_prev:  # the previous block's node: the previous copy's
            return src[index_prev[a]]
        return a  # shared (rotary tables, the mask) or the model's input

    at = src[-1]
    for node in last:
        with t.graph.inserting_after(at):
            new = t.graph.node_copy(node, remap)
        new.meta = _renamed(node.meta, before, after_name)
        t.vals[new] = t.vals.get(node)
        made[node] = at = new
    return [made[n] for n in last]


def _safe(name: str) -> str:
    return "p_" + re.sub(r"\W", "_", name)


def _renamed(meta: dict, before: str, after: str) -> dict:
    out = dict(meta)
    stack = meta.get("nn_module_stack")
    if stack:
        out["nn_module_stack"] = {
            k: (p.replace(before.rstrip("."), after.rstrip("."), 1), ty) for k, (p, ty) in stack.items()
        }
    return out


def _signature(t: Traced) -> tuple:
    """The graph as a comparable value: non-placeholder nodes in order, arguments by position, parameters
    by name, with each node's value shape."""
    idx: dict[fx.Node, Any] = {}
    inputs = {n: i for i, n in enumerate(t.inputs)}
    for n in t.graph.nodes:
        if n.op == "placeholder":
            idx[n] = ("param", t.param_nodes[n]) if n in t.param_nodes else ("input", inputs.get(n))
    rows: list[tuple] = []
    for n in t.graph.nodes:
        if n.op == "placeholder":
            continue
        idx[n] = ("node", len(rows))
        args = fx.node.map_arg((n.args, n.kwargs), lambda a: idx[a])
        val = t.vals.get(n)
        rows.append((n.op, str(n.target), repr(args), tuple(getattr(val, "shape", ()))))
    return tuple(rows), tuple(sorted(t.param_nodes.values()))


class StackAnalyzer(Analyzer):
    """An :class:`~connectome.analysis.Analyzer` of a transformers model whose trace is stitched where
    that is exact (see the module docs), else traced whole as usual."""

    def _trace(self, **inputs: Any) -> Traced:
        config = getattr(self.model, "config", None)
        if config is not None and hasattr(config, "to_dict") and self.tracer in ("auto", "export"):
            from .skeleton import build_model, placeholders

            def make(k: int) -> nn.Module:
                return placeholders(build_model(with_layers(config.to_dict(), k)))

            t = stitched(self.model, make, tracer=self.tracer, **inputs)
            if t is not None:
                n = len(decoder_stack(self.model)[1])  # type: ignore[index]
                self.notes.append(f"the {n} decoder layers were traced as 3 and the last repeated (checked exact)")
                return t
        return super()._trace(**inputs)


def with_layers(config: dict, k: int) -> dict:
    """A config dict with ``k`` layers: the layer count, and per-layer lists cut to their first ``k``.

    >>> with_layers({"num_hidden_layers": 4, "layer_types": ["a", "a", "a", "a"], "vocab_size": 4}, 2)
    {'num_hidden_layers': 2, 'layer_types': ['a', 'a'], 'vocab_size': 4}
    """
    n = next((config[key] for key in ("num_hidden_layers", "n_layer", "num_layers") if key in config), None)
    out = dict(config)
    for key, v in config.items():
        if key in ("num_hidden_layers", "n_layer", "num_layers") and v == n:
            out[key] = k
        elif isinstance(v, list) and n is not None and len(v) == n:
            out[key] = v[:k]
    return out
