"""Small modules that, together, call every op family connectome has a rule for."""
import torch
import torch.nn.functional as F
from torch import nn


class Convs(nn.Module):
    def __init__(self):
        super().__init__()
        self.c1 = nn.Conv1d(2, 4, 3, padding=1, padding_mode="reflect")
        self.c2 = nn.Conv2d(2, 4, 3, stride=2, padding=1, groups=2)
        self.same = nn.Conv2d(2, 2, 3, padding="same", dilation=2)
        self.c3 = nn.Conv3d(2, 2, 1)
        self.t1 = nn.ConvTranspose1d(4, 2, 2, stride=2)
        self.t2 = nn.ConvTranspose2d(4, 2, 3, stride=2, padding=1, output_padding=1)
        self.t3 = nn.ConvTranspose3d(2, 2, 1)
        self.w = nn.Parameter(torch.randn(2, 2, 3, 3))
        self.wt = nn.Parameter(torch.randn(2, 2, 2, 2))

    def forward(self, x):                                   # x: (1, 2, 6, 6)
        a = self.t1(self.c1(x.mean(3))).sum(2) + self.same(x).mean((2, 3))  # conv1d, convT1d, "same" padding
        b = self.t2(self.c2(x))                              # grouped conv2d, conv_transpose2d
        c = self.t3(self.c3(x.unsqueeze(2))).squeeze(2)      # conv3d, conv_transpose3d
        d = F.conv2d(x, self.w, padding=1, dilation=1) + F.conv_transpose2d(x, self.wt, stride=1)[..., :6, :6]
        e = F.conv1d(x.flatten(2), self.w[:, :, 0]) .amax(2) + F.conv3d(x.unsqueeze(2), self.w.unsqueeze(2)).mean((2, 3, 4))
        f = F.conv_transpose1d(x.mean(2), self.wt[:, :, 0]).sum(2) + F.conv_transpose3d(x.unsqueeze(2), self.wt.unsqueeze(2)).sum((2, 3, 4))
        return a + b.mean((2, 3)) + c.mean((2, 3)) + d.mean((2, 3)) + e + f


class Pools(nn.Module):
    def __init__(self):
        super().__init__()
        self.pools = nn.ModuleList([nn.MaxPool2d(2, ceil_mode=True), nn.AvgPool2d(3, 1, 1), nn.AdaptiveAvgPool2d(2),
                                    nn.AdaptiveMaxPool2d((2, 3)), nn.LPPool2d(2, 2)])
        self.up = nn.ModuleList([nn.Upsample(scale_factor=2), nn.Upsample(size=(5, 7), mode="bilinear"),
                                 nn.UpsamplingBilinear2d(scale_factor=2), nn.UpsamplingNearest2d(size=8)])
        self.conv = nn.Conv2d(2, 2, 1)

    def forward(self, x):                                    # (1, 2, 5, 5)
        x = self.conv(x)
        out = sum(p(x).sum((2, 3)) for p in self.pools) + sum(u(x).mean((2, 3)) for u in self.up)
        out = out + F.max_pool2d(x, 2).sum((2, 3)) + F.avg_pool2d(x, 2).sum((2, 3))
        out = out + F.adaptive_avg_pool2d(x, 1).flatten(1) + F.adaptive_max_pool2d(x, 1).flatten(1)
        out = out + F.max_pool1d(x.flatten(2), 2).sum(2) + F.avg_pool1d(x.flatten(2), 3).sum(2)
        out = out + F.max_pool3d(x.unsqueeze(2), 1).sum((2, 3, 4)) + F.avg_pool3d(x.unsqueeze(2), 1).sum((2, 3, 4))
        out = out + F.adaptive_avg_pool1d(x.flatten(2), 2).sum(2) + F.adaptive_max_pool1d(x.flatten(2), 2).sum(2)
        out = out + F.adaptive_avg_pool3d(x.unsqueeze(2), 1).flatten(1) + F.adaptive_max_pool3d(x.unsqueeze(2), 1).flatten(1)
        out = out + F.interpolate(x, scale_factor=2, mode="nearest").mean((2, 3))
        out = out + F.interpolate(x, size=(3, 3), mode="bicubic", align_corners=False).mean((2, 3))
        out = out + F.interpolate(x.flatten(2), size=9, mode="linear").mean(2)
        out = out + F.interpolate(x.unsqueeze(2), scale_factor=(1, 2, 2), mode="trilinear").mean((2, 3, 4))
        out = out + F.interpolate(x, scale_factor=1.5, mode="nearest-exact").mean((2, 3))
        return out


class Norms(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(4, 4, 1)
        self.bn, self.gn = nn.BatchNorm2d(4), nn.GroupNorm(2, 4)
        self.inn, self.lrn = nn.InstanceNorm2d(4, affine=True), nn.LocalResponseNorm(2)
        self.ln, self.softmax = nn.LayerNorm(4), nn.Softmax(dim=1)
        self.rms = nn.RMSNorm(4) if hasattr(nn, "RMSNorm") else nn.LayerNorm(4)
        self.bn1 = nn.BatchNorm1d(4)
        self.lin = nn.Linear(4, 4)

    def forward(self, x):                                    # (1, 4, 3, 3)
        y = self.lrn(self.inn(self.gn(self.bn(self.conv(x)))))
        t = y.flatten(2).transpose(1, 2)                      # (1, 9, 4) tokens
        t = self.rms(self.ln(t))
        t = F.layer_norm(t, (4,)) + F.group_norm(y, 2).flatten(2).transpose(1, 2)
        t = t + F.instance_norm(y).flatten(2).transpose(1, 2)
        t = t + F.batch_norm(y, torch.zeros(4), torch.ones(4)).flatten(2).transpose(1, 2)
        s = torch.softmax(t, -1) + F.log_softmax(t, dim=-1) + self.softmax(t) + t.softmax(-1)
        s = s + F.normalize(t, dim=-1) + F.local_response_norm(y, 2).flatten(2).transpose(1, 2)
        return self.lin(s).mean(1) + self.bn1(self.lin(t.mean(1)))


class Elementwise(nn.Module):
    def __init__(self):
        super().__init__()
        self.a, self.b = nn.Linear(3, 3), nn.Linear(3, 3)
        self.acts = nn.ModuleList([nn.ReLU(), nn.GELU(), nn.SiLU(), nn.Hardswish(), nn.Sigmoid(), nn.Hardsigmoid(),
                                   nn.Tanh(), nn.LeakyReLU(), nn.ELU(), nn.Dropout(0.1), nn.Identity(), nn.ReLU6(),
                                   nn.Softplus(), nn.Mish(), nn.PReLU()])

    def forward(self, x):                                    # (1, 3)
        a, b = self.a(x), self.b(x)
        out = sum(act(a) for act in self.acts)
        out = out + a * torch.sigmoid(b) - b / (1 + a.abs()) + torch.where(a > 0, a, b) + torch.maximum(a, b)
        out = out + F.relu(a) + torch.relu(b) + a.relu() + b.sigmoid() + torch.exp(-a.abs()) + a.clamp(min=0)
        out = out + torch.tanh(a) * 2 + a.pow(2) + torch.add(a, b) + torch.mul(a, b) + torch.div(a, 2)
        out = out + a.masked_fill(b > 0, 0.0) + F.dropout(a, 0.1, training=False) + a.float() + a.to(torch.float32)
        out = out + (a - 1) + torch.sub(a, b) + a.neg() + F.gelu(a) + F.silu(b) + F.hardswish(a) + F.hardsigmoid(b)
        return out + torch.max(a, dim=1, keepdim=True).values + a.max(1)[0].unsqueeze(1) + a.min(1, keepdim=True)[0]


class Movement(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(4, 4, 1)
        self.lin = nn.Linear(16, 2)
        self.pad, self.shuffle = nn.ZeroPad2d(1), nn.ChannelShuffle(2)
        self.flat, self.unflat = nn.Flatten(), nn.Unflatten(1, (4, 4))

    def forward(self, x):                                    # (1, 4, 2, 2)
        x = self.conv(x)
        a, b = torch.split(x, 2, dim=1)
        c, d = x.chunk(2, 1)
        y = torch.cat([b, a], 1) + torch.stack([c, d], 1).flatten(1, 2) + torch.cat(torch.unbind(x, 1), 0).unsqueeze(0).reshape(1, 4, 2, 2)
        y = y + x.permute(0, 1, 3, 2).transpose(2, 3) + x.flip(1).roll(1, 1) + x.view(1, 4, 4).view_as(x)
        y = y + F.pad(x, (1, 1, 1, 1))[:, :, 1:3, 1:3] + F.pad(x, (1, 1, 1, 1), mode="reflect")[..., 1:-1, 1:-1]
        y = y + self.pad(x)[:, :, 1:-1, 1:-1] + x.narrow(1, 0, 4) + x.select(0, 0).unsqueeze(0)
        y = y + self.shuffle(x) + F.pixel_unshuffle(F.pixel_shuffle(x, 2), 2) + x.expand(1, 4, 2, 2)
        y = y + x[:, [1, 0, 3, 2]] + x.repeat(1, 1, 1, 1) + torch.flatten(x, 2).reshape(1, 4, 2, 2).contiguous()
        y = y + x.index_select(1, torch.tensor([0, 1, 2, 3])) + x.movedim(1, 3).movedim(3, 1) + x.squeeze(0).unsqueeze(0)
        return self.lin(self.flat(y)) + self.lin(self.unflat(y.flatten(1)).flatten(1))


class Products(nn.Module):
    def __init__(self):
        super().__init__()
        self.q, self.k, self.v = nn.Linear(4, 4), nn.Linear(4, 4), nn.Linear(4, 4)
        self.w = nn.Parameter(torch.randn(4, 4))
        self.pos_embedding = nn.Embedding(10, 4)  # constant ids: additive, like a bias
        self.emb = nn.Embedding(2, 4)
        self.mha = nn.MultiheadAttention(4, 2)
        self.mha_sep = nn.MultiheadAttention(4, 2, kdim=3, vdim=3, batch_first=True)
        self.kv = nn.Linear(4, 3)

    def forward(self, x):                                    # (1, 5, 4)
        q, k, v = self.q(x), self.k(x), self.v(x)
        a = torch.softmax(q @ k.transpose(1, 2), -1) @ v + torch.bmm(q, k.transpose(1, 2)).bmm(v)
        a = a + torch.einsum("bld,bmd->blm", q, k).matmul(v) + x @ self.w + F.linear(x, self.w) + torch.matmul(x, self.w.t())
        a = a + F.scaled_dot_product_attention(q.unsqueeze(1), k.unsqueeze(1), v.unsqueeze(1)).squeeze(1)
        ids = torch.arange(5).unsqueeze(0)
        a = a + self.pos_embedding(ids) + F.embedding(ids, self.pos_embedding.weight)
        tokens = (x[..., 0] > 0).long()                       # ids that depend on the input
        a = a + self.emb(tokens) + F.embedding(tokens, self.emb.weight)
        a = a + self.mha(x.transpose(0, 1), x.transpose(0, 1), x.transpose(0, 1))[0].transpose(0, 1)
        kv = self.kv(x)
        return a + self.mha_sep(x, kv, kv, need_weights=False)[0] + F.linear(x, q[0, :4])


class MatmulWeights(nn.Module):
    """Raw parameters in the matmul family: they are prunable weights like any layer's."""

    def __init__(self):
        super().__init__()
        self.a, self.b = nn.Parameter(torch.randn(4, 6)), nn.Parameter(torch.randn(6, 5))
        self.c, self.d = nn.Parameter(torch.randn(3, 5, 4)), nn.Parameter(torch.randn(4, 2))
        self.e, self.s = nn.Parameter(torch.randn(2, 4)), nn.Parameter(torch.tensor(0.7))

    def forward(self, x):                                    # (2, 4)
        h = torch.relu(torch.einsum("bi,ij->bj", x, self.a))
        h = torch.relu(h @ self.b)
        h = torch.relu(torch.baddbmm(torch.zeros(3, 2, 4), h.unsqueeze(0).expand(3, -1, -1), self.c)).sum(0)
        h = torch.addmm(h[:, :2], h, self.d)
        h = torch.tensordot(h, self.e, dims=1) + (self.e.t() @ h.t()).t()
        return F.linear(h, self.s * self.e) + F.linear(h, self.e.flip(0))


class Writes(nn.Module):
    """In-place writes, into whole tensors and into views, and writes that scatter or fold."""

    def __init__(self):
        super().__init__()
        self.a, self.b, self.c = nn.Linear(4, 6), nn.Linear(4, 3), nn.Linear(4, 2)
        self.conv = nn.Conv2d(2, 2, 1)
        self.register_buffer("rows", torch.tensor([1, 0, 1]))
        self.register_buffer("cols", torch.tensor([[0, 2, 1, 2, 0, 1]]))

    def forward(self, x):                                    # (1, 4)
        h = self.a(x)
        h.add_(self.a(x * 2))                                # result unused: later reads of h see it
        h[:, :3].mul_(self.b(x))
        h.narrow(1, 3, 2).add_(self.c(x))
        out = torch.zeros(2, 6)
        out.index_add_(0, self.rows[:1], h)
        out = out.index_add(0, self.rows[1:2], h)
        s = torch.zeros(1, 6).scatter_add(1, self.cols, h)
        cols = torch.zeros(2, 3).index_copy(1, self.rows[:2], h[:, :2].expand(2, 2))
        img = self.conv(h[:, :4].reshape(1, 1, 2, 2).expand(1, 2, 2, 2).contiguous())
        u = F.unfold(F.pad(img, (1, 1, 1, 1)), 2)            # (1, 8, 9) overlapping blocks
        folded = F.fold(u, (4, 4), 2).flatten(1)[:, 5:11]
        return out.sum(0, keepdim=True) + s + cols.flatten().unsqueeze(0) + folded


class Mixers(nn.Module):
    """Ops that mix along some dims only (sort, topk, cumsum, FFT), GLU, bilinear layers, bags, constant
    conditions, fills."""

    def __init__(self):
        super().__init__()
        self.a, self.out = nn.Linear(4, 8), nn.Linear(4, 2)
        self.bil = nn.Bilinear(4, 4, 4)
        self.w = nn.Parameter(torch.randn(4, 4, 4))
        self.bag = nn.EmbeddingBag(10, 4, mode="sum")
        self.register_buffer("keep", torch.tensor([True, False, True, True]))
        self.scale = nn.Parameter(torch.tensor([1.0, 0.0, 2.0, 1.0]))

    def forward(self, x):                                    # (1, 5, 4): tokens
        h = F.glu(self.a(x), -1)                             # (1, 5, 4)
        s = torch.sort(h, dim=1).values + h.topk(2, dim=1).values.sum(1, keepdim=True) + h.cumsum(1)
        s = s + torch.fft.irfft(torch.fft.rfft(h, dim=1), n=5, dim=1)
        b = self.bil(s, h) + F.bilinear(h, s, self.w)
        bag = self.bag((x[0] > 0).long() + torch.arange(4) * 2)   # 5 bags of 4 ids that depend on x
        w = torch.where(self.keep, b, 0.0) + b.masked_fill(~self.keep, 1.0) * self.scale
        filled = w.clone()
        filled.fill_(2.0)                                    # a constant now, whatever w was
        return self.out(w * filled + bag + torch.zeros_like(w) + w.new_tensor([1.0, 2.0, 3.0, 4.0]))


class Recurrent(nn.Module):
    """LSTM, GRU and both RNN nonlinearities: nn modules under fx, aten.lstm/gru/rnn_* under export."""

    def __init__(self):
        super().__init__()
        self.lstm = nn.LSTM(4, 3, num_layers=2, bidirectional=True, batch_first=True)
        self.gru = nn.GRU(6, 3, batch_first=True)
        self.tanh = nn.RNN(3, 3, batch_first=True)
        self.relu = nn.RNN(3, 2, nonlinearity="relu", batch_first=True)

    def forward(self, x):                                    # (1, 5 steps, 4)
        y, (h, c) = self.lstm(x)
        z, _ = self.gru(y, h[:1].contiguous())
        return self.relu(self.tanh(z)[0])[0]


class Routing(nn.Module):
    """addcmul/addcdiv, gather and writes at places the data decides, histc, a grouped matmul of experts."""

    def __init__(self):
        super().__init__()
        self.a, self.router, self.out = nn.Linear(4, 8), nn.Linear(4, 2), nn.Linear(8, 2)
        self.up = nn.Parameter(torch.randn(2, 8, 8))

    def forward(self, x):                                    # (4 tokens, 4)
        h = torch.relu(self.a(x))
        r = self.router(x)
        order = r[:, 0].argsort()
        y = torch.addcmul(h, h, h.flip(1)) + torch.addcdiv(h, h, h.abs() + 1)
        p = y.gather(0, order[:, None].expand(4, 8)) + torch.take_along_dim(y, order[:, None], 0)
        w = torch.zeros(4, 8).index_add(0, order, p)
        ids, perm = torch.sort(r.argmax(-1))
        offs = torch.cumsum(torch.histc(ids.float(), bins=2, min=0, max=1), 0).to(torch.int32)
        g = F.grouped_mm(w[perm].to(torch.bfloat16), self.up.to(torch.bfloat16), offs=offs).float()
        return self.out(g + torch.histc(h, bins=8, min=0, max=1))


def tiny_swin():
    from torchvision.models.swin_transformer import SwinTransformer
    return SwinTransformer(patch_size=[2, 2], embed_dim=8, depths=[1, 1], num_heads=[1, 2], window_size=[2, 2],
                           num_classes=3)


CORPUS = {
    "convs": (Convs, (1, 2, 6, 6)),
    "pools": (Pools, (1, 2, 5, 5)),
    "norms": (Norms, (1, 4, 3, 3)),
    "elementwise": (Elementwise, (1, 3)),
    "movement": (Movement, (1, 4, 2, 2)),
    "products": (Products, (1, 5, 4)),
    "swin": (tiny_swin, (1, 3, 8, 8)),
    "matmul_weights": (MatmulWeights, (2, 4)),
    "writes": (Writes, (1, 4)),
    "mixers": (Mixers, (1, 5, 4)),
    "recurrent": (Recurrent, (1, 5, 4)),
    "routing": (Routing, (4, 4)),
}
