"""Swin's window attention opened for compaction (connectome.compact.window), and masks carried through
opened attention: the opened module computes what torchvision's does, its dead projection rows go, and the
result analyses with no dead unit."""

import pytest
import torch
from torch import nn
from torch.nn.utils import prune

from connectome.analysis import analyze
from connectome.compact import compact
from connectome.compact.window import WindowAttention, window_merge, window_partition

sw = pytest.importorskip("torchvision.models.swin_transformer")


def _random(m: nn.Module, seed: int = 0) -> nn.Module:
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in m.parameters():
            p.copy_(torch.randn(p.shape, generator=gen, dtype=p.dtype))
    return m


@pytest.mark.parametrize("v2", [False, True])
@pytest.mark.parametrize("size", [(8, 8), (5, 6), (3, 3)])
@pytest.mark.parametrize("shift", [[0, 0], [2, 2]])
def test_the_opened_attention_computes_what_torchvision_computes(v2, size, shift):
    cls = sw.ShiftedWindowAttentionV2 if v2 else sw.ShiftedWindowAttention
    attn = _random(cls(8, [4, 4], shift, 2).double().eval())
    x = torch.randn(2, *size, 8, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    with torch.no_grad():
        want, got = attn(x), WindowAttention.of(attn)(x)
    assert float((want - got).abs().max()) <= 1e-12 * float(want.abs().max())
    names = set(dict(WindowAttention.of(attn).named_parameters()))
    assert {"qkv.weight", "qkv.bias", "proj.weight", "proj.bias"} <= names
    assert not any("cpb_mlp" in n for n in names)  # V2's position bias MLP is computed once, into a buffer


def test_partition_pads_rolls_and_merge_puts_every_element_back():
    x = torch.arange(2 * 5 * 6 * 3).reshape(2, 5, 6, 3)
    w = window_partition(x, [4, 4], [2, 2])
    assert w.shape == (2, 4, 16, 3)  # 5x6 padded to 8x8: four windows of 16 tokens
    assert int((w == 0).all(-1).sum()) == 2 * (64 - 30)  # the padding
    assert torch.equal(window_merge(w, 5, 6, [4, 4], [2, 2]), x)


def small_swin(v2: bool = False) -> nn.Module:
    block = {"block": sw.SwinTransformerBlockV2, "downsample_layer": sw.PatchMergingV2} if v2 else {}
    torch.manual_seed(0)
    return sw.SwinTransformer([4, 4], 16, [2, 2], [2, 4], [4, 4], num_classes=5, **block).double().eval()


@pytest.mark.parametrize("v2", [False, True])
def test_a_swin_loses_dead_projection_rows_and_keeps_its_outputs(v2):
    m = small_swin(v2)
    qkv = m.features[1][0].attn.qkv
    with torch.no_grad():
        qkv.weight[[3, 16 + 5, 32 + 7]] = 0  # a query, a key and a value row see no input
        m.features[1][1].mlp[3].weight[:, :6] = 0  # six hidden units of an MLP reach no output
    small = compact(m, input_shape=(1, 3, 24, 24))
    assert small.compaction.error <= 1e-9
    assert small.compaction.layers["features.1.0.attn.qkv"]["out"] == [45, 48]
    assert small.compaction.layers["features.1.1.mlp.0"]["out"] == [58, 64]
    x = torch.randn(2, 3, 24, 24, dtype=torch.float64, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        want, got = m(x), small(x)
    assert float((want - got).abs().max() / want.abs().max()) <= 1e-9
    res = analyze(small, input_shape=(1, 3, 24, 24))
    assert [r["name"] for r in res.layers if r["dead_in"] or r["dead_out"]] == []


def test_swin_masks_are_carried_to_the_kept_rows_by_their_own_names():
    m = small_swin()
    qkv = m.features[1][0].attn.qkv
    mask = (torch.rand(qkv.weight.shape, generator=torch.Generator().manual_seed(0)) < 0.5).double()
    mask[4] = 0
    prune.custom_from_mask(qkv, "weight", mask)
    small = compact(m, input_shape=(1, 3, 24, 24))
    kept = small.compaction.masks["features.1.0.attn.qkv.weight"]
    assert torch.equal(kept, mask[[r for r in range(48) if r != 4]])


def test_multihead_attention_masks_are_carried_to_the_split_projections():
    mha = nn.MultiheadAttention(8, 2, batch_first=True)

    class Wrap(nn.Module):
        def __init__(self):
            super().__init__()
            self.attn = mha

        def forward(self, x):
            return self.attn(x, x, x, need_weights=False)[0]

    m = Wrap().eval()
    mask = (torch.rand(24, 8, generator=torch.Generator().manual_seed(0)) < 0.6).float()
    mask[9] = 0  # key row 1: its channel holds its bias
    prune.custom_from_mask(mha, "in_proj_weight", mask)
    out_mask = (torch.rand(8, 8, generator=torch.Generator().manual_seed(1)) < 0.6).float()
    prune.custom_from_mask(mha.out_proj, "weight", out_mask)
    small = compact(m, input_shape=(1, 5, 8))
    masks = small.compaction.masks
    assert torch.equal(masks["attn.q.weight"], mask[:8])
    assert torch.equal(masks["attn.k.weight"], mask[[8, *range(10, 16)]])
    assert torch.equal(masks["attn.v.weight"], mask[16:])
    assert torch.equal(masks["attn.out.weight"], out_mask)
    assert small.compaction.error <= 1e-9


def test_multihead_attention_is_compacted_with_the_output_weight_it_runs_with():
    """nn.MultiheadAttention never calls its out_proj: a pruned out_proj.weight is the one computed when it
    was pruned, even after weight_orig changes (an optimiser step); the compaction keeps what runs."""

    class Enc(nn.Module):
        def __init__(self):
            super().__init__()
            self.attn, self.o = nn.MultiheadAttention(8, 2, batch_first=True), nn.Linear(8, 2)

        def forward(self, x):
            return self.o(self.attn(x, x, x, need_weights=False)[0])

    torch.manual_seed(0)
    m = Enc().eval()
    prune.l1_unstructured(m.attn.out_proj, "weight", 0.5)
    with torch.no_grad():
        m.attn.out_proj.weight_orig.mul_(2.0)
    small = compact(m, input_shape=(1, 5, 8))
    x = torch.randn(2, 5, 8, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        assert float((m(x) - small(x)).abs().max()) <= 1e-5
