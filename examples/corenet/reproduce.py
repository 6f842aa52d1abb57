"""CoreNet reproduction: test error against the share of parameters kept, CoreNet and its variants against
uniform sampling, per-layer magnitude and rank-k SVD, on networks trained by `connectome sweep`; the
measured guarantee; the sample sizes of the paper's bound, against epsilon; and what the paper did not
show: the effective sparsity of the sampled networks.

Run (the base networks first, then the grid, then the report):
  connectome sweep examples/corenet/base.toml -o runs/corenet-base --num-cpus 2
  python examples/corenet/reproduce.py runs/corenet-base --results runs/corenet.json
  python examples/corenet/reproduce.py runs/corenet-base --results runs/corenet.json --report docs/corenet

No fine-tuning: each point is the sampled network as it comes out. Results accumulate in the JSON file,
so a stopped run resumes; every point takes well under a second on a CPU.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time

import torch
from torch.func import functional_call

from connectome import data
from connectome.analysis import Analyzer
from connectome.io.checkpoint import load
from connectome.io.files import write_atomic
from connectome.prune.corenet import BASELINES, baseline, corenet
from connectome.prune.corenet.bounds import sample_size
from connectome.prune.corenet.guarantee import measure
from connectome.prune.corenet.layers import layer_widths
from connectome.sweep import rows as sweep_rows

METHODS = ("corenet", "plus", "plusplus", *BASELINES)
KEEPS = (0.01, 0.02, 0.05, 0.1, 0.15, 0.2, 0.3, 0.5)
GUARANTEE = ((0.1, 0.05), (0.5, 0.05), (1.0, 0.05))  # (epsilon, delta) measured at 15% kept
BOUND = (0.1, 1.0, 10.0, 100.0, 1e3, 1e4)  # epsilon, with delta 0.05: sample sizes from the paper's bound


def bases(folder: str) -> list[dict]:
    return [r for r in sweep_rows(folder) if r.get("status") == "ok"]


def _name(row: dict) -> str:
    kw = row.get("model_kwargs") or {}
    arch = row["model"].split(":")[-1] + ("-" + "x".join(map(str, kw["hidden"])) if "hidden" in kw else "")
    return f"{arch} / {row['data']}"


def run(folder: str, path: str, seeds: int, size: int, keeps=KEEPS, methods=METHODS, bound=BOUND) -> dict:
    results = json.load(open(path)) if os.path.exists(path) else {}
    for row in bases(folder):
        net = _name(row)
        ck = load(os.path.join(folder, row["folder"], "checkpoint.pt"), arch=row["model"],
                  arch_kwargs=row.get("model_kwargs") or None)
        model = ck.model.eval()
        test_x, test_y = data.load(row["data"], "test")
        sample = data.batch(row["data"], size + size // 4, 0)[0]
        params = dict(model.named_parameters())

        def error(weights: dict) -> float:
            with torch.no_grad():
                out = functional_call(model, {**params, **weights}, (test_x,))
            return float((out.argmax(1) != test_y).float().mean())

        results.setdefault(f"{net}|dense", {"net": net, "method": "dense", "error": error({})})
        analyzer = Analyzer(model, input_shape=(1, *test_x.shape[1:]))
        for method in methods:
            for keep in keeps:
                for seed in range(seeds if method != "magnitude" and method != "svd" else 1):
                    key = f"{net}|{method}|{keep}|{seed}"
                    if key in results:
                        continue
                    t = time.perf_counter()
                    if method in BASELINES:
                        r = baseline(method, model, sample[:size], keep, seed=seed)
                    else:
                        r = corenet(model, sample[:size], keep, variant=method, seed=seed, holdout=sample[size:])
                    entry = {"net": net, "method": method, "keep": keep, "seed": seed, "error": error(r.weights),
                             "kept": r.kept, "seconds": time.perf_counter() - t}
                    if method != "svd":
                        res = analyzer.run(r.masks)
                        entry.update(direct=res.direct_sparsity, effective=res.effective_sparsity,
                                     dead_units=sum(int(v) for v in _dead(res)))
                    if method == "corenet" and keep == 0.15:
                        for eps, delta in GUARANTEE:
                            g = measure(model, r.weights, test_x[:1000], eps, delta)
                            entry[f"within_{eps:g}"] = g.within
                    results[key] = entry
                    print(f"{net:<28} {method:<10} keep {keep:<5g} seed {seed}  error {100 * entry['error']:6.2f}%",
                          flush=True)
                    write_atomic(path, json.dumps(results, indent=1))
        # no budget: the draws the bound asks for, on the sample the formula asks for
        s_bound = data.batch(row["data"], sample_size(layer_widths(model), 0.05), 0)[0]
        for eps in bound:
            for seed in range(seeds):
                key = f"{net}|bound|{eps:g}|{seed}"
                if key in results:
                    continue
                t = time.perf_counter()
                r = corenet(model, s_bound, None, epsilon=eps, seed=seed)
                total = sum(int(m.numel()) for m in r.masks.values())
                g = measure(model, r.weights, test_x[:1000], eps, 0.05)
                results[key] = {"net": net, "method": "bound", "epsilon": eps, "seed": seed, "error": error(r.weights),
                                "kept": r.kept, "share": r.kept / total, "within": g.within, "size": len(s_bound),
                                "seconds": time.perf_counter() - t}
                print(f"{net:<28} bound      eps {eps:<7g} seed {seed}  kept {100 * r.kept / total:6.2f}%  "
                      f"error {100 * results[key]['error']:6.2f}%", flush=True)
                write_atomic(path, json.dumps(results, indent=1))
    return results


def _dead(res) -> list[int]:
    out = []
    for row in res.layers:
        u = res.units(row["name"])
        out.append(int((~(u["alive_from_input"] & u["alive_to_output"])).sum()))
    return out


def report(results: dict, out: str, keeps=KEEPS) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    os.makedirs(out, exist_ok=True)
    nets = sorted({e["net"] for e in results.values()})
    cols = min(2, len(nets))
    rows = -(-len(nets) // cols)
    fig, grid = plt.subplots(rows, cols, figsize=(6.5 * cols, 4.5 * rows), squeeze=False)
    axes = [grid.flat]
    lines = ["| network | method | " + " | ".join(f"{100 * k:g}%" for k in keeps) + " |",
             "|---|---|" + "---|" * len(keeps)]
    for ax, net in zip(axes[0], nets):
        dense = results[f"{net}|dense"]["error"]
        ax.axhline(100 * dense, color="black", linestyle=":", label=f"dense ({100 * dense:.2f}%)")
        for method in METHODS:
            means = []
            for keep in keeps:
                errs = [e["error"] for e in results.values() if e["net"] == net and e.get("method") == method
                        and e.get("keep") == keep]
                means.append(100 * statistics.mean(errs) if errs else float("nan"))
            ax.plot([100 * k for k in keeps], means, marker="o", label=method)
            lines.append(f"| {net} | {method} | " + " | ".join(f"{m:.1f}" for m in means) + " |")
        ax.set(xscale="log", yscale="log", xlabel="parameters kept (%)", ylabel="test error (%)", title=net)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(os.path.join(out, "error.png"), dpi=110)
    with open(os.path.join(out, "table.md"), "w") as f:
        f.write("\n".join(lines) + "\n")
    print("\n".join(lines))
    bound = _bound_table(results)
    if bound:
        with open(os.path.join(out, "bound.md"), "w") as f:
            f.write(bound + "\n")
        print(bound)


def _bound_table(results: dict) -> str:
    """Per network and epsilon: the share kept, the test error and the share of inputs within epsilon."""
    points = [e for e in results.values() if e.get("method") == "bound"]
    if not points:
        return ""
    lines = ["| network | |S| | epsilon | kept (%) | test error (%) | inputs within epsilon (%) |", "|---|---|---|---|---|---|"]
    for net in sorted({e["net"] for e in points}):
        for eps in sorted({e["epsilon"] for e in points if e["net"] == net}):
            got = [e for e in points if e["net"] == net and e["epsilon"] == eps]
            mean = lambda k: 100 * statistics.mean(e[k] for e in got)  # noqa: E731
            lines.append(f"| {net} | {got[0]['size']} | {eps:g} | {mean('share'):.2f} | {mean('error'):.1f} | "
                         f"{mean('within'):.1f} |")
    return "\n".join(lines)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("runs", help="the folder of the base sweep (examples/corenet/base.toml)")
    p.add_argument("--results", required=True)
    p.add_argument("--seeds", type=int, default=3)
    p.add_argument("--sample-size", type=int, default=256)
    p.add_argument("--keeps", default=",".join(map(str, KEEPS)), help="shares of parameters kept")
    p.add_argument("--report", metavar="DIR", help="write table.md and error.png there (no new points)")
    args = p.parse_args()
    keeps = tuple(float(k) for k in args.keeps.split(","))
    if args.report:
        report(json.load(open(args.results)), args.report, keeps)
        return
    run(args.runs, args.results, args.seeds, args.sample_size, keeps)


if __name__ == "__main__":
    sys.exit(main())
