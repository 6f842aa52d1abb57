"""The training loop: masked steps, mask updates by a policy, effective sparsity after each update.

Examples
--------
>>> from connectome.models import lenet_300_100
>>> cfg = Config(method="rigl", sparsity=0.9, epochs=1, limit=1200, val_size=200, update_every=5)
>>> run = train(lenet_300_100(), cfg)
>>> run.history[-1]["event"], run.history[-1]["epoch"], run.history[-1]["collapsed"]
('epoch', 1, False)
>>> round(1 - sum(run.masks.kept().values()) / 266200, 2)      # RigL keeps every layer's count
0.9
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ..analysis import Analyzer
from ..io.masks import prunable_weights
from ..seeding import generator
from .data import Data, augment, batches
from .east.run import Phasing, check_layers, east_sparsity
from .masked import Masks, TrainError, strip_pruning
from .policies import POLICIES, Policy, Update
from .schedules import LR_KINDS, LearningRate
from .state import Checkpointer, model_identity
from .watch import Watch

__all__ = ["Config", "Run", "train"]


@dataclass
class Config:
    """Everything that decides a run; a resumed run must be given the same."""

    data: str = "mnist"
    method: str = "static"  # the mask policy: static, set, rigl, gmp
    sparsity: float = 0.9
    quota: str | None = "erk"  # layer densities of the initial masks (and of GMP's targets)
    init: str = "random"  # the score that picks the initial masks (a connectome prune method)
    target: str = "direct"  # whether --sparsity is the initial masks' direct or effective sparsity
    epochs: int = 10
    batch_size: int = 128
    optimizer: str = "sgd"  # sgd or adamw
    lr: float = 0.1
    momentum: float = 0.9
    nesterov: bool = False
    weight_decay: float = 5e-4
    schedule: str = "cosine"
    warmup_epochs: float = 0.0
    clip: float | None = None  # gradient norm
    seed: int = 0
    update_every: int = 100
    drop_fraction: float = 0.3
    end: float = 0.75  # share of training after which masks stay fixed
    guard: bool = False
    reclaim: bool = False
    cycles: int = 2  # east: cycles of the cyclic density (0: none)
    cycle_epochs: float = 50.0  # east: the length of a cycle
    long_every: int = 4  # east: after the cycles, RigL updates this many times less often
    phase_epochs: tuple[float, float] | None = None  # east: DyReLU's phasing (default: half the first milestone to it)
    dyrelu: bool = True  # east: build the model with DyReLU (a model built from connectome:NAME)
    sharing: bool = True  # east: build the model with weight sharing (ratio 2 unless model_kwargs say)
    val_size: int = 5000
    limit: int | None = None  # use only this many training (and test) examples
    cifar_form: bool = False  # 28x28 grey images as 32x32x3, for CIFAR-form models
    data_root: str | None = None
    device: str = "cpu"

    def check(self) -> None:
        if self.method not in POLICIES:
            raise TrainError(f"unknown training method {self.method!r}: choose from {', '.join(sorted(POLICIES))}")
        if not 0.0 <= self.sparsity < 1.0:
            raise TrainError(f"--sparsity must lie in [0, 1), not {self.sparsity}")
        if self.optimizer not in ("sgd", "adamw"):
            raise TrainError(f"unknown optimiser {self.optimizer!r}: choose sgd or adamw")
        if self.schedule not in LR_KINDS:
            raise TrainError(f"unknown schedule {self.schedule!r}: choose from {', '.join(LR_KINDS)}")
        if self.epochs < 1 or self.batch_size < 1 or not self.lr > 0 or not math.isfinite(self.lr):
            raise TrainError("--epochs and --batch-size must be 1 or more and --lr a positive number")
        if self.target not in ("direct", "effective"):
            raise TrainError(f"--target must be direct or effective, not {self.target!r}")
        if not 0.0 <= self.drop_fraction <= 1.0 or not 0.0 < self.end <= 1.0:
            raise TrainError("--drop-fraction must lie in [0, 1] and --end in (0, 1]")
        if self.cycles < 0 or not self.cycle_epochs > 0 or self.long_every < 1:
            raise TrainError("--cycles must be 0 or more, --cycle-epochs above 0 and --long-every 1 or more")
        if self.phase_epochs is not None and not 0 <= self.phase_epochs[0] <= self.phase_epochs[1]:
            raise TrainError(f"--phase-epochs must be START,END with 0 <= START <= END, not {self.phase_epochs}")


@dataclass
class Run:
    """A finished (or resumed and finished) run."""

    model: nn.Module
    masks: Masks
    history: list[dict[str, Any]] = field(default_factory=list)  # epoch and update records, as logged
    config: Config = field(default_factory=Config)


def _initial_masks(model: nn.Module, cfg: Config, data: Data, shape: tuple[int, ...]) -> dict[str, torch.Tensor]:
    found = strip_pruning(model)
    if found:  # a pruned checkpoint trains with its own masks
        return found
    names = list(prunable_weights(model))
    params = dict(model.named_parameters())
    if cfg.method == "gmp":  # prunes from dense
        return {n: torch.ones_like(params[n], dtype=torch.bool) for n in names if n in params}
    from ..prune import prune

    x, y = data.train
    batch = (x[:256], y[:256])
    return prune(
        model, cfg.init, cfg.sparsity, quota=cfg.quota, target=cfg.target, seed=cfg.seed, input_shape=shape, batch=batch
    ).masks


def _fits(model: nn.Module, data: Data, device: str) -> None:
    x = data.train[0][:2].to(device)
    was = model.training
    model.eval()  # a probe in train mode would move BatchNorm's running statistics before training starts
    try:
        with torch.no_grad():
            out = model(x)
    except Exception as e:
        why = (str(e).strip().splitlines() or [type(e).__name__])[0][:120]
        raise TrainError(
            f"the model does not take {data.name}'s examples ({'x'.join(map(str, x.shape[1:]))}): "
            f"{why}; choose data that fits the model, or --cifar-form for 32x32x3 models"
        ) from None
    finally:
        model.train(was)
    if not isinstance(out, torch.Tensor) or out.dim() != 2:
        raise TrainError(f"the model's output is not a (batch, classes) tensor for {data.name}: it is not a classifier")


@torch.no_grad()
def evaluate(model: nn.Module, split: tuple[torch.Tensor, torch.Tensor], device: str, size: int = 1000) -> tuple:
    """(mean cross-entropy, accuracy) of ``model`` on ``split``."""
    was = model.training
    model.eval()
    loss = correct = 0.0
    for x, y in batches(split, size):
        out = model(x.to(device))
        loss += float(F.cross_entropy(out, y.to(device), reduction="sum"))
        correct += int((out.argmax(1) == y.to(device)).sum())
    model.train(was)
    n = max(len(split[1]), 1)
    return loss / n, correct / n


def train(
    model: nn.Module,
    config: Config | None = None,
    out: str | None = None,
    masks: dict[str, torch.Tensor] | None = None,
    log: Callable[[dict[str, Any]], None] | None = None,
    progress: bool = False,
) -> Run:
    """Train ``model`` with masks (see :class:`Config`); with ``out``, checkpoint each epoch there and
    resume from it. ``masks`` (name -> bool) override the initial masks; ``log`` gets every record.
    The seed fixes what the run draws (masks, batches, augmentation, growth); seed the model's own
    initialisation before building it, as the command line does."""
    cfg = config or Config()
    cfg.check()
    torch.manual_seed(cfg.seed)
    data = Data.load(cfg.data, cfg.val_size, cfg.data_root, cifar_form=cfg.cifar_form, limit=cfg.limit, seed=cfg.seed)
    model.to(cfg.device).train()
    _fits(model, data, cfg.device)
    shape = (1, *data.train[0].shape[1:])
    sparsity = east_sparsity(model, cfg.sparsity) if cfg.method == "east" else cfg.sparsity
    initial = masks if masks is not None else _initial_masks(model, replace(cfg, sparsity=sparsity), data, shape)
    m = Masks(model, initial)
    if cfg.method == "east":
        check_layers(m.masks, cfg.sparsity)
    watch = Watch(Analyzer(model, input_shape=shape), cfg.guard, cfg.reclaim)
    if cfg.guard:  # a start that is already cut is repaired like an update would be
        g0 = generator(cfg.seed, "train.guard")
        noise = {n: torch.rand(t.shape, generator=g0, dtype=torch.float64) for n, t in m.masks.items()}
        m.set(watch.repair({n: t.cpu() for n, t in m.masks.items()}, noise))
    steps_per_epoch = math.ceil(len(data.train[1]) / cfg.batch_size)
    total = steps_per_epoch * cfg.epochs
    pol: Policy = POLICIES[cfg.method](
        total,
        update_every=cfg.update_every,
        drop_fraction=cfg.drop_fraction,
        end=cfg.end,
        sparsity=sparsity,
        quota=cfg.quota,
        steps_per_epoch=steps_per_epoch,
        cycles=cfg.cycles,
        cycle_epochs=cfg.cycle_epochs,
        long_every=cfg.long_every,
        initial=1.0 - sum(m.kept().values()) / max(sum(t.numel() for t in m.masks.values()), 1),
    )
    params = [p for p in model.parameters() if p.requires_grad]
    if cfg.optimizer == "sgd":
        opt: torch.optim.Optimizer = torch.optim.SGD(
            params,
            lr=cfg.lr,
            momentum=cfg.momentum,
            nesterov=cfg.nesterov and cfg.momentum > 0,
            weight_decay=cfg.weight_decay,
        )
    else:
        opt = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    lr = LearningRate(cfg.lr, total, cfg.schedule, int(cfg.warmup_epochs * steps_per_epoch))
    run = Run(model, m, [], cfg)
    gen = torch.Generator().manual_seed(cfg.seed)
    ckpt = Checkpointer(out, {**asdict(cfg), "model": model_identity(model)}) if out else None
    step, first = 0, 1
    if ckpt is not None and ckpt.exists():
        step, first = ckpt.restore(model, opt, m, gen, run.history)
    emit = log or (lambda record: None)
    phasing = Phasing(model, cfg, steps_per_epoch) if cfg.method == "east" else None
    if not run.history:  # the masks training starts from, as pruned: the paper's x-axis
        start = {"event": "start", "epoch": 0, "step": 0, **watch.summary(watch.analyze(dict(m.masks)))}
        run.history.append(start)
        emit(start)
    for epoch in range(first, cfg.epochs + 1):
        started, seen, loss_sum, correct = time.perf_counter(), 0, 0.0, 0
        it = batches(data.train, cfg.batch_size, gen)
        if progress:
            from tqdm import tqdm

            it = tqdm(it, total=steps_per_epoch, desc=f"epoch {epoch}/{cfg.epochs}", leave=False)
        for x, y in it:
            if data.augment:
                x = augment(x, gen)
            x, y = x.to(cfg.device), y.to(cfg.device)
            for g in opt.param_groups:
                g["lr"] = lr(step)
            if phasing is not None and phasing.step(step):  # DyReLU is a ReLU now: the walk sees it so
                watch.analyzer = Analyzer(model, input_shape=shape)
            opt.zero_grad(set_to_none=True)
            out_ = model(x)
            loss = F.cross_entropy(out_, y)
            if not torch.isfinite(loss):
                raise TrainError(
                    f"the loss became {float(loss.detach())} at epoch {epoch}, step {step + 1}: lower --lr "
                    f"(now {cfg.lr}) or add --clip 1.0"
                )
            loss.backward()
            step += 1
            due = pol.due(step)
            grads = (  # on the CPU, like everything a policy and the walk read
                {
                    n: p.grad.detach().to("cpu", copy=True) if p.grad is not None else torch.zeros(p.shape)
                    for n, p in m.params.items()
                }
                if due and pol.needs_grads
                else None
            )
            m.mask_grads()
            if cfg.clip:
                torch.nn.utils.clip_grad_norm_(params, cfg.clip)
            opt.step()
            m.enforce(opt)
            loss_sum += float(loss.detach()) * len(y)
            correct += int((out_.argmax(1) == y).sum())
            seen += len(y)
            if due:
                weights = {n: p.detach().cpu() for n, p in m.params.items()}
                u = Update(step, total, weights, {n: t.cpu() for n, t in m.masks.items()}, gen, grads)
                new, res = watch.update(pol, u)
                m.set(new, opt)
                record = {
                    "event": "update",
                    "epoch": epoch,
                    "step": step,
                    **watch.summary(res),
                    "cut_layers": len(watch.cut),  # by the policy's own masks, before --guard
                }
                run.history.append(record)
                emit(record)
        val_loss, val_acc = evaluate(model, data.val, cfg.device) if len(data.val[1]) else (None, None)
        _, test_acc = evaluate(model, data.test, cfg.device)
        res = watch.analyze(dict(m.masks))
        record = {
            "event": "epoch",
            "epoch": epoch,
            "step": step,
            "train_loss": loss_sum / max(seen, 1),
            "train_acc": correct / max(seen, 1),
            "val_loss": val_loss,
            "val_acc": val_acc,
            "test_acc": test_acc,
            "lr": lr(step - 1),
            **watch.summary(res),
            "seconds": round(time.perf_counter() - started, 3),
        }
        run.history.append(record)
        if ckpt is not None:  # before the record is shown: an interruption after it loses nothing
            ckpt.save(model, opt, m, gen, run.history, step, epoch)
        emit(record)
    return run
