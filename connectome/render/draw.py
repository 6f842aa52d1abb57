"""``to_dot`` (pure) and ``render`` (graphviz): the two entry points of :mod:`connectome.render`."""

from __future__ import annotations

import os
from dataclasses import dataclass, field

from ..analysis import Analysis
from ..io.files import write_atomic
from ..io.spec import SpecError
from .layers import layer_dot

__all__ = ["Diagram", "RenderError", "to_dot", "render", "format_of", "FORMATS"]

FORMATS = ("svg", "png", "pdf", "dot")


class RenderError(SpecError):
    """Graphviz is missing or failed; the message says what to install or change."""


@dataclass
class Diagram:
    """DOT text plus what a reader should know about it (a window that was too large, ...)."""

    source: str
    notes: list[str] = field(default_factory=list)

    def __str__(self) -> str:
        return self.source


def to_dot(
    res: Analysis,
    level: str = "layer",
    depth: int | None = None,
    fold: bool = False,
    layers: str | None = None,
    all_units: bool = False,
    max_units: int = 400,
    title: str | None = None,
) -> Diagram:
    """The diagram of ``res`` as DOT text.

    ``level="layer"``: one box per op (``depth``: per module N levels down; ``fold``: repeated blocks
    folded). ``level="unit"``: one node per unit of the linear/conv layers matching ``layers`` (glob
    patterns, comma-separated); units without an effective weight are grouped by state unless
    ``all_units``; beyond ``max_units`` nodes, one node per layer instead (with a note).

    >>> import torch, connectome
    >>> res = connectome.analyze(torch.nn.Sequential(torch.nn.Linear(2, 2)), input_shape=(1, 2))
    >>> to_dot(res, level="unit").source.count("->") > 0
    True
    """
    if level == "layer":
        if depth is not None and depth < 1:
            raise SpecError(f"--depth must be 1 or more, not {depth}")
        return Diagram(layer_dot(res, depth, fold, title))
    if level == "unit":
        from .units import unit_dot

        source, notes = unit_dot(res, layers, all_units, max_units, title)
        return Diagram(source, notes)
    raise SpecError(f"unknown diagram level {level!r}: use 'layer' or 'unit'")


def render(diagram: Diagram | str, path: str, fmt: str | None = None, inputs: tuple[str | None, ...] = ()) -> None:
    """Write ``diagram`` to ``path`` (atomically) as svg, png, pdf or dot, by default from the suffix.

    >>> import os, tempfile
    >>> p = os.path.join(tempfile.mkdtemp(), "g.dot")
    >>> render("digraph { a -> b }", p)
    >>> open(p).read()
    'digraph { a -> b }'
    """
    source = diagram.source if isinstance(diagram, Diagram) else diagram
    fmt = format_of(path, fmt)
    data = source if fmt == "dot" else pipe(source, fmt)
    write_atomic(path, data, inputs)


def format_of(path: str, fmt: str | None = None) -> str:
    """The output format ``fmt`` or, when None, the one ``path``'s suffix names.

    >>> format_of("net.SVG")
    'svg'
    """
    fmt = (fmt or os.path.splitext(path)[1].lstrip(".")).lower()
    if fmt not in FORMATS:
        raise RenderError(f"cannot tell the format of {path!r}: end it in {', '.join('.' + f for f in FORMATS)}")
    return fmt


def pipe(source: str, fmt: str) -> bytes:
    """Run graphviz's ``dot`` on ``source``; the output bytes in ``fmt``."""
    try:
        import graphviz
    except ImportError:
        raise RenderError("rendering needs the graphviz Python package: pip install graphviz (or write .dot)") from None
    try:
        return graphviz.Source(source).pipe(format=fmt, engine="dot")
    except graphviz.ExecutableNotFound:
        raise RenderError(
            "graphviz's `dot` program is not on PATH: install graphviz (Debian/Ubuntu: "
            "apt-get install graphviz; macOS: brew install graphviz), or write .dot"
        ) from None
    except graphviz.CalledProcessError as e:
        detail = (e.stderr or b"").decode(errors="replace").strip().splitlines()
        raise RenderError(f"graphviz failed: {detail[0] if detail else e}") from None
