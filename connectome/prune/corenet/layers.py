"""What CoreNet needs from a forward pass over the sample S, gathered by hooks in chunks of inputs:
for every linear and 2-D convolutional layer, the running sensitivities of its weights, the mean of
``Delta_i(x)`` (how much the positive and negative parts of a neuron's pre-activation cancel), which of
its input columns are ever nonzero, and whether its inputs are nonnegative (behind a ReLU-family
activation, where the paper's definitions and guarantee hold) and whether it reads the data itself.

Example: ``gather(model, x)`` returns one :class:`Layer` per prunable linear or convolutional layer, in
the order the forward pass runs them.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn

from ...io.masks import prunable_weights
from .sensitivity import Accumulator, conv_patches

__all__ = ["Layer", "gather", "layer_widths", "rows_of"]

_PATCH_BYTES = 64 << 20  # a convolution's patches are built for this much input at a time


@dataclass
class Layer:
    name: str  # the weight's key, as in the masks
    module: nn.Linear | nn.Conv2d
    groups: list[Accumulator]  # one per convolution group (one for a linear layer)
    order: int = -1  # when the forward pass reached it
    reads_data: bool = False
    nonnegative: bool = True
    delta_count: int = 0  # inputs (and positions) seen
    fired: torch.Tensor | None = None  # per input column: ever nonzero on S
    notes: list[str] = field(default_factory=list)

    @property
    def delta_mean(self) -> torch.Tensor:
        """Per neuron: the mean over S (and positions) of Delta_i(x)."""
        if not all(acc.deltas for acc in self.groups):
            raise ValueError("Delta was not summed: gather(..., deltas=True)")
        return torch.cat([acc.delta_sum for acc in self.groups]) / max(self.delta_count, 1)

    def sensitivities(self) -> torch.Tensor:
        """Sensitivities in the weight's own shape."""
        shape: torch.Size = self.module.weight.shape
        parts = [acc.result() for acc in self.groups]
        return (parts[0] if len(parts) == 1 else torch.cat(parts)).reshape(shape)


def rows_of(module: nn.Linear | nn.Conv2d) -> torch.Tensor:
    """The weight as (neurons x incoming weights): a convolution's kernel entries are its incoming edges."""
    w: torch.Tensor = module.weight.detach()
    return w.reshape(w.shape[0], -1)


Weighted = nn.Linear | nn.Conv2d


def _layers(model: nn.Module) -> dict[Weighted, str]:
    keys = prunable_weights(model)
    found: dict[Weighted, str] = {}
    for name, module in model.named_modules():
        key = f"{name}.weight" if name else "weight"
        if isinstance(module, (nn.Linear, nn.Conv2d)) and key in keys and module not in found:
            found[module] = key
    return found


def layer_widths(model: nn.Module) -> list[int]:
    """The neurons (output features or channels) of the layers CoreNet samples, in the order the model
    registers them.

    >>> layer_widths(nn.Sequential(nn.Linear(4, 3), nn.ReLU(), nn.Linear(3, 2)))
    [3, 2]
    """
    return [m.weight.shape[0] for m in _layers(model)]


def gather(model: nn.Module, inputs: torch.Tensor, chunk: int | None = None, deltas: bool = True) -> list[Layer]:
    """One pass over ``inputs`` (the sample S) in chunks; the layers in forward order. ``deltas``: whether
    to sum each neuron's ``Delta_i(x)`` (only the paper's error split needs it).

    By default a chunk holds up to 256 inputs and about 4M input values (27 images of 224 x 224 x 3):
    fewer, larger steps are faster, and the activations of a chunk must fit in memory."""
    if chunk is None:
        chunk = max(1, min(256, (4 << 20) // max(1, inputs[:1].numel())))
    found = _layers(model)
    layers: dict[Weighted, Layer] = {}
    for module, key in found.items():
        per = module.weight.shape[0] // (module.groups if isinstance(module, nn.Conv2d) else 1)
        w = rows_of(module)
        accs = [Accumulator(w[g * per : (g + 1) * per], deltas=deltas) for g in range(w.shape[0] // per)]
        layers[module] = Layer(key, module, accs)
    current: list[torch.Tensor] = []
    seen: list[Layer] = []

    def hook(module: nn.Module, args: tuple) -> None:
        layer = layers[module]  # type: ignore[index]  # only registered on these
        x = args[0].detach()
        if layer.order < 0:
            layer.order = len(seen)
            seen.append(layer)
        layer.reads_data = layer.reads_data or _shares(x, current[0])
        nonnegative = bool((x >= 0).all())
        layer.nonnegative = layer.nonnegative and nonnegative
        _add(layer, x, nonnegative)

    handles = [m.register_forward_pre_hook(hook) for m in layers]
    was = model.training
    model.eval()
    try:
        with torch.no_grad():
            for start in range(0, len(inputs), chunk):
                current[:] = [inputs[start : start + chunk]]
                model(current[0])
    finally:
        model.train(was)
        for h in handles:
            h.remove()
    for layer in layers.values():
        if layer.order < 0:
            layer.notes.append("never ran on the sample: left as it is")
    return sorted((lay for lay in layers.values() if lay.order >= 0), key=lambda lay: lay.order)


def _shares(x: torch.Tensor, data: torch.Tensor) -> bool:
    try:
        return x.untyped_storage().data_ptr() == data.untyped_storage().data_ptr()
    except RuntimeError:
        return False


def _add(layer: Layer, x: torch.Tensor, nonnegative: bool) -> None:
    """``x``'s rows (or patches) into the layer's accumulators; padding and reflection keep patches
    nonnegative where ``x`` is."""
    m = layer.module
    if isinstance(m, nn.Conv2d):
        fired = (x != 0).flatten(2).any(2).any(0)  # per input channel
        per_input = x[:1].numel() // max(m.groups, 1) * m.kernel_size[0] * m.kernel_size[1] * 4
        step = max(1, _PATCH_BYTES // max(per_input, 1))  # the patches of a few inputs at a time
        for start in range(0, len(x), step):
            patches = [conv_patches(m, x[start : start + step], g) for g in range(m.groups)]
            _add_rows(layer, patches, nonnegative)
    else:
        rows = x.reshape(-1, m.in_features)
        fired = rows.amax(0) > 0 if nonnegative else (rows != 0).any(0)
        _add_rows(layer, [rows], nonnegative)
    layer.fired = fired if layer.fired is None else layer.fired | fired


def _add_rows(layer: Layer, cols_per_group: list[torch.Tensor], nonnegative: bool) -> None:
    for acc, cols in zip(layer.groups, cols_per_group):
        acc.add(cols, nonnegative)
    layer.delta_count += cols_per_group[0].shape[0]
