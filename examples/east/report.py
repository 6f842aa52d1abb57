"""Tables and plots of the EAST sweep (examples/east/east.toml): test accuracy, effective sparsity, dead
units and the updates that would have cut a layer, by method and sparsity, and the ablations.

Usage: python examples/east/report.py RUNS_DIR --out docs/east

Reads RUNS_DIR/results.jsonl and each run's log.jsonl (both written by ``connectome sweep``) and writes
``table.md`` and ``effective.png`` (effective compression against training step, one panel per
sparsity) into --out.
"""
from __future__ import annotations

import argparse
import math
import os
import sys

from connectome.sweep import rows as sweep_rows

ORDER = ("east", "rigl", "set", "static")


def load(folder: str) -> list[dict]:
    return sweep_rows(folder, logs=True)


def name(r: dict) -> str:
    if r["method"] != "east":
        return r["method"] + (" + guard" if r.get("guard") else "")
    off = [t for t, on in (("dyrelu", r.get("dyrelu", True)), ("sharing", r.get("sharing", True)),
                           ("cyclic", r.get("cycles", 2) != 0)) if not on]
    return "east" + "".join(f" - {t}" for t in off)


def compression(sparsity: float) -> str:
    return "inf" if sparsity >= 1 else f"{1 / (1 - sparsity):,.0f}x"


def table(rows: list[dict]) -> str:
    lines = ["| sparsity | method | test accuracy | direct / effective compression (end) | dead units (end) "
             "| updates that cut a layer | collapsed |", "|---|---|---|---|---|---|---|"]
    for r in sorted(rows, key=lambda r: (r["sparsity"], ORDER.index(r["method"]), name(r))):
        if r.get("status") != "ok":
            reason = r.get("error", "failed").split(": ", 1)[-1]
            lines.append(f"| {100 * r['sparsity']:g}% | {name(r)} | refused: {reason} | | | | |")
            continue
        ups = [x for x in r["log"] if x["event"] == "update"]
        cut = sum(1 for x in ups if x.get("cut_layers"))
        lines.append(
            f"| {100 * r['sparsity']:g}% | {name(r)} | {100 * r['test_acc']:.1f}% | "
            f"{compression(r['direct_sparsity'])} / {compression(r['effective_sparsity'])} | {r['dead_units']} | "
            f"{cut} of {len(ups)} | {'yes' if r['collapsed'] else 'no'} |"
        )
    return "\n".join(lines)


def plot(rows: list[dict], path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    levels = sorted({r["sparsity"] for r in rows})
    fig, axes = plt.subplots(1, len(levels), figsize=(5 * len(levels), 3.8), squeeze=False)
    for ax, s in zip(axes[0], levels):
        for r in rows:
            if r["sparsity"] != s or r.get("status") != "ok":
                continue
            pts = [x for x in r["log"] if x["event"] in ("start", "update", "epoch")]
            ax.plot([x["step"] for x in pts], [1 / max(1 - x["effective_sparsity"], 1e-9) for x in pts],
                    label=name(r), marker="." if r["method"] == "east" else None)
        ax.axhline(1 / (1 - s), color="black", linestyle=":", label="the budget")
        ax.set(yscale="log", xlabel="training step", ylabel="effective compression", title=f"{100 * s:g}%")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("runs")
    p.add_argument("--out", required=True)
    args = p.parse_args()
    rows = load(args.runs)
    os.makedirs(args.out, exist_ok=True)
    text = table(rows)
    with open(os.path.join(args.out, "table.md"), "w") as f:
        f.write(text + "\n")
    print(text)
    plot(rows, os.path.join(args.out, "effective.png"))
    if any(math.isnan(r.get("test_acc", 0) or 0) for r in rows):
        print("note: a run's accuracy is NaN", file=sys.stderr)


if __name__ == "__main__":
    main()
