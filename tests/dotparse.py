"""A small reader for the DOT that connectome writes: statements one per line, attributes as key="value"."""
from __future__ import annotations

import re

_ATTR = re.compile(r'(\w+)=(?:"((?:[^"\\]|\\.)*)"|<(.*)>(?=[,\]]))')
_NODE = re.compile(r"^\s*(\w+)\s*\[(.*)\];\s*$")
_EDGE = re.compile(r"^\s*(\w+)\s*->\s*(\w+)\s*\[(.*)\];\s*$")


def _attrs(text: str) -> dict[str, str]:
    out = {}
    for m in _ATTR.finditer(text):
        value = m.group(2) if m.group(2) is not None else m.group(3)
        out[m.group(1)] = value.replace('\\"', '"').replace("\\n", "\n").replace("\\\\", "\\")
    return out


def parse(source: str) -> tuple[dict[str, dict[str, str]], list[tuple[str, str, dict[str, str]]]]:
    """Nodes (id -> attributes) and edges (src, dst, attributes); the legend and defaults are left out."""
    nodes, edges = {}, []
    for line in source.splitlines():
        e = _EDGE.match(line)
        if e:
            edges.append((e.group(1), e.group(2), _attrs(e.group(3))))
            continue
        n = _NODE.match(line)
        if n and n.group(1) not in ("graph", "node", "edge", "legend"):
            nodes[n.group(1)] = _attrs(n.group(2))
    return nodes, edges


def by_title(nodes: dict[str, dict[str, str]]) -> dict[str, dict[str, str]]:
    """Nodes keyed by the first line of their label, with any cut marker removed."""
    return {a["label"].split("\n")[0].removeprefix("✂ "): dict(a, id=k) for k, a in nodes.items()}
