"""connectome's fx tracer records exactly the graph torch.fx's own tracer records."""
import copy
from collections import namedtuple

import pytest
import torch
import torch.nn.functional as F
import torchvision
from torch import fx, nn

from connectome.trace import _Tracer

Pair = namedtuple("Pair", "a b")


class Mixed(nn.Module):
    """Arguments of every kind fx treats specially: parameters and buffers used directly, a tensor
    constant, a namedtuple, slices, dtypes, keyword arguments, nested lists."""

    def __init__(self):
        super().__init__()
        self.w = nn.Parameter(torch.randn(4, 6))
        self.register_buffer("scale", torch.ones(4))
        self.conv = nn.Conv1d(1, 2, 3, padding=1)

    def forward(self, x):
        y = F.linear(x, self.w) * self.scale
        y = y + torch.tensor([1.0, 2.0, 3.0, 4.0])
        p = Pair(y, y[:, 1:3])
        z = torch.cat([p.a[..., :2], p.b], dim=-1).to(torch.float32)
        z = self.conv(z.unsqueeze(1)).flatten(1)
        return F.pad(z, [1, 1], mode="constant", value=0.0), {"sum": z.sum(dim=1, keepdim=True)}


@pytest.mark.parametrize("make", [Mixed, torchvision.models.resnet18, torchvision.models.vit_b_16,
                                  torchvision.models.mobilenet_v3_small])
def test_same_graph_as_fx(make):
    model = make().eval()   # each tracer gets its own copy: both leave tensor constants on the module
    assert str(_Tracer().trace(copy.deepcopy(model))) == str(fx.Tracer().trace(copy.deepcopy(model)))
