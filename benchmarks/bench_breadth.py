"""Benchmark: coverage. Which real architectures connectome analyses, and how long one analysis takes.

Every torchvision classification and segmentation model, the timm families of tests/test_breadth.py (plus a
few that are too slow to trace for the test), and the Hugging Face families of that test, each pruned at
random to 90% (every parameter of 2+ dims), then analysed once (``connectome.analyze``: trace, shapes,
lower, walk). Inputs are each model's default: torchvision's and timm's pretrained crop size (timm heads
cut to 10 classes, as in the test), 520x520 for segmentation, 1x128 token ids for Hugging Face models from
small configs (hidden 256, 4 layers, vocab 32k). ``--quick`` uses small inputs instead (the test's timm
configurations, 128x128 torchvision, 32 tokens) and skips models over 100M parameters (the full run skips
those over 350M: vit_h_14, regnet_y_128gf).

Prints a markdown table per source and family group (models tried, analysed, without fallbacks, median and
max seconds of an analysis), then every model that failed, fell back to all-to-all blocks (with the ops), or
was called collapsed while some weights were called effective.

Run: make bench   (or .venv/bin/python benchmarks/bench_breadth.py [--quick] [--sources tv,timm,hf])
"""
from __future__ import annotations

import argparse
import gc
import os
import statistics
import sys
import time
import traceback
import warnings
from collections.abc import Callable
from typing import Any, NamedTuple

import torch

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "tests"))

from test_breadth import (
    FALLBACKS,
    FAMILY_KWARGS,
    HF_MODELS,
    TIMM,
    Arch,
    build_hf,
    build_timm,
    prune_at_random,
    token_inputs,
)

import connectome

# timm families that torch.fx cannot trace and torch.export takes seconds for: too slow for the test
TIMM_EXTRA = [
    Arch("mvitv2", "vit", "mvitv2_tiny"),
    Arch("nest", "vit", "nest_tiny"),
    Arch("efficientvit", "vit", "efficientvit_b0"),
    Arch("efficientvit_msra", "vit", "efficientvit_m0"),
    Arch("hiera", "vit", "hiera_tiny_224"),
    Arch("focalnet", "vit", "focalnet_tiny_srf"),
    Arch("halonet", "vit", "halonet26t"),
]
# Hugging Face configs at benchmark size: each key the test's tiny config has is set to this
HF_SMALL = {"hidden_size": 256, "n_embd": 256, "d_model": 256, "word_embed_proj_dim": 256,
            "intermediate_size": 1024, "ffn_dim": 1024, "d_ff": 1024, "num_hidden_layers": 4, "n_layer": 4,
            "num_layers": 4, "num_decoder_layers": 4, "num_attention_heads": 8, "n_head": 8, "num_heads": 8,
            "num_key_value_heads": 4, "head_dim": 32, "d_kv": 32}
HF_VOCAB = 32000


class Case(NamedTuple):
    group: str                                  # a row of the table
    name: str
    build: Callable[[], torch.nn.Module]
    inputs: Callable[[torch.nn.Module], Any]    # model -> example inputs (a tensor or a tuple)


class Row(NamedTuple):
    group: str
    name: str
    params: int
    seconds: float | None                       # None: the analysis failed
    tracer: str
    fallbacks: tuple[str, ...]
    error: str
    consistent: bool = True                     # collapsed exactly when no weight is effective


def _image(size: int) -> Callable[[torch.nn.Module], torch.Tensor]:
    return lambda model: torch.randn(1, 3, size, size)


def torchvision_cases(quick: bool) -> list[Case]:
    from torchvision import models
    cases = []
    for name in models.list_models(module=models):
        crop = models.get_model_weights(name).DEFAULT.transforms().crop_size[0]
        size, kwargs = (128, {"image_size": 128} if name.startswith("vit_") else {}) if quick else (crop, {})
        cases.append(Case("torchvision classification", name,
                          lambda name=name, kwargs=kwargs: models.get_model(name, weights=None, **kwargs),
                          _image(size)))
    for name in models.list_models(module=models.segmentation):
        cases.append(Case("torchvision segmentation", name,
                          lambda name=name: models.get_model(name, weights=None, weights_backbone=None),
                          _image(128 if quick else 520)))
    return cases


def _default_input(model: torch.nn.Module) -> torch.Tensor:
    return torch.randn(1, *model.pretrained_cfg["input_size"])


def timm_cases(quick: bool) -> list[Case]:
    cases = []
    for arch in TIMM + ([] if quick else TIMM_EXTRA):
        group = "timm convnets" if arch.kind == "cnn" else "timm transformers, MLPs, hybrids"
        if quick:
            cases.append(Case(group, arch.name, lambda arch=arch: build_timm(arch), _image(arch.size)))
        else:
            full = arch._replace(kwargs={k: v for k, v in arch.kwargs.items() if k in FAMILY_KWARGS})
            cases.append(Case(group, arch.name, lambda full=full: build_timm(full), _default_input))
    return cases


def hf_cases(quick: bool) -> list[Case]:
    cases = []
    for spec in HF_MODELS:
        if quick:
            build, tokens, vocab = (lambda spec=spec: build_hf(spec)), 32, 100
        else:
            small = {k: HF_SMALL[k] for k in spec.kwargs if k in HF_SMALL}
            build = lambda spec=spec, small=small: build_hf(spec, vocab_size=HF_VOCAB, **small)   # noqa: E731
            tokens, vocab = 128, HF_VOCAB
        cases.append(Case("Hugging Face transformers", spec.family, build,
                          lambda model, tokens=tokens, vocab=vocab: token_inputs(model, tokens, vocab=vocab)))
    return cases


def run(case: Case, max_params: int) -> Row | None:
    try:
        model = case.build()
    except Exception as e:   # a model that cannot be built here is not connectome's failure: say so, skip it
        print(f"  {case.name}: not built ({type(e).__name__}: {str(e).splitlines()[0][:120]})", flush=True)
        return None
    params = sum(p.numel() for p in model.parameters())
    if params > max_params:
        print(f"  {case.name}: skipped, {params / 1e6:.0f}M parameters > --max-params", flush=True)
        return None
    prune_at_random(model)
    inputs = case.inputs(model)
    t = time.perf_counter()
    try:
        res = connectome.analyze(model, inputs)
    except Exception as e:
        last = traceback.extract_tb(e.__traceback__)[-1]
        msg = str(e).splitlines()[0] if str(e) else ""
        row = Row(case.group, case.name, params, None, "", (),
                  f"{type(e).__name__}: {msg[:300]} ({os.path.basename(last.filename)}:{last.lineno})")
    else:
        seconds = time.perf_counter() - t
        ops = tuple(sorted({u["op"] for u in res.unsupported_ops}))
        row = Row(case.group, case.name, params, seconds, res.tracer, ops, "",
                  res.collapsed == (res.params_effective == 0))
    print(f"  {case.name}: {params / 1e6:.1f}M params, "
          + (f"{row.seconds:.2f}s ({row.tracer})" if row.seconds is not None else row.error)
          + (f", falls back: {', '.join(row.fallbacks)}" if row.fallbacks else ""), flush=True)
    return row


def table(rows: list[Row]) -> str:
    lines = ["| source / family | models tried | analysed | without fallbacks | median s | max s |",
             "|---|---:|---:|---:|---:|---:|"]
    groups = dict.fromkeys(r.group for r in rows)
    for group in list(groups) + ["all"]:
        sel = [r for r in rows if group in ("all", r.group)]
        done = [r.seconds for r in sel if r.seconds is not None]
        clean = sum(1 for r in sel if r.seconds is not None and not r.fallbacks)
        med = f"{statistics.median(done):.2f}" if done else "-"
        top = f"{max(done):.2f}" if done else "-"
        label = f"**{group}**" if group == "all" else group
        lines.append(f"| {label} | {len(sel)} | {len(done)} | {clean} | {med} | {top} |")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="small inputs, models up to 100M parameters")
    ap.add_argument("--sources", default="tv,timm,hf", help="any of tv, timm, hf (comma-separated)")
    ap.add_argument("--max-params", type=float, default=None,
                    help="skip larger models, in millions (default 350, or 100 with --quick)")
    ap.add_argument("--threads", type=int, default=1, help="torch threads (default 1: comparable figures)")
    args = ap.parse_args()
    warnings.filterwarnings("ignore")
    torch.set_num_threads(args.threads)
    max_params = int((args.max_params or (100 if args.quick else 350)) * 1e6)
    make = {"tv": torchvision_cases, "timm": timm_cases, "hf": hf_cases}
    cases = [c for s in args.sources.split(",") for c in make[s.strip()](args.quick)]
    print(f"torch {torch.__version__}, {torch.get_num_threads()} thread(s), 90% random masks, "
          f"{'quick: small inputs' if args.quick else 'default inputs'}, models up to {max_params / 1e6:.0f}M "
          f"parameters\n", flush=True)
    rows = []
    start = time.perf_counter()
    for case in cases:
        row = run(case, max_params)
        if row is not None:
            rows.append(row)
        gc.collect()
    print(f"\n{table(rows)}\n")
    print(f"analysis seconds per model (trace + shapes + lower + walk); {len(rows)} models in "
          f"{time.perf_counter() - start:.0f}s overall, building and pruning included\n")
    known = set(FALLBACKS)
    for r in rows:
        if r.seconds is None:
            print(f"FAILS      {r.group} / {r.name}: {r.error}")
    for r in rows:
        if not r.consistent:
            print(f"COLLAPSED  {r.group} / {r.name}: called collapsed, yet some weights are called effective")
    for r in rows:
        if r.fallbacks:
            tag = "falls back" + (" (listed in test_breadth.FALLBACKS)" if r.name in known else "")
            print(f"{tag:10s} {r.group} / {r.name}: {', '.join(r.fallbacks)}")


if __name__ == "__main__":
    main()
