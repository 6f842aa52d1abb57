"""The idiom corpus and its soundness harness (DESIGN.md, "The path-count oracle", soundness protocol).

``IDIOMS`` maps a name to an :class:`Idiom`. ``prepare`` builds an entry as the protocol wants it (killed
units, additive parameters zeroed, eval mode); ``check`` analyses it with one tracer, zeroes every weight
the analysis calls ineffective and compares the outputs, bit for bit, with those of an untouched copy.
``witnesses`` is the ground truth for the corpus itself: weight slices whose zeroing changes no output.
"""
from __future__ import annotations

from typing import Any, Iterable

import torch
from torch import nn
from torch.nn.utils import parametrize

from . import (models_attn, models_const, models_hf, models_inplace, models_layers, models_ops, models_param,
               models_recurrent, models_routing, models_shared)
from .idiom import TRACERS, Idiom

__all__ = ["IDIOMS", "FAMILIES", "DEFAULT_ADDITIVE", "prepare", "check", "apply_masks", "outputs", "draws",
           "witnesses", "Idiom", "TRACERS"]

_MODULES = (models_shared, models_param, models_inplace, models_const, models_attn, models_layers, models_ops,
            models_recurrent, models_routing, models_hf)
DEFAULT_ADDITIVE = ("bias", "running_mean")


def _collect() -> dict[str, Idiom]:
    found: dict[str, Idiom] = {}
    for mod in _MODULES:
        for idiom in mod.IDIOMS:
            if idiom.name in found:
                raise ValueError(f"duplicate idiom {idiom.name!r} in {mod.__name__}")
            found[idiom.name] = idiom
    return found


IDIOMS: dict[str, Idiom] = _collect()
FAMILIES: dict[str, list[str]] = {}
for _i in IDIOMS.values():
    FAMILIES.setdefault(_i.family, []).append(_i.name)


def _additive(idiom: Idiom, name: str) -> bool:
    return any(p in name for p in DEFAULT_ADDITIVE + tuple(idiom.additive))


def prepare(idiom: Idiom, kill: bool = True) -> tuple[nn.Module, tuple]:
    """Build the entry, kill its units (unless ``kill`` is False), zero its additive parameters and
    buffers; eval mode.

    One eager forward at the end refreshes weights that hooks compute (old-style ``weight_norm``,
    ``spectral_norm``, ``torch.nn.utils.prune``), as any model that has run once has them.
    """
    model = idiom.build().eval()
    if kill:
        idiom.kill(model)
    with torch.no_grad():
        for name, t in list(model.named_parameters()) + list(model.named_buffers()):
            if t.is_floating_point() and _additive(idiom, name):
                t.zero_()
    outputs(model, idiom.inputs)
    return model, idiom.inputs


def outputs(model: nn.Module, inputs: tuple) -> list[torch.Tensor]:
    """The model's outputs on (copies of) ``inputs`` as a flat list of tensors (``logits`` for HF outputs)."""
    with torch.no_grad():
        out = model(*[t.clone() for t in inputs])
    return list(_flat(out))


def _flat(out: Any) -> Iterable[torch.Tensor]:
    if isinstance(out, torch.Tensor):
        yield out
    elif getattr(out, "logits", None) is not None:
        yield out.logits
    elif isinstance(out, dict):
        for v in out.values():
            yield from _flat(v)
    elif isinstance(out, (tuple, list)):
        for v in out:
            yield from _flat(v)


def draws(idiom: Idiom, n: int = 2) -> list[tuple]:
    """The example inputs, then ``n`` random inputs of the same shapes (token ids below ``idiom.vocab``)."""
    found = [idiom.inputs]
    for k in range(n):
        g = torch.Generator().manual_seed(1000 + k)
        new = []
        for t in idiom.inputs:
            if t.is_floating_point():
                new.append(torch.randn(t.shape, generator=g, dtype=t.dtype))
            elif idiom.vocab and t.dtype == torch.long:
                new.append(torch.randint(0, idiom.vocab, t.shape, generator=g))
            else:
                new.append(t.clone())
        found.append(tuple(new))
    return found


class _Mask(nn.Module):
    """One more parametrization at the end of a chain: the computed weight times the effective mask."""

    def __init__(self, mask: torch.Tensor):
        super().__init__()
        self.register_buffer("mask", mask)

    def forward(self, w: torch.Tensor) -> torch.Tensor:
        return w * self.mask


def _hook_owner(module: nn.Module, attr: str) -> bool:
    """Whether a forward pre-hook (prune, old weight_norm/spectral_norm) computes ``module.attr``."""
    return any(getattr(h, "name", getattr(h, "_tensor_name", None)) == attr
               for h in module._forward_pre_hooks.values())


def _mask_computed(module: nn.Module, attr: str, mask: torch.Tensor) -> bool:
    """Scale a computed weight by ``mask`` from now on: one more parametrization at the end of the chain,
    or one more forward pre-hook after the one that computes it. False if ``module.attr`` is not computed."""
    if parametrize.is_parametrized(module, attr):
        parametrize.register_parametrization(module, attr, _Mask(mask))
        return True
    if _hook_owner(module, attr):
        module.register_forward_pre_hook(lambda mod, args: setattr(mod, attr, getattr(mod, attr) * mask))
        return True
    return False


def _computed_weights(model: nn.Module) -> list[tuple[str, nn.Module, str]]:
    """(name, module, attribute) of every parametrized or hook-computed tensor attribute."""
    found = []
    for mod_name, mod in model.named_modules():
        attrs = list(mod.parametrizations.keys()) if parametrize.is_parametrized(mod) else []
        attrs += [a for h in mod._forward_pre_hooks.values()
                  if isinstance(a := getattr(h, "name", getattr(h, "_tensor_name", None)), str)]
        for attr in dict.fromkeys(attrs):
            found.append((f"{mod_name}.{attr}" if mod_name else attr, mod, attr))
    return found


def apply_masks(model: nn.Module, masks: dict[str, torch.Tensor]) -> list[str]:
    """Multiply each named weight by its mask, in place; return the names that name no weight.

    A name of ``model.named_parameters()`` scales that tensor. A module's computed weight scales the
    computation's result: a parametrized ``fc.weight`` gets one more parametrization, a hook-computed one
    (prune's ``fc.weight`` over ``weight_orig``, old ``weight_norm``/``spectral_norm``) one more hook.
    """
    params = dict(model.named_parameters())
    bad = []
    for name, mask in masks.items():
        if name in params:
            p = params[name]
            if tuple(mask.shape) != tuple(p.shape):
                bad.append(f"{name} (mask {tuple(mask.shape)} != {tuple(p.shape)})")
                continue
            with torch.no_grad():
                p.mul_(mask.to(p.dtype))
            continue
        mod_name, _, attr = name.rpartition(".")
        try:
            mod = model.get_submodule(mod_name)
        except AttributeError:
            bad.append(name)
            continue
        value = getattr(mod, attr, None)
        if not isinstance(value, torch.Tensor) or tuple(value.shape) != tuple(mask.shape) \
                or not _mask_computed(mod, attr, mask.to(value.dtype)):
            bad.append(name)
    return bad


def _first_line(e: BaseException) -> str:
    text = str(e).strip().splitlines()
    return f"{type(e).__name__}: {text[0] if text else ''}"[:240]


def check(idiom: Idiom, tracer: str = "auto", n_draws: int = 2) -> dict:
    """Analyse one entry with ``tracer`` and apply the soundness protocol.

    Returns ``sound`` (outputs unchanged, bit for bit, on the example and ``n_draws`` random inputs after
    zeroing every weight called ineffective), ``ineffective_found`` (params_effective < params_nonzero),
    ``bad_keys`` (effective-mask names that name no parameter nor computed module weight), the counts,
    ``collapsed``, ``unsupported`` (number of unsupported ops; ``unsupported_ops`` their names), ``error``
    (first line, or None) and, when unsound, ``culprits``: the names whose mask alone changes the outputs.
    """
    import connectome

    row: dict[str, Any] = {"name": idiom.name, "tracer": tracer, "sound": None, "ineffective_found": None,
                           "bad_keys": [], "params_effective": None, "params_nonzero": None, "collapsed": None,
                           "unsupported": None, "unsupported_ops": [], "error": None, "culprits": []}
    inputs_list = draws(idiom, n_draws)
    ref, inputs = prepare(idiom)
    expected = [outputs(ref, x) for x in inputs_list]
    model, _ = prepare(idiom)
    try:
        res = connectome.analyze(model, inputs, tracer=tracer)
    except Exception as e:   # a TraceError is an expected answer for fx on some models
        row["error"] = _first_line(e)
        return row
    row.update(params_effective=res.params_effective, params_nonzero=res.params_nonzero,
               collapsed=bool(res.collapsed), unsupported=len(res.unsupported_ops),
               unsupported_ops=sorted({str(u.get("op", u)) if isinstance(u, dict) else str(u)
                                       for u in res.unsupported_ops}),
               ineffective_found=res.params_effective < res.params_nonzero)
    try:
        row["bad_keys"] = apply_masks(model, res.effective_masks)
        got = [outputs(model, x) for x in inputs_list]
    except Exception as e:
        row["error"] = "after masking: " + _first_line(e)
        return row
    row["sound"] = _same(expected, got)
    if not row["sound"]:    # which masks, applied alone, change the outputs
        for name, mask in res.effective_masks.items():
            alone, _ = prepare(idiom)
            if not apply_masks(alone, {name: mask}) and \
                    not _same(expected, [outputs(alone, x) for x in inputs_list]):
                row["culprits"].append(name)
    return row


def _same(a: list[list[torch.Tensor]], b: list[list[torch.Tensor]]) -> bool:
    return all(len(u) == len(v) and all(torch.equal(s, t) for s, t in zip(u, v)) for u, v in zip(a, b))


def witnesses(idiom: Idiom, n_draws: int = 7, limit: int = 0, kill: bool = True) -> list[str]:
    """Ground truth for the corpus: rows and columns of weights (parameters of 2 or more dims, and computed
    weights of parametrized or hooked modules, not their internals) that are nonzero and whose zeroing
    changes no output on the example and ``n_draws`` random inputs. ``limit`` > 0 stops after that many.

    Some slices are ineffective only because of values (a ReLU unit whose live inputs all have negative
    weights, with biases zeroed); compare with ``kill=False`` to keep those that the kill made.
    """
    model, _ = prepare(idiom, kill=kill)
    inputs_list = draws(idiom, n_draws)
    expected = [outputs(model, x) for x in inputs_list]
    targets = []     # (name, tensor to zero slices of, tensor whose slices must be nonzero)
    for name, mod, attr in _computed_weights(model):
        value = getattr(mod, attr).detach().clone()
        if value.dim() >= 2:
            mask = torch.ones_like(value)
            _mask_computed(mod, attr, mask)
            targets.append((name, mask, value))
    for name, p in model.named_parameters():
        if p.dim() >= 2 and "parametrizations." not in name and not name.endswith(("_g", "_v", "_orig")):
            targets.append((name, p, p))
    found = []
    for name, t, value in targets:
        for dim in (0, 1):
            for i in range(t.shape[dim]):
                if not value.select(dim, i).any():
                    continue
                sl = t.select(dim, i)
                saved = sl.detach().clone()
                with torch.no_grad():
                    sl.zero_()
                    same = all(all(torch.equal(u, v) for u, v in zip(outputs(model, x), e))
                               for x, e in zip(inputs_list, expected))
                    sl.copy_(saved)
                if same:
                    found.append(f"{name}[{'row' if dim == 0 else 'col'} {i}]")
                    if limit and len(found) >= limit:
                        return found
    return found
