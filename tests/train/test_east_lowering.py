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
@pytest.mark.parametrize("beta", [1.0, 0.5, 0.0])
def test_dyrelu_is_lowered_soundly_and_tightly(tracer, beta):
    m = _net(beta)
    x = torch.randn(4, 3, 8, 8)
    res = connectome.analyze(m, x, tracer=tracer)
    base = zero_additive(m)
    with torch.no_grad():
        assert torch.allclose(base(x), apply_masks(base, res.effective_masks)(x), atol=1e-6)
    # the hyper-networks are followed, kept dense and not counted
    assert set(res.effective_masks) == {"c1.weight", "c2.weight", "fc.weight"} and res.params_total == 824
    assert "4 weight tensors kept dense (DyReLU hyper-networks) are not counted" in res.notes
    off = {k: int((~v).sum()) for k, v in res.effective_masks.items()}
    if beta == 0.0:  # a ReLU: dead channels stay dead, and channel 5's kernels feed nothing
        assert off["c1.weight"] == 2 * 27 and off["c2.weight"] == 72 + 72 + 54
    else:
        # channel 5's kernels still feed the pooled input of every channel's coefficients, and channel 2
        # of the first activation is alive through max(b_1, b_2): only the zeros are ineffective
        assert off["c1.weight"] == 27 and off["c2.weight"] == 72
