"""Benchmark: the cost of CoreNet, as ratios printed side by side.

- sparsifying LeNet-300-100 with |S| = 256 (sensitivities, sampling, an exact budget of 15%) against
  one forward pass of S, on one thread, the two timed in turn and their ratio taken pair by pair;
- the peak memory of sparsifying a CIFAR-form VGG-19 (full width, 20M weights) with |S| = 64, in a
  child process, against the memory its weights take: the patches of a convolution are built a few
  inputs at a time, so the peak should not grow with |S|.

Run: make bench   (or .venv/bin/python benchmarks/bench_corenet.py [--skip-vgg])
"""
from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time

import torch

from connectome.models import lenet_300_100, vgg19_cifar
from connectome.prune.corenet import corenet
from connectome.prune.corenet.kernel import compiled

VGG = """
import resource, time, torch
from connectome.models import vgg19_cifar
from connectome.prune.corenet import corenet
torch.set_num_threads(1)
torch.manual_seed(0)
m = vgg19_cifar().eval()
base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
t = time.perf_counter()
corenet(m, torch.randn({n}, 3, 32, 32), 0.1)
print(base, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, time.perf_counter() - t)
"""


def lenet(repeat: int) -> None:
    torch.set_num_threads(1)
    torch.manual_seed(0)
    model = lenet_300_100().eval()
    x = torch.relu(torch.randn(256, 1, 28, 28))
    corenet(model, x, 0.15)  # warm: numba compiles (or loads its cache) on the first call
    # forward passes and CoreNet alternate, so that both meet the same load on a shared machine
    forward, runs, ratios = [], [], []
    with torch.no_grad():
        for seed in range(repeat):
            passes = []
            for _ in range(5):
                t = time.perf_counter()
                model(x)
                passes.append(time.perf_counter() - t)
            t = time.perf_counter()
            corenet(model, x, 0.15, seed=seed)
            runs.append(time.perf_counter() - t)
            forward.append(statistics.median(passes))
            ratios.append(runs[-1] / forward[-1])
    fast = compiled() is not None
    print(f"CoreNet on LeNet-300-100, |S| = 256, 15% kept, 1 thread, loops {'compiled by numba' if fast else 'in torch'}")
    f, c = statistics.median(forward), statistics.median(runs)
    print(f"  one forward pass of S {1000 * f:6.2f} ms   CoreNet {1000 * c:7.1f} ms   (medians of {repeat})")
    q = statistics.quantiles(ratios, n=4)
    print(f"  ratio, pair by pair: median {statistics.median(ratios):5.1f}x   quartiles {q[0]:5.1f}x - {q[2]:5.1f}x"
          "   (target <= 10x)")


def vgg() -> None:
    weights_mb = sum(p.numel() for p in vgg19_cifar().parameters()) * 4 / 2**20
    print("CoreNet on a CIFAR-form VGG-19 (full width), peak memory of a child process")
    for n in (32, 64):
        out = subprocess.run([sys.executable, "-c", VGG.format(n=n)], capture_output=True, text=True, check=True)
        base, peak, seconds = (float(v) for v in out.stdout.split())
        base, peak = base / 1024, peak / 1024
        print(f"  |S| = {n:3d}: peak {peak:7.0f} MB (model built: {base:6.0f} MB; weights {weights_mb:5.0f} MB)"
              f"   growth {peak - base:6.0f} MB   {seconds:6.1f} s")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--repeat", type=int, default=31)
    p.add_argument("--skip-vgg", action="store_true")
    args = p.parse_args()
    print(f"torch {torch.__version__}")
    lenet(args.repeat)
    if not args.skip_vgg:
        vgg()
    sys.stdout.flush()


if __name__ == "__main__":
    main()
