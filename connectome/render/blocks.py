"""Which modules the folded layer diagram draws as one box: the repeated blocks of a model.

``layer_graph(..., fold=True)`` groups a module whose class repeats among its siblings (the blocks of a
ResNet stage, the layers of an encoder) into one box, then merges runs of consecutive blocks with
identical structure. Deciding what a block is and whether two have the same structure looks only at the
model's module tree, not at the boxes, so it lives here, apart from the diagram in ``layers.py``.

Examples
--------
>>> import torch, connectome
>>> from connectome.render.nodes import Nodes
>>> class Block(torch.nn.Module):
...     def __init__(self):
...         super().__init__()
...         self.fc = torch.nn.Linear(4, 4)
...     def forward(self, x):
...         return self.fc(x).relu()
>>> m = torch.nn.Sequential(Block(), Block(), torch.nn.Linear(4, 2))
>>> blocks = Blocks(Nodes(connectome.analyze(m, input_shape=(1, 4))))
>>> [blocks.is_block(p) for p in ("0", "1", "2")], blocks.signature("0") == blocks.signature("1")
([True, True, False], True)
"""

from __future__ import annotations

from torch import nn

from .nodes import Nodes

__all__ = ["Blocks", "next_sibling"]

_CONTAINERS = (nn.Sequential, nn.ModuleList, nn.ModuleDict)


def _signature(m: nn.Module) -> tuple:
    return (
        type(m).__qualname__,
        tuple((name, type(s).__qualname__, s.extra_repr()) for name, s in m.named_modules()),
        tuple((name, tuple(p.shape)) for name, p in m.named_parameters()),
    )


class Blocks:
    """Which modules are drawn as one box when folding, and their structure."""

    def __init__(self, nodes: Nodes):
        self.nodes = nodes
        self._sig: dict[str, tuple] = {}
        self._runs: dict[str, bool] = {}

    def signature(self, path: str) -> tuple:
        if path not in self._sig:
            self._sig[path] = _signature(self._module(path))
        return self._sig[path]

    def _module(self, path: str) -> nn.Module:
        """A module that exists: a block, one of its siblings, or their parent."""
        mod = self.nodes.module(path)
        if mod is None:
            raise KeyError(f"no module {path!r} in the model")
        return mod

    def _siblings(self, path: str) -> list[tuple[str, nn.Module]]:
        parent = path.rpartition(".")[0]
        pmod = self._module(parent) if parent else self.nodes.t.model
        return [(f"{parent}.{name}" if parent else name, m) for name, m in pmod.named_children()]

    def _twin(self, path: str, mod: nn.Module) -> bool:
        """Some sibling has exactly this module's structure."""
        return any(
            p != path and type(m) is type(mod) and self.signature(p) == self.signature(path)
            for p, m in self._siblings(path)
        )

    def _has_runs(self, path: str, mod: nn.Module) -> bool:
        """Somewhere inside, composite modules repeat with identical structure (a finer fold exists)."""
        if path not in self._runs:
            self._runs[path] = any(
                sub is not mod
                and not isinstance(sub, _CONTAINERS)
                and any(True for _ in sub.children())
                and self._twin(p, sub)
                for p, sub in mod.named_modules(prefix=path)
            )
        return self._runs[path]

    def is_block(self, path: str) -> bool:
        """A module whose class repeats among its siblings: the blocks of a stage, the layers of an encoder.

        When a block differs from all its siblings but holds identical repeated parts, those parts are
        the blocks instead (the finer fold shows more).
        """
        mod = self.nodes.module(path)
        if mod is None or isinstance(mod, _CONTAINERS):
            return False
        if sum(type(m) is type(mod) for _, m in self._siblings(path)) < 2:
            return False
        return self._twin(path, mod) or not self._has_runs(path, mod)


def next_sibling(a: str, b: str) -> bool:
    """Whether module path ``b`` is the numbered sibling right after ``a`` (``layer1.0`` then ``layer1.1``).

    >>> next_sibling("layer1.0", "layer1.1"), next_sibling("layer1.1", "layer1.3"), next_sibling("a.1", "b.2")
    (True, False, False)
    """
    pa, _, ia = a.rpartition(".")
    pb, _, ib = b.rpartition(".")
    return pa == pb and ia.isdigit() and ib.isdigit() and int(ib) == int(ia) + 1
