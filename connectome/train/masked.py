"""Masks held on a model while it trains: weights, gradients and optimiser state stay exactly zero.

A masked weight must not come back through the optimiser: SGD's momentum and Adam's moments remember
past gradients, and weight decay and Nesterov read the weight itself. So :meth:`Masks.enforce` zeroes,
after every step, the weight *and* every tensor of the optimiser's state shaped like it, and
:meth:`Masks.mask_grads` zeroes the gradients before the step, so that the state never learns of
them in the first place. Both are in-place multiplications: the cost of a masked step is a few
element-wise products on top of a dense one.

Examples
--------
>>> import torch
>>> m = torch.nn.Linear(3, 2)
>>> masks = Masks(m, {"weight": torch.tensor([[1, 0, 1], [0, 1, 0]], dtype=torch.bool)})
>>> opt = torch.optim.SGD(m.parameters(), lr=0.1, momentum=0.9)
>>> for _ in range(3):
...     opt.zero_grad(); m(torch.randn(4, 3)).sum().backward()
...     masks.mask_grads(); opt.step(); masks.enforce(opt)
>>> off = ~masks["weight"]
>>> (m.weight[off] == 0).all().item(), (opt.state[m.weight]["momentum_buffer"][off] == 0).all().item()
(True, True)
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping

import torch
from torch import nn
from torch.nn.utils import prune as torch_prune

__all__ = ["Masks", "TrainError", "strip_pruning"]


class TrainError(ValueError):
    """A training request that cannot run as given; the message says what to change."""


def strip_pruning(model: nn.Module) -> dict[str, torch.Tensor]:
    """Undo ``torch.nn.utils.prune``'s reparametrisation in place (``weight = orig * mask`` becomes the
    parameter again) and return its masks by parameter name, so that training sees plain parameters.

    >>> m = torch.nn.Linear(2, 2)
    >>> _ = torch_prune.custom_from_mask(m, "weight", torch.eye(2))
    >>> sorted(strip_pruning(m)), sorted(n for n, _ in m.named_parameters())
    (['weight'], ['bias', 'weight'])
    """
    found: dict[str, torch.Tensor] = {}
    for mod_name, module in model.named_modules():
        for hook in list(module._forward_pre_hooks.values()):
            if isinstance(hook, torch_prune.BasePruningMethod):
                attr = hook._tensor_name
                mask = getattr(module, attr + "_mask").detach().clone().bool()
                torch_prune.remove(module, attr)
                found[f"{mod_name}.{attr}" if mod_name else attr] = mask
    return found


class Masks:
    """Bool masks by parameter name, enforced on ``model``'s parameters (see the module docs)."""

    def __init__(self, model: nn.Module, masks: Mapping[str, torch.Tensor]):
        params = dict(model.named_parameters())
        unknown = [n for n in masks if n not in params]
        if unknown:
            raise TrainError(f"masks name weights the model does not have: {', '.join(unknown[:5])}")
        bad = [n for n, m in masks.items() if tuple(m.shape) != tuple(params[n].shape)]
        if bad:
            raise TrainError(f"mask shapes do not match their weights: {', '.join(bad[:5])}")
        self.params = {n: params[n] for n in masks}
        self.masks = {n: m.detach().to(device=params[n].device, dtype=torch.bool).clone() for n, m in masks.items()}
        self._float = {n: m.to(params[n].dtype) for n, m in self.masks.items()}
        self.enforce()

    def __getitem__(self, name: str) -> torch.Tensor:
        return self.masks[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self.masks)

    def items(self):
        return self.masks.items()

    def kept(self) -> dict[str, int]:
        """Kept weights per layer."""
        return {n: int(m.sum()) for n, m in self.masks.items()}

    def set(self, masks: Mapping[str, torch.Tensor], optimizer: torch.optim.Optimizer | None = None) -> None:
        """Replace the masks (an update of dynamic sparse training) and enforce them at once."""
        for n, m in masks.items():
            self.masks[n] = m.to(device=self.params[n].device, dtype=torch.bool)
            self._float[n] = self.masks[n].to(self.params[n].dtype)
        self.enforce(optimizer)

    @torch.no_grad()
    def mask_grads(self) -> None:
        """Zero the gradients of masked weights (call between ``backward`` and ``step``)."""
        for n, p in self.params.items():
            if p.grad is not None:
                p.grad.mul_(self._float[n])

    @torch.no_grad()
    def enforce(self, optimizer: torch.optim.Optimizer | None = None) -> None:
        """Zero masked weights and, with ``optimizer``, every state tensor shaped like them."""
        for n, p in self.params.items():
            p.mul_(self._float[n])
            if optimizer is None:
                continue
            for value in optimizer.state.get(p, {}).values():
                if isinstance(value, torch.Tensor) and value.shape == p.shape:
                    value.mul_(self._float[n])
