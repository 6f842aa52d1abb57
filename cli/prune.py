"""``connectome prune``: masks by a score and a layer quota, aimed at the direct or effective sparsity."""

from __future__ import annotations

import math
import os
import re

import click
import torch

from connectome import data as data_mod
from connectome.io.files import check_writable
from connectome.io.spec import SpecError
from connectome.prune import QUOTAS, SCORES, save
from connectome.prune import prune as prune_model
from connectome.report import compression as fmt_compression

from . import corenet as corenet_cli
from .analyze import build, model_options
from .main import main
from .options import DTYPES


@main.command()
@model_options
@click.option(
    "--method",
    required=True,
    type=click.Choice([*sorted(SCORES), "corenet"]),
    help="How weights are scored; corenet samples a trained model's weights by sensitivity on --data.",
)
@click.option("--keep", type=float, default=None, metavar="K", help="Share of weights to keep (corenet), e.g. 0.15.")
@click.option(
    "--variant",
    type=click.Choice(["corenet", "plus", "plusplus"]),
    default="corenet",
    show_default=True,
    help="corenet: plus removes neurons that never fire on the sample first; plusplus also picks the best "
    "of several draws per layer.",
)
@click.option(
    "--epsilon",
    type=float,
    default=0.1,
    show_default=True,
    help="corenet: relative output error; without a budget, the sample sizes come from the paper's bound for it.",
)
@click.option("--delta", type=float, default=0.05, show_default=True, help="corenet: allowed failure probability.")
@click.option(
    "--sample-size",
    type=click.IntRange(min=1),
    default=None,
    help="corenet: inputs in S  [default: the paper's formula in --delta and the widths, 197 for LeNet-300-100]",
)
@click.option(
    "--split",
    "error_split",
    type=click.Choice(["equal", "paper"]),
    default="equal",
    show_default=True,
    help="corenet: how the error is split over layers (paper: most samples go to the first layer).",
)
@click.option("--sparsity", type=float, default=None, metavar="S", help="Share of weights to remove, e.g. 0.99.")
@click.option(
    "--compression",
    type=float,
    default=None,
    metavar="C",
    help="The other way to say it: 100 keeps 1 weight in 100 (sparsity 0.99).",
)
@click.option(
    "--quota",
    type=click.Choice(sorted(QUOTAS)),
    default=None,
    help="Per-layer densities (selection per layer); without one, all layers compete globally.",
)
@click.option(
    "--target",
    type=click.Choice(["direct", "effective"]),
    default="direct",
    show_default=True,
    help="effective: keep more weights directly until the *effective* sparsity meets the target.",
)
@click.option(
    "--seed",
    type=click.IntRange(0, 2**63 - 1),
    default=0,
    show_default=True,
    help="Seed for the initial weights of a model built from code, random scores and data batches.",
)
@click.option(
    "--data",
    "dataset",
    type=click.Choice(data_mod.DATASETS),
    default=None,
    help="Data for snip and grasp (local files first; see --data-root, --download).",
)
@click.option(
    "--data-root",
    default=None,
    metavar="DIR",
    help="Folder with the dataset's files (MNIST: IDX or CSV; CIFAR-10: python or binary batches).",
)
@click.option("--download", is_flag=True, help="Let torchvision download the dataset when no local copy exists.")
@click.option(
    "--batch-size", type=click.IntRange(min=1), default=256, show_default=True, help="Examples for snip and grasp."
)
@click.option(
    "--rounds",
    type=click.IntRange(min=1),
    default=100,
    show_default=True,
    help="Rounds of iterative methods (synflow).",
)
@click.option(
    "-o",
    "--output",
    required=True,
    metavar="FILE",
    help="Where to write the pruned state_dict (torch.nn.utils.prune form: weight_orig + weight_mask).",
)
@click.option("--masks-only", is_flag=True, help="Write {weight name: bool mask} instead (for --masks).")
def prune(
    model,
    input_shape,
    weights,
    trust,
    input_dtype,
    tracer,
    method,
    sparsity,
    compression,
    quota,
    target,
    seed,
    dataset,
    data_root,
    download,
    batch_size,
    rounds,
    output,
    masks_only,
    **corenet,
):
    """Prune MODEL and write the result; prints its direct and effective sparsity.

    Methods score weights (magnitude, random, lamp; snip and grasp on a batch of --data; synflow
    without data, iteratively); a --quota fixes each layer's share, else the best scores win
    globally. Kept counts are exact and ties go to the earlier weight, so a --seed fixes the result.
    MODEL and the input options are those of `connectome analyze`.

    \b
    Examples:
      connectome prune connectome:lenet_300_100 --method snip --data mnist --sparsity 0.99 -o lenet.pt
      connectome prune connectome:vgg19 --method random --quota igq --compression 1000 --target effective -o v.pt
      connectome prune torchvision:resnet18 --input-shape 1,3,32,32 --method synflow --sparsity 0.99 -o r.pt
      connectome prune connectome:lenet_300_100 --weights trained.pt --method corenet --data mnist --keep 0.15 -o s.pt
      connectome prune connectome:lenet_300_100 --weights trained.pt --method corenet --data mnist --epsilon 0.5 -o b.pt
    """
    if method == "corenet":
        if corenet["keep"] is not None and (sparsity is not None or compression is not None):
            raise SpecError("give one of --keep, --sparsity or --compression")
        if corenet["keep"] is None and (sparsity is not None or compression is not None):
            corenet["keep"] = 1.0 - _sparsity(sparsity, compression)
        check_writable(output, inputs=(weights, model, *_data_files(data_root)))
        torch.manual_seed(seed)
        ck, shape = build(model, input_shape, weights, trust)
        return corenet_cli.run(ck, shape, dataset, data_root, download, seed, output, **corenet)
    if corenet["keep"] is not None:
        raise SpecError("--keep is for --method corenet: give --sparsity or --compression")
    sparsity = _sparsity(sparsity, compression)
    if dataset is None and SCORES[method].needs_data:
        raise SpecError(
            f"--method {method} scores weights on data: add --data (mnist or fashion-mnist for "
            "1x28x28 inputs, cifar10 for 3x32x32)"
        )
    # a bad -o fails now, not after the pruning; the data set's files are inputs too
    check_writable(output, inputs=(weights, model, *_data_files(data_root)))
    torch.manual_seed(seed)  # a model built from code starts from the same weights on every run
    ck, shape = build(model, input_shape, weights, trust)
    batch = data_mod.batch(dataset, batch_size, seed, root=data_root, download=download) if dataset else None
    p = prune_model(
        ck.model,
        method,
        sparsity,
        quota=quota,
        target=target,
        seed=seed,
        input_shape=shape,
        batch=batch,
        rounds=rounds,
        log=_progress,
        tracer=tracer,
        input_dtype=DTYPES[input_dtype],
    )
    save(ck.model, p.masks, output, masks_only=masks_only)
    res = p.analysis
    click.echo(
        f"direct sparsity {_floor_pct(res.direct_sparsity)} ({fmt_compression(res.direct_compression)}), "
        f"effective sparsity {_floor_pct(res.effective_sparsity)} "
        f"({fmt_compression(res.effective_compression)})" + (", COLLAPSED" if res.collapsed else "")
    )
    if p.note:
        click.echo(f"note: {p.note}", err=True)
    if res.collapsed and target == "direct":
        click.echo(
            "note: no input reaches an output, so every weight is ineffective; --target effective keeps "
            "weights until enough are effective, and a --quota (igq, erk) spreads them over the layers",
            err=True,
        )
    click.echo(
        f"wrote {output}: {p.kept:,} of {res.params_total:,} weights kept"
        + (f" after {p.analyses} analyses" if target == "effective" else ""),
        err=True,
    )


def _data_files(root: str | None) -> list[str]:
    """The files under --data-root (two levels: torchvision keeps them in MNIST/raw)."""
    if not root or not os.path.isdir(root):
        return []
    found = []
    for folder, subdirs, files in os.walk(root):
        if folder.count(os.sep) - root.rstrip(os.sep).count(os.sep) >= 2:
            subdirs.clear()
        found += [os.path.join(folder, f) for f in files]
    return found


def _progress(msg: str) -> None:
    """Progress on stderr: every analysis of effective targeting, every tenth round of an iterative method."""
    m = re.fullmatch(r"\w+ round (\d+)/(\d+)", msg)
    if m and int(m.group(1)) % 10 and m.group(1) != m.group(2):
        return
    click.echo(msg, err=True)


def _floor_pct(x: float) -> str:
    """Rounded down, so that the printed figure can be claimed (``audit --claim-sparsity``) as it reads."""
    return f"{math.floor(x * 10000 + 1e-9) / 100:.2f}%"


def _sparsity(sparsity: float | None, compression: float | None) -> float:
    if (sparsity is None) == (compression is None):
        raise SpecError("give exactly one of --sparsity (e.g. 0.99) or --compression (e.g. 100)")
    if compression is not None:
        if not 1 <= compression < math.inf:  # inf would prune every weight, which --sparsity 1 refuses too
            raise SpecError(f"--compression must be 1 or more and finite, not {compression}")
        return 1.0 - 1.0 / compression
    assert sparsity is not None  # exactly one of the two was given
    if not 0.0 <= sparsity < 1.0:
        raise SpecError(f"--sparsity must lie in [0, 1), not {sparsity}")
    return sparsity
