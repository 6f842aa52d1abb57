"""Tied and shared weights: one parameter tensor used by several ops, or through a computed tensor.

The kills are chosen so that an entry of the shared tensor is ineffective only if it is ineffective in
*every* use: an analysis that looks at one use only, or loses the tensor behind ``s * W`` / ``W.t()``,
shows up as unsound or as finding nothing.
"""
import torch
import torch.nn.functional as F
from torch import nn

from .idiom import Idiom, cols, ids, kills, randn, rows, seeded, zero

V, D = 20, 8


class TiedHead(nn.Module):
    """emb -> fc1 -> fc2 -> head, with head the embedding matrix (module tie, F.linear or W.t())."""

    def __init__(self, how: str):
        super().__init__()
        self.how = how
        self.emb = nn.Embedding(V, D)
        self.fc1, self.fc2 = nn.Linear(D, 12), nn.Linear(12, D)
        self.head = nn.Linear(D, V, bias=False)
        if how == "module":
            self.head.weight = self.emb.weight
        else:
            del self.head

    def forward(self, tok):
        h = F.relu(self.fc2(F.relu(self.fc1(self.emb(tok)))))
        if self.how == "module":
            return self.head(h)
        if self.how == "linear":
            return F.linear(h, self.emb.weight)
        return h @ self.emb.weight.t()


# features 0, 1 of the embedding feed nothing (fc1 columns) and the head reads dead units 0, 1 (fc2 rows):
# emb.weight[:, :2] is ineffective in both uses; fc1 row 5 dead makes fc2 column 5 ineffective
TIED_KILL = kills(cols("fc1.weight", 0, 1), rows("fc2.weight", 0, 1), rows("fc1.weight", 5))


class TwiceParallel(nn.Module):
    def __init__(self):
        super().__init__()
        self.a, self.b = nn.Linear(6, D), nn.Linear(6, D)
        self.f, self.out = nn.Linear(D, D), nn.Linear(D, 3)

    def forward(self, x):
        return self.out(F.relu(self.f(F.relu(self.a(x)))) + F.relu(self.f(F.relu(self.b(x)))))


class TwiceSequential(nn.Module):
    def __init__(self):
        super().__init__()
        self.a, self.f, self.out = nn.Linear(6, D), nn.Linear(D, D), nn.Linear(D, 3)

    def forward(self, x):
        h = F.relu(self.f(F.relu(self.a(x))))
        return self.out(F.relu(self.f(h)))


class ScaledReuse(nn.Module):
    """A block reusing another block's weight times a learned scalar (weight-sharing sparse training)."""

    def __init__(self, conv: bool):
        super().__init__()
        self.conv = conv
        if conv:
            self.a, self.b = nn.Conv2d(3, D, 3, padding=1), nn.Conv2d(3, D, 3, padding=1)
            self.f = nn.Conv2d(D, D, 3, padding=1)
            self.out = nn.Linear(D, 3)
        else:
            self.a, self.b, self.f, self.out = nn.Linear(6, D), nn.Linear(6, D), nn.Linear(D, D), nn.Linear(D, 3)
        self.s = nn.Parameter(torch.tensor(0.7))

    def forward(self, x):
        h1, h2 = F.relu(self.a(x)), F.relu(self.b(x))
        if self.conv:
            y = self.f(h1) + F.conv2d(h2, self.s * self.f.weight, self.f.bias, padding=1)
            return self.out(F.relu(y).mean((2, 3)))
        return self.out(F.relu(self.f(h1) + F.linear(h2, self.s * self.f.weight, self.f.bias)))


class TransposeTied(nn.Module):
    """An autoencoder whose decoder is the encoder's weight transposed."""

    def __init__(self):
        super().__init__()
        self.enc, self.mid = nn.Linear(6, D), nn.Linear(D, D)

    def forward(self, x):
        m = F.relu(self.mid(F.relu(self.enc(x))))
        return F.linear(m, self.enc.weight.t())


class ViewWeight(nn.Module):
    """A weight stored flat (or as a matrix) and viewed/reshaped into the layer's shape."""

    def __init__(self, conv: bool):
        super().__init__()
        self.conv = conv
        if conv:
            self.w = nn.Parameter(torch.randn(D, 3 * 3 * 3) * 0.3)
            self.out = nn.Linear(D, 3)
        else:
            self.stem = nn.Linear(5, 6)
            self.w = nn.Parameter(torch.randn(12, 4) * 0.3)   # stored (12, 4), used as (8, 6)
            self.out = nn.Linear(D, 3)

    def forward(self, x):
        if self.conv:
            h = F.relu(F.conv2d(x, self.w.reshape(D, 3, 3, 3), padding=1))
            return self.out(h.mean((2, 3)))
        return self.out(F.relu(F.linear(F.relu(self.stem(x)), self.w.view(D, 6))))


class WSConv2d(nn.Conv2d):
    """Weight standardisation (BiT, NFNets): zeros of the stored weight become nonzero."""

    def forward(self, x):
        w = self.weight
        w = (w - w.mean(dim=(1, 2, 3), keepdim=True)) / (w.std(dim=(1, 2, 3), keepdim=True) + 1e-5)
        return F.conv2d(x, w, self.bias, self.stride, self.padding)


class WSNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.c1, self.c2 = WSConv2d(3, D, 3, padding=1), WSConv2d(D, D, 3, padding=1)
        self.out = nn.Linear(D, 3)

    def forward(self, x):
        return self.out(F.relu(self.c2(F.relu(self.c1(x)))).mean((2, 3)))


# c1's output channels 0, 1 are all-zero rows, zero after standardisation (0 / (0 + eps)): c2 reads dead
# channels there, yet each stored entry of a live c2 row moves that row's mean and std, so c2's columns 0, 1
# stay effective as stored entries. c2[3, 4] is zeroed but standardised to nonzero. out's columns 0, 1 are
# zero: c2's rows 0, 1 (standardised per row) are ineffective.
WS_KILL = kills(rows("c1.weight", 0, 1), zero("c2.weight", (3, 4)), cols("out.weight", 0, 1))


class RawParam(nn.Module):
    """A raw ``nn.Parameter`` used as a weight by einsum, matmul, @, addmm, baddbmm or tensordot."""

    def __init__(self, how: str):
        super().__init__()
        self.how = how
        self.stem, self.out = nn.Linear(5, 6), nn.Linear(D, 3)
        # einsum keeps the (out, in) layout; the others use (in, out)
        self.w = nn.Parameter(torch.randn(D, 6) * 0.4 if how == "einsum" else torch.randn(6, D) * 0.4)
        self.bias = nn.Parameter(torch.randn(D) * 0.1)

    def forward(self, x):
        h = F.relu(self.stem(x))
        if self.how == "einsum":
            y = torch.einsum("bti,oi->bto", h, self.w)
        elif self.how == "matmul":
            y = torch.matmul(h, self.w)
        elif self.how == "at":
            y = h @ self.w + self.bias
        elif self.how == "addmm":
            y = torch.addmm(self.bias, h.reshape(-1, 6), self.w).reshape(h.shape[0], h.shape[1], D)
        elif self.how == "baddbmm":
            y = torch.baddbmm(self.bias, h, self.w.expand(h.shape[0], 6, D))
        else:
            y = torch.tensordot(h, self.w, dims=([2], [0]))
        return self.out(F.relu(y))


# stem unit 0 dead: the weight's input row/column 0 is ineffective; out columns 0, 1 zero: so are the
# weight's outputs 0, 1 (whichever layout the raw parameter has)
RAW_KILL = kills(rows("stem.weight", 0), cols("out.weight", 0, 1))


class BilinearNet(nn.Module):
    def __init__(self, functional: bool):
        super().__init__()
        self.functional = functional
        self.a, self.b = nn.Linear(5, 6), nn.Linear(4, 5)
        if functional:
            self.w = nn.Parameter(torch.randn(D, 6, 5) * 0.3)
        else:
            self.bil = nn.Bilinear(6, 5, D)
        self.out = nn.Linear(D, 3)

    def forward(self, x1, x2):
        h1, h2 = F.relu(self.a(x1)), F.relu(self.b(x2))
        y = F.bilinear(h1, h2, self.w) if self.functional else self.bil(h1, h2)
        return self.out(F.relu(y))


_X = (randn(2, 6),)
_TOK = (ids(2, 5, high=V),)
_TOKS3 = (randn(2, 4, 5),)

IDIOMS = [
    Idiom("tied_head_module", "shared", seeded(TiedHead, "module"), _TOK, TIED_KILL, vocab=V,
          note="head.weight = emb.weight"),
    Idiom("tied_head_functional", "shared", seeded(TiedHead, "linear"), _TOK, TIED_KILL, vocab=V,
          note="F.linear(h, emb.weight)"),
    Idiom("tied_head_matmul_t", "shared", seeded(TiedHead, "t"), _TOK, TIED_KILL, vocab=V,
          note="h @ emb.weight.t()"),
    Idiom("module_twice_parallel", "shared", seeded(TwiceParallel), _X,
          kills(rows("a.weight", 0, 1), rows("b.weight", 0, 1)), note="f's columns 0, 1 dead in both calls"),
    Idiom("module_twice_sequential", "shared", seeded(TwiceSequential), _X,
          kills(rows("a.weight", 0, 1), rows("f.weight", 2)),
          note="f's columns 0, 1 are dead in the first call only: effective"),
    Idiom("shared_scaled_linear", "shared", seeded(ScaledReuse, False), _X,
          kills(rows("a.weight", 0, 1), rows("b.weight", 0, 1)), note="F.linear(x, s * W)"),
    Idiom("shared_scaled_conv", "shared", seeded(ScaledReuse, True), (randn(2, 3, 6, 6),),
          kills(rows("a.weight", 0, 1), rows("b.weight", 0, 1)), note="F.conv2d(x, s * W)"),
    Idiom("transpose_tied_autoencoder", "shared", seeded(TransposeTied), _X,
          kills(rows("mid.weight", 0, 1), cols("mid.weight", 0, 1)), note="F.linear(m, enc.weight.t())"),
    Idiom("weight_view_linear", "shared", seeded(ViewWeight, False), (randn(2, 5),),
          kills(rows("stem.weight", 0), cols("out.weight", 0, 1)), note="F.linear(x, w.view(8, 6)), w stored (12, 4)"),
    Idiom("weight_reshape_conv", "shared", seeded(ViewWeight, True), (randn(2, 3, 5, 5),),
          cols("out.weight", 0, 1), note="F.conv2d(x, w.reshape(8, 3, 3, 3))"),
    Idiom("weight_standardization", "shared", seeded(WSNet), (randn(2, 3, 5, 5),), WS_KILL,
          note="zeros of W become nonzero after standardisation; a live row's stored entries all matter"),
    Idiom("raw_param_einsum", "shared", seeded(RawParam, "einsum"), _TOKS3, RAW_KILL),
    Idiom("raw_param_matmul", "shared", seeded(RawParam, "matmul"), _TOKS3, RAW_KILL),
    Idiom("raw_param_at", "shared", seeded(RawParam, "at"), _TOKS3, RAW_KILL),
    Idiom("raw_param_addmm", "shared", seeded(RawParam, "addmm"), _TOKS3, RAW_KILL),
    Idiom("raw_param_baddbmm", "shared", seeded(RawParam, "baddbmm"), _TOKS3, RAW_KILL),
    Idiom("raw_param_tensordot", "shared", seeded(RawParam, "tensordot"), _TOKS3, RAW_KILL),
    Idiom("bilinear_module", "shared", seeded(BilinearNet, False), (randn(2, 5), randn(2, 4, seed=1)),
          kills(rows("a.weight", 0), cols("out.weight", 0))),
    Idiom("bilinear_functional", "shared", seeded(BilinearNet, True), (randn(2, 5), randn(2, 4, seed=1)),
          kills(rows("a.weight", 0), rows("b.weight", 1), cols("out.weight", 0))),
]
