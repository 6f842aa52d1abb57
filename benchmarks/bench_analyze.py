"""Benchmark: connectome's effective masks vs one read of the weights vs the paper's autograd method.

resnet50 and vgg19 (torchvision, no pretrained weights) at 224x224, random masks at 90% sparsity.
"one read" is ``(w != 0)`` over every prunable weight: no method can avoid reading each weight once.
It is timed as the issue defines it (torch's ``w != 0``) and with numpy's comparison, the faster pass
on CPU that connectome itself uses, so that neither ratio flatters the other.
"paper's method" is the path-count oracle (one float64 forward/backward at full resolution), which is
how "Connectivity Matters" computes effective masks. connectome is timed cold (trace + shapes + lower
+ walk, with its geometry caches emptied first) and warm (re-lower new masks and walk, as a sparse-training loop would). End to end, the CLI is
compared with importing torch and building the model in a fresh process.

Run: make bench   (or .venv/bin/python benchmarks/bench_analyze.py [--repeat N] [--models resnet50,vgg19])
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time

import numpy as np
import torch

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "tests"))

import connectome  # noqa: E402
from oracle import oracle_masks, random_masks  # noqa: E402


def best(fn, repeat: int, setup=None) -> float:
    times = []
    for _ in range(repeat):
        if setup is not None:
            setup()
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return min(times)


def clear_caches() -> None:
    """Empty connectome's geometry caches (tap maps etc.), so that "cold" pays for building them."""
    for name, mod in list(sys.modules.items()):
        if name.startswith("connectome"):
            for v in list(vars(mod).values()):
                if hasattr(v, "cache_clear") and getattr(v, "__module__", None) == name:
                    v.cache_clear()


def process_time(code: list[str], repeat: int) -> float:
    return best(lambda: subprocess.run(code, check=True, capture_output=True), repeat)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--models", default="resnet50,vgg19")
    ap.add_argument("--size", type=int, default=224)
    ap.add_argument("--no-e2e", action="store_true", help="skip the end-to-end CLI timing")
    args = ap.parse_args()
    import torchvision

    shape = (1, 3, args.size, args.size)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, input {shape}, 90% random masks, "
          f"best of {args.repeat}\n")
    head = f"{'model':<10}{'read w!=0':>11}{'numpy':>9}{'paper':>10}{'cold':>10}{'warm':>10}" \
           f"{'cold/read':>11}{'warm/read':>11}{'cold/numpy':>12}{'paper/cold':>12}{'exact':>7}"
    print(head)
    for name in args.models.split(","):
        model = torchvision.models.get_model(name, weights=None).eval()
        masks = random_masks(model, 0.9, seed=0)
        with torch.no_grad():  # the checkpoint: weights already pruned
            for pname, p in model.named_parameters():
                if pname in masks:
                    p.mul_(masks[pname])
                    masks[pname] = p != 0  # an initial weight can be exactly 0.0 too
        weights = [p for pname, p in model.named_parameters() if pname in masks]
        read = best(lambda: [(w != 0) for w in weights], args.repeat)
        read_np = best(lambda: [np.not_equal(w.detach().numpy(), 0) for w in weights], args.repeat)
        paper = best(lambda: oracle_masks(model, [shape], masks), args.repeat)
        cold = best(lambda: connectome.analyze(model, input_shape=shape), args.repeat, setup=clear_caches)
        analyzer = connectome.Analyzer(model, input_shape=shape)
        warm = best(lambda: analyzer.run(), args.repeat)
        res, ref = analyzer.run(), oracle_masks(model, [shape], masks)
        bad = {k: int((res.effective_masks[k] != ref[k]).sum()) for k in ref}
        exact = not any(bad.values())
        if not exact:
            print("  mismatches:", {k: v for k, v in bad.items() if v})
        print(f"{name:<10}{read * 1e3:>9.1f}ms{read_np * 1e3:>7.1f}ms{paper:>9.2f}s{cold:>9.3f}s{warm:>9.3f}s"
              f"{cold / read:>10.1f}x{warm / read:>10.1f}x{cold / read_np:>11.1f}x{paper / cold:>11.1f}x"
              f"{str(exact):>7}")
    if args.no_e2e:
        return
    exe = os.path.join(os.path.dirname(sys.executable), "connectome")
    base = process_time([sys.executable, "-c", "import torch, torchvision; torchvision.models.resnet50()"],
                        args.repeat)
    cli = process_time([exe, "analyze", "torchvision:resnet50", "--json"], args.repeat)
    print(f"\nend to end: `connectome analyze torchvision:resnet50` {cli:.2f}s vs import torch + build "
          f"resnet50 {base:.2f}s: {cli / base:.2f}x")


if __name__ == "__main__":
    main()
