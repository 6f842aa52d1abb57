"""Compaction against Torch-Pruning: parameters, FLOPs, latency and output error, side by side.

Part 1, masks that zero whole channels (so that a channel pruner can act too): a random quarter of the
output channels of every convolution and linear layer but the classifier are zeroed, and batch norms
get random statistics (as a trained network has: a zeroed channel then carries a nonzero constant).
connectome compacts what the analysis finds dead; Torch-Pruning (DepGraph) removes the zeroed channels
of each layer with every channel coupled to them. Both results are run against the original in float64.

Part 2, random unstructured masks at 99% and 99.9% (narrow layers, a depthwise kernel of 9, at half):
what a channel pruner can see (output channels whose weights are all zero) against the units
connectome removes (no path from the inputs or to the outputs), and what compaction leaves.

Usage: python benchmarks/bench_compact.py [--size 224] [--models resnet18,...] [--runs 10] [--part 1|2|both]
(needs the bench extra: pip install 'connectome[bench]'; --size 64 runs in a few minutes on a laptop).
"""

from __future__ import annotations

import argparse
import copy
import time

import torch
import torchvision
from torch import nn

from connectome.compact import CompactionError, compact
from connectome.compact.measure import flops, latency, max_error, params

MODELS = ["resnet18", "resnet50", "mobilenet_v2", "densenet121", "vit_b_16"]


def build(name: str, size: int, seed: int) -> nn.Module:
    kw = {"image_size": size} if name.startswith("vit") else {}
    torch.manual_seed(seed)  # torchvision initialises from the global generator
    m = getattr(torchvision.models, name)(**kw).eval()
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for mod in m.modules():
            if isinstance(mod, nn.Linear) and not mod.weight.any():  # ViT's head starts at zero
                mod.weight.normal_(0, 0.02, generator=gen)
            if isinstance(mod, nn.BatchNorm2d):
                mod.running_mean.normal_(0, 0.1, generator=gen)
                mod.running_var.uniform_(0.5, 1.5, generator=gen)
                mod.weight.normal_(1, 0.1, generator=gen)
                mod.bias.normal_(0, 0.1, generator=gen)
    return m


def _layers(m: nn.Module) -> list[tuple[str, nn.Module]]:
    """Convolutions and linear layers, the classifier last (never cut: its outputs are the model's)."""
    found = [(n, mod) for n, mod in m.named_modules() if isinstance(mod, (nn.Conv2d, nn.Linear))]
    return found[:-1]


def zero_channels(m: nn.Module, share: float, seed: int) -> None:
    """Zero a random ``share`` of the output channels of every layer but the classifier (for ViT, of its
    MLPs: attention projections are split into heads, which a channel pruner handles apart)."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, mod in _layers(m):
            if isinstance(m, torchvision.models.VisionTransformer) and "mlp.0" not in name:
                continue
            rows = torch.randperm(mod.weight.shape[0], generator=gen)[: int(share * mod.weight.shape[0])]
            mod.weight[rows] = 0  # the weights only: a bias stays, as a mask leaves it


def torch_pruning(m: nn.Module, x: torch.Tensor) -> nn.Module:
    """Every all-zero output channel removed by Torch-Pruning, with the channels DepGraph couples to it."""
    import torch_pruning as tp

    m = copy.deepcopy(m)
    dg = tp.DependencyGraph().build_dependency(m, example_inputs=x)
    for _, mod in _layers(m):
        w = mod.weight.detach()
        idxs = torch.nonzero(~w.reshape(w.shape[0], -1).any(1)).flatten().tolist()
        if not idxs or len(idxs) == w.shape[0]:
            continue
        fn = tp.prune_linear_out_channels if isinstance(mod, nn.Linear) else tp.prune_conv_out_channels
        group = dg.get_pruning_group(mod, fn, idxs=idxs)
        if dg.check_pruning_group(group):
            group.prune()
    return m


def _timed(fn):
    """The result of ``fn()`` and the seconds it took."""
    start = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - start


def part1(names: list[str], size: int, runs: int) -> None:
    print("Part 1: a quarter of the channels zeroed; connectome compact (every dead unit, and widths aligned")
    print("to 8) vs Torch-Pruning; error: max relative output difference in float64; ms: CPU latency")
    print(
        f"{'model':<13} {'params':>11} {'conn.':>11} {'error':>8} {'align 8':>11} {'Torch-Pr.':>11} {'error':>8} "
        f"{'GFLOPs':>7} {'conn.':>6} {'al. 8':>6} {'TP':>6} {'ms':>6} {'conn.':>6} {'al. 8':>6} {'TP':>6} "
        f"{'t conn.':>7} {'t TP':>5}"
    )
    for name in names:
        m = build(name, size, 0)
        zero_channels(m, 0.25, 1)
        x = torch.randn(1, 3, size, size)
        ours, t_ours = _timed(lambda: compact(m, input_shape=(1, 3, size, size)))
        aligned = compact(m, input_shape=(1, 3, size, size), align=8)
        theirs, t_theirs = _timed(lambda: torch_pruning(m, x))
        m64, checks = copy.deepcopy(m).double(), [(torch.randn(2, 3, size, size, dtype=torch.float64),)]
        err_ours = max_error(m64, copy.deepcopy(ours).double(), checks)
        err_theirs = max_error(m64, copy.deepcopy(theirs).double(), checks)
        models = (m, ours, aligned, theirs)
        g = [flops(k, (x,)) / 1e9 for k in models]
        ms = [latency(k, (x,), runs) * 1e3 for k in models]
        print(
            f"{name:<13} {params(m):>11,} {params(ours):>11,} {err_ours:>8.1e} {params(aligned):>11,} "
            f"{params(theirs):>11,} {err_theirs:>8.1e} "
            + " ".join(f"{v:>{w}.2f}" for v, w in zip(g, (7, 6, 6, 6)))
            + " "
            + " ".join(f"{v:>6.1f}" for v in ms)
            + f" {t_ours:>6.1f}s {t_theirs:>4.1f}s",
            flush=True,
        )


def random_masks(m: nn.Module, sparsity: float, seed: int) -> None:
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for mod in m.modules():
            if isinstance(mod, (nn.Conv2d, nn.Linear)):
                w = mod.weight
                density = 1 - sparsity if w[0].numel() >= 32 else 0.5
                w.mul_(torch.rand(w.shape, generator=gen) < density)


def part2(names: list[str], size: int, runs: int) -> None:
    print("\nPart 2: random unstructured masks; output channels whose weights are all zero (what a channel")
    print("pruner can see) vs the units connectome removes; what compaction leaves, exact and aligned to 8")
    print(
        f"{'model':<13} {'sparsity':>8} {'units':>7} {'zero rows':>9} {'removed':>7} {'params':>11} {'after':>11} "
        f"{'align 8':>11} {'GFLOPs':>7} {'after':>6} {'al. 8':>6} {'ms':>6} {'after':>6} {'al. 8':>6}"
    )
    for name in names:
        for sparsity in (0.99, 0.999):
            m = build(name, size, 0)
            random_masks(m, sparsity, 2)
            layers = [mod for mod in m.modules() if isinstance(mod, (nn.Conv2d, nn.Linear))]
            units = sum(mod.weight.shape[0] for mod in layers)
            zero_rows = sum(int((~mod.weight.reshape(mod.weight.shape[0], -1).any(1)).sum()) for mod in layers)
            x = torch.randn(1, 3, size, size)
            head = f"{name:<13} {sparsity:>8.1%} {units:>7,} {zero_rows:>9,}"
            try:
                small = compact(m, input_shape=(1, 3, size, size))
                aligned = compact(m, input_shape=(1, 3, size, size), align=8)
            except CompactionError as e:
                print(f"{head}  {str(e).split(':')[0]}", flush=True)
                continue
            models = (m, small, aligned)
            g = [flops(k, (x,)) / 1e9 for k in models]
            ms = [latency(k, (x,), runs) * 1e3 for k in models]
            print(
                f"{head} {small.compaction.removed_units:>7,} {params(m):>11,} {params(small):>11,} "
                f"{params(aligned):>11,} {g[0]:>7.2f} {g[1]:>6.2f} {g[2]:>6.2f} {ms[0]:>6.1f} {ms[1]:>6.1f} "
                f"{ms[2]:>6.1f}",
                flush=True,
            )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", type=int, default=224, help="Input height and width.")
    ap.add_argument("--models", default=",".join(MODELS))
    ap.add_argument("--runs", type=int, default=10, help="Calls timed per latency.")
    ap.add_argument("--part", choices=["1", "2", "both"], default="both")
    args = ap.parse_args()
    names = args.models.split(",")
    if args.part in ("1", "both"):
        part1(names, args.size, args.runs)
    if args.part in ("2", "both"):
        part2(names, args.size, args.runs)


if __name__ == "__main__":
    main()
