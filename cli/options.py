"""Options shared by every command that traces a model: input shape and dtype, tracer, --trust."""

from __future__ import annotations

import os

import click
import torch

from connectome import memory
from connectome.io.spec import parse_shape

DTYPES = {
    "float32": torch.float32,
    "float64": torch.float64,
    "float16": torch.float16,
    "bfloat16": torch.bfloat16,
    "int64": torch.int64,
    "int32": torch.int32,
    "bool": torch.bool,
}


def max_memory_option(ctx: click.Context, param: click.Parameter, value: str | None) -> None:
    """The callback of --max-memory: sets the budget of every analysis the command runs."""
    if value is None:
        return
    try:
        memory.set_default(memory.parse_size(value))
    except ValueError as e:
        raise click.BadParameter(str(e)) from None


def arch_kwargs_option(example: str):
    """--arch-kwargs K=V[,K=V] (repeatable): keyword arguments for a model's factory."""
    return click.option(
        "--arch-kwargs",
        multiple=True,
        metavar="K=V[,K=V]",
        help=f"Keyword arguments for the architecture's factory, e.g. {example}.",
    )


def input_options(fn):
    """--input-shape, --input-dtype, --tracer, --trust and --max-memory."""
    fn = click.option(
        "--max-memory",
        metavar="SIZE",
        default=None,
        expose_value=False,
        callback=max_memory_option,
        help="Stop, naming a smaller --input-shape, when the work would grow by more than SIZE "
        "(e.g. 4G, 512M, 25%). Default: half the machine's memory.",
    )(fn)
    fn = click.option(
        "--tracer",
        type=click.Choice(["auto", "fx", "export"]),
        default="auto",
        show_default=True,
        help="torch.fx symbolic tracing, torch.export, or fx with export as fallback.",
    )(fn)
    fn = click.option(
        "--input-dtype",
        type=click.Choice(sorted(DTYPES)),
        default="float32",
        show_default=True,
        help="Element type of the inputs: int64 for token ids.",
    )(fn)
    fn = click.option(
        "--trust", is_flag=True, help="Allow loading a whole-model pickle (torch.save(model)); pickles can run code."
    )(fn)
    return click.option(
        "--input-shape",
        "input_shape",
        default=None,
        metavar="SHAPE",
        help="Input shape, e.g. 1,3,32,32 (several inputs: 1,3,32,32;1,10). "
        "Defaults to the model's natural size when known.",
    )(fn)


def display_name(spec: str) -> str:
    """A model spec as a title: a file's name without its folders.

    >>> display_name("examples/pruned_lenet.py:build"), display_name("torchvision:resnet50")
    ('pruned_lenet.py:build', 'torchvision:resnet50')
    """
    path, sep, rest = spec.rpartition(":")
    return os.path.basename(path) + sep + rest if sep else os.path.basename(spec)


def shapes_arg(input_shape: str | None, default: tuple[int, ...] | None = None):
    """What ``analyze(input_shape=...)`` takes: one shape, a list of shapes for several inputs, or None."""
    shapes = parse_shape(input_shape) if input_shape else ([default] if default else None)
    if shapes is None:
        return None
    return shapes[0] if len(shapes) == 1 else shapes
