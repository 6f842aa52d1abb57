"""The layer diagram: one box per traced op (or per module, to ``depth``), coloured by its alive units.

Every op whose value depends on the inputs gets a box; plumbing (``getitem`` of a tuple, shape
arithmetic) is drawn through. With ``depth=N`` the ops inside a module N levels down share one box.
With ``fold=True`` a module whose class repeats among its siblings (the blocks of a ResNet stage, the
layers of an encoder) is one box, and a run of consecutive blocks of identical structure (classes,
settings, parameter shapes) becomes one "Bottleneck × 5" box;
a block where the signal stops or that has no alive unit never folds into its neighbours.

An edge is *live* when both ends have alive units, *cut* where the signal stops (the source carries
signal from the inputs and the target none, or the target reaches an output and the source, alive
from the inputs, does not through it), and *dead* otherwise.

Examples
--------
>>> import torch, connectome
>>> m = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.ReLU(), torch.nn.Linear(3, 2))
>>> with torch.no_grad(): _ = m[2].weight.zero_()
>>> boxes, links = layer_graph(connectome.analyze(m, input_shape=(1, 4)))
>>> [(b.title, b.cut) for b in boxes]
[('input', False), ('0', False), ('1', False), ('2', True), ('output', False)]
>>> sorted(l.state for l in links)
['cut', 'dead', 'dead', 'dead']
"""
from __future__ import annotations

import operator
import re
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from torch import fx, nn

from ..analysis import Analysis
from ..report import pct
from ..status import slots
from .style import CUT, CUT_BORDER, DEAD_EDGE, FONT, LIVE_EDGE, alive_colour, attrs, legend_layers, quote, text_colour

__all__ = ["Box", "Link", "layer_graph", "layer_dot"]

_CONTAINERS = (nn.Sequential, nn.ModuleList, nn.ModuleDict)


@dataclass
class Box:
    """One drawn node: an op, a module's ops (``depth``), or a run of folded blocks."""

    key: str
    title: str
    kind: str
    role: str = "op"                       # "input", "op" or "output"
    members: list[fx.Node] = field(default_factory=list)
    shape: tuple[int, ...] | None = None
    count: int = 1                         # blocks folded into this box
    numel: int = 0
    nonzero: int = 0
    effective: int = 0
    units: int = 0
    live: int = 0
    dead_in: int = 0
    dead_out: int = 0
    cut: bool = False

    @property
    def alive_fraction(self) -> float | None:
        return self.live / self.units if self.units else None


@dataclass
class Link:
    src: str
    dst: str
    state: str          # "live", "cut" or "dead"
    count: int = 1      # traced edges drawn as this one


class _Nodes:
    """Per traced node: visible or not, its module path, and its units' liveness."""

    def __init__(self, res: Analysis):
        self.res = res
        self.w = res.walk
        self.t = self.w.graph.traced
        self.dep = self.t.depends_on_input()
        self.inputs = set(self.t.inputs)
        self._live: dict[fx.Node, tuple[np.ndarray, np.ndarray]] = {}

    def visible(self, n: fx.Node) -> bool:
        if n in self.inputs:
            return True
        if n.op not in ("call_module", "call_function", "call_method") or not self.dep[n]:
            return False
        if not slots(self.w.fwd.get(n)):
            return False
        # a getitem that picks one tensor out of a tuple is plumbing
        return not (n.op == "call_function" and n.target is operator.getitem
                    and isinstance(self.t.vals.get(n.args[0]), (tuple, list)))

    def liveness(self, n: fx.Node) -> tuple[np.ndarray, np.ndarray]:
        """(alive from inputs, alive to outputs) per unit of the node's value, tuple slots concatenated."""
        hit = self._live.get(n)
        if hit is None:
            op = self.w.graph.ops.get(n)
            cdim = getattr(op, "cdim", None)
            back = dict(slots(self.w.bwd.get(n)))
            fs, bs = [], []
            for k, s in slots(self.w.fwd.get(n)):
                if isinstance(cdim, int) and k == 0:
                    s = s.with_cdim(cdim)
                f = s.alive_units()
                b = back.get(k)
                fs.append(f)
                bs.append(b.with_cdim(s.cdim).alive_units() if b is not None else np.zeros_like(f))
            hit = (np.concatenate(fs), np.concatenate(bs)) if fs else (np.zeros(0, bool), np.zeros(0, bool))
            self._live[n] = hit
        return hit

    def parts(self, n: fx.Node) -> list[str]:
        """The module path of a node; an op that is not a module call adds its own name as a leaf."""
        if n.op == "call_module":
            return str(n.target).split(".")
        stack = n.meta.get("nn_module_stack") or {}
        path = list(stack.values())[-1][0] if stack else ""
        return (path.split(".") if path else []) + [n.name]

    def module(self, path: str) -> nn.Module | None:
        try:
            return self.t.model.get_submodule(path)
        except (AttributeError, KeyError):
            return None

    def title(self, n: fx.Node) -> str:
        if n in self.inputs:
            return "input" if len(self.inputs) == 1 else n.name
        if n.op == "call_module":
            return str(n.target)
        path = ".".join(self.parts(n)[:-1])
        mod = self.module(path) if path else None
        # under torch.export a module's computation is ATen ops inside it: name them after the module
        return path if mod is not None and not any(True for _ in mod.children()) else n.name

    def kind(self, n: fx.Node) -> str:
        if n in self.inputs:
            return "input"
        if n.op == "call_module":
            return type(self.t.module(n)).__name__
        name = n.target if isinstance(n.target, str) else getattr(n.target, "__name__", str(n.target))
        return re.sub(r"\.default$", "", name)


def _signature(m: nn.Module) -> tuple:
    return (type(m).__qualname__,
            tuple((name, type(s).__qualname__, s.extra_repr()) for name, s in m.named_modules()),
            tuple((name, tuple(p.shape)) for name, p in m.named_parameters()))


class _Blocks:
    """Which modules are drawn as one box when folding, and their structure."""

    def __init__(self, nodes: _Nodes):
        self.nodes = nodes
        self._sig: dict[str, tuple] = {}
        self._runs: dict[str, bool] = {}

    def signature(self, path: str) -> tuple:
        if path not in self._sig:
            self._sig[path] = _signature(self.nodes.module(path))
        return self._sig[path]

    def _siblings(self, path: str) -> list[tuple[str, nn.Module]]:
        parent = path.rpartition(".")[0]
        pmod = self.nodes.module(parent) if parent else self.nodes.t.model
        return [(f"{parent}.{name}" if parent else name, m) for name, m in pmod.named_children()]

    def _twin(self, path: str, mod: nn.Module) -> bool:
        """Some sibling has exactly this module's structure."""
        return any(p != path and type(m) is type(mod) and self.signature(p) == self.signature(path)
                   for p, m in self._siblings(path))

    def _has_runs(self, path: str, mod: nn.Module) -> bool:
        """Somewhere inside, composite modules repeat with identical structure (a finer fold exists)."""
        if path not in self._runs:
            self._runs[path] = any(sub is not mod and not isinstance(sub, _CONTAINERS) and any(True for _ in sub.children())
                                   and self._twin(p, sub) for p, sub in mod.named_modules(prefix=path))
        return self._runs[path]

    def is_block(self, path: str) -> bool:
        """A module whose class repeats among its siblings: the blocks of a stage, the layers of an encoder.

        When a block differs from all its siblings but holds identical repeated parts, those parts are
        the blocks instead (the finer fold shows more).
        """
        mod = self.nodes.module(path)
        if mod is None or isinstance(mod, _CONTAINERS):
            return False
        if sum(type(m) is type(mod) for _, m in self._siblings(path)) < 2:
            return False
        return self._twin(path, mod) or not self._has_runs(path, mod)


def layer_graph(res: Analysis, depth: int | None = None, fold: bool = False) -> tuple[list[Box], list[Link]]:
    """Boxes and links of the layer diagram (see the module docs), in graph order."""
    if res.walk is None:
        raise ValueError("this analysis has no walk to draw: run connectome.analyze")
    nodes = _Nodes(res)
    t = nodes.t
    blocks = _Blocks(nodes) if fold else None
    key_of: dict[fx.Node, str] = {}
    boxes: dict[str, Box] = {}
    for n in t.graph.nodes:
        if not nodes.visible(n):
            continue
        key, title, kind = _group(nodes, blocks, n, depth)
        box = boxes.get(key)
        if box is None:
            box = boxes[key] = Box(key, title, kind, "input" if n in nodes.inputs else "op")
        box.members.append(n)
        key_of[n] = key
    if fold:
        _fold(nodes, blocks, boxes, key_of)
    rows = {r["name"]: r for r in res.layers}
    for box in boxes.values():
        _fill(nodes, box, rows)
    out = Box("out:output", "output" if len(t.outputs) == 1 else "outputs", "output", "output")
    boxes[out.key] = out
    links = _links(nodes, key_of, boxes, out)
    return list(boxes.values()), links


def _group(nodes: _Nodes, blocks: _Blocks | None, n: fx.Node, depth: int | None) -> tuple[str, str, str]:
    own = (f"node:{n.name}", nodes.title(n), nodes.kind(n))
    if n in nodes.inputs:
        return own
    parts = nodes.parts(n)
    limit = len(parts) if n.op == "call_module" else len(parts) - 1   # module levels the node lies in
    cut = depth if depth is not None and depth < len(parts) else None
    if blocks is not None:
        for i in range(1, limit + 1):
            if cut is not None and i > cut:
                break
            if blocks.is_block(".".join(parts[:i])):
                cut = i
                break
    if cut is None or cut < 1:
        return own
    path = ".".join(parts[:cut])
    mod = nodes.module(path)
    return f"mod:{path}", path, type(mod).__name__ if mod is not None else "module"


def _fill(nodes: _Nodes, box: Box, rows: dict[str, dict]) -> None:
    seen: set[str] = set()
    weighted = []
    for n in box.members:
        op = nodes.w.graph.ops.get(n)
        for wt in (op.weights if op is not None else ()):
            name = wt.name.removesuffix(".weight")
            if name in rows and name not in seen:
                seen.add(name)
                r = rows[name]
                box.numel += r["numel"]
                box.nonzero += r["nonzero"]
                box.effective += r["effective"]
                weighted.append(n)
    for n in (weighted or box.members):
        f, b = nodes.liveness(n)
        box.units += len(f)
        box.live += int((f & b).sum())
        box.dead_in += int((~f).sum())
        box.dead_out += int((~b).sum())
    v = nodes.t.vals.get(box.members[-1])
    box.shape = tuple(v.shape) if hasattr(v, "shape") else None


def _fold(nodes: _Nodes, blocks: _Blocks, boxes: dict[str, Box], key_of: dict[fx.Node, str]) -> None:
    """Merge runs of consecutive sibling blocks with identical structure and the same fate."""
    rows = {r["name"]: r for r in nodes.res.layers}
    fate: dict[str, tuple] = {}
    for key, box in boxes.items():
        if key.startswith("mod:") and blocks.is_block(key[4:]):
            probe = Box(key, box.title, box.kind, members=list(box.members))
            _fill(nodes, probe, rows)
            stops = any(_edge_state(nodes, a, n) == "cut" for n in box.members for a in n.all_input_nodes
                        if a in key_of)
            fate[key] = (probe.live == 0, stops, probe.numel > 0 and probe.effective == 0)
    runs: list[list[str]] = []
    for key in boxes:
        if key not in fate:
            continue
        prev = runs[-1][-1] if runs else None
        if prev is not None and _next_sibling(prev[4:], key[4:]) and fate[prev] == fate[key] \
                and not any(fate[key][1:]) and blocks.signature(prev[4:]) == blocks.signature(key[4:]):
            runs[-1].append(key)
        else:
            runs.append([key])
    for run in runs:
        if len(run) < 2:
            continue
        first, last = run[0][4:], run[-1][4:]
        parent, _, a = first.rpartition(".")
        b = last.rpartition(".")[2]
        merged = Box(f"fold:{first}", f"{parent + '.' if parent else ''}{a}–{b}",
                     f"{boxes[run[0]].kind} × {len(run)}", count=len(run))
        for key in run:
            merged.members.extend(boxes.pop(key).members)
        for n in merged.members:
            key_of[n] = merged.key
        boxes[merged.key] = merged
    order: dict[str, int] = {}
    for i, n in enumerate(nodes.t.graph.nodes):
        if n in key_of:
            order.setdefault(key_of[n], i)
    items = sorted(boxes.items(), key=lambda kv: order[kv[0]])
    boxes.clear()
    boxes.update(items)


def _next_sibling(a: str, b: str) -> bool:
    pa, _, ia = a.rpartition(".")
    pb, _, ib = b.rpartition(".")
    return pa == pb and ia.isdigit() and ib.isdigit() and int(ib) == int(ia) + 1


def _edge_state(nodes: _Nodes, a: fx.Node, n: fx.Node) -> str:
    fa, ba = nodes.liveness(a)
    fn, bn = nodes.liveness(n)
    Fa, Ba, Fn, Bn = fa.any(), ba.any(), fn.any(), bn.any()
    if (Fa and not Fn) or (Fa and Bn and not Ba):
        return "cut"
    return "live" if (fa & ba).any() and (fn & bn).any() else "dead"


def _links(nodes: _Nodes, key_of: dict[fx.Node, str], boxes: dict[str, Box], out: Box) -> list[Link]:
    sources: dict[fx.Node, set[fx.Node]] = {}      # nearest visible ancestors, through hidden nodes
    found: dict[tuple[str, str], Link] = {}

    def add(src: str, dst: str, state: str) -> None:
        link = found.get((src, dst))
        if link is None:
            found[(src, dst)] = Link(src, dst, state)
            return
        link.count += 1
        if state == "cut" or (state == "live" and link.state == "dead"):
            link.state = state

    for n in nodes.t.graph.nodes:
        ups: set[fx.Node] = set()
        for a in n.all_input_nodes:
            ups |= {a} if a in key_of else sources.get(a, set())
        if n in key_of:
            sources[n] = {n}
            for a in ups:
                state = _edge_state(nodes, a, n)
                if state == "cut":
                    boxes[key_of[n]].cut = True
                if key_of[a] != key_of[n]:
                    add(key_of[a], key_of[n], state)
        else:
            sources[n] = ups
    for o in nodes.t.outputs:
        for a in ({o} if o in key_of else sources.get(o, set())):
            f, b = nodes.liveness(a)
            add(key_of[a], out.key, "live" if (f & b).any() else "dead")
    return list(found.values())


def _label(box: Box) -> str:
    lines = [("✂ " if box.cut else "") + box.title]
    shape = "×".join(map(str, box.shape)) if box.shape else ""
    if box.role == "op":
        lines.append(f"{box.kind} · {shape}" if shape else box.kind)
    elif shape:
        lines.append(shape)
    if box.numel:
        lines.append(f"direct {pct(1 - box.nonzero / box.numel)} · effective {pct(1 - box.effective / box.numel)}")
    if box.units and box.live < box.units:
        dead = [f"{n:,} {one if n == 1 else many} no {what}"
                for n, one, many, what in ((box.dead_in, "sees", "see", "input"),
                                           (box.dead_out, "reaches", "reach", "output")) if n]
        lines.append(" · ".join([f"alive {box.live:,}/{box.units:,} units"] + dead))
    return "\n".join(lines)


def layer_dot(res: Analysis, depth: int | None = None, fold: bool = False, title: str | None = None) -> str:
    """DOT text of the layer diagram of ``res`` (pure: no graphviz needed).

    >>> import torch, connectome
    >>> res = connectome.analyze(torch.nn.Sequential(torch.nn.Linear(2, 2)), input_shape=(1, 2))
    >>> layer_dot(res).splitlines()[0]
    'digraph connectome {'
    """
    boxes, links = layer_graph(res, depth, fold)
    lines = ["digraph connectome {",
             f"  graph {attrs(rankdir='TB', fontname=FONT, fontsize=12, labelloc='t', nodesep='0.25', ranksep='0.35', label=_graph_label(res, title))};",
             f"  node {attrs(shape='box', style='rounded,filled', fontname=FONT, fontsize=9, margin='0.08,0.04')};",
             f"  edge {attrs(arrowsize='0.6')};"]
    ids = {b.key: f"n{i}" for i, b in enumerate(boxes)}
    for b in boxes:
        lines.append(f"  {ids[b.key]} {_box_attrs(b)};")
    for link in links:
        lines.append(f"  {ids[link.src]} -> {ids[link.dst]} {_link_attrs(link)};")
    lines.append(legend_layers() + "}")
    return "\n".join(lines) + "\n"


def _box_attrs(b: Box) -> str:
    frac = b.alive_fraction
    fill = "#eeeeee" if frac is None or b.role == "output" else alive_colour(frac)
    shape = "oval" if b.role in ("input", "output") else "box"
    style = "rounded,filled" + (",bold" if b.cut else "") + (",dashed" if frac == 0 and not b.cut else "")
    return attrs(label=_label(b), shape=shape, style=style, fillcolor=fill, fontcolor=text_colour(fill),
                 color=CUT_BORDER if b.cut else "#555555", penwidth="4" if b.cut else None,
                 peripheries="2" if b.count > 1 else None, tooltip=b.key.split(":", 1)[1])


def _link_attrs(link: Link) -> str:
    label = f"×{link.count}" if link.count > 1 and link.state != "live" else None
    if link.state == "cut":
        return attrs(color=CUT, style="dashed,bold", penwidth="2", fontcolor=CUT, label=label or "cut")
    if link.state == "dead":
        return attrs(color=DEAD_EDGE, style="dotted")
    return attrs(color=LIVE_EDGE)


def _graph_label(res: Analysis, title: str | None) -> str:
    head = f"{title}: " if title else ""
    if res.collapsed:
        return f"{head}COLLAPSED: no path from the inputs to the outputs (direct sparsity {_sp(res.direct_sparsity)})"
    return (f"{head}direct sparsity {_sp(res.direct_sparsity)} ({_x(res.direct_compression)}) · effective "
            f"{_sp(res.effective_sparsity)} ({_x(res.effective_compression)})")


def _sp(x: float) -> str:
    return f"{100 * x:.4f}%" if 0.9999 < x < 1 else pct(x)    # 99.998%, not a rounded 100.00%


def _x(c: float | None) -> str:
    return "∞" if c is None else f"{c:,.1f}x" if c < 100 else f"{c:,.0f}x"
