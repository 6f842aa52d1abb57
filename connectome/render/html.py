"""A self-contained HTML report: summary, findings, the layer diagram as inline SVG, and the layer table.

One file, no scripts, no fonts, no images to fetch: it opens offline and can be attached to a release.

Examples
--------
>>> import torch, connectome
>>> res = connectome.analyze(torch.nn.Sequential(torch.nn.Linear(2, 2)), input_shape=(1, 2))
>>> page = html_report(res, "tiny", svg="<svg></svg>")
>>> page.startswith("<!DOCTYPE html>"), "<svg></svg>" in page
(True, True)
"""

from __future__ import annotations

import html
import re
from typing import TYPE_CHECKING

from ..analysis import Analysis
from ..report import compression, pct, row_cells, verdict
from .draw import pipe, to_dot

if TYPE_CHECKING:
    from ..audit import AuditReport

__all__ = ["html_report", "audit_html", "diagram_svg"]

_CSS = """
body { font: 14px/1.45 -apple-system, "Segoe UI", Helvetica, Arial, sans-serif; margin: 2em auto; max-width: 1200px;
       padding: 0 1em; color: #222; }
h1 { font-size: 1.5em; margin-bottom: .2em; } h2 { font-size: 1.15em; margin-top: 1.6em; }
.verdict { padding: .6em .9em; border-radius: 6px; background: #eef4fb; border-left: 5px solid #3b6ea5; }
.verdict.bad { background: #fbeeee; border-left-color: #b2182b; }
table { border-collapse: collapse; font-variant-numeric: tabular-nums; }
th, td { padding: .25em .7em; border-bottom: 1px solid #e4e4e4; text-align: right; }
th { background: #f6f6f6; } td:first-child, th:first-child, td.l { text-align: left; }
tr.dead td { color: #b2182b; }
.diagram { overflow: auto; border: 1px solid #ddd; border-radius: 6px; padding: .5em; max-height: 80vh; }
.diagram svg { max-width: 100%; height: auto; }
.sev-error { color: #b2182b; font-weight: bold; } .sev-warning { color: #a15c00; }
footer { margin-top: 2em; color: #888; font-size: .85em; }
"""


def diagram_svg(res: Analysis, fold: bool = True, title: str | None = None) -> str:
    """The layer diagram of ``res`` as an SVG element ready to inline (needs graphviz's ``dot``)."""
    svg = pipe(to_dot(res, fold=fold, title=title).source, "svg").decode("utf-8")
    svg = re.sub(r"<\?xml[^>]*\?>|<!DOCTYPE[^>]*>|<!--.*?-->", "", svg, flags=re.S)
    return svg.strip()


def html_report(
    res: Analysis, title: str, svg: str | None = None, findings_html: str = "", status: str | None = None
) -> str:
    """The report page. ``svg`` defaults to :func:`diagram_svg`; ``status`` replaces the verdict line."""
    if svg is None:
        svg = diagram_svg(res, title=title)
    e = html.escape
    bad = res.collapsed or res.params_effective < res.params_nonzero
    summary = [
        ("sparsity", pct(res.direct_sparsity), pct(res.effective_sparsity)),
        ("compression", compression(res.direct_compression), compression(res.effective_compression)),
        (
            "weights",
            f"{res.params_nonzero:,} of {res.params_total:,}",
            f"{res.params_effective:,} of {res.params_total:,}",
        ),
    ]
    parts = [
        f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        f'<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>connectome: {e(title)}</title><style>{_CSS}</style></head><body>",
        f"<h1>connectome report: {e(title)}</h1>",
        f'<p class="verdict{" bad" if bad or (status and "FAIL" in status) else ""}">{e(status or verdict(res))}</p>',
        "<table><tr><th></th><th>direct</th><th>effective</th></tr>"
        + "".join(f"<tr><td>{k}</td><td>{a}</td><td>{b}</td></tr>" for k, a, b in summary)
        + "</table>",
        findings_html,
        f'<h2>Diagram</h2><div class="diagram">{svg}</div>',
        "<h2>Layers</h2>",
        _layer_table(res),
    ]
    if res.unsupported_ops:
        ops = sorted({u["op"] for u in res.unsupported_ops})
        parts.append(
            f"<p>{len(res.unsupported_ops)} op(s) without a rule were treated as all-to-all (sound, "
            f"possibly loose): {e(', '.join(ops))}</p>"
        )
    from .. import __version__

    parts.append(
        f"<footer>connectome {__version__} · tracer {e(res.tracer)} · input "
        f"{e(' '.join('×'.join(map(str, s)) for s in res.input_shapes))}</footer></body></html>\n"
    )
    return "\n".join(p for p in parts if p)


def _layer_table(res: Analysis) -> str:
    head = ["layer", "kind", "params", "nonzero", "effective", "direct sp.", "effective sp.", "dead in", "dead out"]
    rows = ["<table><tr>" + "".join(f"<th>{h}</th>" for h in head) + "</tr>"]
    for r in res.layers:
        n = r["numel"]
        dead = n and r["effective"] == 0 and r["nonzero"] > 0
        cells = [html.escape(c) for c in row_cells(r)]
        cls = ' class="dead"' if dead else ""
        rows.append(
            f'<tr{cls}><td>{cells[0]}</td><td class="l">{cells[1]}</td>'
            + "".join(f"<td>{c}</td>" for c in cells[2:])
            + "</tr>"
        )
    return "\n".join(rows) + "</table>"


def audit_html(rep: AuditReport, title: str | None = None) -> str:
    """The audit report page: the result, the findings and the collapse margin above the analysis."""
    e = html.escape
    status = "PASSED" if rep.passed else f"FAILED ({', '.join(rep.failed)})"
    lines = ["<h2>Findings</h2>"]
    if rep.claim_sparsity is not None:
        lines.append(f"<p>Claimed sparsity: {pct(rep.claim_sparsity)}.</p>")
    if rep.margin is not None:
        m = rep.margin
        text = (
            f"{m.margin:,} weight(s) (bottleneck: <code>{e(str(m.bottleneck_layer))}</code>)"
            if m.margin is not None
            else e(m.note or "not computed")
        )
        lines.append(f"<p>Collapse margin: {text}.</p>")
    lines.append(
        "<table><tr><th>severity</th><th>code</th><th>finding</th></tr>"
        + "".join(
            f'<tr><td class="l sev-{e(f.severity)}">{e(f.severity)}</td><td class="l"><code>{e(f.code)}</code></td>'
            f'<td class="l">{e(f.message)}</td></tr>'
            for f in rep.findings
        )
        + "</table>"
    )
    if rep.sections.get("blocks"):
        from ..hf.report import HEAD, block_cells

        lines.append(
            "<h2>Blocks</h2><table><tr>"
            + "".join(f"<th>{e(h)}</th>" for h in HEAD)
            + "</tr>"
            + "".join(
                f'<tr><td class="l"><code>{e(c[0])}</code></td>' + "".join(f"<td>{e(x)}</td>" for x in c[1:]) + "</tr>"
                for c in map(block_cells, rep.sections["blocks"])
            )
            + "</table>"
        )
    name = title or rep.source or "audit"
    return html_report(
        rep.analysis, name, findings_html="\n".join(lines), status=f"Audit {status}: {verdict(rep.analysis)}"
    )
