"""Small networks with known dead units, shared by the diagram tests."""
import torch
from torch import nn


def three_state_mlp(n_in: int, n_out: int) -> nn.Module:
    """n_in -> 3 -> n_out, all weights 1, except: hidden unit 1 reaches no output, hidden unit 2 sees no input.

    Hidden unit 0 is alive; every input and output unit is alive through it.
    """
    m = nn.Sequential(nn.Linear(n_in, 3), nn.ReLU(), nn.Linear(3, n_out))
    with torch.no_grad():
        m[0].weight.fill_(1.0)
        m[0].weight[2] = 0
        m[2].weight.fill_(1.0)
        m[2].weight[:, 1] = 0
    return m
