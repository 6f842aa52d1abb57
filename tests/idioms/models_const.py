"""Constants that meet live signal (DESIGN.md, Semantics): learned queries, class tokens, latents, gates,
scales, FiLM; and constants that only add (position embeddings), which stay foldable.

A nonzero constant that reaches a product with live signal is a parameter of the input-output function:
the weights that produce it are effective. Entries list, in ``additive``, the parameters that only add;
the soundness protocol zeroes those and never the queries, tokens, latents or scales.
"""
import math

import torch
import torch.nn.functional as F
from torch import nn

from .idiom import Idiom, cols, ids, kills, randn, rows, seeded, zero

D = 8


class LearnedQuery(nn.Module):
    """A learned query attending to the input; ``how``: sdpa, manual or mha."""

    def __init__(self, how: str):
        super().__init__()
        self.how = how
        self.a = nn.Linear(6, D)
        self.latents = nn.Parameter(torch.randn(1, 2, D))
        if how == "mha":
            self.attn = nn.MultiheadAttention(D, 2, batch_first=True)
        else:
            self.wq, self.wk, self.wv = nn.Linear(D, D), nn.Linear(D, D), nn.Linear(D, D)
        self.out = nn.Linear(D, 4)

    def forward(self, x):                       # (B, T, 6)
        h = F.relu(self.a(x))
        lat = self.latents.expand(x.shape[0], -1, -1)
        if self.how == "mha":
            o = self.attn(lat, h, h, need_weights=False)[0]
        else:
            q, k, v = self.wq(lat), self.wk(h), self.wv(h)
            if self.how == "sdpa":
                o = F.scaled_dot_product_attention(q, k, v)
            else:
                o = torch.softmax(q @ k.transpose(-2, -1) / math.sqrt(D), dim=-1) @ v
        return self.out(o)


class ClsToken(nn.Module):
    """A class token concatenated to the tokens; self-attention; the output is read at token 0."""

    def __init__(self):
        super().__init__()
        self.a = nn.Linear(6, D)
        self.cls = nn.Parameter(torch.randn(1, 1, D))
        self.attn = nn.MultiheadAttention(D, 2, batch_first=True)
        self.head = nn.Linear(D, 3)

    def forward(self, x):
        t = torch.cat([self.cls.expand(x.shape[0], -1, -1), F.relu(self.a(x))], dim=1)
        return self.head(self.attn(t, t, t, need_weights=False)[0][:, 0])


class Perceiver(nn.Module):
    """Latents cross-attend to the input (kdim != embed_dim: separate q/k/v projections), then self-attend."""

    def __init__(self):
        super().__init__()
        self.stem = nn.Linear(6, 6)
        self.latents = nn.Parameter(torch.randn(4, D))
        self.cross = nn.MultiheadAttention(D, 2, kdim=6, vdim=6, batch_first=True)
        self.self_attn = nn.MultiheadAttention(D, 2, batch_first=True)
        self.head = nn.Linear(D, 3)

    def forward(self, x):
        m = F.relu(self.stem(x))
        lat = self.latents.unsqueeze(0).expand(x.shape[0], -1, -1)
        z = lat + self.cross(lat, m, m, need_weights=False)[0]
        z = z + self.self_attn(z, z, z, need_weights=False)[0]
        return self.head(z.mean(1))


class DetrQueries(nn.Module):
    """DETR, pre-norm: object queries (an nn.Embedding's weight) added to a zero target, decode conv features."""

    def __init__(self):
        super().__init__()
        self.backbone = nn.Conv2d(3, D, 3, padding=1)
        self.query_embed = nn.Embedding(3, D)
        self.decoder = nn.TransformerDecoderLayer(D, 2, 16, dropout=0.0, batch_first=True, norm_first=True)
        self.cls_head = nn.Linear(D, 4)

    def forward(self, x):                       # (B, 3, 4, 4)
        mem = F.relu(self.backbone(x)).flatten(2).transpose(1, 2)
        q = self.query_embed.weight.unsqueeze(0).expand(x.shape[0], -1, -1)
        tgt = torch.zeros_like(q)
        return self.cls_head(self.decoder(tgt + q, mem))


class LayerScale(nn.Module):
    def __init__(self):
        super().__init__()
        self.a, self.b, self.out = nn.Linear(6, D), nn.Linear(D, D), nn.Linear(D, 3)
        self.gamma = nn.Parameter(0.1 * torch.ones(D))

    def forward(self, x):
        h = F.relu(self.a(x))
        h = h + self.gamma * F.relu(self.b(h))
        return self.out(h)


class ConstGate(nn.Module):
    """``h * sigmoid(w(const))``: a gate computed from a learned constant."""

    def __init__(self):
        super().__init__()
        self.a, self.w, self.out = nn.Linear(6, D), nn.Linear(4, D), nn.Linear(D, 3)
        self.const = nn.Parameter(torch.randn(1, 4))

    def forward(self, x):
        return self.out(F.relu(self.a(x)) * torch.sigmoid(self.w(self.const)))


class Film(nn.Module):
    """FiLM conditioned on a fixed class: ``gamma`` from a constant embedding scales, ``beta`` only adds."""

    def __init__(self):
        super().__init__()
        self.a, self.out = nn.Linear(6, D), nn.Linear(D, 3)
        self.cond = nn.Embedding(5, 4)
        self.to_gamma, self.to_beta = nn.Linear(4, D), nn.Linear(4, D)
        self.shift_src = nn.Parameter(torch.randn(1, 4))
        self.register_buffer("cls_idx", torch.tensor([2]))

    def forward(self, x):
        gamma = self.to_gamma(self.cond(self.cls_idx))
        beta = self.to_beta(self.shift_src)
        return self.out(F.relu(F.relu(self.a(x)) * (1 + gamma) + beta))


class PosAdded(nn.Module):
    """A learned position embedding added to the tokens: a constant that only adds (foldable)."""

    def __init__(self):
        super().__init__()
        self.a, self.b, self.out = nn.Linear(6, D), nn.Linear(D, D), nn.Linear(D, 3)
        self.pos_embed = nn.Parameter(torch.randn(1, 5, D))

    def forward(self, x):                       # (B, 5, 6)
        return self.out(F.relu(self.b(self.a(x) + self.pos_embed)))


class PosEmbeddingModule(nn.Module):
    def __init__(self):
        super().__init__()
        self.tok_emb, self.pos_emb = nn.Embedding(20, D), nn.Embedding(5, D)
        self.b, self.out = nn.Linear(D, D), nn.Linear(D, 3)
        self.register_buffer("positions", torch.arange(5))

    def forward(self, tok):
        return self.out(F.relu(self.b(self.tok_emb(tok) + self.pos_emb(self.positions))))


class OffsetTimesSignal(nn.Module):
    """``(a(x) + offset) * c(x)``: a constant that adds and then meets a product (not additive overall)."""

    def __init__(self):
        super().__init__()
        self.a, self.c, self.out = nn.Linear(6, D), nn.Linear(6, D), nn.Linear(D, 3)
        self.offset = nn.Parameter(torch.randn(D))

    def forward(self, x):
        return self.out((self.a(x) + self.offset) * self.c(x))


class ScaleVector(nn.Module):
    def __init__(self):
        super().__init__()
        self.a, self.out = nn.Linear(6, D), nn.Linear(D, 3)
        self.scale = nn.Parameter(torch.randn(D))

    def forward(self, x):
        return self.out(F.relu(self.a(x)) * self.scale)


class ClipLogits(nn.Module):
    """CLIP: normalised embeddings of two inputs, similarity times ``logit_scale.exp()``."""

    def __init__(self):
        super().__init__()
        self.s1, self.s2 = nn.Linear(6, D), nn.Linear(5, D)
        self.enc_i, self.enc_t = nn.Linear(D, D), nn.Linear(D, D)
        self.logit_scale = nn.Parameter(torch.tensor(math.log(1 / 0.07)))

    def forward(self, x1, x2):
        img = F.normalize(self.enc_i(F.relu(self.s1(x1))), dim=-1)
        txt = F.normalize(self.enc_t(F.relu(self.s2(x2))), dim=-1)
        return self.logit_scale.exp() * img @ txt.t()


class PrefixKV(nn.Module):
    """Prefix tuning: learned keys and values concatenated before the input's keys and values."""

    def __init__(self):
        super().__init__()
        self.a = nn.Linear(6, D)
        self.wq, self.wk, self.wv, self.wo = (nn.Linear(D, D) for _ in range(4))
        self.pk, self.pv = nn.Parameter(torch.randn(1, 2, D)), nn.Parameter(torch.randn(1, 2, D))

    def forward(self, x):
        h = F.relu(self.a(x))
        b = x.shape[0]
        k = torch.cat([self.pk.expand(b, -1, -1), self.wk(h)], 1)
        v = torch.cat([self.pv.expand(b, -1, -1), self.wv(h)], 1)
        return self.wo(F.scaled_dot_product_attention(self.wq(h), k, v))


class RegisterTokens(nn.Module):
    """ViT register tokens: learned tokens concatenated, a pre-norm encoder layer, then dropped."""

    def __init__(self):
        super().__init__()
        self.a = nn.Linear(6, D)
        self.reg = nn.Parameter(torch.randn(1, 2, D))
        self.enc = nn.TransformerEncoderLayer(D, 2, 16, dropout=0.0, batch_first=True, norm_first=True)
        self.out = nn.Linear(D, 3)

    def forward(self, x):
        t = torch.cat([self.reg.expand(x.shape[0], -1, -1), F.relu(self.a(x))], 1)
        return self.out(self.enc(t)[:, 2:])


class RelPosBias(nn.Module):
    """A learned bias added to attention scores (additive: zeroed by the protocol)."""

    def __init__(self):
        super().__init__()
        self.a = nn.Linear(6, D)
        self.wq, self.wk, self.wv, self.wo = (nn.Linear(D, D) for _ in range(4))
        self.rel_pos = nn.Parameter(torch.randn(2, 5, 5))

    def forward(self, x):                       # (B, 5, 6), 2 heads of 4
        h = F.relu(self.a(x))
        b, t, _ = h.shape
        q, k, v = (w(h).view(b, t, 2, 4).transpose(1, 2) for w in (self.wq, self.wk, self.wv))
        s = q @ k.transpose(-2, -1) / 2.0 + self.rel_pos
        o = (torch.softmax(s, -1) @ v).transpose(1, 2).reshape(b, t, D)
        return self.wo(o)


class ConstSoftmaxMix(nn.Module):
    """Mixing weights ``softmax(w_mix)`` over two live branches (a learned constant convex combination)."""

    def __init__(self):
        super().__init__()
        self.a, self.b, self.out = nn.Linear(6, D), nn.Linear(6, D), nn.Linear(D, 3)
        self.w_mix = nn.Parameter(torch.randn(2))

    def forward(self, x):
        p = torch.softmax(self.w_mix, 0)
        return self.out(F.relu(p[0] * self.a(x) + p[1] * self.b(x)))


_T = (randn(2, 5, 6),)
_X = (randn(2, 6),)

IDIOMS = [
    Idiom("learned_query_sdpa", "const", seeded(LearnedQuery, "sdpa"), _T,
          kills(rows("a.weight", 0, 1), cols("out.weight", 5)), note="wq(latents) must stay effective"),
    Idiom("learned_query_manual", "const", seeded(LearnedQuery, "manual"), _T,
          kills(rows("a.weight", 0, 1), cols("out.weight", 5))),
    Idiom("learned_query_mha", "const", seeded(LearnedQuery, "mha"), _T,
          kills(rows("a.weight", 0, 1), cols("out.weight", 5))),
    Idiom("cls_token_attention", "const", seeded(ClsToken), _T,
          kills(rows("a.weight", 0, 1), cols("head.weight", 3)),
          note="features 0, 1 of x die but the class token's stay: in_proj columns 0, 1 stay effective"),
    Idiom("perceiver_cross_attention", "const", seeded(Perceiver), _T, rows("stem.weight", 0, 1)),
    Idiom("detr_object_queries", "const", seeded(DetrQueries), (randn(2, 3, 4, 4),),
          kills(rows("backbone.weight", 0, 1), cols("cls_head.weight", 2)),
          note="query_embed.weight is added to a zero target, then meets attention: not additive"),
    Idiom("layerscale_gamma", "const", seeded(LayerScale), _X,
          kills(rows("a.weight", 0), zero("gamma", [5])), note="gamma[5] = 0 cuts b's row 5"),
    Idiom("const_sigmoid_gate", "const", seeded(ConstGate), _X, rows("a.weight", 0, 1),
          note="w's rows gate live units: effective"),
    Idiom("film_const_embedding", "const", seeded(Film), _X, rows("a.weight", 0, 1), additive=("shift_src",),
          note="gamma scales (effective); beta = to_beta(shift_src) only adds"),
    Idiom("pos_embed_added", "const", seeded(PosAdded), _T, rows("a.weight", 0, 1), additive=("pos_embed",),
          note="units 0, 1 are the position embedding only: b's columns 0, 1 fold away"),
    Idiom("pos_embedding_module_added", "const", seeded(PosEmbeddingModule), (ids(2, 5, high=20),),
          cols("tok_emb.weight", 0, 1), additive=("pos_emb",), vocab=20),
    Idiom("offset_times_signal", "const", seeded(OffsetTimesSignal), _X,
          kills(rows("a.weight", 0, 1), rows("c.weight", 2)),
          note="a's units 0, 1 are the constant offset, times c(x): c's rows 0, 1 stay effective"),
    Idiom("scale_vector", "const", seeded(ScaleVector), _X, zero("scale", [0, 1])),
    Idiom("clip_logit_scale", "const", seeded(ClipLogits), (randn(2, 6), randn(3, 5, seed=1)),
          kills(rows("s1.weight", 0, 1), rows("s2.weight", 2))),
    Idiom("prefix_kv", "const", seeded(PrefixKV), _T, kills(rows("a.weight", 0, 1), rows("wv.weight", 2)),
          note="v feature 2 is dead for the input's tokens but not for the prefix: wo column 2 effective"),
    Idiom("register_tokens", "const", seeded(RegisterTokens), _T,
          kills(rows("a.weight", 0, 1), cols("out.weight", 2), rows("enc.linear1.weight", 3))),
    Idiom("rel_pos_bias_scores", "const", seeded(RelPosBias), _T, rows("a.weight", 0, 1), additive=("rel_pos",)),
    Idiom("const_softmax_mix", "const", seeded(ConstSoftmaxMix), _X,
          kills(rows("a.weight", 0, 1), rows("b.weight", 1, 2))),
]
