"""Human-readable reports of an :class:`~connectome.analysis.Analysis`: a per-layer table and a verdict.

Examples
--------
>>> import torch, connectome
>>> m = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.ReLU(), torch.nn.Linear(3, 2))
>>> print(verdict(connectome.analyze(m, input_shape=(1, 4))))
OK: every nonzero weight is effective (direct sparsity 0.00%, 18 weights).
"""

from __future__ import annotations

from .analysis import Analysis

__all__ = ["table", "row_cells", "verdict", "pct", "compression"]


def pct(x: float) -> str:
    return f"{100 * x:.2f}%"


def compression(x: float | None) -> str:
    if x is None:
        return "inf"
    return f"{x:,.1f}x" if x < 1e4 else f"{x:,.3g}x"


def row_cells(r: dict) -> list[str]:
    """The cells of one layer row, as the terminal table and the HTML report show them.

    >>> row_cells({"name": "fc", "kind": "linear", "numel": 8, "nonzero": 4, "effective": 2,
    ...            "dead_in": 1, "dead_out": 0, "units_out": 2})[4:]
    ['2', '50.00%', '75.00%', '1/2', '0/2']
    """
    n = r["numel"]
    return [
        r["name"],
        r["kind"],
        f"{n:,}",
        f"{r['nonzero']:,}",
        f"{r['effective']:,}",
        pct(1 - r["nonzero"] / n if n else 0),
        pct(1 - r["effective"] / n if n else 0),
        f"{r['dead_in']}/{r['units_out']}",
        f"{r['dead_out']}/{r['units_out']}",
    ]


def table(res: Analysis) -> str:
    """A torchinfo-style table: one row per prunable tensor, then totals, then the tensors that several
    names share (a head tied to the embedding).

    >>> import torch, connectome
    >>> m = torch.nn.Sequential(torch.nn.Embedding(5, 3), torch.nn.Linear(3, 5, bias=False))
    >>> m[1].weight = m[0].weight
    >>> print(table(connectome.analyze(m, input_shape=(1, 4), input_dtype=torch.long)).splitlines()[-1])
    tied: 0.weight = 1.weight (one tensor, counted once)
    """
    head = ["Layer", "Kind", "Params", "Nonzero", "Effective", "Direct sp.", "Effective sp.", "Dead in", "Dead out"]
    rows = []
    for r in res.layers:
        rows.append(row_cells(r))
    total = [
        "Total",
        "",
        f"{res.params_total:,}",
        f"{res.params_nonzero:,}",
        f"{res.params_effective:,}",
        pct(res.direct_sparsity),
        pct(res.effective_sparsity),
        "",
        "",
    ]
    widths = [max(len(str(x[i])) for x in [head, total] + rows) for i in range(len(head))]
    right = {2, 3, 4, 5, 6, 7, 8}

    def line(cells: list) -> str:
        return "  ".join(
            str(c).rjust(w) if i in right else str(c).ljust(w) for i, (c, w) in enumerate(zip(cells, widths))
        ).rstrip()

    rule = "-" * len(line(head))
    shared = [
        f"tied: {_tensor_name(res, r['name'])} = {' = '.join(r['shared_with'])} (one tensor, counted once)"
        for r in res.layers
        if r.get("shared_with")
    ]
    return "\n".join([line(head), rule] + [line(r) for r in rows] + [rule, line(total)] + shared)


def _tensor_name(res: Analysis, layer: str) -> str:
    return layer + ".weight" if layer + ".weight" in res.masks else layer


def verdict(res: Analysis) -> str:
    """One line: collapsed, wasted weights, or all clear."""
    if res.collapsed:
        return (
            f"COLLAPSED: no path from the inputs to the outputs remains; all {res.params_nonzero:,} nonzero "
            f"weights are ineffective (direct sparsity {pct(res.direct_sparsity)})."
        )
    wasted = res.params_nonzero - res.params_effective
    if wasted == 0:
        return (
            f"OK: every nonzero weight is effective (direct sparsity {pct(res.direct_sparsity)}, "
            f"{res.params_total:,} weights)."
        )
    share = wasted / res.params_nonzero if res.params_nonzero else 0
    return (
        f"DEAD WEIGHTS: {wasted:,} of {res.params_nonzero:,} nonzero weights ({pct(share)}) reach no output "
        f"or see no input; effective sparsity {pct(res.effective_sparsity)} vs direct "
        f"{pct(res.direct_sparsity)} (compression {compression(res.effective_compression)} vs "
        f"{compression(res.direct_compression)})."
    )
