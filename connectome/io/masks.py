"""Where masks come from: explicit masks, ``torch.nn.utils.prune`` buffers, or nonzero weights.

Weight names are those of ``model.named_parameters()`` with prune's ``_orig`` suffix dropped, so a
pruned ``fc.weight`` (stored as ``fc.weight_orig`` + ``fc.weight_mask``) is called ``fc.weight``.

Explicit masks follow :mod:`connectome.io.kinds`: meta, complex and nested masks are refused; sparse,
quantized and expanded ones are compared with their weight's shape before they are made dense.

Examples
--------
>>> import torch, torch.nn.utils.prune
>>> lin = torch.nn.Linear(3, 2)
>>> _ = torch.nn.utils.prune.l1_unstructured(lin, "weight", amount=2)
>>> sorted(prunable_weights(torch.nn.Sequential(lin)))
['0.weight']
>>> int(MaskSource(torch.nn.Sequential(lin)).get("0.weight").sum())
4
"""

from __future__ import annotations

import os
import threading
from collections.abc import Iterable, Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from typing import NamedTuple

import numpy as np
import torch
from torch import nn

from ..graph.names import WeightNames
from ..graph.reduce import count_true
from .kinds import plain
from .tensors import clip, expanded

__all__ = ["MaskSource", "prunable_weights", "dense_prefixes", "in_dense", "PRUNABLE_KINDS", "nonzero"]

# module type -> (parameter attribute names, kind label)
PRUNABLE_KINDS: dict[type, tuple[tuple[str, ...], str]] = {
    nn.Linear: (("weight",), "linear"),
    nn.Bilinear: (("weight",), "linear"),
    nn.Conv1d: (("weight",), "conv1d"),
    nn.Conv2d: (("weight",), "conv2d"),
    nn.Conv3d: (("weight",), "conv3d"),
    nn.ConvTranspose1d: (("weight",), "convT1d"),
    nn.ConvTranspose2d: (("weight",), "convT2d"),
    nn.ConvTranspose3d: (("weight",), "convT3d"),
    nn.Embedding: (("weight",), "embedding"),
    nn.EmbeddingBag: (("weight",), "embedding"),
    nn.MultiheadAttention: (("in_proj_weight", "q_proj_weight", "k_proj_weight", "v_proj_weight"), "attention"),
}


def _kind_of(module: nn.Module) -> tuple[tuple[str, ...], str] | None:
    if isinstance(module, nn.RNNBase):  # its weights are named by layer and direction
        return tuple(n for n in module._flat_weights_names if n.startswith("weight_")), "recurrent"
    for cls in type(module).__mro__:
        if cls in PRUNABLE_KINDS:
            return PRUNABLE_KINDS[cls]
    return None


def prunable_weights(model: nn.Module, names: WeightNames | None = None) -> dict[str, str]:
    """Every prunable weight of the model by layer type: key -> kind, in module order.

    A tensor used by several layers (a head tied to the embedding) is listed once, under its key
    (:class:`~connectome.graph.names.WeightNames`), with the kind of its first layer. Modules with a true
    ``keeps_dense`` attribute keep every weight inside them dense: none is listed (DyReLU's hyper-network).

    >>> prunable_weights(torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3), torch.nn.BatchNorm2d(8), torch.nn.Linear(8, 2)))
    {'0.weight': 'conv2d', '2.weight': 'linear'}
    """
    names = names or WeightNames(model)
    found: dict[str, str] = {}
    dense = dense_prefixes(model)
    for mod_name, module in model.named_modules(remove_duplicate=False):
        if in_dense(f"{mod_name}.", dense):
            continue
        spec = _kind_of(module)
        if spec is None:
            continue
        attrs, kind = spec
        for attr in attrs:
            if _tensor(module, attr) is not None:
                found.setdefault(names.key(f"{mod_name}.{attr}" if mod_name else attr), kind)
    return found


def dense_prefixes(model: nn.Module) -> tuple[str, ...]:
    """The name prefixes (``"act."``) of the modules that keep every weight inside them dense: those with
    a true ``keeps_dense`` attribute (DyReLU's hyper-network). Their weights are neither pruned nor
    counted; the analysis still follows the signal through them.

    >>> class Hyper(torch.nn.Sequential):
    ...     keeps_dense = True
    >>> dense_prefixes(torch.nn.Sequential(torch.nn.Linear(2, 2), Hyper(torch.nn.Linear(2, 2))))
    ('1.',)
    """
    return tuple(
        f"{name}." if name else "" for name, m in model.named_modules() if getattr(m, "keeps_dense", False) is True
    )


def in_dense(name: str, prefixes: tuple[str, ...]) -> bool:
    """Whether the weight (or module) ``name`` lies inside a module that keeps its weights dense."""
    return any(name.startswith(p) for p in prefixes)


_NUMPY_READS = {
    torch.float32,
    torch.float64,
    torch.float16,
    torch.int8,
    torch.uint8,
    torch.int32,
    torch.int64,
    torch.bool,
}


def nonzero(t: torch.Tensor) -> torch.Tensor:
    """``t != 0`` as a bool tensor, through numpy where it can: numpy's comparison reads a CPU tensor
    about twice as fast as torch's on CPU (one vectorised pass, no thread start-up).

    >>> nonzero(torch.tensor([0.0, -1.5, 2.0])).tolist()
    [False, True, True]
    """
    t = t.detach()
    if _numpy_readable(t):
        try:
            return torch.from_numpy(np.not_equal(t.numpy(), 0))
        except (RuntimeError, TypeError):  # tensor subclasses that have no numpy view
            pass
    with torch.no_grad():
        return t != 0


def _numpy_readable(t: torch.Tensor) -> bool:
    return (
        t.device.type == "cpu"
        and t.dtype in _NUMPY_READS
        and not t.is_conj()
        and not t.is_neg()
        and t.layout == torch.strided
    )


class Reduced(NamedTuple):
    """A mask's reductions over its first dim, taken while it is still in cache from the read."""

    rows: np.ndarray | None  # (out,): the row keeps some weight; only for 1x1 kernels and matrices
    cols: np.ndarray  # (prod(shape[1:]),): some row keeps this (input, tap)


def _read_arrays(
    jobs: list[tuple[str, tuple[np.ndarray, ...], np.ndarray]],
) -> list[tuple[str, np.ndarray, int, Reduced | None]]:
    out = []
    for name, arrays, mask in jobs:
        np.not_equal(arrays[0], 0, out=mask)
        for extra in arrays[1:]:
            mask &= np.not_equal(extra, 0)
        reduced = None
        if mask.ndim >= 2 and mask.size:
            flat = mask.reshape(mask.shape[0], -1)
            one_tap = all(d == 1 for d in mask.shape[2:])
            reduced = Reduced(
                np.logical_or.reduce(flat, axis=1) if one_tap else None, np.logical_or.reduce(flat, axis=0)
            )
        out.append((name, mask, int(np.count_nonzero(mask)), reduced))
    return out


def _expanded(t: torch.Tensor) -> bool:
    """A view declaring far more than its storage holds (tensors without a storage are not views)."""
    try:
        return expanded(t.numel() * t.element_size(), t.untyped_storage().nbytes())
    except (RuntimeError, NotImplementedError, TypeError):
        return False


def _tensor(module: nn.Module, attr: str) -> torch.Tensor | None:
    for name in (attr + "_orig", attr):
        v = _member(module, name)
        if isinstance(v, torch.Tensor):
            return v
    return None


def _member(module: nn.Module, name: str):
    """``getattr(module, name, None)`` without the raised-and-caught AttributeError (~5 us each) that
    ``nn.Module.__getattr__`` costs for a name the module lacks."""
    for table in (module._parameters, module._buffers, module.__dict__):
        if name in table:
            return table[name]
    return getattr(module, name, None) if hasattr(type(module), name) else None


_POOL: dict[int, ThreadPoolExecutor] = {}
_POOL_LOCK = threading.Lock()


def _pool() -> ThreadPoolExecutor:
    """One reader thread per process, started on first use. Keyed by pid: a child forked after the
    parent started its reader inherits the executor but not the thread, and would wait forever."""
    with _POOL_LOCK:
        pid = os.getpid()
        if pid not in _POOL:
            _POOL.clear()
            _POOL[pid] = ThreadPoolExecutor(1, thread_name_prefix="connectome-read")
        return _POOL[pid]


class MaskSource(Mapping[str, torch.Tensor]):
    """Bool masks by weight name, read lazily: ``masks`` given > ``<name>_mask`` buffer > ``weight != 0``.

    >>> m = torch.nn.Sequential(torch.nn.Linear(2, 2))
    >>> with torch.no_grad(): m[0].weight[0, 0] = 0
    >>> MaskSource(m)["0.weight"].tolist()
    [[False, True], [True, True]]
    >>> MaskSource(m, {"0.weight": torch.ones(2, 2)})["0.weight"].all().item()
    True
    """

    def __init__(
        self, model: nn.Module, masks: Mapping[str, torch.Tensor] | None = None, names: WeightNames | None = None
    ):
        self.model = model
        self.names = names or WeightNames(model)
        self._cache: dict[str, torch.Tensor] = {}
        self._counts: dict[str, int] = {}
        self._reduced: dict[str, Reduced] = {}
        self._modules: dict[str, nn.Module] = {}
        self.reading: object = None  # the node being lowered, or another step of the walk, while masks are read
        self.readers: dict[str, set] | None = None  # with ``track()``: key -> what read its mask (``reading``)
        self.explicit = {self.names.key(k): self._explicit(self.names.key(k), v) for k, v in (masks or {}).items()}

    def _explicit(self, name: str, value) -> torch.Tensor:
        """A given mask as a dense bool tensor; one that is not plain dense data (sparse, quantized, an
        expanded view) must first have its weight's shape, so that making it dense costs the weight's size."""
        t = torch.as_tensor(value)
        if t.is_meta or t.is_complex() or t.is_nested:
            kind = "meta" if t.is_meta else "complex" if t.is_complex() else "nested"
            raise ValueError(f"the mask for {clip(name)} is a {kind} tensor: give a dense 0/1 tensor")
        if t.layout == torch.strided and not t.is_quantized and not _expanded(t):
            return t.bool()
        stored = self._stored(name)
        if stored is None:
            raise ValueError(f"the mask for {clip(name)} names no weight of the model")
        if tuple(t.shape) != tuple(stored[0].shape):
            raise ValueError(f"mask for {clip(name)} has shape {tuple(t.shape)}, weight has {tuple(stored[0].shape)}")
        return plain({name: t}, f"the mask for {clip(name)}", [])[name].bool()

    def get(self, name: str, default=None) -> torch.Tensor | None:  # type: ignore[override]
        name = self.names.key(name)
        self.note_reader(name)
        if name in self._cache:
            return self._cache[name]
        mask = self._read(name)
        if mask is None:
            return default
        self._cache[name] = mask
        self._counts[name] = count_true(mask)  # now, while the new mask is still in cache
        return mask

    def track(self) -> MaskSource:
        """Record from now on which step read each mask (``readers``): :meth:`Analyzer.rerun` needs it."""
        if self.readers is None:
            self.readers = {}
        return self

    def note_reader(self, name: str) -> None:
        if self.readers is not None and self.reading is not None:
            self.readers.setdefault(name, set()).add(self.reading)

    def prefetch(self, names: Iterable[str]) -> None:
        """Read, count and reduce (:class:`Reduced`) the masks of ``names`` now, on two threads when
        torch may use two.

        numpy's comparison, count and reductions release the GIL, so a second thread halves the one
        pass over the weights that no analysis can avoid. Masks and counts are the same as reading one
        at a time; explicit masks, and weights numpy cannot view (bfloat16, GPU), are left to :meth:`get`.

        >>> m = torch.nn.Sequential(torch.nn.Linear(4, 4), torch.nn.Linear(4, 2))
        >>> s = MaskSource(m); s.prefetch(["0.weight", "1.weight"]); s.count("1.weight")
        8
        """
        jobs, total = {}, 0
        for n in dict.fromkeys(self.names.key(n) for n in names):
            if n in self._cache or n in self.explicit:
                continue
            arrays = self._arrays(n)
            if arrays is None:
                self.get(n)  # not a plain CPU array: torch reads it, on this thread
            else:
                jobs[n] = arrays
                total += arrays[0].size
        # each mask its own allocation: one buffer for all of them would be big enough for numpy to ask
        # for huge pages, and the kernel may stall to compact memory for them
        work = [(n, arrays, np.empty(arrays[0].shape, bool)) for n, arrays in jobs.items()]
        if torch.get_num_threads() < 2 or total < 1 << 20:
            done = _read_arrays(work)
        else:
            # largest first onto the less loaded half, so that both finish together; the worker runs
            # numpy only: a torch op there would start a second OpenMP team competing for the cores
            halves: tuple[list, list] = ([], [])
            load = [0, 0]
            for job in sorted(work, key=lambda j: j[2].size, reverse=True):
                i = load.index(min(load))
                halves[i].append(job)
                load[i] += job[2].size
            background = _pool().submit(_read_arrays, halves[1])
            done = _read_arrays(halves[0]) + background.result()
        for n, mask, count, reduced in done:
            self._cache[n], self._counts[n] = torch.from_numpy(mask), count
            if reduced is not None:
                self._reduced[n] = reduced

    def _arrays(self, name: str) -> tuple[np.ndarray, ...] | None:
        """The weight (and prune's mask buffer) as numpy views, or None where numpy cannot read them."""
        tensors = self._stored(name)
        if tensors is None or not all(_numpy_readable(t) and t.shape == tensors[0].shape for t in tensors):
            return None
        try:
            return tuple(t.detach().numpy() for t in tensors)
        except (RuntimeError, TypeError):
            return None

    def reduced(self, name: str) -> Reduced | None:
        """Reductions of the mask of ``name`` taken when :meth:`prefetch` read it (None otherwise)."""
        return self._reduced.get(self.names.key(name))

    def count(self, name: str) -> int:
        """How many weights the mask of ``name`` keeps (counted once, when it is read)."""
        name = self.names.key(name)
        if name not in self._counts:
            self[name]  # reads the mask, and counts it
        return self._counts[name]

    def __getitem__(self, name: str) -> torch.Tensor:
        m = self.get(name)
        if m is None:
            raise KeyError(name)
        return m

    def __iter__(self) -> Iterator[str]:
        return iter(self._cache)

    def __len__(self) -> int:
        return len(self._cache)

    def weight(self, name: str) -> torch.Tensor | None:
        """The weight tensor itself (``_orig`` for pruned parameters, the output of a parametrization)."""
        mod_name, _, attr = self.names.key(name).rpartition(".")
        module = self._module(mod_name)
        return None if module is None else _tensor(module, attr)

    def _module(self, name: str) -> nn.Module | None:
        if not self._modules:  # one walk over the modules: cheaper than get_submodule for each weight
            self._modules.update(self.model.named_modules(remove_duplicate=False))
        if name not in self._modules:
            try:
                self._modules[name] = self.model.get_submodule(name)
            except AttributeError:
                return None
        return self._modules[name]

    def _read(self, name: str) -> torch.Tensor | None:
        tensors = self._stored(name)
        if name in self.explicit:
            m = self.explicit[name]
            if tensors is not None and tuple(m.shape) != tuple(tensors[0].shape):
                raise ValueError(
                    f"mask for {clip(name)} has shape {tuple(m.shape)}, weight has {tuple(tensors[0].shape)}"
                )
            return m
        if tensors is None:
            return None
        mask = nonzero(tensors[0])
        for extra in tensors[1:]:
            mask &= nonzero(extra)
        return mask

    def _stored(self, name: str) -> tuple[torch.Tensor, ...] | None:
        """The weight, and prune's ``<name>_mask`` buffer (or weight norm's ``_g``) when there is one: what
        a mask is read from."""
        w = self.weight(name)
        if w is None:
            return None
        mod_name, _, attr = name.rpartition(".")
        module = self._module(mod_name)
        assert module is not None  # weight(name) found the weight in it (name is already a key)
        buf = _member(module, attr + "_mask")
        v, g = module._parameters.get(attr + "_v"), module._parameters.get(attr + "_g")
        if v is not None and g is not None:  # hook-style weight norm: weight = g * v / |v|, fresh from both
            return (v, g)
        return (w, buf) if isinstance(buf, torch.Tensor) else (w,)
