"""Benchmark: the costs of sparse training, as ratios printed side by side.

- a masked training step (gradients masked before the step, weights and optimiser state after it)
  against a dense step, on LeNet-300-100 (batch 128) and a CIFAR-form ResNet-18 (batch 32);
- the re-analysis after a mask update (new masks, no re-trace) against a warm analysis of the same masks;
- a sweep of 8 equal runs on 2 Ray workers against the same runs one after another in one process
  (runs shaped like the connectivity grid's; --sweep-epochs 5 --sweep-limit 30000 for short ones).

Run: make bench   (or .venv/bin/python benchmarks/bench_train.py [--repeat N] [--skip-sweep] [--sweep-epochs N])
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time

import torch

from connectome.analysis import Analyzer
from connectome.models import lenet_300_100, resnet18_cifar as resnet18
from connectome.prune import select
from connectome.sweep import Spec, run_sweep
from connectome.train import Masks, Update
from connectome.train.policies.rigl import RigL


def _step_times(model, x, y, masks: Masks | None, repeat: int, steps: int) -> float:
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, weight_decay=5e-4)
    best = float("inf")
    for _ in range(repeat):
        t = time.perf_counter()
        for _ in range(steps):
            opt.zero_grad(set_to_none=True)
            torch.nn.functional.cross_entropy(model(x), y).backward()
            if masks is not None:
                masks.mask_grads()
            opt.step()
            if masks is not None:
                masks.enforce(opt)
        best = min(best, (time.perf_counter() - t) / steps)
    return best


def _random_masks(model, sparsity: float) -> dict[str, torch.Tensor]:
    from connectome.io.masks import prunable_weights

    params = dict(model.named_parameters())
    names = [n for n in prunable_weights(model) if n in params]
    return select({n: torch.rand(params[n].shape) for n in names}, sparsity, quota="erk")


def masked_step(repeat: int) -> None:
    print("masked step vs dense step (SGD with momentum and weight decay; best of", repeat, "repeats)")
    for name, make, shape, batch, steps in (
        ("LeNet-300-100", lenet_300_100, (1, 28, 28), 128, 200),
        ("ResNet-18 (CIFAR form)", resnet18, (3, 32, 32), 32, 5),
    ):
        torch.manual_seed(0)
        x, y = torch.randn(batch, *shape), torch.randint(0, 10, (batch,))
        dense_model = make()
        masked_model = make()
        masked_model.load_state_dict(dense_model.state_dict())
        masks = Masks(masked_model, _random_masks(masked_model, 0.9))
        _step_times(dense_model, x, y, None, 1, 2)  # warm-up
        _step_times(masked_model, x, y, masks, 1, 2)
        dense = _step_times(dense_model, x, y, None, repeat, steps)
        masked = _step_times(masked_model, x, y, masks, repeat, steps)
        print(f"  {name:<24} dense {dense * 1e3:8.2f} ms   masked {masked * 1e3:8.2f} ms   ratio {masked / dense:5.2f}"
              "   (target <= 1.10)")


def reanalysis(repeat: int) -> None:
    print("re-analysis after a RigL update vs a warm analysis of the same masks")
    for name, make, shape in (("LeNet-300-100", lenet_300_100, (1, 1, 28, 28)), ("ResNet-18", resnet18, (1, 3, 32, 32))):
        torch.manual_seed(0)
        model = make()
        masks = _random_masks(model, 0.95)
        a = Analyzer(model, input_shape=shape)
        a.run(masks)
        params = dict(model.named_parameters())
        g = torch.Generator().manual_seed(0)
        pol = RigL(total=1000, update_every=1, drop_fraction=0.3, end=1.0)
        updates = []
        current = masks
        for step in range(1, repeat + 1):
            grads = {n: torch.randn(params[n].shape, generator=g) for n in masks}
            current = pol.update(Update(step, 1000, {n: params[n].detach() * current[n] for n in masks}, current, g, grads))
            updates.append(current)
        warm, fresh = float("inf"), float("inf")
        for new in updates:
            t = time.perf_counter()
            a.run(new)  # new masks: re-lowered, not re-traced
            fresh = min(fresh, time.perf_counter() - t)
            t = time.perf_counter()
            a.run(new)  # the same masks again: warm
            warm = min(warm, time.perf_counter() - t)
        print(f"  {name:<24} warm {warm * 1e3:8.2f} ms   after update {fresh * 1e3:8.2f} ms   ratio "
              f"{fresh / warm:5.2f}   (target <= 1.50)")


SWEEP = """name = "bench"
[runs]
model = "connectome:lenet_300_100"
data = "mnist"
seed = [0, 1, 2, 3, 4, 5, 6, 7]
sparsity = 0.9
epochs = {epochs}
"""


def sweep(epochs: int, limit: int | None) -> None:
    """8 equal runs shaped like the connectivity grid's (10 epochs on MNIST's 55,000 training images by
    default): Ray's fixed costs (its start, each worker's imports) weigh on short runs, not on these."""
    text = SWEEP.format(epochs=epochs) + (f"limit = {limit}\nval_size = 1000\n" if limit else "")
    shape = f"{epochs} epochs on {limit - 1000 if limit else 55000:,} examples each"
    print(f"a sweep of 8 equal LeNet-300-100 runs ({shape})")
    spec = Spec.parse(text)
    threads = torch.get_num_threads()
    with tempfile.TemporaryDirectory() as d:
        t = time.perf_counter()
        rows = run_sweep(spec, os.path.join(d, "ray"), num_cpus=2)
        on_ray = time.perf_counter() - t
        inside = sum(r["seconds"] for r in rows)  # the runs' own time, measured inside the workers
        times = {}
        for n in (1, threads):  # a Ray worker gets one core: so does each run of the first baseline
            torch.set_num_threads(n)
            t = time.perf_counter()
            run_sweep(spec, os.path.join(d, f"local{n}"), local=True)
            times[n] = time.perf_counter() - t
        torch.set_num_threads(threads)
    assert all(r["status"] == "ok" for r in rows), rows
    print(f"  one after another, 1 thread {times[1]:7.1f} s   2 Ray workers {on_ray:7.1f} s   ratio "
          f"{on_ray / times[1]:5.2f}   (target <= 0.60; Ray's start included)")
    print(f"  one after another, {threads} threads {times[threads]:6.1f} s   2 Ray workers {on_ray:7.1f} s   ratio "
          f"{on_ray / times[threads]:5.2f}   (torch's own threads already use the second core)")
    print(f"  Ray's own cost: {on_ray - inside / 2:.1f} s of the sweep's {on_ray:.1f} s are outside the runs "
          f"(start, imports, scheduling); the runs took {inside / 8:.1f} s each on a worker "
          f"against {times[1] / 8:.1f} s one after another")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--repeat", type=int, default=5)
    p.add_argument("--skip-sweep", action="store_true")
    p.add_argument("--sweep-epochs", type=int, default=10, help="epochs of each sweep run (default: the grid's)")
    p.add_argument("--sweep-limit", type=int, default=None, help="examples per sweep run (default: all)")
    args = p.parse_args()
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, {os.cpu_count()} cores")
    masked_step(args.repeat)
    reanalysis(max(args.repeat, 5))
    if not args.skip_sweep:
        sweep(args.sweep_epochs, args.sweep_limit)
    sys.stdout.flush()


if __name__ == "__main__":
    main()
