"""``connectome compact``: a pruned model without its dead units, as a smaller dense model with the same outputs."""

from __future__ import annotations

import io
import json

import click
import torch

from connectome.io.files import check_writable, write_atomic
from connectome.io.spec import SpecError

from .analyze import build, model_options
from .main import main
from .options import DTYPES


@main.command()
@model_options
@click.option(
    "-o",
    "--output",
    required=True,
    metavar="FILE",
    help="Where to write the compacted model: .pt (torch.save of the module; load it with "
    "torch.load(FILE, weights_only=False)) or .pt2 (torch.export.save of its exported program).",
)
@click.option(
    "--runs",
    type=click.IntRange(min=0),
    default=10,
    show_default=True,
    help="Calls timed for the CPU latency before and after (0: not timed).",
)
@click.option("--trials", type=click.IntRange(min=1), default=3, show_default=True, help="Random inputs checked.")
@click.option(
    "--align",
    type=click.IntRange(min=1),
    default=8,
    show_default=True,
    help="Keep every layer's width a multiple of N (a few dead units stay): CPU and GPU kernels run much "
    "faster on such widths. 1 removes every dead unit.",
)
@click.option("--json", "as_json", is_flag=True, help="Print the figures and the kept units per layer as JSON.")
def compact(
    model: str,
    input_shape: str | None,
    weights: str | None,
    trust: bool,
    input_dtype: str,
    tracer: str,
    output: str,
    runs: int,
    trials: int,
    align: int,
    as_json: bool,
) -> None:
    """Remove the dead units of MODEL: a smaller dense model with the same outputs.

    Units no output depends on are removed; units no input reaches are removed after their
    constant is folded into the next layer's bias. The result is checked against the original
    in float64 on random inputs and written only if its outputs agree to 1e-9 (relative).
    Prune-form masks (weight_orig, weight_mask) are carried over to the kept weights.

    \b
    Examples:
      connectome compact torchvision:resnet18 --weights pruned.pt --input-shape 1,3,224,224 -o small.pt
      connectome compact examples/pruned_lenet.py:build -o small.pt2 --json
    """
    from connectome.compact import Compaction
    from connectome.compact import compact as compact_model
    from connectome.compact.measure import flops, latency
    from connectome.compact.slicing import bake

    if not output.endswith((".pt", ".pth", ".pt2")):
        raise SpecError(f"-o {output}: write a .pt (the module) or a .pt2 (an exported program)")
    check_writable(output, (weights, model))
    if tracer == "export":
        raise SpecError("compact rewrites the torch.fx graph: use --tracer fx (or auto)")
    ck, shape = build(model, input_shape, weights, trust)
    dtype = DTYPES[input_dtype]
    small = compact_model(
        ck.model, input_shape=shape, masks=ck.masks or None, input_dtype=dtype, trials=trials, align=align
    )
    report: Compaction = small.compaction  # type: ignore[assignment]
    from connectome.graph.trace import as_inputs

    inputs = as_inputs(None, shape, dtype)
    if dtype.is_floating_point:
        inputs = tuple(torch.randn_like(x) for x in inputs)
    # both as dense models, masks multiplied in (a prune hook per call would be timed too otherwise)
    before, after = bake(ck.model.eval())[0], bake(small)[0]
    figures = {
        "flops_before": flops(before, inputs),
        "flops_after": flops(after, inputs),
        "latency_before_s": latency(before, inputs, runs) if runs else None,
        "latency_after_s": latency(after, inputs, runs) if runs else None,
    }
    write_atomic(output, _serialise(small, output, inputs), inputs=(weights, model))
    if as_json:
        click.echo(json.dumps({**report.to_dict(), **figures, "output": output}, indent=2))
    else:
        click.echo(_table(report, figures))
    click.echo(f"wrote {output}", err=True)


def _serialise(small: torch.nn.Module, path: str, inputs: tuple) -> bytes:
    buf = io.BytesIO()
    if path.endswith(".pt2"):
        torch.export.save(torch.export.export(small, inputs), buf)
    else:
        torch.save(small, buf)
    return buf.getvalue()


def _change(before: float, after: float) -> str:
    return f"{(after - before) / before:+.1%}" if before else ""


def _table(report, figures: dict) -> str:
    p0, p1 = report.params
    rows = [("parameters", f"{p0:,}", f"{p1:,}", _change(p0, p1))]
    f0, f1 = figures["flops_before"], figures["flops_after"]
    rows.append(("FLOPs", f"{f0:,}", f"{f1:,}", _change(f0, f1)))
    if figures["latency_before_s"] is not None:
        l0, l1 = figures["latency_before_s"], figures["latency_after_s"]
        rows.append(("CPU latency", f"{l0 * 1e3:.2f} ms", f"{l1 * 1e3:.2f} ms", _change(l0, l1)))
    lines = [f"{'':<12} {'before':>16} {'after':>16} {'change':>8}"]
    lines += [f"{a:<12} {b:>16} {c:>16} {d:>8}" for a, b, c, d in rows]
    changed = sum(
        1
        for v in report.layers.values()
        if v["out"][0] < v["out"][1] or v.get("in", [0, 0])[0] < v.get("in", [0, 0])[1]
    )
    lines.append(f"\n{report.removed_units:,} units removed, {changed} of {len(report.layers)} layers sliced")
    if report.align > 1:
        lines.append(f"widths kept to multiples of {report.align} (--align 1 removes every dead unit)")
    if report.folded:
        lines.append(f"constants of removed units folded into the biases of {len(report.folded)} layer(s)")
    if report.kept_constant:
        lines.append(
            f"{report.kept_constant} group(s) of constant channels kept: their constant meets the zero "
            "padding of a convolution, which no bias can stand in for"
        )
    if report.pinned:
        lines.append(f"{report.pinned} op(s) keep every channel they touch (attention, reshapes, model inputs)")
    lines += report.notes
    lines.append(f"checked: outputs agree to {report.error:.1e} (relative, float64, random inputs)")
    return "\n".join(lines)
