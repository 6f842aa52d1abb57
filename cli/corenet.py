"""``connectome prune --method corenet``: sample a trained model's weights by their sensitivity on data,
write the reweighted weights in prune form, and report accuracy and the guarantee, measured."""

from __future__ import annotations

import click
import torch

from connectome import data as data_mod
from connectome.analysis import Analyzer
from connectome.io.spec import SpecError
from connectome.prune import save
from connectome.prune.corenet import bounds, corenet
from connectome.prune.corenet.guarantee import measure
from connectome.prune.corenet.layers import layer_widths
from connectome.report import compression as fmt_compression
from connectome.train.loop import evaluate


def run(ck, shape, dataset, data_root, download, seed, output, keep, variant, epsilon, delta, sample_size, error_split):
    """Sparsify ``ck.model`` in place, save it to ``output`` and print what was measured. Without ``keep``,
    the sample sizes are the paper's bound for ``epsilon`` and ``delta``."""
    if (keep is not None and not 0.0 < keep <= 1.0) or not epsilon > 0.0 or not 0.0 < delta < 1.0:
        raise SpecError(
            f"--keep must lie in (0, 1], --epsilon above 0 and --delta in (0, 1), "
            f"not {'-' if keep is None else f'{keep:g}'}, {epsilon:g} and {delta:g}"
        )
    if dataset is None:
        raise SpecError(
            "--method corenet samples weights by their sensitivity on data: add --data (mnist or fashion-mnist "
            "for 1x28x28 inputs, cifar10 for 3x32x32)"
        )
    model = ck.model
    if sample_size is None:
        sample_size = bounds.sample_size(layer_widths(model), delta)
    x, _ = data_mod.batch(dataset, sample_size + max(sample_size // 4, 16), seed, root=data_root, download=download)
    if tuple(x.shape[1:]) != tuple(shape[1:]):
        raise SpecError(
            f"the data's examples are {'x'.join(map(str, x.shape[1:]))} but the model takes "
            f"{'x'.join(map(str, shape[1:]))}: choose data that fits the model (--data)"
        )
    sample, holdout = x[:sample_size], x[sample_size:]
    test = _test_split(dataset, data_root, download)
    before = _accuracy(model, test)
    r = corenet(
        model,
        sample,
        keep,
        delta=delta,
        variant=variant,
        seed=seed,
        holdout=holdout,
        split=error_split,
        epsilon=epsilon,
    )
    for note in r.notes:
        click.echo(f"note: {note}", err=True)
    guarantee = measure(model, r.weights, test[0][:1000] if test else holdout, epsilon, delta)
    params = dict(model.named_parameters())
    with torch.no_grad():
        for name, w in r.weights.items():
            params[name].copy_(w)
    save(model, r.masks, output)
    res = Analyzer(model, input_shape=tuple(shape)).run(r.masks)
    after = _accuracy(model, test)
    how = f"{variant}, |S| = {len(sample)}, " + (
        f"kept share {keep:g}" if keep is not None else f"draws from the bound for epsilon {epsilon:g}, delta {delta:g}"
    )
    click.echo(
        f"kept {r.kept:,} of {sum(m.numel() for m in r.masks.values()):,} weights ({how}); direct sparsity "
        f"{100 * res.direct_sparsity:.2f}% ({fmt_compression(res.direct_compression)}), effective sparsity "
        f"{100 * res.effective_sparsity:.2f}% ({fmt_compression(res.effective_compression)})"
        + (", COLLAPSED" if res.collapsed else "")
    )
    if r.removed_neurons:
        click.echo(f"neurons that never fire on the sample, removed: {sum(r.removed_neurons.values()):,}")
    if before is not None:
        click.echo(f"test accuracy {100 * before:.2f}% before, {100 * after:.2f}% after (no fine-tuning)")
    click.echo(f"guarantee: {guarantee.summary()}")
    click.echo(f"wrote {output}: reweighted weights in prune form; fine-tune with connectome train --weights", err=True)


def _test_split(dataset, root, download):
    try:
        return data_mod.load(dataset, "test", root=root, download=download)
    except data_mod.DataError:
        return None


def _accuracy(model, split) -> float | None:
    return None if split is None else evaluate(model, split, "cpu")[1]
