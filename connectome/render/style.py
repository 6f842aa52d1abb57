"""Colours, DOT quoting and the legend shared by the layer and unit diagrams.

One scale for every node: the share of its units that are alive (a path from the inputs *and* a path
to the outputs), from blue (all alive) through pale grey to red (none). The palette is ColorBrewer's
RdBu, readable with the common forms of colour blindness; unit states use the Okabe-Ito colours.

Examples
--------
>>> alive_colour(1.0), alive_colour(0.0)
('#2166ac', '#b2182b')
>>> quote('a "b"\\nc')
'"a \\\\"b\\\\"\\\\nc"'
"""

from __future__ import annotations

__all__ = [
    "Html",
    "alive_colour",
    "text_colour",
    "quote",
    "attrs",
    "UNIT_COLOURS",
    "UNIT_STATES",
    "CUT",
    "CUT_BORDER",
    "LIVE_EDGE",
    "DEAD_EDGE",
    "legend_layers",
    "legend_units",
    "FONT",
    "escape_html",
]

_SCALE = [
    (0.0, (0xB2, 0x18, 0x2B)),
    (0.25, (0xEF, 0x8A, 0x62)),
    (0.5, (0xF7, 0xF7, 0xF7)),
    (0.75, (0x67, 0xA9, 0xCF)),
    (1.0, (0x21, 0x66, 0xAC)),
]
CUT = "#b2182b"  # cut edges
CUT_BORDER = "#000000"  # the thick border of a layer where the signal stops
LIVE_EDGE = "#333333"
DEAD_EDGE = "#b4b4b4"
FONT = "Helvetica"

UNIT_STATES = ("alive", "dead from inputs", "dead to outputs", "dead both ways")
UNIT_COLOURS = {
    "alive": "#0072b2",
    "dead from inputs": "#e69f00",
    "dead to outputs": "#cc79a7",
    "dead both ways": "#999999",
}


class Html(str):
    """An HTML-like graphviz label, written between ``<`` and ``>`` rather than quoted."""


def alive_colour(frac: float) -> str:
    """Fill colour for a node whose units are ``frac`` alive (0..1)."""
    frac = min(max(frac, 0.0), 1.0)
    for (x0, c0), (x1, c1) in zip(_SCALE, _SCALE[1:]):
        if frac <= x1:
            t = (frac - x0) / (x1 - x0)
            return "#" + "".join(f"{round(a + (b - a) * t):02x}" for a, b in zip(c0, c1))
    return "#2166ac"


def text_colour(fill: str) -> str:
    """Black or white, whichever reads better on ``fill``."""
    r, g, b = (int(fill[i : i + 2], 16) for i in (1, 3, 5))
    return "#000000" if 0.299 * r + 0.587 * g + 0.114 * b > 140 else "#ffffff"


def quote(text: str) -> str:
    """A DOT double-quoted string; newlines become centred line breaks."""
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'


def attrs(**kv: object) -> str:
    """``[a="x", b="y"]`` from keyword arguments (None values are left out)."""
    parts = [f"{k}=<{v}>" if isinstance(v, Html) else f"{k}={quote(str(v))}" for k, v in kv.items() if v is not None]
    return "[" + ", ".join(parts) + "]"


def escape_html(text: str) -> str:
    """Text for an HTML-like label."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def legend_layers() -> str:
    """The layer diagram's legend: the colour scale, the cut marker and the three edge styles."""
    cells = "".join(
        f'<TD BGCOLOR="{alive_colour(f)}" WIDTH="34"><FONT COLOR="{text_colour(alive_colour(f))}">'
        f"{int(f * 100)}%</FONT></TD>"
        for f in (1.0, 0.75, 0.5, 0.25, 0.0)
    )
    rows = [
        f'<TR><TD COLSPAN="5"><B>units alive</B> (path from inputs and to outputs)</TD></TR><TR>{cells}</TR>',
        '<TR><TD COLSPAN="5" ALIGN="LEFT"><B>&#9986; thick black border</B>: the signal stops here; '
        "dashed border: no unit alive</TD></TR>",
        f'<TR><TD COLSPAN="5" ALIGN="LEFT"><FONT COLOR="{LIVE_EDGE}">&#9472;&#9472;</FONT> live edge &#160; '
        f'<FONT COLOR="{CUT}"><B>- - -</B></FONT> cut edge &#160; '
        f'<FONT COLOR="{DEAD_EDGE}">&#183;&#183;&#183;</FONT> dead edge</TD></TR>',
    ]
    return _legend("".join(rows))


def legend_units() -> str:
    """The unit diagram's legend: the four unit states and the two edge styles."""
    rows = "".join(
        f'<TR><TD BGCOLOR="{UNIT_COLOURS[s]}" WIDTH="14"></TD><TD ALIGN="LEFT">{escape_html(s)}</TD></TR>'
        for s in UNIT_STATES
    )
    rows += (
        f'<TR><TD COLSPAN="2" ALIGN="LEFT"><FONT COLOR="{LIVE_EDGE}">&#9472;&#9472;</FONT> effective weights'
        f'</TD></TR><TR><TD COLSPAN="2" ALIGN="LEFT"><FONT COLOR="{DEAD_EDGE}">&#9472;&#9472;</FONT> '
        "nonzero but ineffective</TD></TR>"
    )
    return _legend(rows)


def _legend(rows: str) -> str:
    table = Html(f'<TABLE BORDER="0" CELLBORDER="0" CELLSPACING="2" CELLPADDING="3">{rows}</TABLE>')
    return (
        f'  subgraph cluster_legend {{ label="legend"; fontname="{FONT}"; fontsize=10; color="#bbbbbb";\n'
        f"    legend {attrs(shape='plaintext', style='solid', fontname=FONT, fontsize=9, label=table)};\n  }}\n"
    )
