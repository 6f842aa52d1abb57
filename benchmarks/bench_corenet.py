"""Benchmark: the cost of CoreNet, as ratios printed side by side.

- sparsifying LeNet-300-100 with |S| = 256 (sensitivities, sampling, an exact budget of 15%) against
  one forward pass of S, on one thread;
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

VGG = """
import resource, torch
from connectome.models import vgg19_cifar
from connectome.prune.corenet import corenet
torch.set_num_threads(1)
torch.manual_seed(0)
m = vgg19_cifar().eval()
base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
corenet(m, torch.randn({n}, 3, 32, 32), 0.1)
print(base, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)
"""


def lenet(repeat: int) -> None:
    torch.set_num_threads(1)
    torch.manual_seed(0)
    model = lenet_300_100().eval()
    x = torch.relu(torch.randn(256, 1, 28, 28))
    with torch.no_grad():
        model(x)
        forward = []
        for _ in range(20):
            t = time.perf_counter()
            model(x)
            forward.append(time.perf_counter() - t)
    corenet(model, x, 0.15)  # warm
    runs = []
    for seed in range(repeat):
        t = time.perf_counter()
        corenet(model, x, 0.15, seed=seed)
        runs.append(time.perf_counter() - t)
    f, c = statistics.median(forward), statistics.median(runs)
    print("CoreNet on LeNet-300-100, |S| = 256, 15% kept, 1 thread")
    print(f"  one forward pass of S {1000 * f:7.2f} ms   CoreNet {1000 * c:8.1f} ms   ratio {c / f:6.1f}x"
          "   (target <= 10x)")


def vgg() -> None:
    weights_mb = sum(p.numel() for p in vgg19_cifar().parameters()) * 4 / 2**20
    print("CoreNet on a CIFAR-form VGG-19 (full width), peak memory of a child process")
    for n in (32, 64):
        out = subprocess.run([sys.executable, "-c", VGG.format(n=n)], capture_output=True, text=True, check=True)
        base, peak = (int(v) / 1024 for v in out.stdout.split())
        print(f"  |S| = {n:3d}: peak {peak:7.0f} MB (model built: {base:6.0f} MB; weights {weights_mb:5.0f} MB)"
              f"   growth {peak - base:6.0f} MB")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--repeat", type=int, default=5)
    p.add_argument("--skip-vgg", action="store_true")
    args = p.parse_args()
    print(f"torch {torch.__version__}")
    lenet(args.repeat)
    if not args.skip_vgg:
        vgg()
    sys.stdout.flush()


if __name__ == "__main__":
    main()
