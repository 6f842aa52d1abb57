"""Parametrized and hook-computed weights: ``torch.nn.utils.parametrize``, ``parametrizations.*``, the old
hook-style ``weight_norm`` / ``spectral_norm``, ``torch.ao.pruning`` sparsifiers and ``torch.nn.utils.prune``.

The weight a layer uses is computed from other tensors; its mask is the computed weight's support, and the
effective mask is reported under the module's weight name (``fc2.weight``), not the parametrization's
internals. Kills act on what the computation reads (a weight-norm ``g`` row, a prune mask row).
"""
import warnings

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils import parametrizations, parametrize, prune

from .idiom import Idiom, cols, kills, randn, rows, zero

D = 8


class Mlp(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc1, self.fc2, self.fc3 = nn.Linear(6, D), nn.Linear(D, D), nn.Linear(D, 3)

    def forward(self, x):
        return self.fc3(F.relu(self.fc2(F.relu(self.fc1(x)))))


class Cnn(nn.Module):
    def __init__(self):
        super().__init__()
        self.c1, self.c2 = nn.Conv2d(3, D, 3, padding=1), nn.Conv2d(D, D, 3, padding=1)
        self.c3 = nn.Conv2d(D, 4, 1)

    def forward(self, x):
        return self.c3(F.relu(self.c2(F.relu(self.c1(x))))).mean((2, 3))


class MaskMul(nn.Module):
    """A custom parametrization: the weight times a fixed 0/1 mask (how many sparse trainers hold masks)."""

    def __init__(self, shape, seed: int = 0):
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        self.register_buffer("mask", (torch.rand(shape, generator=g) > 0.2).float())

    def forward(self, w):
        return w * self.mask


class Symmetric(nn.Module):
    def forward(self, w):
        return w.triu() + w.triu(1).transpose(0, 1)


def _quiet(fn):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return fn()


def _built(base, setup):
    def build():
        torch.manual_seed(0)
        model = base()
        _quiet(lambda: setup(model))
        return model
    build.__qualname__ = f"built({base.__name__}, {getattr(setup, '__name__', 'setup')})"
    return build


def _mask_param(attr):
    def setup(m):
        layer = getattr(m, attr)
        parametrize.register_parametrization(layer, "weight", MaskMul(layer.weight.shape))
    return setup


def _symmetric(m):
    parametrize.register_parametrization(m.fc2, "weight", Symmetric())


def _weight_norm_new(attr):
    return lambda m: parametrizations.weight_norm(getattr(m, attr))


def _spectral_norm_new(attr):
    return lambda m: parametrizations.spectral_norm(getattr(m, attr))


def _orthogonal(m):
    parametrizations.orthogonal(m.fc2)


def _weight_norm_old(attr):
    return lambda m: nn.utils.weight_norm(getattr(m, attr))


def _spectral_norm_old(attr):
    return lambda m: nn.utils.spectral_norm(getattr(m, attr))


class Sparsified(nn.Module):
    """``torch.ao.pruning.WeightNormSparsifier``: FakeSparsity parametrizations with block masks."""

    def __init__(self):
        super().__init__()
        self.seq = nn.Sequential(nn.Linear(6, 16), nn.ReLU(), nn.Linear(16, 16), nn.ReLU(), nn.Linear(16, 4))
        from torch.ao.pruning import WeightNormSparsifier
        sp = WeightNormSparsifier(sparsity_level=0.5, sparse_block_shape=(1, 4), zeros_per_block=4)
        sp.prepare(self.seq, config=[{"tensor_fqn": "2.weight"}, {"tensor_fqn": "4.weight"}])
        sp.step()

    def forward(self, x):
        return self.seq(x)


def _prune_l1(m):
    prune.l1_unstructured(m.fc2, "weight", amount=0.3)
    prune.identity(m.fc1, "weight")


def _prune_global(m):
    prune.global_unstructured([(m.fc1, "weight"), (m.fc2, "weight"), (m.fc3, "weight")],
                              pruning_method=prune.L1Unstructured, amount=0.3)
    prune.remove(m.fc3, "weight")     # back to a plain parameter, pruned values baked in


def _prune_ln_structured_out(m):
    prune.ln_structured(m.c1, "weight", amount=0.25, n=2, dim=0)


def _prune_ln_structured_in(m):
    prune.ln_structured(m.c2, "weight", amount=0.25, n=1, dim=1)


def _custom_from_mask(m):
    mask = torch.ones_like(m.fc1.weight)
    mask[[0, 1]] = 0
    prune.custom_from_mask(m.fc1, "weight", mask)
    prune.random_unstructured(m.fc2, "weight", amount=0.2)   # the global seed is fixed in build


_MLP_X, _CNN_X = (randn(2, 6),), (randn(2, 3, 5, 5),)

IDIOMS = [
    Idiom("parametrize_mask_linear", "param", _built(Mlp, _mask_param("fc2")), _MLP_X,
          zero("fc2.parametrizations.weight.0.mask", [0, 1]),
          note="a mask-multiply parametrization; kill through its mask buffer"),
    Idiom("parametrize_mask_conv", "param", _built(Cnn, _mask_param("c2")), _CNN_X,
          zero("c2.parametrizations.weight.0.mask", [0, 1])),
    Idiom("parametrize_symmetric", "param", _built(Mlp, _symmetric), _MLP_X, rows("fc1.weight", 0, 1),
          note="non-elementwise parametrization: fc2 columns 0, 1 read dead units"),
    Idiom("weight_norm_param_linear", "param", _built(Mlp, _weight_norm_new("fc2")), _MLP_X,
          zero("fc2.parametrizations.weight.original0", [0, 1]), note="g rows zero: rows of W zero"),
    Idiom("weight_norm_param_conv", "param", _built(Cnn, _weight_norm_new("c2")), _CNN_X,
          zero("c2.parametrizations.weight.original0", [0, 1])),
    Idiom("spectral_norm_param_linear", "param", _built(Mlp, _spectral_norm_new("fc2")), _MLP_X,
          rows("fc2.parametrizations.weight.original", 0, 1)),
    Idiom("spectral_norm_param_conv", "param", _built(Cnn, _spectral_norm_new("c2")), _CNN_X,
          rows("c2.parametrizations.weight.original", 0, 1)),
    Idiom("orthogonal_param", "param", _built(Mlp, _orthogonal), _MLP_X,
          kills(rows("fc1.weight", 0, 1), cols("fc3.weight", 2)),
          note="orthogonal W is dense: columns 0, 1 read dead units, row 2 reaches nothing"),
    Idiom("weight_norm_hook_linear", "param", _built(Mlp, _weight_norm_old("fc2")), _MLP_X,
          zero("fc2.weight_g", [0, 1]), note="deprecated torch.nn.utils.weight_norm: weight_g, weight_v"),
    Idiom("weight_norm_hook_conv", "param", _built(Cnn, _weight_norm_old("c2")), _CNN_X, zero("c2.weight_g", [0, 1])),
    Idiom("spectral_norm_hook_linear", "param", _built(Mlp, _spectral_norm_old("fc2")), _MLP_X,
          rows("fc2.weight_orig", 0, 1), note="deprecated torch.nn.utils.spectral_norm: weight_orig, u, v"),
    Idiom("ao_weight_norm_sparsifier", "param", _built(Sparsified, lambda m: None), _MLP_X,
          kills(rows("seq.0.weight", 0, 1, 2), zero("seq.4.parametrizations.weight.0.mask", (slice(None), [5]))),
          note="WeightNormSparsifier (1, 4) blocks on seq.2 and seq.4 (FakeSparsity)"),
    Idiom("prune_l1_unstructured", "param", _built(Mlp, _prune_l1), _MLP_X, zero("fc1.weight_mask", [0, 1]),
          note="weight_orig + weight_mask; kill through the mask buffer"),
    Idiom("prune_global_then_remove", "param", _built(Mlp, _prune_global), _MLP_X,
          kills(zero("fc1.weight_mask", [0, 1]), cols("fc3.weight", 4))),
    Idiom("prune_ln_structured_out", "param", _built(Cnn, lambda m: None), _CNN_X, _prune_ln_structured_out,
          note="the kill is prune.ln_structured itself: two output channels of c1"),
    Idiom("prune_ln_structured_in", "param", _built(Cnn, lambda m: None), _CNN_X, _prune_ln_structured_in,
          note="input channels of c2 pruned: the c1 channels feeding them reach nothing"),
    Idiom("prune_custom_from_mask", "param", _built(Mlp, _custom_from_mask), _MLP_X, zero("fc2.weight_mask", 3)),
]
