"""``connectome analyze``: per-layer direct vs effective sparsity, dead units, collapse."""
from __future__ import annotations

import json

import click
import torch

import connectome
from connectome import report
from connectome.checkpoint import load
from connectome.spec import SpecError, parse_shape

from .main import main

DTYPES = {"float32": torch.float32, "float64": torch.float64, "float16": torch.float16, "bfloat16": torch.bfloat16,
          "int64": torch.int64, "int32": torch.int32, "bool": torch.bool}


def model_options(fn):
    """MODEL, --input-shape, --weights, --trust, --tracer: shared by every command that loads a model."""
    fn = click.option("--tracer", type=click.Choice(["auto", "fx", "export"]), default="auto", show_default=True,
                      help="torch.fx symbolic tracing, torch.export, or fx with export as fallback.")(fn)
    fn = click.option("--input-dtype", type=click.Choice(sorted(DTYPES)), default="float32", show_default=True,
                      help="Element type of the inputs: int64 for token ids.")(fn)
    fn = click.option("--trust", is_flag=True,
                      help="Allow loading MODEL as a whole-model pickle (pickles can run code).")(fn)
    fn = click.option("--weights", type=click.Path(dir_okay=False), default=None,
                      help="Checkpoint to load into MODEL: a state_dict (.pt/.pth/.bin) or .safetensors file.")(fn)
    fn = click.option("--input-shape", "input_shape", default=None, metavar="SHAPE",
                      help="Input shape, e.g. 1,3,32,32 (several inputs: 1,3,32,32;1,10). "
                           "Defaults to the model's natural size when known.")(fn)
    return click.argument("model")(fn)


def build(model: str, input_shape: str | None, weights: str | None, trust: bool):
    """The module, input shapes and masks the options describe."""
    ck = load(weights, arch=model, trust=trust)
    for note in ck.notes:
        click.echo(f"note: {note}", err=True)
    shapes = parse_shape(input_shape) if input_shape else ([ck.input_shape] if ck.input_shape else None)
    if shapes is None:
        raise SpecError(f"no input shape known for {model}: pass --input-shape, e.g. --input-shape 1,3,32,32")
    return ck, shapes


@main.command()
@model_options
@click.option("--json", "as_json", is_flag=True, help="Print the analysis as JSON (the schema of res.to_dict()).")
def analyze(model: str, input_shape: str | None, weights: str | None, trust: bool, input_dtype: str,
            tracer: str, as_json: bool) -> None:
    """Analyse MODEL: direct vs effective sparsity per layer, dead units, collapse.

    MODEL is torchvision:NAME, connectome:NAME (lenet_300_100, lenet_5, vgg19, resnet18),
    package.module:factory or file.py:factory (a callable returning an nn.Module), or a file saved
    with torch.save(model) (needs --trust). Masks come from torch.nn.utils.prune buffers when
    present, else from the nonzero weights.

    \b
    Examples:
      connectome analyze connectome:lenet_300_100
      connectome analyze torchvision:resnet18 --input-shape 1,3,64,64 --weights pruned.pt --json
      connectome analyze mymodels:tiny_bert --input-shape 1,128 --input-dtype int64
    """
    ck, shapes = build(model, input_shape, weights, trust)
    res = connectome.analyze(ck.model, input_shape=shapes if len(shapes) > 1 else shapes[0], tracer=tracer,
                             input_dtype=DTYPES[input_dtype], masks=ck.masks or None)
    if as_json:
        click.echo(json.dumps(res.to_dict(), indent=2))
        return
    click.echo(report.table(res))
    if res.unsupported_ops:
        ops = sorted({u["op"] for u in res.unsupported_ops})
        click.echo(f"\nnote: {len(res.unsupported_ops)} op(s) without a rule were treated as all-to-all "
                   f"(sound, possibly loose): {', '.join(ops)}")
    click.echo("\n" + report.verdict(res))
