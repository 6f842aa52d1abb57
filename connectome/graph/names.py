"""One name per weight tensor: tied, shared, pruned and parametrized weights resolved to a single key.

A tensor can be reached under several names: an output head tied to the input embedding
(``lm_head.weight`` is ``embed.weight``), a module registered twice, ``torch.nn.utils.prune``'s
``weight_orig``, a parametrization's ``parametrizations.weight.original``, the hook-style weight norm's
``weight_g`` and ``weight_v``. Masks, effective masks and counts are per *tensor*, so every name is
resolved to one key:

- a plain parameter: its first name in ``model.named_parameters()`` (the name that call returns);
- ``torch.nn.utils.prune`` and the hook-style ``spectral_norm``: ``<module>.weight`` (``_orig`` dropped);
- a ``torch.nn.utils.parametrize`` parametrization: ``<module>.weight``, the parametrized weight;
- the hook-style ``weight_norm``: ``<module>.weight``, the computed weight ``g * v / |v|`` (as for a
  parametrization: zeroing entries of ``v`` would rescale its other entries, and a zero ``v`` row is 0/0).

Examples
--------
>>> import torch
>>> m = torch.nn.ModuleDict({"emb": torch.nn.Embedding(5, 3), "head": torch.nn.Linear(3, 5, bias=False)})
>>> m.head.weight = m.emb.weight
>>> n = WeightNames(m)
>>> n.key("head.weight"), n.aliases("emb.weight")
('emb.weight', ['head.weight'])
"""

from __future__ import annotations

import re

from torch import nn

__all__ = ["WeightNames"]

_PARAMETRIZED = re.compile(r"^(.*?)(?:^|\.)parametrizations\.([^.]+)\.original\d*$")


class WeightNames:
    """Resolves every name of a model's weights (parameters, prune's ``_orig``, parametrizations) to a key."""

    def __init__(self, model: nn.Module):
        self._key: dict[str, str] = {}
        self._aliases: dict[str, list[str]] = {}
        self.parametrized: set[str] = set()  # keys that are a parametrization's output
        self.renormalized: set[str] = set()  # keys a hook divides by the norm of the whole tensor
        by_tensor: dict[int, str] = {}
        for mod_name, module in model.named_modules(remove_duplicate=False):
            prefix = mod_name + "." if mod_name else ""
            hooked: set[str] = set()
            if module._forward_pre_hooks:
                hooked = _weight_norm_hooks(module)
                self.renormalized.update(prefix + attr for attr in _spectral_norm_hooks(module))
                self.parametrized.update(prefix + attr for attr in hooked)
            for attr, p in module._parameters.items():
                if p is None:
                    continue
                name = prefix + attr
                plain = not hooked and ".parametrizations." not in name and not attr.endswith("_orig")
                key = name if plain else self._structural_key(prefix, attr, hooked)
                first = by_tensor.setdefault(id(p), key)
                if first == name:  # the common case: a parameter's first and only name
                    self._key[name] = name
                    continue
                if not plain and _PARAMETRIZED.match(name):
                    self.parametrized.add(first)
                self._add(name, first)
                if key != name:
                    self._add(key, first)

    @staticmethod
    def _structural_key(prefix: str, attr: str, hooked: set[str]) -> str:
        full = prefix + attr
        m = _PARAMETRIZED.match(full)
        if m:
            return f"{m.group(1)}.{m.group(2)}" if m.group(1) else m.group(2)
        if attr.endswith("_orig"):
            return prefix + attr[: -len("_orig")]
        if attr[-2:] in ("_g", "_v") and attr[:-2] in hooked:
            return prefix + attr[:-2]
        return full

    def _add(self, name: str, key: str) -> None:
        if name in self._key:
            return
        self._key[name] = key
        if name != key:
            self._aliases.setdefault(key, []).append(name)

    def key(self, name: str) -> str:
        """The key of the tensor ``name`` refers to (``name`` itself when it is unknown)."""
        k = self._key.get(name)
        if k is None and name.endswith("_orig"):
            k = self._key.get(name[: -len("_orig")])
        return k if k is not None else name

    def is_param(self, name: str) -> bool:
        """Whether ``name`` names a parameter (under any of its names), not a buffer or a constant."""
        return name in self._key

    def aliases(self, key: str) -> list[str]:
        """Other names of the same tensor, as a user would write them (no internal parametrization names).

        >>> m = nn.Sequential(nn.Linear(2, 2)); _ = m.append(m[0])
        >>> WeightNames(m).aliases("0.weight")
        ['1.weight']
        """
        return [
            a
            for a in self._aliases.get(key, [])
            if ".parametrizations." not in a
            and not a.endswith("_orig")
            and not (a[-2:] in ("_g", "_v") and a[:-2] == key)
        ]


def _spectral_norm_hooks(module: nn.Module) -> set[str]:
    """Weights that the hook-style ``spectral_norm`` divides by the spectral norm of the stored parameter:
    zeroing one stored entry rescales all the others."""
    found: set[str] = set()
    for hook in module._forward_pre_hooks.values():
        name = getattr(hook, "name", None)
        if type(hook).__name__ == "SpectralNorm" and isinstance(name, str):
            found.add(name)
    return found


def _weight_norm_hooks(module: nn.Module) -> set[str]:
    """Weight names that the hook-style ``torch.nn.utils.weight_norm`` recomputes before each call."""
    found = set()
    for hook in module._forward_pre_hooks.values():
        name = getattr(hook, "name", None)
        if type(hook).__name__ == "WeightNorm" and isinstance(name, str):
            found.add(name)
    return found
