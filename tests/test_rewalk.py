"""A walk redone only where masks changed equals the whole walk done again, on many idioms and both tracers."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from connectome.graph.lower import lower
from connectome.graph.rewalk import rewalk, same
from connectome.graph.trace import trace
from connectome.graph.walk import walk
from connectome.io.masks import MaskSource, prunable_weights


class Tied(nn.Module):
    def __init__(self):
        super().__init__()
        self.a, self.b = nn.Linear(6, 6), nn.Linear(6, 3)

    def forward(self, x):
        return self.b(torch.relu(self.a(torch.relu(self.a(x)))))


class Residual(nn.Module):
    def __init__(self):
        super().__init__()
        self.inp, self.f1, self.f2, self.out = nn.Linear(5, 8), nn.Linear(8, 12), nn.Linear(12, 8), nn.Linear(8, 2)

    def forward(self, x):
        h = self.inp(x)
        h = h + self.f2(torch.relu(self.f1(h)))
        return self.out(torch.relu(h))


class Gated(nn.Module):  # a Llama-style MLP: down(silu(gate(x)) * up(x))
    def __init__(self):
        super().__init__()
        self.gate, self.up, self.down = nn.Linear(6, 10, bias=False), nn.Linear(6, 10, bias=False), nn.Linear(10, 6)

    def forward(self, x):
        return self.down(nn.functional.silu(self.gate(x)) * self.up(x))


class Attention(nn.Module):
    def __init__(self):
        super().__init__()
        self.emb, self.attn, self.head = (
            nn.Embedding(11, 8),
            nn.MultiheadAttention(8, 2, batch_first=True),
            nn.Linear(8, 5),
        )

    def forward(self, x):
        h = self.emb(x)
        return self.head(self.attn(h, h, h, need_weights=False)[0] + h)


IDIOMS = {
    "mlp": (
        lambda: nn.Sequential(nn.Linear(6, 9), nn.ReLU(), nn.Linear(9, 7), nn.ReLU(), nn.Linear(7, 3)),
        (2, 6),
        None,
    ),
    "conv": (
        lambda: nn.Sequential(
            nn.Conv2d(3, 6, 3, padding=1),
            nn.BatchNorm2d(6),
            nn.ReLU(),
            nn.Conv2d(6, 4, 3),
            nn.Flatten(),
            nn.Linear(64, 3),
        ),
        (1, 3, 6, 6),
        None,
    ),
    "tied": (Tied, (2, 6), None),
    "residual": (Residual, (2, 5), None),
    "gated": (Gated, (2, 6), None),
    "attention": (Attention, (1, 4), torch.long),
}


def _shapes(model: nn.Module) -> dict[str, torch.Size]:
    params = dict(model.named_parameters())
    return {n: params[n].shape for n in prunable_weights(model)}


def _masks(model: nn.Module, gen: torch.Generator, keep: float) -> dict[str, torch.Tensor]:
    return {n: torch.rand(s, generator=gen) < keep for n, s in _shapes(model).items()}


def _changed(masks: dict, names: list[str], gen: torch.Generator, kind: int) -> dict[str, torch.Tensor]:
    """New masks for ``names``: a few entries off (kind 0), a whole row off (1) or a whole column on (2)."""
    out = dict(masks)
    for n in names:
        m = masks[n].clone()
        flat = m.reshape(m.shape[0], -1)
        if kind == 0:
            flat &= torch.rand(flat.shape, generator=gen) > 0.15
        elif kind == 1:
            flat[int(torch.randint(flat.shape[0], (1,), generator=gen))] = False
        else:
            flat[:, int(torch.randint(flat.shape[1], (1,), generator=gen))] = True
        out[n] = m
    return out


def _traced(idiom: str, tracer: str):
    make, shape, dtype = IDIOMS[idiom]
    torch.manual_seed(0)
    model = make().eval()
    return model, trace(model, input_shape=shape, tracer=tracer, input_dtype=dtype)


def _assert_same_walk(got, want, seed: int) -> None:
    assert got.effective.keys() == want.effective.keys()
    for k in want.effective:
        assert torch.equal(got.effective[k].bool(), want.effective[k].bool()), (seed, k)
    for node in want.fwd:
        assert same(got.fwd.get(node), want.fwd[node]), (seed, node.name)
    for node in want.bwd:
        assert same(got.bwd.get(node), want.bwd[node]), (seed, node.name)


@pytest.mark.parametrize("tracer", ["fx", "export", "export-core"])
@pytest.mark.parametrize("idiom", IDIOMS)
def test_a_walk_redone_where_masks_changed_equals_the_whole_walk(idiom, tracer):
    model, t = _traced(idiom, tracer)
    names = sorted(prunable_weights(model))
    quick = 0
    for seed in range(12):
        gen = torch.Generator().manual_seed(seed)
        before = _masks(model, gen, 0.6 + 0.03 * seed)
        src = MaskSource(model, before).track()
        g = lower(t, src)
        w = walk(g)
        pick = [names[i] for i in torch.randperm(len(names), generator=gen)[: 1 + seed % 2].tolist()]
        after = _changed(before, pick, gen, seed % 3)
        w2 = rewalk(g, w, pick, MaskSource(model, after).track(), src.readers or {})
        if w2 is None:
            continue
        quick += 1
        _assert_same_walk(w2, walk(lower(t, MaskSource(model, after))), seed)
    if idiom != "tied":  # a weight used twice is never redone alone
        assert quick > 0, "no change was confirmed locally: the test checked nothing"


def test_a_change_that_kills_a_unit_is_not_confirmed_locally():
    model = nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 2))
    t = trace(model, input_shape=(1, 3))
    ones = {n: torch.ones(s, dtype=torch.bool) for n, s in _shapes(model).items()}
    src = MaskSource(model, ones).track()
    g = lower(t, src)
    w = walk(g)
    dead_row = dict(ones, **{"0.weight": ones["0.weight"].clone()})
    dead_row["0.weight"][1] = False  # unit 1 sees no input: layer 2's column 1 goes ineffective
    assert rewalk(g, w, ["0.weight"], MaskSource(model, dead_row).track(), src.readers or {}) is None
    thinner = dict(ones, **{"0.weight": ones["0.weight"].clone()})
    thinner["0.weight"][1, 0] = False  # every unit still sees an input and reaches an output
    w2 = rewalk(g, w, ["0.weight"], MaskSource(model, thinner).track(), src.readers or {})
    assert w2 is not None and torch.equal(w2.effective["0.weight"], thinner["0.weight"])


def test_without_a_record_of_who_read_a_mask_there_is_no_shortcut():
    model = nn.Sequential(nn.Linear(3, 2))
    t = trace(model, input_shape=(1, 3))
    g = lower(t, MaskSource(model))  # not tracked
    assert rewalk(g, walk(g), ["0.weight"], MaskSource(model), {}) is None


@pytest.mark.parametrize("tracer", ["fx", "export", "export-core"])
@pytest.mark.parametrize("idiom", IDIOMS)
def test_ops_lowered_ahead_with_stand_in_masks_give_the_same_walk(idiom, tracer):
    """What reads no mask is lowered once (before the masks are known) and taken as it is later."""
    from connectome.graph.lower import mask_free

    model, t = _traced(idiom, tracer)
    ones = {n: torch.ones(s, dtype=torch.bool) for n, s in _shapes(model).items()}
    reuse = mask_free(lower(t, MaskSource(model, ones).track()))
    assert reuse and all(op.op is not None for op in reuse.values())
    for seed in range(4):
        masks = _masks(model, torch.Generator().manual_seed(seed), 0.5)
        g = lower(t, MaskSource(model, masks), reuse)
        assert any(g.ops[n] is reuse[n].op for n in reuse)
        _assert_same_walk(walk(g), walk(lower(t, MaskSource(model, masks))), seed)


def test_an_op_that_read_a_mask_is_lowered_again():
    from connectome.graph.lower import mask_free

    model = nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 2))
    t = trace(model, input_shape=(1, 3))
    g = lower(t, MaskSource(model).track())
    reuse = mask_free(g)
    linears = [n for n, op in g.ops.items() if op.weights]
    assert linears and not any(n in reuse for n in linears)  # both Linear layers read their masks
    assert mask_free(lower(t, MaskSource(model))) == {}  # untracked: nothing is known to read no mask


class LearnedQuery(nn.Module):
    """A constant made by weights (``wq(latents)``) mixed with live input; only unit 0 of ``L`` meets
    live signal in a product, both reach an output additively."""

    def __init__(self):
        super().__init__()
        self.latents = nn.Parameter(torch.ones(1, 2))
        self.wq, self.L, self.z = nn.Linear(2, 2, bias=False), nn.Linear(4, 2, bias=False), nn.Linear(2, 2, bias=False)

    def forward(self, x):
        a = self.L(torch.cat([x, self.wq(self.latents)], -1))
        return a, (a * self.z(x))[..., :1]


def test_a_constant_that_comes_to_meet_live_signal_is_found_by_the_partial_walk():
    """The statuses stay the same but the learned query now flows into the product: ``wq`` turns effective."""
    model = LearnedQuery().eval()
    t = trace(model, input_shape=(1, 2))
    ones = torch.ones(2, 2, dtype=torch.bool)
    old = {"wq.weight": ones, "z.weight": ones, "latents": torch.ones(1, 2, dtype=torch.bool)}
    old["L.weight"] = torch.tensor([[1, 0, 0, 0], [0, 1, 1, 0]], dtype=torch.bool)  # the query reaches unit 1
    new = dict(old, **{"L.weight": torch.tensor([[1, 0, 1, 0], [0, 1, 0, 0]], dtype=torch.bool)})  # unit 0
    src = MaskSource(model, old).track()
    g = lower(t, src)
    w = walk(g)
    w2 = rewalk(g, w, ["L.weight"], MaskSource(model, new).track(), src.readers or {})
    full = walk(lower(t, MaskSource(model, new)))
    assert w2 is not None and full.effective["wq.weight"].any()
    _assert_same_walk(w2, full, 0)


class SignOfProduct(nn.Module):
    """A binarised weight computed from two parameters: each counts whole when any of it is effective."""

    def __init__(self):
        super().__init__()
        self.a, self.b = nn.Parameter(torch.ones(2, 3)), nn.Parameter(torch.ones(2, 3))

    def forward(self, x):
        return nn.functional.linear(x, torch.sign(self.a * self.b))


def test_an_op_that_reads_its_masks_only_for_the_effective_masks_is_not_reused():
    from connectome.graph.lower import mask_free

    model = SignOfProduct().eval()
    t = trace(model, input_shape=(1, 3))
    ones = {k: torch.ones(2, 3, dtype=torch.bool) for k in ("a", "b")}
    reuse = mask_free(lower(t, MaskSource(model, ones).track()))
    real = dict(ones, a=torch.tensor([[1, 0, 1], [1, 1, 1]], dtype=torch.bool))
    got = walk(lower(t, MaskSource(model, real), reuse)).effective["a"]
    assert torch.equal(got, walk(lower(t, MaskSource(model, real))).effective["a"]) and not got.all()
