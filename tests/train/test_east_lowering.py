"""DyReLU under the analysis, every tracer: sound (zeroing what it calls ineffective changes no output,
additive parameters zeroed) and as tight as the activation allows. A channel whose own input is dead
still carries max(b_1, b_2), which the other channels set through the pooled hyper-network; at beta = 0
the activation is a ReLU and the hyper-network does nothing."""
import pytest
import torch
from torch import nn

import connectome
from connectome.train.east import DyReLU, phase
from soundness import apply_masks, zero_additive

TRACERS = ["fx", "export"]


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.c1, self.a1 = nn.Conv2d(3, 8, 3, padding=1), DyReLU(8)
        self.c2, self.a2 = nn.Conv2d(8, 8, 3, padding=1), DyReLU(8)
        self.fc = nn.Linear(8, 4)

    def forward(self, x):
        return self.fc(self.a2(self.c2(self.a1(self.c1(x)))).mean((2, 3)))


def _net(beta):
    torch.manual_seed(0)
    m = Net().eval()
    with torch.no_grad():
        m.c1.weight[2] = 0      # channel 2 of the first activation sees nothing of the input
        m.c2.weight[:, 5] = 0   # channel 5 of the first activation is read by nothing
        m.fc.weight[:, 3] = 0   # channel 3 of the second activation reaches no output
    phase(m, beta)
    return m


@pytest.mark.parametrize("tracer", TRACERS)
@pytest.mark.parametrize("beta, hyper", [(1.0, {"a1.hyper.0.weight": 2, "a1.hyper.2.weight": 12}), (0.5, None),
                                         (0.0, "all")])
def test_dyrelu_is_lowered_soundly_and_tightly(tracer, beta, hyper):
    m = _net(beta)
    x = torch.randn(4, 3, 8, 8)
    res = connectome.analyze(m, x, tracer=tracer)
    base = zero_additive(m)
    with torch.no_grad():
        assert torch.allclose(base(x), apply_masks(base, res.effective_masks)(x), atol=1e-6)
    off = {k: int((~v).sum()) for k, v in res.effective_masks.items()}
    if hyper == "all":   # a ReLU: no path through the hyper-networks, and dead channels stay dead
        assert off["a1.hyper.0.weight"] == 16 and off["a2.hyper.2.weight"] == 64
        assert off["c1.weight"] == 2 * 27 and off["c2.weight"] == 72 + 72 + 54
    elif hyper is not None:
        # pooled channel 2 is 0: its column of the first linear goes; channel 5's four coefficients
        # are read by nothing (4 rows of 2), and channel 2's slopes multiply 0 (2 rows of 2)
        assert {k: off[k] for k in hyper} == hyper
        assert off["c1.weight"] == 27      # channel 2's kernels are zero already; channel 5's still feed b
        assert off["c2.weight"] == 72      # channel 2 of the first activation is alive through max(b1, b2)
