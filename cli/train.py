"""``connectome train``: train MODEL with fixed or evolving masks, watching its effective sparsity."""

from __future__ import annotations

import json
import os

import click
import torch

from connectome import data as data_mod
from connectome.io.checkpoint import load
from connectome.io.masks import dense_prefixes
from connectome.io.spec import SpecError, parse_kwargs
from connectome.prune import QUOTAS, SCORES
from connectome.train import POLICIES, Config, TrainError, train
from connectome.train.east.run import east_kwargs
from connectome.train.state import CHECKPOINT, LOG

from .main import main
from .options import arch_kwargs_option, max_memory_option


@main.command(name="train")
@click.argument("model")
@click.option(
    "--weights",
    type=click.Path(dir_okay=False),
    default=None,
    help="A pruned checkpoint to start from (its masks are kept): a state_dict or .safetensors file.",
)
@click.option("--trust", is_flag=True, help="Allow loading a whole-model pickle; pickles can run code.")
@arch_kwargs_option("width=16 or num_classes=100")
@click.option(
    "--max-memory",
    metavar="SIZE",
    default=None,
    expose_value=False,
    callback=max_memory_option,
    help="Memory budget of the analyses (e.g. 4G). Default: half the machine's memory.",
)
@click.option("--data", "dataset", type=click.Choice(data_mod.DATASETS), required=True, help="The data set.")
@click.option("--data-root", default=None, metavar="DIR", help="Folder with the data set's files.")
@click.option(
    "--method",
    type=click.Choice(sorted(POLICIES)),
    default="static",
    show_default=True,
    help="Mask policy: static, set, rigl (dense-gradient growth), gmp (gradual pruning from dense) or east "
    "(RigL with cyclic density, DyReLU phased into ReLU and weight sharing).",
)
@click.option(
    "--sparsity",
    type=click.FloatRange(0, 1, max_open=True),
    default=0.9,
    show_default=True,
    help="Share of the prunable weights to remove (GMP's final sparsity).",
)
@click.option(
    "--quota",
    type=click.Choice(sorted(QUOTAS)),
    default="erk",
    show_default=True,
    help="Layer densities of the initial masks.",
)
@click.option(
    "--init",
    type=click.Choice(sorted(SCORES)),
    default="random",
    show_default=True,
    help="The score that picks the initial masks (as connectome prune --method).",
)
@click.option(
    "--target",
    type=click.Choice(["direct", "effective"]),
    default="direct",
    show_default=True,
    help="effective: the initial masks keep weights until their effective sparsity is --sparsity.",
)
@click.option("--epochs", type=click.IntRange(min=1), default=10, show_default=True)
@click.option("--batch-size", type=click.IntRange(min=1), default=128, show_default=True)
@click.option("--optimizer", type=click.Choice(["sgd", "adamw"]), default="sgd", show_default=True)
@click.option("--lr", type=click.FloatRange(min=0, min_open=True), default=0.1, show_default=True)
@click.option("--momentum", type=click.FloatRange(0, 1), default=0.9, show_default=True)
@click.option("--nesterov", is_flag=True, help="Nesterov momentum (SGD).")
@click.option("--weight-decay", type=click.FloatRange(min=0), default=5e-4, show_default=True)
@click.option("--schedule", type=click.Choice(["cosine", "step", "constant"]), default="cosine", show_default=True)
@click.option("--warmup", type=click.FloatRange(min=0), default=0.0, show_default=True, help="Warm-up epochs.")
@click.option("--clip", type=click.FloatRange(min=0, min_open=True), default=None, help="Clip gradient norms.")
@click.option("--seed", type=click.IntRange(0, 2**63 - 1), default=0, show_default=True)
@click.option(
    "--update-every",
    type=click.IntRange(min=1),
    default=100,
    show_default=True,
    help="Steps between mask updates (set, rigl, gmp).",
)
@click.option(
    "--drop-fraction",
    type=click.FloatRange(0, 1),
    default=0.3,
    show_default=True,
    help="Share of kept weights replaced at an update (rigl: its starting value, on a cosine decay).",
)
@click.option(
    "--end",
    type=click.FloatRange(0, 1, min_open=True),
    default=0.75,
    show_default=True,
    help="Share of training after which the masks stay fixed.",
)
@click.option("--cycles", type=click.IntRange(min=0), default=2, show_default=True, help="east: density cycles.")
@click.option(
    "--cycle-epochs",
    type=click.FloatRange(min=0, min_open=True),
    default=50.0,
    show_default=True,
    help="east: epochs per cycle (the density goes from the budget's to 3x and back).",
)
@click.option(
    "--long-every",
    type=click.IntRange(min=1),
    default=4,
    show_default=True,
    help="east: after the cycles, RigL updates this many times less often.",
)
@click.option(
    "--phase-epochs",
    default=None,
    metavar="START,END",
    help="east: epochs over which DyReLU becomes a ReLU  [default: a quarter to half of training]",
)
@click.option("--no-dyrelu", is_flag=True, help="east: keep the model's ReLUs (an ablation).")
@click.option("--no-sharing", is_flag=True, help="east: no weight sharing in the residual stages (an ablation).")
@click.option("--no-cyclic", is_flag=True, help="east: no density cycles, RigL throughout (an ablation).")
@click.option("--guard", is_flag=True, help="Repair any update that would disconnect a layer or the network.")
@click.option("--reclaim", is_flag=True, help="Drop ineffective weights at each update and regrow their budget.")
@click.option(
    "--val-size",
    type=click.IntRange(min=0),
    default=5000,
    show_default=True,
    help="Training examples held out for validation.",
)
@click.option("--limit", type=click.IntRange(min=1), default=None, help="Use only this many examples (quick runs).")
@click.option("--cifar-form", is_flag=True, help="Pad 28x28 images to 32x32 and tile them to 3 channels.")
@click.option("--device", default="cpu", show_default=True, help="cpu, or cuda when one exists.")
@click.option(
    "-o",
    "--output",
    required=True,
    metavar="DIR",
    help="The run's folder: checkpoint.pt (prune form), log.jsonl, plot.png; a rerun resumes it.",
)
def train_cmd(model, weights, trust, arch_kwargs, dataset, data_root, output, device, **opts):
    """Train MODEL on --data with masks, logging direct and effective sparsity.

    The initial masks come from --init and --quota at --sparsity, or from --weights (a pruned
    checkpoint keeps its masks). A rerun with the same -o resumes from the last finished epoch.

    \b
    Examples:
      connectome train connectome:lenet_300_100 --data mnist --method rigl --sparsity 0.98 -o runs/rigl
      connectome train connectome:lenet_300_100 --data mnist --weights pruned.pt --epochs 20 -o runs/ft
      connectome train connectome:resnet18 --arch-kwargs width=16 --data fashion-mnist --cifar-form \\
          --method set --guard -o runs/r
      connectome train connectome:resnet34 --arch-kwargs width=8 --data fashion-mnist --cifar-form \\
          --method east --sparsity 0.999 --cycle-epochs 2 -o runs/east
    """
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise SpecError(f"--device {device}: no CUDA device here; use --device cpu")
    torch.manual_seed(opts["seed"])  # a model built from code starts from the same weights on every run
    kwargs = parse_kwargs(list(arch_kwargs))
    opts["dyrelu"], opts["sharing"] = not opts.pop("no_dyrelu"), not opts.pop("no_sharing")
    if opts.pop("no_cyclic"):
        opts["cycles"] = 0
    if opts["method"] == "east":
        try:
            kwargs = east_kwargs(model, kwargs, opts["dyrelu"], opts["sharing"])
        except TrainError as e:
            raise SpecError(str(e)) from None
    ck = load(weights, arch=model, arch_kwargs=kwargs or None, trust=trust)
    for note in ck.notes:
        click.echo(f"note: {note}", err=True)
    if dense_prefixes(ck.model):
        click.echo("note: DyReLU's hyper-networks are dense and not counted in the sparsity", err=True)
    opts["phase_epochs"] = _pair(opts["phase_epochs"])
    opts["warmup_epochs"] = opts.pop("warmup")
    opts["quota"] = None if opts["quota"] == "none" else opts["quota"]
    cfg = Config(data=dataset, data_root=data_root, device=device, **opts)
    masks = ck.masks or None
    try:
        os.makedirs(output, exist_ok=True)
    except OSError as e:
        raise SpecError(f"cannot create the run folder {output}: {e.strerror}") from None

    def log(record):
        if record["event"] == "epoch":  # one JSON line per epoch; log.jsonl has the updates too
            click.echo(json.dumps(record))

    try:
        run = train(ck.model, cfg, out=output, masks=masks, log=log, progress=_terminal())
    except TrainError as e:
        raise SpecError(str(e)) from None
    from connectome.train.plot import plot_history

    try:
        plot_history(run.history, os.path.join(output, "plot.png"), f"{model} {cfg.method} {cfg.sparsity:g}")
    except ImportError:
        click.echo("note: no plot.png: pip install 'connectome[plots]' for matplotlib", err=True)
    updates = [r for r in run.history if r["event"] == "update"]
    if updates:
        cut = sum(1 for r in updates if r.get("cut_layers"))
        click.echo(
            f"updates that would have disconnected a layer: {cut} of {len(updates)}"
            + (" (repaired by --guard)" if cfg.guard and cut else "")
        )
    last = next(r for r in reversed(run.history) if r["event"] == "epoch")
    click.echo(
        f"test accuracy {100 * last['test_acc']:.2f}%, direct sparsity {100 * last['direct_sparsity']:.2f}%, "
        f"effective sparsity {100 * last['effective_sparsity']:.2f}%" + (", COLLAPSED" if last["collapsed"] else "")
    )
    click.echo(f"wrote {os.path.join(output, CHECKPOINT)}, {LOG} and plot.png", err=True)


def _pair(text: str | None) -> tuple[float, float] | None:
    if text is None:
        return None
    try:
        a, b = (float(v) for v in text.split(","))
    except ValueError:
        raise SpecError(f"--phase-epochs takes START,END in epochs (e.g. 10,20), not {text!r}") from None
    return a, b


def _terminal() -> bool:
    """A progress bar on a terminal, when tqdm is installed (connectome[train])."""
    import importlib.util
    import sys

    return sys.stderr.isatty() and importlib.util.find_spec("tqdm") is not None
