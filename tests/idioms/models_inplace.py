"""In-place writes: a write into a tensor, or into a view of it, changes what later reads of that tensor see.

Each model writes live signal into units that are otherwise dead (an analysis that ignores the write calls
the writer's weights ineffective: unsound), or overwrites live units (their producers become ineffective).
"""
import torch
import torch.nn.functional as F
from torch import nn

from .idiom import Idiom, cols, kills, randn, rows, seeded

D = 8


class AddUnused(nn.Module):
    """``h.add_(b(x))`` with the return value unused."""

    def __init__(self):
        super().__init__()
        self.a, self.b, self.out = nn.Linear(6, D), nn.Linear(6, D), nn.Linear(D, 3)

    def forward(self, x):
        h = F.relu(self.a(x))
        h.add_(self.b(x))
        return self.out(h)


class MulGate(nn.Module):
    def __init__(self):
        super().__init__()
        self.a, self.g, self.out = nn.Linear(6, D), nn.Linear(6, D), nn.Linear(D, 3)

    def forward(self, x):
        h = self.a(x)
        h.mul_(torch.sigmoid(self.g(x)))
        return self.out(h)


class ViewMul(nn.Module):
    """``h[:, :3].mul_(c(x))``: a multiply through a slice view."""

    def __init__(self):
        super().__init__()
        self.a, self.c, self.out = nn.Linear(6, D), nn.Linear(6, 3), nn.Linear(D, 3)

    def forward(self, x):
        h = F.relu(self.a(x))
        h[:, :3].mul_(self.c(x))
        return self.out(h)


class NarrowAdd(nn.Module):
    def __init__(self):
        super().__init__()
        self.a, self.b, self.out = nn.Linear(6, D), nn.Linear(6, 2), nn.Linear(D, 3)

    def forward(self, x):
        h = F.relu(self.a(x))
        h.narrow(1, 0, 2).add_(self.b(x))
        return self.out(h)


class TransposeAdd(nn.Module):
    """Tokens (B, T, D); a conv1d result (B, D, T) added in place through ``h.transpose(1, 2)``."""

    def __init__(self):
        super().__init__()
        self.a, self.conv, self.out = nn.Linear(6, D), nn.Conv1d(6, D, 3, padding=1), nn.Linear(D, 3)

    def forward(self, x):                       # (B, T, 6)
        h = self.a(x)
        t = self.conv(x.transpose(1, 2))
        h.transpose(1, 2).add_(t)
        return self.out(F.relu(h))


class SetSlice(nn.Module):
    """``h[:, :2] = f(x)``: the overwritten units of ``a`` are ineffective, ``f`` is not."""

    def __init__(self):
        super().__init__()
        self.a, self.f, self.out = nn.Linear(6, D), nn.Linear(6, 2), nn.Linear(D, 3)

    def forward(self, x):
        h = F.relu(self.a(x))
        h[:, :2] = self.f(x)
        return self.out(h)


class SetSliceAdd(nn.Module):
    def __init__(self):
        super().__init__()
        self.a, self.f, self.out = nn.Linear(6, D), nn.Linear(6, 4), nn.Linear(D, 3)

    def forward(self, x):
        h = F.relu(self.a(x))
        h[:, 2:6] += self.f(x)
        return self.out(h)


class MoeIndexAdd(nn.Module):
    """Mixture of experts with a fixed routing: ``out.index_add_(0, idx, expert(x[idx]) * gate)``."""

    def __init__(self, gated: bool):
        super().__init__()
        self.gated = gated
        self.experts = nn.ModuleList([nn.Linear(6, D), nn.Linear(6, D)])
        self.router = nn.Linear(6, 2)
        self.head = nn.Linear(D, 3)
        self.register_buffer("route0", torch.tensor([0, 2, 4, 6]))
        self.register_buffer("route1", torch.tensor([1, 3, 5, 7]))

    def forward(self, x):                       # (2, 4, 6): 8 tokens
        flat = x.reshape(-1, 6)
        out = flat.new_zeros(flat.shape[0], D)
        probs = torch.softmax(self.router(flat), -1)
        for e, idx in enumerate((self.route0, self.route1)):
            y = self.experts[e](flat[idx])
            if self.gated:
                y = y * probs[idx, e:e + 1]
            out.index_add_(0, idx, y)
        return self.head(F.relu(out)).reshape(x.shape[0], x.shape[1], 3)


class ScatterAdd(nn.Module):
    def __init__(self):
        super().__init__()
        self.a, self.head = nn.Linear(6, D), nn.Linear(4, 3)
        self.register_buffer("idx", torch.tensor([[0, 0, 1, 1, 2, 2, 3, 3]]))

    def forward(self, x):
        h = F.relu(self.a(x))
        out = torch.zeros(x.shape[0], 4)
        out.scatter_add_(1, self.idx.expand(x.shape[0], -1), h)
        return self.head(out)


class IndexCopy(nn.Module):
    def __init__(self):
        super().__init__()
        self.a, self.f, self.head = nn.Linear(6, D), nn.Linear(6, 2), nn.Linear(D, 3)
        self.register_buffer("idx", torch.tensor([0, 1]))

    def forward(self, x):
        h = F.relu(self.a(x))
        h.index_copy_(1, self.idx, self.f(x))
        return self.head(h)


class MaskedFill(nn.Module):
    def __init__(self):
        super().__init__()
        self.a, self.head = nn.Linear(6, D), nn.Linear(D, 3)
        self.register_buffer("drop", torch.tensor([False, False, True, False, False, True, False, False]))

    def forward(self, x):
        h = F.relu(self.a(x))
        h.masked_fill_(self.drop, 0.0)
        return self.head(h)


class BoolIndexSet(nn.Module):
    """``h[:, mask] = g(x)`` with a constant boolean mask (``index_put_``)."""

    def __init__(self):
        super().__init__()
        self.a, self.g, self.head = nn.Linear(6, D), nn.Linear(6, 3), nn.Linear(D, 3)
        self.register_buffer("sel", torch.tensor([True, False, False, True, False, False, True, False]))

    def forward(self, x):
        h = F.relu(self.a(x))
        h[:, self.sel] = self.g(x)
        return self.head(h)


class IndexPutTransposed(nn.Module):
    """``h.t().index_put_((idx,), g(x).t(), accumulate=True)``: an accumulate through a transposed view."""

    def __init__(self):
        super().__init__()
        self.a, self.g, self.head = nn.Linear(6, D), nn.Linear(6, 2), nn.Linear(D, 3)
        self.register_buffer("idx", torch.tensor([3, 6]))

    def forward(self, x):
        h = F.relu(self.a(x))
        h.t().index_put_((self.idx,), self.g(x).t(), accumulate=True)
        return self.head(h)


class ReluInplace(nn.Module):
    def __init__(self):
        super().__init__()
        self.a, self.b, self.head = nn.Linear(6, D), nn.Linear(D, D), nn.Linear(D, 3)
        self.act = nn.ReLU(inplace=True)

    def forward(self, x):
        h = self.a(x)
        h.relu_()
        h = F.relu(self.b(h), inplace=True)
        return self.head(self.act(h))


class CopyIntoBuffer(nn.Module):
    """``buf = torch.zeros(...)``, then ``buf[:, :4].copy_(f(x))``: the buffer is live only through copies."""

    def __init__(self):
        super().__init__()
        self.f, self.g, self.head = nn.Linear(6, 4), nn.Linear(6, 4), nn.Linear(D, 3)

    def forward(self, x):
        buf = torch.zeros(x.shape[0], D)
        buf[:, :4].copy_(self.f(x))
        buf[:, 4:].copy_(self.g(x))
        return self.head(F.relu(buf))


class IaddResidual(nn.Module):
    """``h += b(relu(h))`` (Python's in-place add on a tensor)."""

    def __init__(self):
        super().__init__()
        self.a, self.b, self.head = nn.Linear(6, D), nn.Linear(D, D), nn.Linear(D, 3)

    def forward(self, x):
        h = self.a(x)
        h += self.b(F.relu(h))
        return self.head(h)


class SigmoidThenMul(nn.Module):
    """``h.sigmoid_(); h.mul_(b(x))``: sigmoid(0) = 0.5 is a constant that passes ``b``'s signal."""

    def __init__(self):
        super().__init__()
        self.a, self.b, self.head = nn.Linear(6, D), nn.Linear(6, D), nn.Linear(D, 3)

    def forward(self, x):
        h = self.a(x)
        h.sigmoid_()
        h.mul_(self.b(x))
        return self.head(h)


class ViewOfViewAdd(nn.Module):
    """``h.view(B, 2, 4)[:, 1].add_(g(x))`` writes units 4..7 of ``h``."""

    def __init__(self):
        super().__init__()
        self.a, self.g, self.head = nn.Linear(6, D), nn.Linear(6, 4), nn.Linear(D, 3)

    def forward(self, x):
        h = F.relu(self.a(x))
        h.view(x.shape[0], 2, 4)[:, 1].add_(self.g(x))
        return self.head(h)


class ZeroSlice(nn.Module):
    def __init__(self):
        super().__init__()
        self.a, self.head = nn.Linear(6, D), nn.Linear(D, 3)

    def forward(self, x):
        h = F.relu(self.a(x))
        h[:, 6:].zero_()
        return self.head(h)


class ClampInplaceChain(nn.Module):
    """``h.clamp_(min=0)`` then ``h.sub_(c(x))`` then ``h.div_(2)`` on one tensor."""

    def __init__(self):
        super().__init__()
        self.a, self.c, self.head = nn.Linear(6, D), nn.Linear(6, D), nn.Linear(D, 3)

    def forward(self, x):
        h = self.a(x)
        h.clamp_(min=0)
        h.sub_(self.c(x))
        h.div_(2)
        return self.head(h)


_X, _T = (randn(2, 6),), (randn(2, 4, 6),)

IDIOMS = [
    Idiom("add_inplace_unused", "inplace", seeded(AddUnused), _X,
          kills(rows("a.weight", 0, 1, 2), rows("b.weight", 2)), note="units 0, 1 live through b only"),
    Idiom("mul_inplace_gate", "inplace", seeded(MulGate), _X, kills(rows("a.weight", 0, 1), rows("g.weight", 3))),
    Idiom("view_slice_mul_inplace", "inplace", seeded(ViewMul), _X, rows("a.weight", 0, 4)),
    Idiom("narrow_add_inplace", "inplace", seeded(NarrowAdd), _X, rows("a.weight", 0, 1, 5)),
    Idiom("transpose_add_inplace", "inplace", seeded(TransposeAdd), _T,
          kills(rows("a.weight", 0, 1, 2), rows("conv.weight", 2))),
    Idiom("setitem_slice", "inplace", seeded(SetSlice), _X, rows("a.weight", 5),
          note="a's rows 0, 1 are overwritten: ineffective; f is not"),
    Idiom("setitem_slice_iadd", "inplace", seeded(SetSliceAdd), _X, rows("a.weight", 2, 3, 7)),
    Idiom("moe_index_add", "inplace", seeded(MoeIndexAdd, False), _T,
          kills(rows("experts.0.weight", 0, 1), rows("experts.1.weight", 0))),
    Idiom("moe_index_add_gated", "inplace", seeded(MoeIndexAdd, True), _T,
          kills(rows("experts.0.weight", 0, 1), rows("experts.1.weight", 0))),
    Idiom("scatter_add_inplace", "inplace", seeded(ScatterAdd), _X, rows("a.weight", 6, 7)),
    Idiom("index_copy_inplace", "inplace", seeded(IndexCopy), _X, rows("a.weight", 4)),
    Idiom("masked_fill_inplace", "inplace", seeded(MaskedFill), _X, rows("a.weight", 1)),
    Idiom("bool_index_setitem", "inplace", seeded(BoolIndexSet), _X, rows("a.weight", 1, 3)),
    Idiom("index_put_transposed_view", "inplace", seeded(IndexPutTransposed), _X, rows("a.weight", 3, 5)),
    Idiom("relu_inplace", "inplace", seeded(ReluInplace), _X, rows("a.weight", 0, 1)),
    Idiom("copy_into_zeros_buffer", "inplace", seeded(CopyIntoBuffer), _X, rows("f.weight", 1)),
    Idiom("iadd_residual", "inplace", seeded(IaddResidual), _X,
          kills(rows("a.weight", 0), rows("b.weight", 0), cols("b.weight", 1))),
    Idiom("sigmoid_inplace_then_mul", "inplace", seeded(SigmoidThenMul), _X,
          kills(rows("b.weight", 2), rows("a.weight", 3)), note="a's row 3 killed: h3 = 0.5 * b3 stays live"),
    Idiom("view_of_view_add_inplace", "inplace", seeded(ViewOfViewAdd), _X, rows("a.weight", 0, 4, 5)),
    Idiom("zero_slice_inplace", "inplace", seeded(ZeroSlice), _X, rows("a.weight", 0)),
    Idiom("clamp_sub_div_inplace", "inplace", seeded(ClampInplaceChain), _X,
          kills(rows("a.weight", 0, 1), rows("c.weight", 1, 4))),
]
