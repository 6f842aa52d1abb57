"""Constants that meet live signal in a product keep the weights that make them; constants that add do not."""
import pytest
import torch
import torch.nn.functional as F
from torch import nn

import connectome
from soundness import apply_masks

TRACERS = ["fx", "export", "export-core"]


class LearnedQuery(nn.Module):
    """Attention pooling with a learned query (timm's attention-pool heads, Perceiver, DETR's queries)."""

    def __init__(self):
        super().__init__()
        self.latents = nn.Parameter(torch.randn(1, 2, 8))
        self.wq, self.wk, self.wv = nn.Linear(8, 8, bias=False), nn.Linear(8, 8, bias=False), nn.Linear(8, 8, bias=False)
        self.out = nn.Linear(8, 3, bias=False)

    def forward(self, x):
        q = self.wq(self.latents).expand(x.shape[0], -1, -1)
        return self.out(F.scaled_dot_product_attention(q, self.wk(x), self.wv(x))).mean(1)


class ClassTokenQuery(nn.Module):
    """A projected class token joins the tokens; the output is read at its position."""

    def __init__(self):
        super().__init__()
        self.cls = nn.Parameter(torch.randn(1, 1, 8))
        self.proj = nn.Linear(8, 8, bias=False)
        self.attn = nn.MultiheadAttention(8, 2, bias=False, batch_first=True)
        self.head = nn.Linear(8, 2, bias=False)

    def forward(self, x):
        t = torch.cat([self.proj(self.cls).expand(x.shape[0], -1, -1), x], 1)
        return self.head(self.attn(t, t, t, need_weights=False)[0][:, 0])


class Film(nn.Module):
    """A scale computed from a learned embedding multiplies the signal; an offset only adds."""

    def __init__(self):
        super().__init__()
        self.style = nn.Parameter(torch.randn(1, 4))
        self.scale, self.shift = nn.Linear(4, 6, bias=False), nn.Linear(4, 6, bias=False)
        self.a, self.out = nn.Linear(5, 6, bias=False), nn.Linear(6, 2, bias=False)

    def forward(self, x):
        return self.out(torch.relu(self.a(x) * self.scale(self.style)) + self.shift(self.style))


@pytest.mark.parametrize("tracer", TRACERS)
@pytest.mark.parametrize("cls,shape", [(LearnedQuery, (2, 5, 8)), (ClassTokenQuery, (2, 4, 8))])
def test_a_constant_query_keeps_its_weights_and_zeroing_the_rest_is_sound(cls, shape, tracer):
    torch.manual_seed(0)
    m = cls().eval()
    first = m.wv if cls is LearnedQuery else m.attn.out_proj
    with torch.no_grad():
        first.weight[:2] = 0        # kill two units so that some weights are ineffective
    res = connectome.analyze(m, input_shape=shape, tracer=tracer)
    maker = "wq.weight" if cls is LearnedQuery else "proj.weight"
    assert res.effective_masks[maker].all()
    assert res.params_effective < res.params_nonzero
    x = torch.randn(shape)
    with torch.no_grad():
        assert torch.equal(m(x), apply_masks(m, res.effective_masks)(x))


@pytest.mark.parametrize("tracer", TRACERS)
def test_a_constant_that_only_adds_stays_foldable(tracer):
    res = connectome.analyze(Film(), input_shape=(1, 5), tracer=tracer)
    assert res.effective_masks["scale.weight"].all()        # multiplies the live a(x)
    assert not res.effective_masks["shift.weight"].any()    # only adds: a bias in disguise


def test_a_constant_meeting_a_dead_branch_stays_ineffective():
    m = Film()
    with torch.no_grad():
        m.a.weight.zero_()          # a(x) is exactly zero: the scale multiplies nothing
    res = connectome.analyze(m, input_shape=(1, 5))
    assert res.collapsed and res.params_effective == 0


class OffsetThenProduct(nn.Module):
    """A constant made by weights is added into live signal, and the sum multiplies live signal:
    ``(a(x) + w(latent)) * b(x)`` holds ``w(latent) * b(x)``, a product of the constant with the input."""

    def __init__(self):
        super().__init__()
        self.latent = nn.Parameter(torch.randn(1, 4))
        self.w, self.a, self.b = (nn.Linear(4, 4, bias=False) for _ in range(3))
        self.out = nn.Linear(4, 2, bias=False)

    def forward(self, x):
        return self.out((self.a(x) + self.w(self.latent)) * self.b(x))


@pytest.mark.parametrize("tracer", TRACERS)
def test_a_constant_added_into_signal_that_then_multiplies_keeps_its_weights(tracer):
    m = OffsetThenProduct()
    with torch.no_grad():
        m.b.weight[3] = 0           # unit 3 of the product is zero: w's row 3 multiplies nothing
    res = connectome.analyze(m, input_shape=(2, 4), tracer=tracer)
    w = res.effective_masks["w.weight"]
    assert w[:3].all() and not w[3].any()
    x = torch.randn(2, 4)
    with torch.no_grad():
        assert torch.equal(m(x), apply_masks(m, res.effective_masks)(x))
