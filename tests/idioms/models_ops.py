"""Gather and scatter with constant indices, unfold/fold, movedim, fft, pixel shuffle, views, permutes,
chunk/cat, roll/flip, repeat, cumulative and order statistics over tokens, EmbeddingBag, where.

Each op moves units around (an index map) or mixes positions but not features; the kill makes some units
dead and the map says which downstream weights read them.
"""
import torch
import torch.nn.functional as F
from torch import nn

from .idiom import Idiom, cols, ids, kills, randn, rows, seeded

D = 8


class Gather(nn.Module):
    """``how``: gather, index_select or list (advanced indexing with a Python list) of constant indices."""

    def __init__(self, how: str):
        super().__init__()
        self.how = how
        self.a, self.out = nn.Linear(6, D), nn.Linear(4, 3)
        self.register_buffer("idx", torch.tensor([1, 1, 3, 5]))

    def forward(self, x):
        h = F.relu(self.a(x))
        if self.how == "gather":
            g = torch.gather(h, 1, self.idx.unsqueeze(0).expand(x.shape[0], -1))
        elif self.how == "index_select":
            g = h.index_select(1, self.idx)
        else:
            g = h[..., [1, 1, 3, 5]]
        return self.out(g)


class Permute(nn.Module):
    def __init__(self):
        super().__init__()
        self.a, self.out = nn.Linear(6, D), nn.Linear(D, 3)
        self.register_buffer("perm", torch.tensor([7, 6, 5, 4, 0, 1, 2, 3]))

    def forward(self, x):
        return self.out(F.relu(self.a(x))[:, self.perm])


class ScatterConst(nn.Module):
    def __init__(self):
        super().__init__()
        self.a, self.out = nn.Linear(6, D), nn.Linear(10, 3)
        self.register_buffer("idx", torch.tensor([[9, 0, 8, 1, 7, 2, 6, 3]]))

    def forward(self, x):
        h = F.relu(self.a(x))
        z = torch.zeros(x.shape[0], 10)
        return self.out(z.scatter(1, self.idx.expand(x.shape[0], -1), h))


class TensorUnfold(nn.Module):
    """``Tensor.unfold``: sliding windows of a 1-d sequence, flattened into features."""

    def __init__(self):
        super().__init__()
        self.conv, self.out = nn.Conv1d(3, 4, 1), nn.Linear(4 * 3 * 3, 3)

    def forward(self, x):                       # (B, 3, 8) -> windows of 3, step 2: 3 windows
        return self.out(F.relu(self.conv(x)).unfold(2, 3, 2).flatten(1))


class Im2col(nn.Module):
    """F.unfold: non-overlapping 2x2 patches as tokens (channel-major features)."""

    def __init__(self):
        super().__init__()
        self.conv, self.proj, self.out = nn.Conv2d(3, 4, 1), nn.Linear(16, D), nn.Linear(D, 3)

    def forward(self, x):                       # (B, 3, 4, 4)
        p = F.unfold(F.relu(self.conv(x)), kernel_size=2, stride=2).transpose(1, 2)
        return self.out(F.relu(self.proj(p)).mean(1))


class Col2im(nn.Module):
    """F.fold with overlapping 3x3 patches: tokens -> patch features -> an image."""

    def __init__(self):
        super().__init__()
        self.to_patch = nn.Linear(6, 4 * 9)
        self.conv, self.head = nn.Conv2d(4, 4, 1), nn.Linear(4, 3)

    def forward(self, x):                       # (B, 16, 6): 16 patch positions of a 4x4 map
        cols_ = F.relu(self.to_patch(x)).transpose(1, 2)
        img = F.fold(cols_, output_size=(4, 4), kernel_size=3, padding=1)
        return self.head(F.relu(self.conv(img)).mean((2, 3)))


class UnfoldFold(nn.Module):
    """Overlapping unfold, a per-patch linear map, fold back (a convolution written by hand)."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 1)
        self.mix = nn.Linear(4 * 9, 2 * 9)
        self.head = nn.Linear(2, 3)

    def forward(self, x):                       # (B, 3, 4, 4)
        p = F.unfold(F.relu(self.conv(x)), 3, padding=1)              # (B, 36, 16)
        q = self.mix(p.transpose(1, 2)).transpose(1, 2)               # (B, 18, 16)
        return self.head(F.fold(q, (4, 4), 3, padding=1).mean((2, 3)))


class Movedim(nn.Module):
    def __init__(self):
        super().__init__()
        self.c1, self.lin, self.c2 = nn.Conv2d(3, D, 1), nn.Linear(D, D), nn.Conv2d(D, 4, 1)

    def forward(self, x):
        h = F.relu(self.c1(x)).movedim(1, -1)
        return self.c2(F.relu(self.lin(h)).movedim(-1, 1)).mean((2, 3))


class NonContiguousLinear(nn.Module):
    """A Linear applied to a transposed (non-contiguous) input: core ATen reshapes it into an ``mm``."""

    def __init__(self):
        super().__init__()
        self.a, self.b = nn.Linear(4, D), nn.Linear(D, 3)

    def forward(self, x):                      # (2, 4 features, 5 tokens)
        return self.b(F.relu(self.a(x.transpose(1, 2)))).mean(1)


class FftTokens(nn.Module):
    """rfft over tokens, a learned real filter, irfft: mixes positions, keeps features separate."""

    def __init__(self):
        super().__init__()
        self.a, self.out = nn.Linear(6, D), nn.Linear(D, 3)
        self.filt = nn.Parameter(torch.randn(5, D))           # 8 tokens -> 5 frequencies

    def forward(self, x):                       # (B, 8, 6)
        h = F.relu(self.a(x))
        f = torch.fft.rfft(h, dim=1) * self.filt
        return self.out(torch.fft.irfft(f, n=8, dim=1))


class Fft2Spatial(nn.Module):
    """GFNet: rfft2 over the spatial dims with a learned complex filter (view_as_complex)."""

    def __init__(self):
        super().__init__()
        self.c1, self.c2 = nn.Conv2d(3, 4, 1), nn.Conv2d(4, 4, 1)
        self.weight_c = nn.Parameter(torch.randn(4, 4, 3, 2))

    def forward(self, x):                       # (B, 3, 4, 4)
        h = F.relu(self.c1(x))
        f = torch.fft.rfft2(h, norm="ortho") * torch.view_as_complex(self.weight_c)
        return self.c2(torch.fft.irfft2(f, s=(4, 4), norm="ortho")).mean((2, 3))


class Shuffle(nn.Module):
    def __init__(self, unshuffle: bool):
        super().__init__()
        self.unshuffle = unshuffle
        if unshuffle:
            self.c1, self.c2 = nn.Conv2d(3, 2, 1), nn.Conv2d(8, 4, 1)
        else:
            self.c1, self.c2 = nn.Conv2d(3, 16, 1), nn.Conv2d(4, 4, 3, padding=1)

    def forward(self, x):
        h = F.relu(self.c1(x))
        h = F.pixel_unshuffle(h, 2) if self.unshuffle else nn.functional.pixel_shuffle(h, 2)
        return self.c2(h).mean((2, 3))


class Views(nn.Module):
    """view, permute, reshape, chunk, cat in another order."""

    def __init__(self):
        super().__init__()
        self.a, self.b = nn.Linear(6, 12), nn.Linear(12, 3)

    def forward(self, x):
        h = F.relu(self.a(x)).view(-1, 3, 4).permute(0, 2, 1).reshape(x.shape[0], 12)
        p, q, r = h.chunk(3, dim=1)
        return self.b(torch.cat([r, p, q], 1))


class SplitMergeHeads(nn.Module):
    def __init__(self):
        super().__init__()
        self.a, self.b = nn.Linear(6, D), nn.Linear(D, 3)

    def forward(self, x):                       # (B, T, 6)
        b, t, _ = x.shape
        h = F.relu(self.a(x)).view(b, t, 2, 4).transpose(1, 2)       # (B, 2, T, 4)
        h = h.flip(1).transpose(1, 2).contiguous().view(b, t, D)    # heads swapped
        return self.b(h)


class StackUnbind(nn.Module):
    def __init__(self):
        super().__init__()
        self.a, self.b = nn.Linear(6, D), nn.Linear(D, 3)
        self.unflat = nn.Unflatten(1, (2, 4))

    def forward(self, x):
        u, v = self.unflat(F.relu(self.a(x))).unbind(1)
        return self.b(torch.stack([v, u], dim=1).flatten(1))


class RollFlip(nn.Module):
    def __init__(self):
        super().__init__()
        self.a, self.b = nn.Linear(6, D), nn.Linear(D, 3)

    def forward(self, x):
        h = F.relu(self.a(x))
        return self.b(torch.roll(h, 1, dims=1) + h.flip(1))


class RepeatTile(nn.Module):
    def __init__(self):
        super().__init__()
        self.a, self.b = nn.Linear(6, 4), nn.Linear(12, 3)

    def forward(self, x):
        h = F.relu(self.a(x))
        return self.b(torch.cat([h.repeat(1, 2), h.unsqueeze(1).expand(-1, 1, -1).flatten(1)], 1))


class TokenStats(nn.Module):
    """cumsum, topk values and sort along tokens: positions mix, features stay apart."""

    def __init__(self, how: str):
        super().__init__()
        self.how = how
        self.a, self.b = nn.Linear(6, D), nn.Linear(D, 3)

    def forward(self, x):                       # (B, T, 6)
        h = F.relu(self.a(x))
        if self.how == "cumsum":
            return self.b(h.cumsum(1))
        if self.how == "topk":
            return self.b(h.topk(2, dim=1).values)
        return self.b(torch.sort(h, dim=1, descending=True).values[:, :3])


class Bilinear2Input(nn.Module):
    """``einsum('btd,bsd->bts')`` of two live operands, then the scores weight the second operand."""

    def __init__(self):
        super().__init__()
        self.a, self.c, self.out = nn.Linear(6, D), nn.Linear(5, D), nn.Linear(D, 3)

    def forward(self, x1, x2):
        p, q = F.relu(self.a(x1)), F.relu(self.c(x2))
        s = torch.einsum("btd,bsd->bts", p, q)
        return self.out(torch.einsum("bts,bsd->btd", s, q))


class Bag(nn.Module):
    def __init__(self):
        super().__init__()
        self.bag, self.out = nn.EmbeddingBag(20, D, mode="sum"), nn.Linear(D, 3)

    def forward(self, tok):
        return self.out(F.relu(self.bag(tok)))


class WhereConst(nn.Module):
    def __init__(self):
        super().__init__()
        self.a, self.out = nn.Linear(6, D), nn.Linear(D, 3)
        self.register_buffer("keep", torch.tensor([True, True, False, True, True, True, False, True]))

    def forward(self, x):
        return self.out(torch.where(self.keep, F.relu(self.a(x)), 0.0))


_X, _T = (randn(2, 6),), (randn(2, 4, 6),)
_IMG4 = (randn(2, 3, 4, 4),)

IDIOMS = [
    Idiom("gather_const_index", "ops", seeded(Gather, "gather"), _X, rows("a.weight", 3),
          note="a's units 0, 2, 4, 6, 7 are never gathered"),
    Idiom("index_select_const", "ops", seeded(Gather, "index_select"), _X, rows("a.weight", 3)),
    Idiom("list_index_const", "ops", seeded(Gather, "list"), _X, rows("a.weight", 3)),
    Idiom("permute_features_index", "ops", seeded(Permute), _X, rows("a.weight", 0, 6)),
    Idiom("scatter_const_index", "ops", seeded(ScatterConst), _X, rows("a.weight", 2),
          note="out columns 4 and 5 read the zeros that no unit was scattered to"),
    Idiom("tensor_unfold_windows", "ops", seeded(TensorUnfold), (randn(2, 3, 8),), rows("conv.weight", 1)),
    Idiom("f_unfold_patches", "ops", seeded(Im2col), _IMG4, rows("conv.weight", 0)),
    Idiom("f_fold_overlapping", "ops", seeded(Col2im), (randn(2, 16, 6),), rows("to_patch.weight", *range(9)),
          note="rows 0..8 are channel 0 of every patch: conv's input channel 0 dies"),
    Idiom("unfold_fold_roundtrip", "ops", seeded(UnfoldFold), _IMG4,
          kills(rows("conv.weight", 1), cols("head.weight", 0))),
    Idiom("movedim_channels_last", "ops", seeded(Movedim), _IMG4, rows("c1.weight", 0, 1)),
    Idiom("noncontiguous_linear", "ops", seeded(NonContiguousLinear), (randn(2, 4, 5),),
          kills(rows("a.weight", 0, 1), cols("b.weight", 2))),
    Idiom("fft_tokens", "ops", seeded(FftTokens), (randn(2, 8, 6),), rows("a.weight", 0, 1)),
    Idiom("fft2_gfnet_filter", "ops", seeded(Fft2Spatial), _IMG4, rows("c1.weight", 2)),
    Idiom("pixel_shuffle", "ops", seeded(Shuffle, False), _IMG4, rows("c1.weight", 0, 1, 2, 3),
          note="c1 channels 0..3 are output channel 0 after the shuffle"),
    Idiom("pixel_unshuffle", "ops", seeded(Shuffle, True), _IMG4, rows("c1.weight", 1),
          note="c1 channel 1 becomes channels 4..7"),
    Idiom("view_permute_chunk_cat", "ops", seeded(Views), _X, rows("a.weight", 0, 5)),
    Idiom("split_merge_heads", "ops", seeded(SplitMergeHeads), _T, rows("a.weight", 0, 5)),
    Idiom("unflatten_unbind_stack", "ops", seeded(StackUnbind), _X, rows("a.weight", 1, 6)),
    Idiom("roll_flip_features", "ops", seeded(RollFlip), _X, rows("a.weight", 0, 6)),
    Idiom("repeat_expand_features", "ops", seeded(RepeatTile), _X, rows("a.weight", 2)),
    Idiom("cumsum_tokens", "ops", seeded(TokenStats, "cumsum"), _T, rows("a.weight", 0, 1)),
    Idiom("topk_tokens", "ops", seeded(TokenStats, "topk"), _T, rows("a.weight", 0, 1)),
    Idiom("sort_tokens", "ops", seeded(TokenStats, "sort"), _T, rows("a.weight", 0, 1)),
    Idiom("einsum_two_live_operands", "ops", seeded(Bilinear2Input), (randn(2, 3, 6), randn(2, 4, 5, seed=1)),
          kills(rows("a.weight", 0), rows("c.weight", 1))),
    Idiom("embedding_bag_sum", "ops", seeded(Bag), (ids(2, 4, high=20),), cols("bag.weight", 0, 1), vocab=20),
    Idiom("where_const_mask", "ops", seeded(WhereConst), _X, rows("a.weight", 0)),
]
