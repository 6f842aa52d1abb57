"""``connectome audit``: check a pruned checkpoint before it is published."""

from __future__ import annotations

import json
import sys

import click

from connectome import audit as audit_mod
from connectome.io.checkpoint import load
from connectome.io.files import write_atomic
from connectome.io.spec import SpecError, parse_kwargs

from .folders import folder_audit, names_folder
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
@click.option(
    "--claim-structure",
    default=None,
    metavar="N:M",
    help="Model folders: fail when a layer is not N:M sparse (2:4: every 4 consecutive input weights keep at "
    "most 2). Embeddings, the output head and MoE routers are reported, not failed.",
)
@click.option("--structure-all", is_flag=True, help="With --claim-structure: also fail the layers usually left dense.")
@click.option(
    "--masks-out",
    default=None,
    metavar="FILE",
    help="Model folders: write the effective masks to this .safetensors file, one tensor at a time.",
)
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
    claim_structure,
    structure_all,
    masks_out,
    no_margin,
    margin_budget,
):
    """Audit a pruned CHECKPOINT (or Hugging Face model folder) before publishing it.

    Loads the weights safely (state_dicts with weights_only=True, or .safetensors; nested dicts,
    DataParallel/torch.compile prefixes and torch.nn.utils.prune's weight_orig/weight_mask are
    handled), then reports direct vs effective sparsity, dead units, collapsed layers, nonzero but
    ineffective weights, NaN/Inf weights, masks that are not 0/1 or disagree with their weights,
    and the collapse margin: the fewest weights whose removal would disconnect the network.

    CHECKPOINT may be a Hugging Face model folder (config.json + safetensors shards, or a hub id
    already in the local cache): it is read one tensor at a time, and the report adds a per-block
    table (dead attention heads, MLP neurons, experts) and N:M structure.

    Exit codes: 0 passed, 1 a policy failed, 2 bad input or usage.

    \b
    Examples:
      connectome audit pruned.pt --arch torchvision:resnet18 --claim-sparsity 0.99
      connectome audit model.safetensors --arch timm:vit_tiny_patch16_224 --format markdown -o CARD.md
      connectome audit pruned.pt --arch torchvision:resnet50 --format html -o audit.html
      connectome audit ./Llama-3-8B-pruned --claim-structure 2:4 --format markdown -o CARD.md
      connectome audit ckpt.pth --arch mypkg.models:wide_resnet --arch-kwargs num_classes=100 \\
          --input-shape 1,3,32,32 --masks masks.pt --fail-on collapse,claim,mask --format json
    """
    if checkpoint is None and arch is None:
        raise SpecError("give a CHECKPOINT file (and --arch for a state_dict); see connectome audit --help")
    categories = [] if fail_on.strip().lower() == "none" else [c.strip() for c in fail_on.split(",") if c.strip()]
    folder = checkpoint is not None and arch is None and names_folder(checkpoint)
    if (claim_structure or masks_out or structure_all) and not folder:
        raise SpecError("--claim-structure, --structure-all and --masks-out apply to Hugging Face model folders")
    if folder:
        rep = folder_audit(
            checkpoint,
            input_shape,
            claim_sparsity,
            max_dead_units,
            categories,
            claim_structure,
            structure_all,
            masks_out,
            None if not no_margin else False,
            margin_budget,
            tracer,
        )
        return _emit(rep, fmt, output, checkpoint, masks_file, arch)
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
    _emit(rep, fmt, output, checkpoint, masks_file, arch)


def _emit(rep, fmt, output, checkpoint, masks_file, arch) -> None:
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
