"""``connectome audit``: check a pruned checkpoint before it is published."""

from __future__ import annotations

import json
import sys

import click

from connectome import audit as audit_mod
from connectome.io.checkpoint import load
from connectome.io.files import write_atomic
from connectome.io.spec import SpecError, parse_kwargs

from .main import main
from .options import DTYPES, arch_kwargs_option, display_name, input_options, shapes_arg


class _Progress:
    """One status line on a terminal's stderr; nothing when stderr is piped or redirected."""

    def __init__(self) -> None:
        self.on = sys.stderr.isatty()

    def __call__(self, stage: str, done: float, total: float) -> None:
        if self.on:
            width = 24
            fill = int(width * min(done / total, 1)) if total else width
            sys.stderr.write(f"\r[{'#' * fill}{'.' * (width - fill)}] {stage:<20}")
            sys.stderr.flush()

    def close(self) -> None:
        if self.on:
            sys.stderr.write("\r" + " " * 50 + "\r")
            sys.stderr.flush()


@main.command()
@click.argument("checkpoint", required=False)
@click.option(
    "--arch",
    default=None,
    metavar="SPEC",
    help="Architecture: torchvision:NAME, timm:NAME, connectome:NAME, package.module:factory or "
    "file.py:factory. Not needed for a whole-model pickle (with --trust).",
)
@arch_kwargs_option("num_classes=100")
@click.option(
    "--masks",
    "masks_file",
    default=None,
    metavar="FILE",
    help="Separate mask file (name -> 0/1 tensor, .pt or .safetensors); overrides masks in CHECKPOINT.",
)
@input_options
@click.option(
    "--claim-sparsity",
    type=float,
    default=None,
    metavar="S",
    help="The sparsity the checkpoint claims (0.99 = 100x); fails when the direct or the effective "
    "sparsity is below it, or when the network is collapsed.",
)
@click.option(
    "--max-dead-units",
    type=float,
    default=None,
    metavar="FRACTION",
    help="Fail when more than this fraction of the prunable layers' units are dead.",
)
@click.option(
    "--fail-on",
    default=",".join(audit_mod.DEFAULT_FAIL_ON),
    show_default=True,
    metavar="LIST",
    help=f"Which errors fail the audit (exit 1), from: {', '.join(audit_mod.CATEGORIES)}; 'none' reports only.",
)
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["text", "json", "markdown", "html"]),
    default="text",
    show_default=True,
    help="Report format: terminal text, JSON (the analyze schema plus findings), "
    "markdown for a model card, or a self-contained HTML page with the layer "
    "diagram (needs graphviz's dot).",
)
@click.option("-o", "--output", default=None, metavar="FILE", help="Write the report to FILE (atomically).")
@click.option("--no-margin", is_flag=True, help="Skip the collapse margin (a minimum cut on the unit graph).")
@click.option(
    "--margin-budget",
    type=float,
    default=60.0,
    show_default=True,
    metavar="SECONDS",
    help="Skip the collapse margin, with a note, when building its graph takes longer than this.",
)
def audit(
    checkpoint,
    arch,
    arch_kwargs,
    masks_file,
    trust,
    input_shape,
    input_dtype,
    tracer,
    claim_sparsity,
    max_dead_units,
    fail_on,
    fmt,
    output,
    no_margin,
    margin_budget,
):
    """Audit a pruned CHECKPOINT before publishing it.

    Loads the weights safely (state_dicts with weights_only=True, or .safetensors; nested dicts,
    DataParallel/torch.compile prefixes and torch.nn.utils.prune's weight_orig/weight_mask are
    handled), then reports direct vs effective sparsity, dead units, collapsed layers, nonzero but
    ineffective weights, NaN/Inf weights, masks that are not 0/1 or disagree with their weights,
    and the collapse margin: the fewest weights whose removal would disconnect the network.

    Exit codes: 0 passed, 1 a policy failed, 2 bad input or usage.

    \b
    Examples:
      connectome audit pruned.pt --arch torchvision:resnet18 --claim-sparsity 0.99
      connectome audit model.safetensors --arch timm:vit_tiny_patch16_224 --format markdown -o CARD.md
      connectome audit pruned.pt --arch torchvision:resnet50 --format html -o audit.html
      connectome audit ckpt.pth --arch mypkg.models:wide_resnet --arch-kwargs num_classes=100 \\
          --input-shape 1,3,32,32 --masks masks.pt --fail-on collapse,claim,mask --format json
    """
    if checkpoint is None and arch is None:
        raise SpecError("give a CHECKPOINT file (and --arch for a state_dict); see connectome audit --help")
    categories = [] if fail_on.strip().lower() == "none" else [c.strip() for c in fail_on.split(",") if c.strip()]
    progress = _Progress()
    try:
        progress("load", 0, 3)
        ck = load(checkpoint, arch=arch, arch_kwargs=parse_kwargs(list(arch_kwargs)), masks=masks_file, trust=trust)
        rep = audit_mod.audit(
            ck,
            shapes_arg(input_shape),
            claim_sparsity,
            max_dead_units,
            categories,
            margin=not no_margin,
            margin_budget_s=margin_budget,
            input_dtype=DTYPES[input_dtype],
            tracer=tracer,
            progress=progress,
        )
    finally:
        progress.close()
    if fmt == "json":
        text = json.dumps(rep.to_dict(), indent=2) + "\n"
    elif fmt == "markdown":
        text = audit_mod.markdown(rep)
    elif fmt == "html":
        from connectome.render.html import audit_html

        text = audit_html(rep, display_name(checkpoint or arch))
    else:
        text = audit_mod.terminal(rep) + "\n"
    if output:
        write_atomic(output, text, inputs=(checkpoint, masks_file, arch))
        click.echo(f"wrote {output}: {'PASSED' if rep.passed else 'FAILED: ' + ', '.join(rep.failed)}", err=True)
    else:
        click.echo(text, nl=False)
    sys.exit(0 if rep.passed else 1)
