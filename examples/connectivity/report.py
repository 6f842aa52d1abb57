"""Tables and plots of a connectivity sweep: accuracy against direct and against effective compression.

Usage: python examples/connectivity/report.py RUNS_DIR --out docs/training/lenet300

Reads RUNS_DIR/results.jsonl (written by ``connectome sweep``), averages over seeds, and writes
``accuracy.png`` (two panels side by side) and ``table.md`` into --out.
"""
from __future__ import annotations

import argparse
import math
import os
import statistics
from collections import defaultdict

from connectome.sweep import rows as sweep_rows


def load(folder: str) -> list[dict]:
    return sweep_rows(folder)


def label(r: dict) -> str:
    quota = r.get("quota") or "global"
    return f"{r.get('init', 'random')} ({quota}), {r.get('target', 'direct')}"


def groups(rows: list[dict]) -> dict[tuple[str, float], list[dict]]:
    out: dict[tuple[str, float], list[dict]] = defaultdict(list)
    for r in rows:
        if r.get("status") == "ok":
            out[(label(r), round(1 / (1 - r["sparsity"]), 1))].append(r)
    return out


def compression(sparsity: float) -> float:
    return math.inf if sparsity >= 1 else 1 / (1 - sparsity)


def table(rows: list[dict]) -> str:
    g = groups(rows)
    lines = ["| method (quota), target | nominal | direct (start) | effective (start) | collapsed | test accuracy |",
             "|---|---|---|---|---|---|"]
    for (name, nominal), rs in sorted(g.items()):
        acc = [100 * r["test_acc"] for r in rs]
        d = statistics.mean(compression(r["start_direct_sparsity"]) for r in rs)
        e = [compression(r["start_effective_sparsity"]) for r in rs]
        eff = statistics.mean(e) if all(math.isfinite(x) for x in e) else math.inf
        spread = f" ± {statistics.stdev(acc):.2f}" if len(acc) > 1 else ""
        lines.append(f"| {name} | {nominal:g}x | {d:.1f}x | {eff:.1f}x | {sum(r['start_collapsed'] for r in rs)}/{len(rs)} "
                     f"| {statistics.mean(acc):.2f}{spread} |")
    failed = [r for r in rows if r.get("status") != "ok"]
    if failed:
        lines.append(f"\n{len(failed)} run(s) failed: " + "; ".join(f"{r['id']}: {r.get('error')}" for r in failed[:5]))
    return "\n".join(lines) + "\n"


def plot(rows: list[dict], path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(13, 5), sharey=True)
    by: dict[str, list[dict]] = defaultdict(list)
    for r in rows:
        if r.get("status") == "ok":
            by[label(r)].append(r)
    methods = sorted({name.rsplit(", ", 1)[0] for name in by})
    colors = {m: plt.get_cmap("tab10")(i) for i, m in enumerate(methods)}  # one colour per method
    for name, rs in sorted(by.items()):
        method, target = name.rsplit(", ", 1)
        style = "-" if target == "direct" else "--"  # the line style says how the masks were aimed
        for ax, key in zip(axes, ("start_direct_sparsity", "start_effective_sparsity")):
            pts = defaultdict(list)
            for r in rs:
                pts[round(1 / (1 - r["sparsity"]), 1)].append((compression(r[key]), 100 * r["test_acc"]))
            xy = [(statistics.mean(x for x, _ in v), statistics.mean(y for _, y in v)) for v in pts.values()]
            keep = sorted((x, y) for x, y in xy if math.isfinite(x))  # collapsed starts have no finite x
            if keep:
                ax.plot(*zip(*keep), style, marker="o", color=colors[method], label=name)
    for ax, what in zip(axes, ("direct", "effective")):
        ax.set(xscale="log", xlabel=f"{what} compression at initialisation", title=f"against {what} compression")
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("test accuracy after training (%)")
    axes[1].legend(fontsize=7, loc="lower left")
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def write(load_rows, make_table, make_plot, picture: str, description: str) -> None:
    """The command line of both reports: RUNS_DIR --out FOLDER; writes table.md and ``picture`` there."""
    p = argparse.ArgumentParser(description=description)
    p.add_argument("runs")
    p.add_argument("--out", required=True)
    args = p.parse_args()
    rows = load_rows(args.runs)
    os.makedirs(args.out, exist_ok=True)
    with open(os.path.join(args.out, "table.md"), "w") as f:
        f.write(make_table(rows))
    make_plot(rows, os.path.join(args.out, picture))
    print(make_table(rows))


if __name__ == "__main__":
    write(load, table, plot, "accuracy.png", __doc__.splitlines()[0])
