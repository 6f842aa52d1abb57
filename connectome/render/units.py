"""The unit diagram: every unit (neuron, channel) of a window of linear/conv layers, coloured by its state.

A layer joins the units of its input to the units of its output: solid where at least one effective
weight connects them, faint where all of their nonzero weights are ineffective. Ops that map unit ``c``
to unit ``c`` (activations, batch norm, pooling) are seen through, so a layer's output units and the
next layer's input units are drawn once. Any other op in between (flatten, add, cat) starts a new
column, joined to what feeds it by a dashed arrow.

Units with no effective weight in the window are grouped, per column and state, into one box ("230
units, dead to outputs"), so the picture grows with the effective network, not with the layer widths;
``all_units`` draws them one by one. Past ``max_units`` nodes (or ten edges per node) the diagram says
so and draws one node per column instead, with how many units are in each state.

Examples
--------
>>> import torch, connectome
>>> m = torch.nn.Sequential(torch.nn.Linear(3, 2), torch.nn.ReLU(), torch.nn.Linear(2, 1))
>>> with torch.no_grad(): m[2].weight[0, 1] = 0          # hidden unit 1 reaches no output
>>> src, notes = unit_dot(connectome.analyze(m, input_shape=(1, 3)))
>>> src.count('fillcolor="#cc79a7"')                     # one unit dead to outputs
1
"""

from __future__ import annotations

import fnmatch
import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import fx

from ..analysis import Analysis
from ..graph.lower.mixing import Mixing
from ..graph.status import Status, any_alive, slots
from ..io.spec import SpecError
from .nodes import Nodes, graph_label
from .style import DEAD_EDGE, FONT, LIVE_EDGE, UNIT_COLOURS, UNIT_STATES, Html, attrs, escape_html, legend_units, quote

__all__ = ["unit_dot"]


@dataclass
class _Space:
    node: fx.Node
    title: str
    state: np.ndarray  # per unit: index into UNIT_STATES
    feeds: set[int] = field(default_factory=set)  # spaces this one is computed from, not by a layer


@dataclass
class _Layer:
    name: str
    src: int  # space index of the input units
    dst: int  # space index of the output units
    pairs: np.ndarray  # (k, 2) input unit, output unit with a nonzero weight
    nonzero: np.ndarray  # (k,) nonzero weights per pair (kernel taps)
    effective: np.ndarray  # (k,) effective weights per pair


def unit_dot(
    res: Analysis, layers: str | None = None, all_units: bool = False, max_units: int = 400, title: str | None = None
) -> tuple[str, list[str]]:
    """DOT text of the unit diagram and the notes a reader needs (see the module docs)."""
    if res.walk is None:
        raise ValueError("this analysis has no walk to draw: run connectome.analyze")
    if max_units < 1:
        raise SpecError(f"--max-units must be 1 or more, not {max_units}")
    nodes = Nodes(res)
    picked = _window(nodes, layers)
    spaces: list[_Space] = []
    index: dict[fx.Node, int] = {}
    drawn = [_layer(nodes, n, spaces, index) for n in picked]
    _link_feeds(nodes, spaces, index)
    notes: list[str] = []
    keep = [np.ones(len(s.state), bool) if all_units else np.zeros(len(s.state), bool) for s in spaces]
    if not all_units:
        for lay in drawn:
            hit = lay.pairs[lay.effective > 0]
            keep[lay.src][hit[:, 0]] = True
            keep[lay.dst][hit[:, 1]] = True
    merged = _merge(spaces, drawn, keep)
    n_nodes, n_edges = len(merged.names), len(merged.src)
    if n_nodes > max_units or n_edges > 10 * max_units:
        notes.append(
            f"the unit view would have {n_nodes:,} nodes and {n_edges:,} edges, too many to read "
            f"(limit {max_units:,} nodes): drawn with one node per column instead; narrow the window "
            "with --layers PATTERN or raise --max-units"
        )
        return _aggregate_dot(res, spaces, drawn, title), notes
    return _units_dot(res, spaces, merged, title), notes


def _window(nodes: Nodes, layers: str | None) -> list[fx.Node]:
    found = [
        (n, op.weights[0].name.removesuffix(".weight"))
        for n, op in nodes.w.graph.ops.items()
        if isinstance(op, Mixing) and op.weights
    ]
    if not found:
        raise SpecError("the model has no linear or conv layer to draw at unit level: use --level layer")
    if not layers:
        return [n for n, _ in found]
    patterns = [p.strip() for p in layers.split(",") if p.strip()]
    picked = [n for n, name in found if any(fnmatch.fnmatchcase(name, p) for p in patterns)]
    if not picked:
        names = ", ".join(name for _, name in found[:8]) + (", ..." if len(found) > 8 else "")
        raise SpecError(f"no linear or conv layer matches --layers {layers!r}; layers are: {names}")
    return picked


def _states(nodes: Nodes, n: fx.Node, cdim: int | None) -> np.ndarray:
    fs, bs = slots(nodes.w.fwd.get(n)), dict(slots(nodes.w.bwd.get(n)))
    s = fs[0][1]
    s = s.with_cdim(cdim) if cdim is not None else s
    f = s.alive_units()
    b = bs[0].with_cdim(s.cdim).alive_units() if 0 in bs else np.zeros_like(f)
    return np.where(f & b, 0, np.where(b, 1, np.where(f, 2, 3)))


def _space(nodes: Nodes, n: fx.Node, cdim: int | None, spaces: list[_Space], index: dict[fx.Node, int]) -> int:
    if n not in index:
        index[n] = len(spaces)
        spaces.append(_Space(n, f"{nodes.title(n)} · {nodes.kind(n)}", _states(nodes, n, cdim)))
    return index[n]


def _layer(nodes: Nodes, n: fx.Node, spaces: list[_Space], index: dict[fx.Node, int]) -> _Layer:
    g, w = nodes.w.graph, nodes.w
    op = g.ops[n]
    assert isinstance(op, Mixing)  # _window picks the nodes of Mixing ops only
    src_node = _resolve(nodes, g.args[n][0], op.cdim)
    src = _space(nodes, src_node, op.cdim, spaces, index)
    dst = _space(nodes, n, op.cdim, spaces, index)
    grad = w.bwd.get(n)
    ins: list[Any] = [w.fwd.get(a) for a in g.args[n]]  # the walk's statuses (Status, tuple or None)
    eff = op.effective_conn(ins, grad if any_alive(grad) else None)
    nz = op.conn.view(torch.uint8).sum(-1, dtype=torch.int64).numpy()
    ef = eff.view(torch.uint8).sum(-1, dtype=torch.int64).numpy()
    o, j = np.nonzero(nz)
    og, ig = op.out_channels // op.groups, nz.shape[1]
    pairs = np.stack([(o // og) * ig + j, o], axis=1)
    return _Layer(op.weights[0].name.removesuffix(".weight"), src, dst, pairs, nz[o, j], ef[o, j])


def _resolve(nodes: Nodes, a: fx.Node, cdim: int) -> fx.Node:
    """Walk back through ops that map unit c to unit c: their input's units are their output's units."""
    g = nodes.w.graph
    while True:
        op = g.ops.get(a)
        if op is None or (isinstance(op, Mixing) and op.weights):
            return a
        live_args = [x for x in g.args.get(a, []) if nodes.dep.get(x)]
        if len(live_args) != 1 or not _identity(nodes, a, live_args[0], cdim):
            return a
        a = live_args[0]


def _identity(nodes: Nodes, n: fx.Node, src: fx.Node, cdim: int) -> bool:
    """Whether op ``n`` maps unit c of ``src`` (along ``cdim``) to its own unit c and no other (binary probes)."""
    w, g = nodes.w, nodes.w.graph
    s_in, s_out = w.fwd.get(src), w.fwd.get(n)
    if (
        not isinstance(s_in, Status)
        or not isinstance(s_out, Status)
        or len(s_in.shape) != len(s_out.shape)
        or not s_in.shape
    ):
        return False
    s_in, s_out = s_in.with_cdim(cdim), s_out.with_cdim(cdim)
    if s_in.channels != s_out.channels:
        return False
    op, args = g.ops[n], g.args[n]
    C = s_in.channels
    S = int(np.prod(s_in.pos_shape, dtype=np.int64)) if s_in.shape else 1
    chans = np.arange(C)
    for bit in range(max(1, math.ceil(math.log2(C))) if C > 1 else 1):
        for want in (1, 0):
            sel = ((chans >> bit) & 1) == want
            probe = Status(
                s_in.shape, s_in.cdim, np.ones((1, S), bool), np.where(sel, 0, -1).astype(np.int64), s_in.zero
            )
            ins = [probe if a is src else w.fwd.get(a) for a in args]
            try:
                out = op.forward(ins)
            except Exception:
                return False
            if not isinstance(out, Status) or not np.array_equal(out.with_cdim(s_out.cdim).alive_units(), sel):
                return False
    return True


def _link_feeds(nodes: Nodes, spaces: list[_Space], index: dict[fx.Node, int]) -> None:
    """For a column that no drawn layer produces (a flatten, an add), the columns it is computed from."""
    produced = {id_ for id_, s in enumerate(spaces) if isinstance(nodes.w.graph.ops.get(s.node), Mixing)}
    for i, s in enumerate(spaces):
        if i in produced or s.node in nodes.inputs:
            continue
        todo, seen = list(s.node.all_input_nodes), set()
        while todo:
            a = todo.pop()
            if a in seen or not nodes.dep.get(a):
                continue
            seen.add(a)
            if a in index:
                s.feeds.add(index[a])
            else:
                todo.extend(a.all_input_nodes)


@dataclass
class _Merged:
    """Drawn nodes as integers (a unit's own, or its column's group for its state) and merged edges."""

    ids: list[np.ndarray]  # per column, per unit: the node that draws it
    names: dict[int, str]  # node -> DOT id, in drawing order
    groups: int  # nodes from here on are groups: groups + 4 * column + state
    column: dict[int, int]  # node -> column
    src: np.ndarray
    dst: np.ndarray
    pairs: np.ndarray  # unit pairs merged into the edge
    nonzero: np.ndarray
    effective: np.ndarray


def _merge(spaces: list[_Space], drawn: list[_Layer], keep: list[np.ndarray]) -> _Merged:
    base = np.cumsum([0] + [len(s.state) for s in spaces])
    groups = int(base[-1])
    ids = [
        np.where(k, base[i] + np.arange(len(s.state)), groups + 4 * i + s.state)
        for i, (s, k) in enumerate(zip(spaces, keep))
    ]
    src = np.concatenate([ids[lay.src][lay.pairs[:, 0]] for lay in drawn] or [np.zeros(0, np.int64)])
    dst = np.concatenate([ids[lay.dst][lay.pairs[:, 1]] for lay in drawn] or [np.zeros(0, np.int64)])
    nz = np.concatenate([lay.nonzero for lay in drawn] or [np.zeros(0, np.int64)])
    ef = np.concatenate([lay.effective for lay in drawn] or [np.zeros(0, np.int64)])
    span = groups + 4 * len(spaces)
    keys, inverse = np.unique(src * span + dst, return_inverse=True)
    names: dict[int, str] = {}
    column: dict[int, int] = {}
    for i, part in enumerate(ids):
        for node in dict.fromkeys(part.tolist()):
            names[node] = f"s{i}g{node - groups - 4 * i}" if node >= groups else f"s{i}u{node - base[i]}"
            column[node] = i
    return _Merged(
        ids,
        names,
        groups,
        column,
        keys // span,
        keys % span,
        np.bincount(inverse, minlength=len(keys)),
        np.bincount(inverse, nz, len(keys)).astype(np.int64),
        np.bincount(inverse, ef, len(keys)).astype(np.int64),
    )


def _header(res: Analysis, title: str | None) -> list[str]:
    graph = attrs(
        rankdir="LR",
        fontname=FONT,
        fontsize=12,
        labelloc="t",
        nodesep="0.06",
        ranksep="1.2",
        compound="true",
        label=graph_label(res, title),
    )
    return [
        "digraph connectome_units {",
        f"  graph {graph};",
        f"  node {attrs(fontname=FONT, fontsize=7, style='filled', color='#444444', penwidth='0.5')};",
        f"  edge {attrs(arrowsize='0.4', penwidth='0.8')};",
    ]


def _units_dot(res: Analysis, spaces: list[_Space], m: _Merged, title: str | None) -> str:
    lines = _header(res, title)
    anchors: dict[int, str] = {}
    for i, s in enumerate(spaces):
        lines.append(f"  subgraph cluster_s{i} {{ {_cluster_attrs(s)}")
        for node in dict.fromkeys(m.ids[i].tolist()):
            anchors.setdefault(i, m.names[node])
            lines.append(f"    {m.names[node]} {_unit_attrs(s, node, m)};")
        lines.append("  }")
    for a, b, pairs, nz, ef in zip(
        m.src.tolist(), m.dst.tolist(), m.pairs.tolist(), m.nonzero.tolist(), m.effective.tolist()
    ):
        tip = f"{nz} nonzero weight{'s' if nz != 1 else ''}, {ef} effective"
        if ef:
            style = attrs(color=LIVE_EDGE, tooltip=tip)
        else:
            style = attrs(
                color=DEAD_EDGE,
                penwidth="0.5",
                tooltip=tip,
                label=f"×{pairs}" if pairs > 1 else None,
                fontcolor="#999999",
                fontsize=6,
            )
        lines.append(f"  {m.names[a]} -> {m.names[b]} {style};")
    lines += _feed_edges(spaces, anchors)
    lines.append(legend_units() + "}")
    return "\n".join(lines) + "\n"


def _cluster_attrs(s: _Space) -> str:
    label = quote(f"{s.title}\n{len(s.state):,} units")
    return f'label={label}; fontname="{FONT}"; fontsize=10; color="#bbbbbb";'


def _unit_attrs(s: _Space, node: int, m: _Merged) -> str:
    if node >= m.groups:
        st = (node - m.groups) % 4
        count = int((s.state == st).sum())
        return attrs(
            shape="box",
            style="rounded,filled",
            fillcolor=UNIT_COLOURS[UNIT_STATES[st]],
            fontsize=8,
            label=f"{count:,} unit{'s' if count != 1 else ''}\n{UNIT_STATES[st]}",
            tooltip=f"{s.title}: {count} units {UNIT_STATES[st]}, no effective weight in the window",
        )
    u = int(m.names[node].rpartition("u")[2])
    state = UNIT_STATES[int(s.state[u])]
    return attrs(
        shape="circle",
        width="0.22",
        fixedsize="true",
        fillcolor=UNIT_COLOURS[state],
        fontcolor="#ffffff" if state != "dead both ways" else "#000000",
        label=str(u),
        tooltip=f"{s.title} unit {u}: {state}",
    )


def _feed_edges(spaces: list[_Space], anchors: dict[int, str]) -> list[str]:
    out = []
    for i, s in enumerate(spaces):
        for j in sorted(s.feeds):
            if i in anchors and j in anchors:
                edge = attrs(
                    ltail=f"cluster_s{j}", lhead=f"cluster_s{i}", style="dashed", color="#777777", penwidth="1.2"
                )
                out.append(f"  {anchors[j]} -> {anchors[i]} {edge};")
    return out


def _aggregate_dot(res: Analysis, spaces: list[_Space], drawn: list[_Layer], title: str | None) -> str:
    lines = _header(res, title)
    for i, s in enumerate(spaces):
        counts = np.bincount(s.state, minlength=4)
        cells = "".join(
            f'<TD BGCOLOR="{UNIT_COLOURS[st]}" WIDTH="{max(2, round(60 * c / max(len(s.state), 1)))}"></TD>'
            for st, c in zip(UNIT_STATES, counts)
            if c
        )
        rows = "".join(
            f'<TR><TD ALIGN="LEFT" COLSPAN="4">{c:,} {st}</TD></TR>' for st, c in zip(UNIT_STATES, counts) if c
        )
        label = Html(
            f'<TABLE BORDER="0" CELLSPACING="0" CELLPADDING="2"><TR><TD COLSPAN="4"><B>'
            f'{escape_html(s.title)}</B> ({len(s.state):,} units)</TD></TR><TR><TD COLSPAN="4">'
            f'<TABLE BORDER="0" CELLSPACING="0" CELLPADDING="3"><TR>{cells}</TR></TABLE></TD></TR>'
            f"{rows}</TABLE>"
        )
        lines.append(f"  s{i} {attrs(shape='box', style='rounded', fontsize=8, label=label)};")
    for lay in drawn:
        nz, ef = int(lay.nonzero.sum()), int(lay.effective.sum())
        edge = attrs(label=f"{lay.name}: {ef:,} of {nz:,} effective", fontsize=8, color=LIVE_EDGE if ef else DEAD_EDGE)
        lines.append(f"  s{lay.src} -> s{lay.dst} {edge};")
    for i, s in enumerate(spaces):
        for j in sorted(s.feeds):
            lines.append(f"  s{j} -> s{i} {attrs(style='dashed', color='#777777')};")
    lines.append(legend_units() + "}")
    return "\n".join(lines) + "\n"
