"""Norms, gates, gated MLPs, recurrent layers, conv stems and pooling.

Norms over features (LayerNorm, RMSNorm, GroupNorm) mix their features: a dead input feature comes out
alive, unless the norm's own scale is zero there. BatchNorm in eval mode is per channel. Gates pass the
gated signal even when the gate is constant (sigmoid(0) = 0.5); a zero times anything stays zero.
"""
import torch
import torch.nn.functional as F
from torch import nn

from .idiom import Idiom, cols, kills, randn, rows, seeded, zero

D = 8


class NormMlp(nn.Module):
    def __init__(self, norm: str):
        super().__init__()
        self.norm_kind = norm
        self.a, self.b, self.out = nn.Linear(6, D), nn.Linear(D, D), nn.Linear(D, 3)
        if norm == "ln":
            self.norm = nn.LayerNorm(D)
        elif norm == "rms":
            self.norm = nn.RMSNorm(D)
        elif norm == "bn":
            self.norm = nn.BatchNorm1d(D)
            with torch.no_grad():
                self.norm.running_var.uniform_(0.5, 2.0)
                self.norm.weight.uniform_(0.5, 1.5)
        else:
            self.scale = nn.Parameter(torch.ones(D))

    def forward(self, x):
        h = self.a(x)
        if self.norm_kind == "manual_rms":
            h = h * torch.rsqrt(h.pow(2).mean(-1, keepdim=True) + 1e-6) * self.scale
        else:
            h = self.norm(h)
        return self.out(F.relu(self.b(F.relu(h))))


class ConvNorm(nn.Module):
    """conv -> GroupNorm / BatchNorm2d -> relu -> conv -> pool -> linear."""

    def __init__(self, norm: str):
        super().__init__()
        self.c1, self.c2 = nn.Conv2d(3, D, 3, padding=1), nn.Conv2d(D, D, 3, padding=1)
        self.norm = nn.GroupNorm(2, D) if norm == "gn" else nn.BatchNorm2d(D)
        if norm == "bn":
            with torch.no_grad():
                self.norm.running_var.uniform_(0.5, 2.0)
                self.norm.weight.uniform_(0.5, 1.5)
        self.head = nn.Linear(D, 3)

    def forward(self, x):
        return self.head(F.relu(self.c2(F.relu(self.norm(self.c1(x))))).mean((2, 3)))


class ConvNeXtBlock(nn.Module):
    """depthwise conv, permute to channels-last, LayerNorm, pointwise MLP, permute back, residual."""

    def __init__(self):
        super().__init__()
        self.stem = nn.Conv2d(3, D, 2, stride=2)
        self.dw = nn.Conv2d(D, D, 3, padding=1, groups=D)
        self.norm = nn.LayerNorm(D)
        self.pw1, self.pw2 = nn.Linear(D, 16), nn.Linear(16, D)
        self.head = nn.Linear(D, 3)

    def forward(self, x):
        h = self.stem(x)
        y = self.norm(self.dw(h).permute(0, 2, 3, 1))
        y = self.pw2(F.gelu(self.pw1(y))).permute(0, 3, 1, 2)
        return self.head((h + y).mean((2, 3)))


class SqueezeExcite(nn.Module):
    def __init__(self):
        super().__init__()
        self.c1, self.c2 = nn.Conv2d(3, D, 3, padding=1), nn.Conv2d(D, D, 3, padding=1)
        self.fc1, self.fc2 = nn.Conv2d(D, 4, 1), nn.Conv2d(4, D, 1)
        self.head = nn.Linear(D, 3)

    def forward(self, x):
        h = F.relu(self.c1(x))
        s = torch.sigmoid(self.fc2(F.relu(self.fc1(F.adaptive_avg_pool2d(h, 1)))))
        return self.head(F.relu(self.c2(h * s)).mean((2, 3)))


class Cbam(nn.Module):
    """Channel attention (one MLP called on the avg- and the max-pooled map) then spatial attention."""

    def __init__(self):
        super().__init__()
        self.c1 = nn.Conv2d(3, D, 3, padding=1)
        self.mlp = nn.Sequential(nn.Conv2d(D, 4, 1), nn.ReLU(), nn.Conv2d(4, D, 1))
        self.spatial = nn.Conv2d(2, 1, 3, padding=1)
        self.c2 = nn.Conv2d(D, D, 1)
        self.head = nn.Linear(D, 3)

    def forward(self, x):
        h = F.relu(self.c1(x))
        ca = torch.sigmoid(self.mlp(F.adaptive_avg_pool2d(h, 1)) + self.mlp(F.adaptive_max_pool2d(h, 1)))
        h = h * ca
        sa = torch.sigmoid(self.spatial(torch.cat([h.mean(1, keepdim=True), h.amax(1, keepdim=True)], 1)))
        return self.head(F.relu(self.c2(h * sa)).mean((2, 3)))


class GatedMlp(nn.Module):
    """``glu``: F.glu(fc1(x)); ``swiglu``: silu(w1 x) * w3 x; ``geglu``: a * gelu(g) from one projection."""

    def __init__(self, kind: str):
        super().__init__()
        self.kind = kind
        if kind == "swiglu":
            self.w1, self.w3 = nn.Linear(6, D, bias=False), nn.Linear(6, D, bias=False)
        else:
            self.fc1 = nn.Linear(6, 2 * D)
        self.w2 = nn.Linear(D, 3)

    def forward(self, x):
        if self.kind == "glu":
            h = F.glu(self.fc1(x), dim=-1)
        elif self.kind == "swiglu":
            h = F.silu(self.w1(x)) * self.w3(x)
        else:
            a, g = self.fc1(x).chunk(2, dim=-1)
            h = a * F.gelu(g)
        return self.w2(h)


class Recurrent(nn.Module):
    def __init__(self, kind: str):
        super().__init__()
        self.pre, self.a = nn.Linear(6, 6), nn.Linear(6, 6)
        self.rnn = (nn.LSTM if kind == "lstm" else nn.GRU)(6, D, batch_first=True)
        self.head = nn.Linear(D, 3)

    def forward(self, x):
        y, _ = self.rnn(F.relu(self.a(F.relu(self.pre(x)))))
        return self.head(y[:, -1])


class ResNetStem(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv1, self.bn1 = nn.Conv2d(3, D, 3, stride=2, padding=1, bias=False), nn.BatchNorm2d(D)
        self.b_conv1, self.b_bn1 = nn.Conv2d(D, D, 3, padding=1, bias=False), nn.BatchNorm2d(D)
        self.b_conv2, self.b_bn2 = nn.Conv2d(D, D, 3, padding=1, bias=False), nn.BatchNorm2d(D)
        self.fc = nn.Linear(D, 3)
        with torch.no_grad():
            for bn in (self.bn1, self.b_bn1, self.b_bn2):
                bn.running_var.uniform_(0.5, 2.0)

    def forward(self, x):                       # (B, 3, 8, 8)
        h = F.max_pool2d(F.relu(self.bn1(self.conv1(x))), 3, 2, 1)
        y = self.b_bn2(self.b_conv2(F.relu(self.b_bn1(self.b_conv1(h)))))
        return self.fc(F.adaptive_avg_pool2d(F.relu(y + h), 1).flatten(1))


class PatchEmbed(nn.Module):
    def __init__(self):
        super().__init__()
        self.proj = nn.Conv2d(3, D, 2, stride=2)
        self.norm = nn.LayerNorm(D)
        self.fc, self.out = nn.Linear(D, D), nn.Linear(D, 3)

    def forward(self, x):
        t = self.norm(self.proj(x).flatten(2).transpose(1, 2))
        return self.out(F.relu(self.fc(t)).mean(1))


class DepthwiseSeparable(nn.Module):
    def __init__(self):
        super().__init__()
        self.stem = nn.Conv2d(3, D, 3, padding=1)
        self.dw, self.pw = nn.Conv2d(D, D, 3, padding=1, groups=D), nn.Conv2d(D, 4, 1)

    def forward(self, x):
        return self.pw(F.relu(self.dw(F.relu(self.stem(x))))).mean((2, 3))


class Pools(nn.Module):
    """max, avg (with padding), adaptive avg and adaptive max pooling, flattened and concatenated."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.head = nn.Linear(4 * (4 + 4 + 1 + 4), 3)

    def forward(self, x):                       # (B, 3, 4, 4)
        h = F.relu(self.conv(x))
        parts = [F.max_pool2d(h, 2), F.avg_pool2d(h, 3, 2, 1), F.adaptive_avg_pool2d(h, 1),
                 F.adaptive_max_pool2d(h, 2)]
        return self.head(torch.cat([p.flatten(1) for p in parts], 1))


class OverlapPools(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv1d(3, 4, 3, padding=1)
        self.mp, self.ap = nn.MaxPool1d(3, 1, 1), nn.AvgPool1d(2, 1)
        self.head = nn.Linear(4, 3)

    def forward(self, x):                       # (B, 3, 8)
        h = F.relu(self.conv(x))
        return self.head(self.ap(self.mp(h)).amax(2))


class UpDecoder(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, D, 3, stride=2, padding=1)
        self.up = nn.ConvTranspose2d(D, 4, 2, stride=2)
        self.out = nn.Conv2d(4, 2, 1)

    def forward(self, x):
        return self.out(F.relu(self.up(F.relu(self.conv(x)))))


class BigPadding(nn.Module):
    """Padding as large as the input: kernel taps that read only padding for some output positions."""

    def __init__(self):
        super().__init__()
        self.c1 = nn.Conv2d(3, D, 3, padding=3)
        self.c2 = nn.Conv2d(D, 4, 3, dilation=2, padding=2)
        self.head = nn.Linear(4, 3)

    def forward(self, x):                       # (B, 3, 4, 4)
        return self.head(F.relu(self.c2(F.relu(self.c1(x)))).amax((2, 3)))


_X, _T = (randn(2, 6),), (randn(2, 5, 6),)
_IMG4, _IMG6, _IMG8 = (randn(2, 3, 4, 4),), (randn(2, 3, 6, 6),), (randn(2, 3, 8, 8),)
_RNN_KILL = kills(rows("pre.weight", 0), rows("a.weight", 1))   # a's column 0, the rnn's input column 1

IDIOMS = [
    Idiom("layernorm_mlp", "layers", seeded(NormMlp, "ln"), _X, kills(rows("a.weight", 5), rows("b.weight", 0, 1)),
          note="a's dead unit 5 comes out of LayerNorm alive"),
    Idiom("rmsnorm_zero_scale", "layers", seeded(NormMlp, "rms"), _X,
          kills(zero("norm.weight", [0, 1]), rows("a.weight", 5))),
    Idiom("rmsnorm_manual", "layers", seeded(NormMlp, "manual_rms"), _X,
          kills(zero("scale", [0, 1]), rows("a.weight", 5))),
    Idiom("batchnorm1d_mlp", "layers", seeded(NormMlp, "bn"), _X,
          kills(rows("a.weight", 0, 1), zero("norm.weight", 4))),
    Idiom("groupnorm_conv", "layers", seeded(ConvNorm, "gn"), _IMG6,
          kills(zero("norm.weight", [0, 1]), rows("c1.weight", 4)),
          note="c1's dead channel 4 comes out of GroupNorm alive"),
    Idiom("batchnorm2d_conv", "layers", seeded(ConvNorm, "bn"), _IMG6,
          kills(zero("norm.weight", [0, 1]), rows("c1.weight", 5))),
    Idiom("convnext_block_channels_last", "layers", seeded(ConvNeXtBlock), _IMG8,
          kills(rows("pw1.weight", 0, 1), cols("head.weight", 2))),
    Idiom("squeeze_excite", "layers", seeded(SqueezeExcite), _IMG6,
          kills(rows("c1.weight", 0, 1), rows("fc1.weight", 2))),
    Idiom("cbam", "layers", seeded(Cbam), _IMG6, kills(rows("c1.weight", 0, 1), rows("mlp.0.weight", 3)),
          note="one MLP called twice; spatial attention mixes channels only through mean and max"),
    Idiom("glu_mlp", "layers", seeded(GatedMlp, "glu"), _X, rows("fc1.weight", 0, 1, D + 3),
          note="a dead gate unit (D + 3) gives sigmoid(0) = 0.5: w2 column 3 stays effective"),
    Idiom("swiglu_mlp", "layers", seeded(GatedMlp, "swiglu"), _X,
          kills(rows("w3.weight", 0, 1), rows("w1.weight", 2))),
    Idiom("geglu_mlp", "layers", seeded(GatedMlp, "geglu"), _X, rows("fc1.weight", D + 0, 4)),
    Idiom("lstm_batch_first", "layers", seeded(Recurrent, "lstm"), _T, _RNN_KILL),
    Idiom("gru_batch_first", "layers", seeded(Recurrent, "gru"), _T, _RNN_KILL),
    Idiom("resnet_stem_basic_block", "layers", seeded(ResNetStem), _IMG8,
          kills(rows("conv1.weight", 0, 1), zero("b_bn1.weight", 3))),
    Idiom("patch_embed_layernorm", "layers", seeded(PatchEmbed), _IMG4,
          kills(rows("proj.weight", 0), rows("fc.weight", 0, 1))),
    Idiom("depthwise_separable", "layers", seeded(DepthwiseSeparable), _IMG6, rows("stem.weight", 0, 1)),
    Idiom("pool_mix", "layers", seeded(Pools), _IMG4, rows("conv.weight", 1)),
    Idiom("overlapping_pool1d", "layers", seeded(OverlapPools), (randn(2, 3, 8),), rows("conv.weight", 2)),
    Idiom("conv_transpose_decoder", "layers", seeded(UpDecoder), _IMG8,
          kills(rows("conv.weight", 0), rows("up.weight", 1)), note="ConvTranspose2d weight is (in, out, k, k)"),
    Idiom("conv_big_padding_dilation", "layers", seeded(BigPadding), _IMG4, rows("c1.weight", 0, 5)),
]
