"""Benchmark: how long a layer diagram takes, from the model to the SVG file.

resnet50 (every op drawn, and folded) and maxvit_t (folded, and every op drawn) from torchvision at
224x224, random masks at 90% sparsity. Each row splits the time into the analysis, building the DOT
text and graphviz's layout + SVG output, and compares the total with the target.

Run: make bench   (or .venv/bin/python benchmarks/bench_render.py [--repeat N])
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time

import torchvision

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "tests"))

import connectome  # noqa: E402
from connectome.render import render, to_dot  # noqa: E402
from oracle import random_masks  # noqa: E402

CASES = [("resnet50", False, 5.0), ("resnet50", True, 5.0), ("maxvit_t", True, 20.0), ("maxvit_t", False, None)]


def timed(fn):
    t = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - t


def one(model, masks, fold: bool, path: str) -> tuple[float, float, float, int]:
    res, t_analyze = timed(lambda: connectome.analyze(model, input_shape=(1, 3, 224, 224), masks=masks))
    d, t_dot = timed(lambda: to_dot(res, fold=fold))
    _, t_render = timed(lambda: render(d, path))
    return t_analyze, t_dot, t_render, d.source.count(" -> ")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()
    print(f"{'diagram':<22}{'edges':>7}{'analyze':>10}{'DOT':>8}{'graphviz':>10}{'total':>9}{'target':>9}  met")
    models: dict[str, tuple] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for name, fold, target in CASES:
            if name not in models:
                m = getattr(torchvision.models, name)().eval()
                models[name] = (m, random_masks(m, 0.9))
            runs = [one(*models[name], fold, os.path.join(tmp, "d.svg")) for _ in range(args.repeat)]
            a, d, r, edges = min(runs, key=lambda x: sum(x[:3]))
            total = a + d + r
            label = f"{name} ({'folded' if fold else 'every op'})"
            verdict = "" if target is None else ("yes" if total < target else "NO")
            tgt = "" if target is None else f"< {target:g} s"
            print(f"{label:<22}{edges:>7}{a:>9.2f}s{d:>7.2f}s{r:>9.2f}s{total:>8.2f}s{tgt:>9}  {verdict}")


if __name__ == "__main__":
    main()
