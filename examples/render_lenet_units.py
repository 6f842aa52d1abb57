"""README picture: LeNet-300-100 pruned at random to 1000x compression, drawn unit by unit.

Each layer keeps 0.1% of its weights, chosen at random. Most of the survivors attach to a unit that
has no path from the inputs or none to the outputs; the few that still carry signal are drawn one
by one, the rest grouped by state. Run: python examples/render_lenet_units.py docs/img/lenet_units.png
"""
import sys

import torch

import connectome
from connectome.models import lenet_300_100
from connectome.render import render, to_dot


def build() -> torch.nn.Module:
    torch.manual_seed(0)
    model = lenet_300_100()
    with torch.no_grad():
        for layer in model:
            if isinstance(layer, torch.nn.Linear):
                layer.weight.mul_(torch.rand_like(layer.weight) < 1e-3)
    return model


build.input_shape = (1, 1, 28, 28)

if __name__ == "__main__":
    res = connectome.analyze(build(), input_shape=build.input_shape)
    print(f"direct compression {res.direct_compression:,.0f}x, effective {res.effective_compression:,.0f}x")
    render(to_dot(res, level="unit", title="LeNet-300-100, random pruning to 1000x"), sys.argv[1])
