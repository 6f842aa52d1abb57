"""The per-block table of a language model audit, as terminal text and as markdown.

Examples
--------
>>> rows = [{"name": "model.layers.0", "params": 100, "direct_sparsity": 0.5, "effective_sparsity": 0.6,
...          "heads": 4, "dead_heads": [1], "kv_heads": 2, "dead_kv_heads": [], "neurons": 8, "dead_neurons": 2,
...          "experts": 0, "dead_experts": []}]
>>> print(block_text(rows).splitlines()[2])
model.layers.0     100      50.00%         60.00%         1/4      0/2           2/8             -
"""

from __future__ import annotations

from ..report import pct

__all__ = ["HEAD", "block_cells", "block_text", "block_markdown"]

HEAD = ("block", "params", "direct sp.", "effective sp.", "dead heads", "dead kv", "dead neurons", "dead experts")


def block_cells(r: dict) -> list[str]:
    def frac(dead, total) -> str:
        n = len(dead) if isinstance(dead, list) else dead
        return f"{n:,}/{total:,}" if total else "-"

    return [
        r["name"],
        f"{r['params']:,}",
        pct(r["direct_sparsity"]),
        pct(r["effective_sparsity"]),
        frac(r["dead_heads"], r["heads"]),
        frac(r["dead_kv_heads"], r["kv_heads"]),
        frac(r["dead_neurons"], r["neurons"]),
        frac(r["dead_experts"], r["experts"]),
    ]


def block_text(rows: list[dict]) -> str:
    """A fixed-width table, one line per decoder block."""
    body = [block_cells(r) for r in rows]
    widths = [max(len(h), *(len(c[i]) for c in body)) for i, h in enumerate(HEAD)]
    line = "  ".join(h.ljust(w) if i == 0 else h.rjust(w) for i, (h, w) in enumerate(zip(HEAD, widths)))
    out = [line, "-" * len(line)]
    for c in body:
        out.append("  ".join(x.ljust(w) if i == 0 else x.rjust(w) for i, (x, w) in enumerate(zip(c, widths))))
    return "\n".join(out)


def block_markdown(rows: list[dict]) -> str:
    """The same table as GitHub-flavoured markdown."""
    out = ["| " + " | ".join(HEAD) + " |", "|---|" + "--:|" * (len(HEAD) - 1)]
    for r in rows:
        c = block_cells(r)
        out.append(f"| `{c[0]}` | " + " | ".join(c[1:]) + " |")
    return "\n".join(out)
