"""Reproduce "Connectivity Matters" (Vysogorets & Kempe): effective vs direct compression at initialisation.

For LeNet-300-100, VGG-19 and ResNet-18 (CIFAR forms), direct compression 10x to 10^4x in steps of
10^0.25, seeds 0-2: random pruning with uniform, ERK and IGQ quotas, global magnitude, SNIP (real MNIST
for LeNet; CIFAR-10 for the CIFAR models with --cifar-root, since it is not available offline) and
SynFlow (100 rounds). Without CIFAR-10, the CIFAR models get SNIP on a stand-in instead, reported under
its own name: FashionMNIST padded to 32 x 32 and repeated over three channels. Each result is the
analysis of the pruned model: effective compression and whether it collapsed. Results accumulate in a
JSON file (a run resumes where it stopped); --report writes the table and the plots
(examples/connectivity_report.py).

Run:
  python examples/reproduce_connectivity.py --archs lenet_300_100            # minutes
  python examples/reproduce_connectivity.py                                   # all three: hours on a CPU
  python examples/reproduce_connectivity.py --report                          # docs/connectivity.md + plot
"""
from __future__ import annotations

import argparse
import json
import os
import time

import torch

import connectivity_report
from connectivity_report import ARCHS, METHODS, STAND_IN
from connectome import data
from connectome.io.files import write_atomic
from connectome.models import INPUT_SHAPES, MODELS
from connectome.prune import prune

COMPRESSIONS = [10 ** (1 + 0.25 * i) for i in range(13)]
HERE = os.path.dirname(os.path.abspath(__file__))
DOCS = os.path.join(HERE, "..", "docs")
RESULTS = os.path.join(DOCS, "connectivity", "results.json")


def _key(arch: str, method: str, seed: int, compression: float) -> str:
    return f"{arch}|{method}|{seed}|{compression:.4g}"


def run(archs: list[str], methods: list[str], seeds: list[int], path: str, cifar_root: str | None) -> None:
    results = json.load(open(path)) if os.path.exists(path) else {}
    for arch in archs:
        for seed in seeds:
            torch.manual_seed(seed)
            model = MODELS[arch]().eval()
            for method in methods:
                name, quota = METHODS[method]
                batch = _batch(arch, method, seed, cifar_root)
                if name == "snip" and batch is None:
                    continue
                for c in COMPRESSIONS:
                    key = _key(arch, method, seed, c)
                    if key in results:
                        continue
                    t = time.perf_counter()
                    p = prune(model, name, 1 - 1 / c, quota=quota, seed=seed, input_shape=INPUT_SHAPES[arch],
                              batch=batch)
                    res = p.analysis
                    results[key] = {"arch": arch, "method": method, "seed": seed, "target": c,
                                    "direct": res.direct_compression, "effective": res.effective_compression,
                                    "collapsed": res.collapsed, "seconds": time.perf_counter() - t}
                    eff = "collapsed" if res.collapsed else f"{res.effective_compression:,.1f}x"
                    print(f"{arch:<14} {method:<15} seed {seed}  direct {res.direct_compression:>9,.1f}x  "
                          f"effective {eff:>11}  ({time.perf_counter() - t:.1f} s)", flush=True)
                    write_atomic(path, json.dumps(results, indent=1))


def _batch(arch: str, method: str, seed: int, cifar_root: str | None):
    """SNIP's batch: MNIST for LeNet; CIFAR-10, or without it the stand-in, for the CIFAR models."""
    if METHODS[method][0] != "snip":
        return None
    if arch == "lenet_300_100":
        return data.batch("mnist", 256, seed=seed) if method == "SNIP" else None
    if (method == STAND_IN) == (cifar_root is not None):
        return None
    if cifar_root is not None:
        return data.batch("cifar10", 256, seed=seed, root=cifar_root)
    x, y = data.batch("fashion-mnist", 256, seed=seed)
    background = float(x.min())          # the normalised value of a blank pixel
    x = torch.nn.functional.pad(x, (2, 2, 2, 2), value=background)
    return x.expand(-1, 3, -1, -1).contiguous(), y


def report(path: str) -> None:
    connectivity_report.write(list(json.load(open(path)).values()), DOCS)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--archs", default=",".join(ARCHS))
    ap.add_argument("--methods", default=",".join(METHODS))
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--results", default=RESULTS)
    ap.add_argument("--cifar-root", default=None, help="CIFAR-10 files for SNIP on VGG-19 and ResNet-18")
    ap.add_argument("--report", action="store_true", help="write docs/connectivity.md and the plots")
    args = ap.parse_args()
    os.makedirs(os.path.dirname(args.results), exist_ok=True)
    if args.report:
        report(args.results)
        return
    run(args.archs.split(","), args.methods.split(","), [int(s) for s in args.seeds.split(",")], args.results,
        args.cifar_root)


if __name__ == "__main__":
    main()
