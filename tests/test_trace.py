"""connectome's fx tracer records exactly the graph torch.fx's own tracer records, except that it keeps
``h += y`` an in-place operator (fx records ``h = h + y``, which hides the write from views of ``h``)."""
import copy
import operator
from collections import namedtuple

import pytest
import torch
import torch.nn.functional as F
import torchvision
from torch import fx, nn

from connectome.graph.fxtracer import FxTracer as _Tracer

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
    a, b = _Tracer(), fx.Tracer()
    ours, theirs = a.trace(copy.deepcopy(model)), b.trace(copy.deepcopy(model))
    kept = {operator.iadd: operator.add, operator.imul: operator.mul}
    for n in ours.nodes:                     # compare as fx would have recorded it
        n.target = kept.get(n.target, n.target)
    assert str(ours).replace("%iadd", "%add").replace("%imul", "%mul") == str(theirs)
    assert a.node_name_to_scope == {k.replace("iadd", "add"): v for k, v in b.node_name_to_scope.items()} or \
        {k.replace("iadd", "add"): v for k, v in a.node_name_to_scope.items()} == b.node_name_to_scope
    stacks = [(n.meta.get("nn_module_stack"), m.meta.get("nn_module_stack")) for n, m in zip(ours.nodes, theirs.nodes)]
    assert all(a == b and type(a) is type(b) for a, b in stacks) and any(a for a, _ in stacks)


@pytest.mark.parametrize("mod,shape", [
    (nn.AdaptiveAvgPool2d((1, 1)), (2, 3, 7, 9)), (nn.AdaptiveAvgPool2d((None, 4)), (1, 3, 7, 9)),
    (nn.AdaptiveMaxPool1d(5), (2, 4, 11)), (nn.AdaptiveAvgPool3d(2), (1, 2, 5, 6, 7)),
    (nn.AdaptiveAvgPool2d(3), (3, 7, 9)),            # no batch dim
    (nn.MaxPool2d(3, 2, 1), (1, 8, 112, 112)), (nn.MaxPool2d(2), (1, 3, 7, 7)),
    (nn.MaxPool2d(3, 1, 1, dilation=2), (1, 2, 9, 9)), (nn.MaxPool1d(4, 3, 2), (2, 3, 17)),
    (nn.AvgPool2d(2, 2), (1, 4, 9, 8)), (nn.AvgPool3d(3, 2, 1), (1, 1, 7, 8, 9)), (nn.AvgPool1d(3), (2, 10)),
    (nn.MaxPool2d(3, 2, ceil_mode=True), (1, 1, 8, 8)),   # formula declines: torch computes it
    (nn.Conv2d(3, 8, 3, 2, 1), (1, 3, 15, 16)), (nn.Linear(6, 2), (4, 5, 6)),
])
def test_shape_formulas_match_torch(mod, shape):
    from connectome.graph.shapes import _leaf_shape
    got = _leaf_shape(mod, (torch.empty(shape, device="meta"),), {})
    assert got is None or got == tuple(mod(torch.zeros(shape)).shape)
    assert got is not None or getattr(mod, "ceil_mode", False)


def test_shape_error_names_the_node_and_asks_about_the_input():
    from connectome.graph.trace import TraceError, trace
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU())
    with pytest.raises(TraceError, match=r"shape propagation failed at node _0 \(call_module 0\).*input shape right"):
        trace(model, input_shape=(1, 5, 8, 8), tracer="fx")
