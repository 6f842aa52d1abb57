"""Attention variants: nn.MultiheadAttention in its forms, nn.Transformer layers (post- and pre-norm),
rotary embeddings, a constant KV cache, causal masks, grouped-query attention.

Attention scores mix the features of q and k, so kills go where features stay separate: before the
projections (their input columns die), into v (its output features) or after the output projection.
"""
import math

import torch
import torch.nn.functional as F
from torch import nn

from .idiom import Idiom, cols, kills, randn, rows, seeded, zero

D = 8


class Mha(nn.Module):
    def __init__(self, batch_first: bool = True, bias: bool = True, causal: bool = False):
        super().__init__()
        self.batch_first, self.causal = batch_first, causal
        self.a = nn.Linear(6, D)
        self.attn = nn.MultiheadAttention(D, 2, bias=bias, batch_first=batch_first)
        self.out = nn.Linear(D, 3)
        self.register_buffer("future", torch.ones(5, 5, dtype=torch.bool).triu(1))

    def forward(self, x):
        h = F.relu(self.a(x))
        mask = self.future if self.causal else None
        return self.out(self.attn(h, h, h, attn_mask=mask, need_weights=False)[0])


class CrossMha(nn.Module):
    """Cross attention with kdim/vdim != embed_dim and no biases (separate q/k/v projection weights)."""

    def __init__(self):
        super().__init__()
        self.a, self.b = nn.Linear(6, D), nn.Linear(5, 4)
        self.attn = nn.MultiheadAttention(D, 2, bias=False, kdim=4, vdim=4, batch_first=True)
        self.out = nn.Linear(D, 3)

    def forward(self, x1, x2):
        q, m = F.relu(self.a(x1)), F.relu(self.b(x2))
        return self.out(self.attn(q, m, m, need_weights=False)[0])


class Encoder(nn.Module):
    def __init__(self, norm_first: bool, layers: int = 0):
        super().__init__()
        self.a = nn.Linear(6, D)
        layer = nn.TransformerEncoderLayer(D, 2, 16, dropout=0.0, batch_first=True, norm_first=norm_first)
        if layers:
            self.enc = nn.TransformerEncoder(layer, layers, norm=nn.LayerNorm(D), enable_nested_tensor=False)
        else:
            self.enc = layer
        self.out = nn.Linear(D, 3)

    def forward(self, x):
        return self.out(self.enc(F.relu(self.a(x))))


class Decoder(nn.Module):
    def __init__(self, norm_first: bool):
        super().__init__()
        self.a, self.m = nn.Linear(6, D), nn.Linear(5, D)
        self.dec = nn.TransformerDecoderLayer(D, 2, 16, dropout=0.0, batch_first=True, norm_first=norm_first)
        self.out = nn.Linear(D, 3)

    def forward(self, x, mem):
        return self.out(self.dec(F.relu(self.a(x)), F.relu(self.m(mem))))


def rotate_half(x):
    x1, x2 = x.chunk(2, dim=-1)
    return torch.cat((-x2, x1), dim=-1)


class Rotary(nn.Module):
    """Llama-style attention: rotary embeddings from cos/sin buffers, two heads of 4."""

    def __init__(self):
        super().__init__()
        self.a = nn.Linear(6, D)
        self.wq, self.wk, self.wv, self.wo = (nn.Linear(D, D, bias=False) for _ in range(4))
        inv = 1.0 / (10000 ** (torch.arange(0, 4, 2).float() / 4))
        freqs = torch.outer(torch.arange(5).float(), inv)
        emb = torch.cat((freqs, freqs), -1)
        self.register_buffer("cos", emb.cos())
        self.register_buffer("sin", emb.sin())

    def forward(self, x):                       # (B, 5, 6)
        h = F.relu(self.a(x))
        b, t, _ = h.shape
        q, k, v = (w(h).view(b, t, 2, 4).transpose(1, 2) for w in (self.wq, self.wk, self.wv))
        q = q * self.cos + rotate_half(q) * self.sin
        k = k * self.cos + rotate_half(k) * self.sin
        o = torch.softmax(q @ k.transpose(-2, -1) / 2.0, -1) @ v
        return self.wo(o.transpose(1, 2).reshape(b, t, D))


class KvCache(nn.Module):
    """A constant past (buffers) concatenated before the new keys and values."""

    def __init__(self):
        super().__init__()
        self.a = nn.Linear(6, D)
        self.wq, self.wk, self.wv, self.wo = (nn.Linear(D, D) for _ in range(4))
        self.register_buffer("past_k", torch.randn(1, 3, D))
        self.register_buffer("past_v", torch.randn(1, 3, D))

    def forward(self, x):
        h = F.relu(self.a(x))
        b = x.shape[0]
        k = torch.cat([self.past_k.expand(b, -1, -1), self.wk(h)], 1)
        v = torch.cat([self.past_v.expand(b, -1, -1), self.wv(h)], 1)
        s = self.wq(h) @ k.transpose(1, 2) / math.sqrt(D)
        return self.wo(torch.softmax(s, -1) @ v)


class CausalManual(nn.Module):
    def __init__(self):
        super().__init__()
        self.a = nn.Linear(6, D)
        self.qkv, self.proj = nn.Linear(D, 3 * D), nn.Linear(D, D)
        self.register_buffer("causal", torch.tril(torch.ones(5, 5, dtype=torch.bool)))

    def forward(self, x):
        h = F.relu(self.a(x))
        q, k, v = self.qkv(h).split(D, dim=-1)
        s = (q @ k.transpose(-2, -1)) / math.sqrt(D)
        s = s.masked_fill(~self.causal, float("-inf"))
        return self.proj(torch.softmax(s, -1) @ v)


class Gqa(nn.Module):
    """Grouped-query attention: 4 query heads of 2, 2 kv heads repeated with repeat_interleave."""

    def __init__(self):
        super().__init__()
        self.a = nn.Linear(6, D)
        self.wq, self.wo = nn.Linear(D, 8, bias=False), nn.Linear(8, D, bias=False)
        self.wk, self.wv = nn.Linear(D, 4, bias=False), nn.Linear(D, 4, bias=False)
        self.out = nn.Linear(D, 3)

    def forward(self, x):
        h = F.relu(self.a(x))
        b, t, _ = h.shape
        q = self.wq(h).view(b, t, 4, 2).transpose(1, 2)
        k = self.wk(h).view(b, t, 2, 2).transpose(1, 2).repeat_interleave(2, dim=1)
        v = self.wv(h).view(b, t, 2, 2).transpose(1, 2).repeat_interleave(2, dim=1)
        o = F.scaled_dot_product_attention(q, k, v)
        return self.out(self.wo(o.transpose(1, 2).reshape(b, t, 8)))


class SdpaCausalHeads(nn.Module):
    def __init__(self):
        super().__init__()
        self.a = nn.Linear(6, D)
        self.qkv, self.proj = nn.Linear(D, 3 * D), nn.Linear(D, 3)

    def forward(self, x):
        h = F.relu(self.a(x))
        b, t, _ = h.shape
        q, k, v = self.qkv(h).view(b, t, 3, 2, 4).permute(2, 0, 3, 1, 4).unbind(0)
        o = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        return self.proj(o.transpose(1, 2).flatten(2))


class PaddingMask(nn.Module):
    """nn.MultiheadAttention with a constant key_padding_mask (the last token is padding)."""

    def __init__(self):
        super().__init__()
        self.a = nn.Linear(6, D)
        self.attn = nn.MultiheadAttention(D, 2, batch_first=True)
        self.out = nn.Linear(D, 3)
        self.register_buffer("pad", torch.tensor([[False, False, False, False, True]]))

    def forward(self, x):
        h = F.relu(self.a(x))
        pad = self.pad.expand(x.shape[0], -1)
        return self.out(self.attn(h, h, h, key_padding_mask=pad, need_weights=False)[0])


class FactorisedClsToken(nn.Module):
    """CoaT's factorised attention with a class token: LayerNorm of a constant row, times an input-dependent
    matrix. The normalised class token is a nonzero constant, so it carries the input to the output."""

    def __init__(self):
        super().__init__()
        self.cls = nn.Parameter(torch.randn(1, 1, D))
        self.emb, self.norm = nn.Linear(6, D), nn.LayerNorm(D)
        self.head, self.out = nn.Linear(D, D), nn.Linear(D, 3)

    def forward(self, x):                         # (B, 5, 6)
        h = torch.cat([self.cls.expand(x.shape[0], -1, -1), self.emb(x)], 1)
        k = self.norm(h)
        return self.out(F.relu(self.head((k @ (h.transpose(-1, -2) @ h).softmax(-1))[:, 0])))


class SwinWindows(nn.Module):
    """Swin's shifted-window attention as the compaction opens it (connectome.compact.window): qkv and proj
    called as modules around window partition, a shift mask from sizes, and window merge. 5x6 tokens in
    4x4 windows: padded, rolled, masked."""

    def __init__(self, v2: bool = False):
        super().__init__()
        from torchvision.models.swin_transformer import ShiftedWindowAttention, ShiftedWindowAttentionV2

        from connectome.compact.window import WindowAttention

        cls = ShiftedWindowAttentionV2 if v2 else ShiftedWindowAttention
        self.a = nn.Linear(6, D)
        self.attn = WindowAttention.of(cls(D, [4, 4], [2, 2], 2))
        self.out = nn.Linear(D, 3)

    def forward(self, x):                         # (B, 30, 6): 5x6 tokens
        h = F.relu(self.a(x)).unflatten(1, (5, 6))
        return self.out(self.attn(h).flatten(1, 2))


class MaskFromMlp(nn.Module):
    """Swin V2's idea: attention scores biased by a small MLP of constant coordinates, as sdpa's attn_mask."""

    def __init__(self):
        super().__init__()
        self.a = nn.Linear(6, D)
        self.qkv, self.proj = nn.Linear(D, 3 * D), nn.Linear(D, 3)
        self.mlp = nn.Sequential(nn.Linear(2, 16), nn.ReLU(), nn.Linear(16, 2))
        self.register_buffer("coords", torch.randn(25, 2))

    def forward(self, x):
        h = F.relu(self.a(x))
        b, t, _ = h.shape
        q, k, v = self.qkv(h).view(b, t, 3, 2, 4).permute(2, 0, 3, 1, 4).unbind(0)
        bias = self.mlp(self.coords).view(5, 5, 2).permute(2, 0, 1)
        o = F.scaled_dot_product_attention(q, k, v, attn_mask=bias)
        return self.proj(o.transpose(1, 2).flatten(2))


class GqaTwoKvHeads(nn.Module):
    """sdpa's own grouped-query attention: four query heads share two key/value heads."""

    def __init__(self):
        super().__init__()
        self.a = nn.Linear(6, D)
        self.wq, self.wkv, self.wo = nn.Linear(D, D), nn.Linear(D, D), nn.Linear(D, 3)

    def forward(self, x):
        h = F.relu(self.a(x))
        b, t, _ = h.shape
        q = self.wq(h).view(b, t, 4, 2).transpose(1, 2)
        k, v = self.wkv(h).view(b, t, 2, 2, 2).permute(2, 0, 3, 1, 4).unbind(0)
        o = F.scaled_dot_product_attention(q, k, v, enable_gqa=True)
        return self.wo(o.transpose(1, 2).flatten(2))


class MaskFromInput(nn.Module):
    """Learned (constant) queries, keys and values; the input only biases the scores (attn_mask)."""

    def __init__(self):
        super().__init__()
        self.m = nn.Linear(6, 5)
        self.q, self.k, self.v = (nn.Parameter(torch.randn(1, 1, 5, 4)) for _ in range(3))
        self.o = nn.Linear(4, 3)
        self.n, self.p = nn.Linear(6, 4), nn.Linear(4, 3)

    def forward(self, x):                         # (B, 5, 6)
        q, k, v = (t.expand(x.shape[0], -1, -1, -1) for t in (self.q, self.k, self.v))
        o = F.scaled_dot_product_attention(q, k, v, attn_mask=self.m(x).unsqueeze(1))
        return self.o(o[:, 0]) + self.p(F.relu(self.n(x)))


class MhaMaskFromMlp(Mha):
    """nn.MultiheadAttention with an additive attn_mask computed by a small MLP of constants."""

    def __init__(self):
        super().__init__()
        self.mlp = nn.Sequential(nn.Linear(2, 8), nn.ReLU(), nn.Linear(8, 1))
        self.register_buffer("coords", torch.randn(5, 5, 2))

    def forward(self, x):
        h = F.relu(self.a(x))
        mask = self.mlp(self.coords)[..., 0]
        return self.out(self.attn(h, h, h, attn_mask=mask, need_weights=False)[0])


_T = (randn(2, 5, 6),)
_MHA_KILL = kills(rows("a.weight", 0, 1), cols("out.weight", 4))
_ENC_KILL = kills(rows("a.weight", 0, 1), rows("enc.linear1.weight", 3))

IDIOMS = [
    Idiom("mha_batch_first", "attn", seeded(Mha), _T, _MHA_KILL,
          note="in_proj columns 0, 1 read dead units; out_proj row 4 reaches nothing"),
    Idiom("mha_seq_first", "attn", seeded(Mha, batch_first=False), (randn(5, 2, 6),), _MHA_KILL),
    Idiom("mha_no_bias", "attn", seeded(Mha, bias=False), _T, _MHA_KILL),
    Idiom("mha_causal_mask", "attn", seeded(Mha, causal=True), _T, _MHA_KILL),
    Idiom("mha_cross_kdim_no_bias", "attn", seeded(CrossMha), (randn(2, 5, 6), randn(2, 3, 5, seed=1)),
          kills(rows("b.weight", 0), rows("a.weight", 1))),
    Idiom("mha_key_padding_mask", "attn", seeded(PaddingMask), _T, _MHA_KILL),
    Idiom("encoder_layer_post_norm", "attn", seeded(Encoder, False), _T, _ENC_KILL),
    Idiom("encoder_layer_pre_norm", "attn", seeded(Encoder, True), _T,
          kills(_ENC_KILL, zero("enc.norm1.weight", [0, 1])),
          note="norm1's zero scales cut in_proj columns 0, 1; a's dead rows do not (LayerNorm mixes)"),
    Idiom("transformer_encoder_stack", "attn", seeded(Encoder, True, 2), _T,
          kills(rows("a.weight", 0, 1), rows("enc.layers.1.linear1.weight", 3))),
    Idiom("decoder_layer_post_norm", "attn", seeded(Decoder, False), (randn(2, 4, 6), randn(2, 5, 5, seed=1)),
          kills(rows("m.weight", 0, 1), rows("dec.linear1.weight", 2))),
    Idiom("decoder_layer_pre_norm", "attn", seeded(Decoder, True), (randn(2, 4, 6), randn(2, 5, 5, seed=1)),
          kills(rows("m.weight", 0, 1), rows("dec.linear1.weight", 2)),
          note="memory is not normalised: cross-attention k/v columns 0, 1 die"),
    Idiom("rotary_embedding", "attn", seeded(Rotary), _T, kills(rows("a.weight", 0, 1), rows("wv.weight", 1))),
    Idiom("kv_cache_constant_past", "attn", seeded(KvCache), _T, kills(rows("a.weight", 0, 1), rows("wv.weight", 2)),
          note="v feature 2 is dead for new tokens, not for the past: wo column 2 stays effective"),
    Idiom("causal_mask_manual", "attn", seeded(CausalManual), _T,
          kills(rows("a.weight", 0, 1), rows("qkv.weight", 2 * D + 3))),
    Idiom("gqa_repeat_interleave", "attn", seeded(Gqa), _T, kills(rows("wv.weight", 0, 1), rows("a.weight", 7)),
          note="kv head 0 has no values: query heads 0, 1 and wo columns 0..3 are ineffective"),
    Idiom("sdpa_is_causal_heads", "attn", seeded(SdpaCausalHeads), _T,
          kills(rows("a.weight", 0, 1), rows("qkv.weight", 2 * D + 5))),
    Idiom("swin_window_attention", "attn", seeded(SwinWindows), (randn(2, 30, 6),),
          kills(rows("a.weight", 0, 1), rows("attn.qkv.weight", 2 * D + 3), cols("out.weight", 5))),
    Idiom("swin_v2_cosine_window_attention", "attn", seeded(SwinWindows, True), (randn(2, 30, 6),),
          kills(rows("a.weight", 0, 1), rows("attn.qkv.weight", 2 * D + 3), cols("out.weight", 5)),
          note="normalised q and k times a learned scale; the position bias frozen into a buffer"),
    Idiom("sdpa_mask_from_mlp", "attn", seeded(MaskFromMlp), _T,
          kills(rows("a.weight", 0, 1), rows("qkv.weight", 2 * D + 3)),
          note="an additive mask computed from constants by a small MLP: its weights stay effective"),
    Idiom("sdpa_gqa_two_kv_heads", "attn", seeded(GqaTwoKvHeads), _T,
          kills(rows("a.weight", 0, 1), rows("wkv.weight", 5)),
          note="kv head 1's value feature 1 is dead: wo columns 5 and 7 (query heads 2, 3) die with it"),
    Idiom("sdpa_mask_from_input", "attn", seeded(MaskFromInput), _T, cols("p.weight", 1),
          note="constant q, k, v: only the mask carries the input to o (n's unit 1 is the killed one)"),
    Idiom("mha_mask_from_mlp", "attn", seeded(MhaMaskFromMlp), _T, _MHA_KILL,
          note="the MLP's weights make a constant that shapes every score"),
    Idiom("cls_token_norm_times_input", "attn", seeded(FactorisedClsToken), _T, kills(rows("head.weight", 0)),
          note="the output reads only the class token's row: constant, yet it multiplies live signal"),
]
