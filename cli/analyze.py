"""``connectome analyze``: per-layer direct vs effective sparsity, dead units, collapse."""

from __future__ import annotations

import json

import click

import connectome
from connectome import report
from connectome.graph.trace import as_inputs
from connectome.io.checkpoint import load
from connectome.io.files import write_atomic
from connectome.io.spec import SpecError, parse_shape
from connectome.parts import capture_inputs

from .folders import names_folder
from .main import main
from .options import DTYPES, display_name, input_options, shapes_arg


def model_options(fn):
    """MODEL, --weights and the input options: shared by every command that loads a model by name."""
    fn = input_options(fn)
    fn = click.option(
        "--weights",
        type=click.Path(dir_okay=False),
        default=None,
        help="Checkpoint to load into MODEL: a state_dict (.pt/.pth/.bin) or .safetensors file.",
    )(fn)
    return click.argument("model")(fn)


def build(model: str, input_shape: str | None, weights: str | None, trust: bool):
    """The loaded checkpoint and the input shape(s) the options describe."""
    ck = load(weights, arch=model, trust=trust)
    for note in ck.notes:
        click.echo(f"note: {note}", err=True)
    shape = shapes_arg(input_shape, ck.input_shape)
    if shape is None:
        raise SpecError(f"no input shape known for {model}: pass --input-shape, e.g. --input-shape 1,3,32,32")
    return ck, shape


@main.command()
@model_options
@click.option("--json", "as_json", is_flag=True, help="Print the analysis as JSON (the schema of res.to_dict()).")
@click.option(
    "--html",
    "html_file",
    default=None,
    metavar="FILE",
    help="Also write a self-contained HTML report (summary, layer diagram, table); needs graphviz's dot.",
)
@click.option(
    "--submodule",
    default=None,
    metavar="NAME",
    help="Analyse only this part (e.g. backbone), with its own inputs and outputs; --input-shape is "
    "then the part's input (without it, the whole model runs once to find it).",
)
def analyze(
    model: str,
    input_shape: str | None,
    weights: str | None,
    trust: bool,
    input_dtype: str,
    tracer: str,
    as_json: bool,
    html_file: str | None,
    submodule: str | None,
) -> None:
    """Analyse MODEL: direct vs effective sparsity per layer, dead units, collapse.

    MODEL is torchvision:NAME, connectome:NAME (lenet_300_100, lenet_5, vgg19, resnet18),
    package.module:factory or file.py:factory (a callable returning an nn.Module), a file saved
    with torch.save(model) (needs --trust), or a Hugging Face model folder (config.json and
    safetensors shards, read one tensor at a time; or a hub id in the local cache). Masks come from
    torch.nn.utils.prune buffers when present, else from the nonzero weights.

    \b
    Examples:
      connectome analyze connectome:lenet_300_100
      connectome analyze torchvision:resnet18 --input-shape 1,3,64,64 --weights pruned.pt --json
      connectome analyze mymodels:tiny_bert --input-shape 1,128 --input-dtype int64
      connectome analyze torchvision:resnet50 --weights pruned.pt --html report.html
      connectome analyze ./pruned-llama --json
      connectome analyze torchvision:fasterrcnn_resnet50_fpn --submodule backbone --input-shape 1,3,224,224
    """
    if weights is None and names_folder(model):
        return _analyze_folder(model, input_shape, tracer, as_json, html_file)
    ck, shape = build(model, input_shape, weights, trust)
    inputs = None
    if submodule and not input_shape:  # the part's inputs, as the whole model hands them over
        inputs = capture_inputs(ck.model, as_inputs(None, shape, DTYPES[input_dtype]), submodule)
    res = connectome.analyze(
        ck.model,
        example_inputs=inputs,
        input_shape=None if inputs else shape,
        tracer=tracer,
        input_dtype=DTYPES[input_dtype],
        masks=ck.masks or None,
        submodule=submodule,
    )
    for note in res.notes:
        click.echo(f"note: {note}", err=True)
    if html_file:
        from connectome.render.html import html_report

        write_atomic(html_file, html_report(res, display_name(model)), inputs=(weights, model))
        click.echo(f"wrote {html_file}", err=True)
    if as_json:
        click.echo(json.dumps(res.to_dict(), indent=2))
        return
    click.echo(report.table(res))
    if res.unsupported_ops:
        ops = sorted({u["op"] for u in res.unsupported_ops})
        click.echo(
            f"\nnote: {len(res.unsupported_ops)} op(s) without a rule were treated as all-to-all "
            f"(sound, possibly loose): {', '.join(ops)}"
        )
    click.echo("\n" + report.verdict(res))


def _analyze_folder(path: str, input_shape: str | None, tracer: str, as_json: bool, html_file: str | None) -> None:
    from connectome.hf.analyze import analyze_folder
    from connectome.hf.blocks import blocks
    from connectome.hf.folder import resolve
    from connectome.hf.report import block_text

    seq = 8
    if input_shape:
        shapes = parse_shape(input_shape)
        if len(shapes) != 1 or len(shapes[0]) != 2:
            raise SpecError(f"--input-shape for a language model is batch,tokens (e.g. 1,8), got {input_shape!r}")
        seq = shapes[0][1]
    res, loaded = analyze_folder(resolve(path), seq_len=seq, tracer=tracer)
    rows = [r.to_dict() for r in blocks(res, loaded.model, loaded.model.config)]
    if html_file:
        from connectome.render.html import html_report

        write_atomic(html_file, html_report(res, display_name(path)), inputs=(path,))
        click.echo(f"wrote {html_file}", err=True)
    if as_json:
        click.echo(json.dumps({**res.to_dict(), "blocks": rows}, indent=2))
        return
    click.echo(report.table(res))
    if rows:
        click.echo("\n" + block_text(rows))
    click.echo("\n" + report.verdict(res))
