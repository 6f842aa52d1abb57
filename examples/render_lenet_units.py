"""README picture: LeNet-300-100 pruned at random to 1000x compression, drawn unit by unit.

Each layer keeps 0.1% of its weights, chosen at random. At this compression random pruning usually
disconnects LeNet entirely (seeds 0-7: all but seed 5 collapse); seed 5 keeps one thin path. Most
surviving weights attach to a unit with no path from the inputs or none to the outputs; the few that
still carry signal are drawn one by one, the rest grouped by state.
Run: python examples/render_lenet_units.py docs/img/lenet_units.png
"""
import sys

import connectome
from connectome.render import render, to_dot
from pruned_lenet import random_lenet       # examples/ is on sys.path when this file runs


def build():
    return random_lenet(1e-3, seed=5)


build.input_shape = (1, 1, 28, 28)

if __name__ == "__main__":
    res = connectome.analyze(build(), input_shape=build.input_shape)
    print(f"direct compression {res.direct_compression:,.0f}x, effective {res.effective_compression:,.0f}x")
    render(to_dot(res, level="unit", title="LeNet-300-100, random pruning to 1000x"), sys.argv[1])
