"""Tables and plots of the dynamic-sparse-training sweep: accuracy by policy and sparsity, with and
without --reclaim, and effective sparsity over training read from every run's log.

Usage: python examples/connectivity/dst_report.py RUNS_DIR --out docs/training/dst

Reads RUNS_DIR/results.jsonl and each run's log.jsonl (both written by ``connectome sweep``), averages
over seeds, and writes ``table.md`` and ``effective.png`` (effective compression, and the share of kept
weights that are ineffective, against training step; one column per sparsity) into --out.
"""
from __future__ import annotations

import math
import os
import statistics
import sys
from collections import defaultdict

from connectome.sweep import rows as sweep_rows

ORDER = ("static", "gmp", "set", "rigl")


def load(folder: str) -> list[dict]:
    return sweep_rows(folder, logs=True)


def name(r: dict) -> str:
    return r["method"] + (" + reclaim" if r.get("reclaim") else "")


def _key(r: dict) -> tuple:
    return ORDER.index(r["method"]) if r["method"] in ORDER else 9, bool(r.get("reclaim"))


def ineffective_share(rec: dict) -> float:
    """Share of the kept weights that no input-output path uses."""
    kept = 1 - rec["direct_sparsity"]
    return 0.0 if kept <= 0 else max(0.0, 1 - (1 - rec["effective_sparsity"]) / kept)


def compression(sparsity: float) -> float:
    return math.inf if sparsity >= 1 else 1 / (1 - sparsity)


def table(rows: list[dict]) -> str:
    g: dict[tuple, list[dict]] = defaultdict(list)
    for r in rows:
        if r.get("status") == "ok":
            g[(r["sparsity"], name(r))].append(r)
    lines = [
        "| sparsity | policy | test accuracy | ineffective kept weights: start / most after an update / end "
        "| effective compression (end) | dead units (end) |",
        "|---|---|---|---|---|---|",
    ]
    for (sp, n), rs in sorted(g.items(), key=lambda kv: (kv[0][0], _key(kv[1][0]))):
        acc = [100 * r["test_acc"] for r in rs]
        spread = f" ± {statistics.stdev(acc):.2f}" if len(acc) > 1 else ""
        eff = statistics.mean(compression(r["effective_sparsity"]) for r in rs)
        logs = [r.get("log", []) for r in rs]
        start = statistics.mean(ineffective_share(next(x for x in lg if x["event"] == "start")) for lg in logs if lg)
        upd = [ineffective_share(x) for lg in logs for x in lg if x["event"] == "update"]
        most = f"{100 * max(upd):.1f}%" if upd else "none"
        end = statistics.mean(ineffective_share(r) for r in rs)
        dead = statistics.mean(r["dead_units"] for r in rs)
        lines.append(
            f"| {100 * sp:g}% | {n} | {statistics.mean(acc):.2f}{spread} | {100 * start:.1f}% / {most} / "
            f"{100 * end:.1f}% | {eff:.1f}x | {dead:g} |"
        )
    failed = [r for r in rows if r.get("status") != "ok"]
    if failed:
        lines.append(f"\n{len(failed)} run(s) failed: " + "; ".join(f"{r['id']}: {r.get('error')}" for r in failed[:5]))
    return "\n".join(lines) + "\n"


def plot(rows: list[dict], path: str, seed: int = 0) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    levels = sorted({r["sparsity"] for r in rows})
    fig, axes = plt.subplots(2, len(levels), figsize=(5 * len(levels), 8), sharex=True, squeeze=False)
    colors = {m: plt.get_cmap("tab10")(i) for i, m in enumerate(ORDER)}
    for r in sorted((r for r in rows if "log" in r and r.get("seed", seed) == seed), key=_key):
        col = levels.index(r["sparsity"])
        recs = [x for x in r["log"] if x["event"] in ("start", "update", "epoch")]
        steps = [x["step"] for x in recs]
        style = "--" if r.get("reclaim") else "-"
        kw = dict(color=colors.get(r["method"], "grey"), label=name(r), linewidth=1.2)
        axes[0][col].plot(steps, [compression(x["effective_sparsity"]) for x in recs], style, **kw)
        axes[1][col].plot(steps, [100 * ineffective_share(x) for x in recs], style, **kw)
    for col, sp in enumerate(levels):
        axes[0][col].set(yscale="log", title=f"{100 * sp:g}% sparse (seed {seed})")
        axes[1][col].set(xlabel="training step")
        for ax in axes[:, col]:
            ax.grid(alpha=0.3)
    axes[0][0].set_ylabel("effective compression")
    axes[1][0].set_ylabel("kept weights that are ineffective (%)")
    axes[0][-1].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


if __name__ == "__main__":
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    from report import write

    write(load, table, plot, "effective.png", __doc__.splitlines()[0])
