"""README picture: a CIFAR ResNet-18 whose third stage collapsed, drawn at layer level.

Random pruning keeps 10% of every layer's weights except in stage 3 (``layer3``), which a careless
per-layer quota left with 3 in 100,000 (56 of its 2.1M weights). No path crosses that stage any more:
the network is collapsed, every weight ineffective, and the diagram shows where the signal stops.
Run: python examples/render_collapsed_resnet18.py docs/img/resnet18_collapsed.png
"""
import sys

import torch

import connectome
from connectome.models import resnet18_cifar
from connectome.render import render, to_dot


def build() -> torch.nn.Module:
    torch.manual_seed(2)
    model = resnet18_cifar()
    with torch.no_grad():
        for name, p in model.named_parameters():
            if p.dim() > 1:
                p.mul_(torch.rand_like(p) < (3e-5 if name.startswith("layer3.") else 0.1))
    return model


build.input_shape = (1, 3, 32, 32)

if __name__ == "__main__":
    res = connectome.analyze(build(), input_shape=build.input_shape)
    left = sum(r["nonzero"] for r in res.layers if r["name"].startswith("layer3."))
    print(f"collapsed: {res.collapsed}; stage 3 keeps {left} weights")
    render(to_dot(res, fold=True, title="ResNet-18 (CIFAR), stage 3 pruned to 99.997%"), sys.argv[1])
