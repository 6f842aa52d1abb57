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

from dataclasses import dataclass, field

from torch import fx

from ..analysis import Analysis
from .blocks import Blocks, next_sibling
from .nodes import Nodes, graph_label, sparsity_text
from .style import CUT, CUT_BORDER, DEAD_EDGE, FONT, LIVE_EDGE, alive_colour, attrs, legend_layers, text_colour

__all__ = ["Box", "Link", "layer_graph", "layer_dot"]


@dataclass
class Box:
    """One drawn node: an op, a module's ops (``depth``), or a run of folded blocks."""

    key: str
    title: str
    kind: str
    role: str = "op"  # "input", "op" or "output"
    members: list[fx.Node] = field(default_factory=list)
    shape: tuple[int, ...] | None = None
    count: int = 1  # blocks folded into this box
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
    state: str  # "live", "cut" or "dead"
    count: int = 1  # traced edges drawn as this one


def layer_graph(res: Analysis, depth: int | None = None, fold: bool = False) -> tuple[list[Box], list[Link]]:
    """Boxes and links of the layer diagram (see the module docs), in graph order."""
    if res.walk is None:
        raise ValueError("this analysis has no walk to draw: run connectome.analyze")
    nodes = Nodes(res)
    t = nodes.t
    blocks = Blocks(nodes) if fold else None
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
    ups = _visible_inputs(nodes, key_of)
    stops = {n for n, srcs in ups.items() if n in key_of and any(_edge_state(nodes, a, n) == "cut" for a in srcs)}
    rows = {r["name"]: r for r in res.layers}
    for box in boxes.values():
        _fill(nodes, box, rows, stops)
    if blocks is not None:  # folding
        _fold(nodes, blocks, boxes, key_of, rows, stops)
    out = Box("out:output", "output" if len(t.outputs) == 1 else "outputs", "output", "output")
    boxes[out.key] = out
    return list(boxes.values()), _links(nodes, key_of, ups, out)


def _visible_inputs(nodes: Nodes, key_of: dict[fx.Node, str]) -> dict[fx.Node, set[fx.Node]]:
    """Per node, the drawn nodes that feed it, looking through the hidden ones (plumbing, constants)."""
    sources: dict[fx.Node, set[fx.Node]] = {}
    ups: dict[fx.Node, set[fx.Node]] = {}
    for n in nodes.t.graph.nodes:
        found: set[fx.Node] = set()
        for a in n.all_input_nodes:
            found |= {a} if a in key_of else sources.get(a, set())
        ups[n] = found
        sources[n] = {n} if n in key_of else found
    return ups


def _group(nodes: Nodes, blocks: Blocks | None, n: fx.Node, depth: int | None) -> tuple[str, str, str]:
    own = (f"node:{n.name}", nodes.title(n), nodes.kind(n))
    if n in nodes.inputs:
        return own
    parts = nodes.parts(n)
    limit = len(parts) if n.op == "call_module" else len(parts) - 1  # module levels the node lies in
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


def _fill(nodes: Nodes, box: Box, rows: dict[str, dict], stops: set[fx.Node]) -> None:
    box.cut = any(n in stops for n in box.members)
    seen: set[str] = set()
    weighted = []
    for n in box.members:
        op = nodes.w.graph.ops.get(n)
        for wt in op.weights if op is not None else ():
            name = wt.name.removesuffix(".weight")
            if name in rows and name not in seen:
                seen.add(name)
                r = rows[name]
                box.numel += r["numel"]
                box.nonzero += r["nonzero"]
                box.effective += r["effective"]
                weighted.append(n)
    for n in weighted or box.members:
        f, b = nodes.liveness(n)
        box.units += len(f)
        box.live += int((f & b).sum())
        box.dead_in += int((~f).sum())
        box.dead_out += int((~b).sum())
    v = nodes.t.vals.get(box.members[-1])
    box.shape = tuple(v.shape) if v is not None and hasattr(v, "shape") else None


def _fold(
    nodes: Nodes,
    blocks: Blocks,
    boxes: dict[str, Box],
    key_of: dict[fx.Node, str],
    rows: dict[str, dict],
    stops: set[fx.Node],
) -> None:
    """Merge runs of consecutive sibling blocks with identical structure and the same fate.

    A block where the signal stops stays on its own; alive and dead blocks never share a box.
    """

    def fate(b: Box) -> tuple:
        return b.live == 0, b.numel > 0 and b.effective == 0

    runs: list[list[str]] = []
    for key, box in boxes.items():
        if not (key.startswith("mod:") and blocks.is_block(key[4:])):
            continue
        prev = runs[-1][-1] if runs else None
        if (
            prev is not None
            and not box.cut
            and not boxes[prev].cut
            and next_sibling(prev[4:], key[4:])
            and fate(boxes[prev]) == fate(box)
            and blocks.signature(prev[4:]) == blocks.signature(key[4:])
        ):
            runs[-1].append(key)
        else:
            runs.append([key])
    for run in runs:
        if len(run) < 2:
            continue
        first, last = run[0][4:], run[-1][4:]
        parent, _, a = first.rpartition(".")
        b = last.rpartition(".")[2]
        merged = Box(
            f"fold:{first}",
            f"{parent + '.' if parent else ''}{a}–{b}",
            f"{boxes[run[0]].kind} × {len(run)}",
            count=len(run),
        )
        for key in run:
            merged.members.extend(boxes.pop(key).members)
        for n in merged.members:
            key_of[n] = merged.key
        _fill(nodes, merged, rows, stops)
        boxes[merged.key] = merged
    order: dict[str, int] = {}
    for i, n in enumerate(nodes.t.graph.nodes):
        if n in key_of:
            order.setdefault(key_of[n], i)
    items = sorted(boxes.items(), key=lambda kv: order[kv[0]])
    boxes.clear()
    boxes.update(items)


def _edge_state(nodes: Nodes, a: fx.Node, n: fx.Node) -> str:
    fa, ba = nodes.liveness(a)
    fn, bn = nodes.liveness(n)
    Fa, Ba, Fn, Bn = fa.any(), ba.any(), fn.any(), bn.any()
    if (Fa and not Fn) or (Fa and Bn and not Ba):
        return "cut"
    return "live" if (fa & ba).any() and (fn & bn).any() else "dead"


def _links(nodes: Nodes, key_of: dict[fx.Node, str], ups: dict[fx.Node, set[fx.Node]], out: Box) -> list[Link]:
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
        if n in key_of:
            for a in ups[n]:
                if key_of[a] != key_of[n]:
                    add(key_of[a], key_of[n], _edge_state(nodes, a, n))
    for o in nodes.t.outputs:
        for a in {o} if o in key_of else ups[o]:
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
        lines.append(
            f"direct {sparsity_text(1 - box.nonzero / box.numel)} · "
            f"effective {sparsity_text(1 - box.effective / box.numel)}"
        )
    if box.units and box.live < box.units:
        dead = [
            f"{n:,} {one if n == 1 else many} no {what}"
            for n, one, many, what in (
                (box.dead_in, "sees", "see", "input"),
                (box.dead_out, "reaches", "reach", "output"),
            )
            if n
        ]
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
    graph = attrs(
        rankdir="TB",
        fontname=FONT,
        fontsize=12,
        labelloc="t",
        nodesep="0.25",
        ranksep="0.35",
        label=graph_label(res, title),
    )
    lines = [
        "digraph connectome {",
        f"  graph {graph};",
        f"  node {attrs(shape='box', style='rounded,filled', fontname=FONT, fontsize=9, margin='0.08,0.04')};",
        f"  edge {attrs(arrowsize='0.6')};",
    ]
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
    return attrs(
        label=_label(b),
        shape=shape,
        style=style,
        fillcolor=fill,
        fontcolor=text_colour(fill),
        color=CUT_BORDER if b.cut else "#555555",
        penwidth="4" if b.cut else None,
        peripheries="2" if b.count > 1 else None,
        tooltip=b.key.split(":", 1)[1],
    )


def _link_attrs(link: Link) -> str:
    label = f"×{link.count}" if link.count > 1 and link.state != "live" else None
    if link.state == "cut":
        return attrs(color=CUT, style="dashed,bold", penwidth="2", fontcolor=CUT, label=label or "cut")
    if link.state == "dead":
        return attrs(color=DEAD_EDGE, style="dotted")
    return attrs(color=LIVE_EDGE)
