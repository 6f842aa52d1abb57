"""Routing: ops that send values to places the data decides, and mixture-of-experts layers.

addcmul/addcdiv (a sum and a product in one op), gather / take_along_dim / ``x[idx]`` / index_select with
indices computed from the input (a router's argsort), writes at computed places (index_add, index_put,
scatter_add, index_copy), histc (a router's count of tokens per expert), and experts stacked in 3-D
parameters: ``F.grouped_mm`` over tokens sorted by expert, ``bmm(W[idx], x)``, and transformers' Mixtral
with both of its expert implementations.

The router's weights decide which rows go where: they must stay effective. Features stay exact, and an
expert's dead unit makes that expert's weights ineffective, not the other experts'.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .idiom import NO_FX, Idiom, cols, ids, kills, randn, rows, seeded, zero

__all__ = ["AddProduct", "RoutedTokens", "RoutedWrites", "Counted", "GroupedExperts", "BmmExperts", "IDIOMS"]


class AddProduct(nn.Module):
    """``k(x) + value * h(x) * g(x)`` (addcmul), or ``/ (|g(x)| + 1)`` (addcdiv)."""

    def __init__(self, how: str, value: float = 0.5):
        super().__init__()
        self.how, self.value = how, value
        self.k, self.h, self.g = (nn.Linear(3, 4, bias=False) for _ in range(3))
        self.out = nn.Linear(4, 2, bias=False)

    def forward(self, x):
        k, h, g = self.k(x), F.relu(self.h(x)), F.relu(self.g(x))
        if self.how == "addcmul":
            y = torch.addcmul(k, h, g, value=self.value)
        elif self.how == "addcmul_method":
            y = k.addcmul(h, g, value=self.value)
        else:
            y = torch.addcdiv(k, h, g.abs() + 1, value=self.value)
        return self.out(y)


class RoutedTokens(nn.Module):
    """Two tokens picked in an order a router decides; features stay apart. gather's index is narrower than
    ``h`` (3 of 4 features): ``h``'s last feature is never read."""

    def __init__(self, how: str):
        super().__init__()
        self.how = how
        self.a, self.router = nn.Linear(3, 4, bias=False), nn.Linear(3, 1, bias=False)
        self.out = nn.Linear(3 if how.endswith("gather") else 4, 2, bias=False)

    def forward(self, x):                                # (4 tokens, 3)
        h = F.relu(self.a(x))
        order = self.router(x).squeeze(-1).argsort()[:2]
        if self.how == "gather":
            p = torch.gather(h, 0, order[:, None].expand(2, 3))
        elif self.how == "tensor_gather":
            p = h.gather(0, order[:, None].expand(2, 3))
        elif self.how == "take_along_dim":
            p = torch.take_along_dim(h, order[:, None], 0)
        elif self.how == "index_select":
            p = h.index_select(0, order)
        else:
            p = h[order]
        return self.out(p)


class RoutedWrites(nn.Module):
    """Token rows written to places a router decides: features stay apart."""

    def __init__(self, how: str):
        super().__init__()
        self.how = how
        self.a, self.router, self.out = nn.Linear(3, 4, bias=False), nn.Linear(3, 1, bias=False), nn.Linear(4, 2)

    def forward(self, x):                                # (4 tokens, 3)
        h = F.relu(self.a(x))
        order = self.router(x).squeeze(-1).argsort()
        z = torch.zeros(4, 4)
        if self.how == "index_add":
            y = z.index_add(0, order, h)
        elif self.how == "index_put":
            y = torch.index_put(z, (order,), h)
        elif self.how == "index_copy":
            y = z.index_copy(0, order, h)
        else:
            y = z.scatter_add(0, order[:, None].expand(4, 4), h)
        return self.out(y)


class Counted(nn.Module):
    """A histogram of two features (a router's count of tokens per expert) feeds a layer."""

    def __init__(self):
        super().__init__()
        self.a, self.out, self.cnt = nn.Linear(3, 4, bias=False), nn.Linear(4, 2), nn.Linear(3, 2)

    def forward(self, x):                                # (4, 3)
        h = F.relu(self.a(x))
        return self.out(h) + self.cnt(torch.histc(h[:, :2], bins=3, min=0, max=2))


class GroupedExperts(nn.Module):
    """Tokens sorted by the expert a router picks, multiplied group by group (``F.grouped_mm``, bfloat16),
    the groups' ends counted by histc: an MLP per expert."""

    def __init__(self, experts: int = 2, d: int = 16, hidden: int = 16):
        super().__init__()
        self.router = nn.Linear(d, experts, bias=False)
        self.up = nn.Parameter(torch.randn(experts, d, hidden) * 0.3)
        self.down = nn.Parameter(torch.randn(experts, hidden, d) * 0.3)

    def forward(self, x):                                # (tokens, d)
        ids_, order = torch.sort(self.router(x).argmax(-1))
        e = self.up.shape[0]
        offs = torch.cumsum(torch.histc(ids_.float(), bins=e, min=0, max=e - 1), 0).to(torch.int32)
        h = torch.relu(F.grouped_mm(x[order], self.up, offs=offs))
        return F.grouped_mm(h, self.down, offs=offs)[order.argsort()]


class BmmExperts(nn.Module):
    """transformers' batched_mm: each token row times its expert's matrix, ``bmm(W[idx], x)`` ("wx") or
    ``bmm(x, W[idx])`` with matrices stored transposed ("xw")."""

    def __init__(self, layout: str, experts: int = 3, d: int = 4, hidden: int = 5):
        super().__init__()
        self.layout = layout
        self.router = nn.Linear(d, experts, bias=False)
        shapes = ((experts, hidden, d), (experts, d, hidden)) if layout == "wx" else \
            ((experts, d, hidden), (experts, hidden, d))
        self.up, self.down = (nn.Parameter(torch.randn(s)) for s in shapes)
        self.act = nn.ReLU()                             # a module: fx keeps it as a call_module node

    def forward(self, x):                                # (tokens, d)
        e = self.router(x).argmax(-1)
        if self.layout == "wx":
            h = self.act(torch.bmm(self.up[e], x.unsqueeze(-1)))
            return torch.bmm(self.down[e], h).squeeze(-1)
        h = self.act(torch.bmm(x.unsqueeze(1), self.up[e]))
        return torch.bmm(h, self.down[e]).squeeze(1)


def _mixtral(impl: str):
    def build() -> nn.Module:
        import transformers
        from transformers.utils import logging as hf_logging
        hf_logging.set_verbosity_error()
        cfg = transformers.MixtralConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                                         num_attention_heads=4, num_key_value_heads=2, vocab_size=100,
                                         num_local_experts=4, num_experts_per_tok=2, use_cache=False,
                                         attn_implementation="eager", experts_implementation=impl)
        torch.manual_seed(0)
        return transformers.MixtralForCausalLM(cfg).eval()
    build.__qualname__ = f"mixtral({impl})"
    return build


def _bf16(build):
    def make() -> nn.Module:
        return build().to(torch.bfloat16)
    make.__qualname__ = f"bf16({build.__qualname__})"
    return make


_T = (randn(4, 3),)
_TOKEN_KILL = rows("a.weight", 1)
_EXPERTS = "model.layers.0.mlp.experts."
# expert 1's unit 5 (gate row 5, up row 64 + 5) is dead from input; expert 2's unit 7 is dead to output
_MIXTRAL_KILL = kills(zero(_EXPERTS + "gate_up_proj", (1, [5, 69])), zero(_EXPERTS + "down_proj", (2, slice(None), 7)))

IDIOMS = [
    Idiom("addcmul_product_and_sum", "routing", seeded(AddProduct, "addcmul"), (randn(2, 3),),
          kills(rows("k.weight", 1, 2, 3), rows("h.weight", 0), rows("g.weight", 1)),
          note="h1 meets a dead g1: the product is zero there; k1 and the product at 1 are dead: out column 1"),
    Idiom("addcmul_method", "routing", seeded(AddProduct, "addcmul_method"), (randn(2, 3),),
          kills(rows("k.weight", 1, 2, 3), rows("h.weight", 0), rows("g.weight", 1))),
    Idiom("addcdiv_numerator_kills", "routing", seeded(AddProduct, "addcdiv"), (randn(2, 3),),
          kills(rows("k.weight", 1, 2, 3), rows("h.weight", 0)), note="g0 divides a dead h0: ineffective"),
    Idiom("gather_computed_tokens", "routing", seeded(RoutedTokens, "gather"), _T, _TOKEN_KILL,
          note="a's row 3 is never gathered (the index is 3 wide); the router stays effective"),
    Idiom("tensor_gather_computed_tokens", "routing", seeded(RoutedTokens, "tensor_gather"), _T, _TOKEN_KILL),
    Idiom("take_along_dim_computed_tokens", "routing", seeded(RoutedTokens, "take_along_dim"), _T, _TOKEN_KILL),
    Idiom("index_select_computed_tokens", "routing", seeded(RoutedTokens, "index_select"), _T, _TOKEN_KILL),
    Idiom("getitem_computed_tokens", "routing", seeded(RoutedTokens, "getitem"), _T, _TOKEN_KILL),
    Idiom("index_add_computed_rows", "routing", seeded(RoutedWrites, "index_add"), _T, _TOKEN_KILL),
    Idiom("index_put_computed_rows", "routing", seeded(RoutedWrites, "index_put"), _T, _TOKEN_KILL),
    Idiom("index_copy_computed_rows", "routing", seeded(RoutedWrites, "index_copy"), _T, _TOKEN_KILL),
    Idiom("scatter_add_computed_rows", "routing", seeded(RoutedWrites, "scatter_add"), _T, _TOKEN_KILL),
    Idiom("histc_counts", "routing", seeded(Counted), _T, kills(_TOKEN_KILL, cols("cnt.weight", 2))),
    Idiom("grouped_mm_experts_bf16", "routing", _bf16(seeded(GroupedExperts)),
          (randn(8, 16).to(torch.bfloat16),),
          kills(zero("up", (1, slice(None), 3)), zero("down", (0, 5))),
          note="expert 1's unit 3 and expert 0's unit 5 die: down[1, 3] and up[0, :, 5] only"),
    Idiom("bmm_selected_experts", "routing", seeded(BmmExperts, "wx"), (randn(6, 4),),
          kills(zero("up", (0, 1)), zero("down", (2, slice(None), 4)))),
    Idiom("bmm_selected_experts_transposed", "routing", seeded(BmmExperts, "xw"), (randn(6, 4),),
          kills(zero("up", (0, slice(None), 1)), zero("down", (2, 4)))),
    Idiom("hf_mixtral_grouped_mm", "routing", _mixtral("grouped_mm"), (ids(1, 8, high=100),), _MIXTRAL_KILL,
          tracers=NO_FX, vocab=100, note="sorted tokens, histc offsets, grouped_mm_fallback, inverse permutation"),
    Idiom("hf_mixtral_batched_mm", "routing", _mixtral("batched_mm"), (ids(1, 8, high=100),), _MIXTRAL_KILL,
          tracers=NO_FX, vocab=100, note="gate_up_proj[expert_ids] per token row, bmm"),
]
