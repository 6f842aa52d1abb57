"""``connectome render``: the layer or unit diagram of a model as SVG, PNG, PDF or DOT."""

from __future__ import annotations

import click

import connectome
from connectome.render import FORMATS, format_of, to_dot
from connectome.render import render as render_file

from .analyze import build, model_options
from .main import main
from .options import DTYPES, display_name


@main.command()
@model_options
@click.option(
    "-o",
    "--output",
    required=True,
    metavar="FILE",
    help=f"Where to write the diagram; the suffix picks the format ({', '.join('.' + f for f in FORMATS)}).",
)
@click.option(
    "--level",
    type=click.Choice(["layer", "unit"]),
    default="layer",
    show_default=True,
    help="layer: one box per op or module; unit: one node per neuron or channel.",
)
@click.option(
    "--depth",
    type=int,
    default=None,
    metavar="N",
    help="Layer level: one box per module N levels down the module tree (default: every op).",
)
@click.option(
    "--fold",
    is_flag=True,
    help="Layer level: one box per repeated block, runs of identical blocks folded ('Bottleneck × 5').",
)
@click.option(
    "--layers",
    "layer_glob",
    default=None,
    metavar="PATTERN",
    help="Unit level: the linear/conv layers to draw, as glob patterns (comma-separated), e.g. 'fc*'.",
)
@click.option(
    "--all-units",
    is_flag=True,
    help="Unit level: draw every unit, not only those with an effective weight (the rest are grouped by state).",
)
@click.option(
    "--max-units",
    type=int,
    default=400,
    show_default=True,
    metavar="N",
    help="Unit level: above this many nodes (or ten times as many edges), draw one node per layer instead.",
)
@click.option("--title", default=None, help="Title at the top of the diagram (default: MODEL).")
def render(
    model,
    input_shape,
    weights,
    trust,
    input_dtype,
    tracer,
    output,
    level,
    depth,
    fold,
    layer_glob,
    all_units,
    max_units,
    title,
):
    """Draw MODEL's dead units: which layers and units are alive, dead, or cut.

    Layer level (default) colours each op or module by the share of its units that are alive (a
    path from the inputs and to the outputs), marks where the signal stops, and draws residual
    and concat edges. Unit level draws the units of the linear/conv layers and the weights between
    them: solid when effective, faint when nonzero but ineffective. MODEL and the input options are
    as in `connectome analyze`. PNG, SVG and PDF need graphviz's `dot` program; .dot does not.

    \b
    Examples:
      connectome render torchvision:resnet50 --fold -o resnet50.svg
      connectome render examples/pruned_lenet.py:build --level unit -o lenet.png
      connectome render torchvision:vgg19 --weights pruned.pt --level unit --layers 'classifier.*' -o fc.svg
    """
    format_of(output)  # a bad suffix fails before the analysis, not after
    ck, shape = build(model, input_shape, weights, trust)
    res = connectome.analyze(
        ck.model, input_shape=shape, tracer=tracer, input_dtype=DTYPES[input_dtype], masks=ck.masks or None
    )
    diagram = to_dot(
        res,
        level=level,
        depth=depth,
        fold=fold,
        layers=layer_glob,
        all_units=all_units,
        max_units=max_units,
        title=title or display_name(model),
    )
    for note in diagram.notes:
        click.echo(f"note: {note}", err=True)
    render_file(diagram, output, inputs=(weights, model))
    click.echo(f"wrote {output}", err=True)
