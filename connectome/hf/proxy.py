"""The analysis of a model too big to hold its masks: walk on proxies, read exactly only what needs it.

After one read, each matrix is known by its :class:`~connectome.hf.stream.Summary`: which rows and
columns keep any weight, and how many weights it keeps. Its *proxy* is the mask "row keeps any AND
column keeps any", made as a broadcast view (a few bytes). Where a layer's input is alive in every
channel and its output alive to the outputs in every channel, the walk reads nothing of a mask but
which rows and columns keep any weight, and the layer's effective mask is its mask itself: the proxy
then gives the exact statuses, and the exact effective count is the stored count. Everywhere else
(near dead units, in embeddings and experts) the proxy could differ, so the analysis is run again with
those matrices' true masks, read again from the shards, until every layer is either read exactly or
on that all-alive path. Each round walks the same trace; the first usually finds the few layers around
dead units, the second confirms.

Examples
--------
>>> import numpy as np
>>> from connectome.hf.stream import Summary
>>> p = proxy(Summary((2, 3), 4, np.array([True, False]), np.ones(3, bool)))
>>> p.tolist(), p.untyped_storage().nbytes()
([[True, True, True], [False, False, False]], 2)
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from torch import nn

from ..graph.names import WeightNames
from ..io.masks import MaskSource, Reduced
from .stream import Loaded, Summary

__all__ = ["proxy", "ProxySource", "OnesSource", "analyze_lazily", "effective_mask", "walk_ahead"]

MAX_ROUNDS = 8


def proxy(s: Summary) -> torch.Tensor | None:
    """The broadcast "row keeps any AND column keeps any" mask of a matrix, or None beyond two dims."""
    if len(s.shape) != 2:
        return None
    rows, cols = bool(s.rows.all()), bool(s.cols.all())
    if rows and cols:
        return torch.ones((), dtype=torch.bool).expand(s.shape)
    if cols:
        return torch.from_numpy(s.rows)[:, None].expand(s.shape)
    if rows:
        return torch.from_numpy(s.cols)[None, :].expand(s.shape)
    return torch.from_numpy(s.rows)[:, None] & torch.from_numpy(s.cols)[None, :]


class ProxySource(MaskSource):
    """Masks for the walk: true ones where ``exact`` has them, else proxies; counts always the true ones.

    ``peek(name)``, while the shards are still read, gives ``(summary, counted)`` of a matrix not in
    ``loaded.summaries`` yet: its summary if counted, else a stand-in one (wholly kept; the name joins
    ``assumed``, to be checked once it is counted)."""

    def __init__(
        self,
        model: nn.Module,
        names: WeightNames,
        loaded: Loaded,
        exact: dict[str, torch.Tensor],
        peek: Callable[[str], tuple[Summary, bool] | None] | None = None,
    ):
        super().__init__(model, None, names)
        self.loaded, self.exact, self.peek = loaded, exact, peek
        self.proxies: dict[str, torch.Tensor] = {}
        self.assumed: set[str] = set()
        self.track()

    def get(self, name: str, default: Any = None) -> torch.Tensor | None:  # type: ignore[override]
        name = self.names.key(name)
        self.note_reader(name)
        if name in self.exact:
            return self.exact[name]
        s = self._summary(name)
        if s is None:
            return super().get(name, default)
        p = self.proxies.get(name)
        if p is None:
            p = proxy(s) if name not in self.assumed else torch.ones((), dtype=torch.bool).expand(s.shape)
            if p is None:  # no proxy for this shape: read it
                self.exact[name] = p = self.loaded.mask(name)
            else:
                self.proxies[name] = p
        return p

    def count(self, name: str) -> int:
        s = self._summary(self.names.key(name))
        return s.count if s is not None else super().count(name)

    def reduced(self, name: str) -> Reduced | None:
        s = self._summary(self.names.key(name))
        return Reduced(s.rows, s.cols) if s is not None and len(s.shape) == 2 else None

    def _summary(self, name: str) -> Summary | None:
        s = self.loaded.summaries.get(name)
        if s is None and self.peek is not None:
            found = self.peek(name)
            if found is not None:
                s, counted = found
                if not counted:
                    self.assumed.add(name)
        return s

    def prefetch(self, names: Any) -> None:
        pass


class OnesSource(MaskSource):
    """Every matrix wholly kept, as a broadcast view (no memory): the masks to lower a folder's trace with
    before its matrices are read (:meth:`~connectome.analysis.Analyzer.prelower`); vectors as stored."""

    def __init__(self, model: nn.Module, names: WeightNames):
        super().__init__(model, None, names)
        self.matrices = {n: tuple(p.shape) for n, p in model.named_parameters() if p.dim() >= 2}

    def get(self, name: str, default: Any = None) -> torch.Tensor | None:  # type: ignore[override]
        name = self.names.key(name)
        shape = self.matrices.get(name)
        if shape is None:
            return super().get(name, default)
        self.note_reader(name)
        return torch.ones((), dtype=torch.bool).expand(shape)

    def count(self, name: str) -> int:
        shape = self.matrices.get(self.names.key(name))
        return math.prod(shape) if shape is not None else super().count(name)

    def reduced(self, name: str) -> Reduced | None:
        shape = self.matrices.get(self.names.key(name))
        if shape is None or len(shape) != 2:
            return None
        return Reduced(np.ones(shape[0], bool), np.ones(shape[1], bool))

    def prefetch(self, names: Any) -> None:
        pass


def walk_ahead(loaded: Loaded, analyzer: Any, peek: Callable[[str], tuple[Summary, bool] | None]) -> Any:
    """The first walk of :func:`analyze_lazily`, while the shards are still read (``loaded.walked``):
    the matrices not counted yet stand in as wholly kept (``peek``: see :class:`ProxySource`). After the
    read each is checked: where a matrix keeps a weight in every row and column its stand-in was its
    proxy, and the walk stands; else the walk is redone (where it changed, or whole)."""
    source = ProxySource(analyzer.model, analyzer.names, loaded, {}, peek)
    done = analyzer.walk_only(source)
    if done is None:
        return None
    # the matrices read exactly next (those counted already): read them now, while the rest is counted
    res = analyzer.result(*done, source)  # its counts of stand-ins are not the true ones: not kept
    source.peek = None
    loaded.reader.read_early([loaded.stored_as[n] for n in _pending(res, loaded, {}, source) if n in loaded.stored_as])
    return (source, *done)


def _pending(res: Any, loaded: Loaded, exact: dict, source: ProxySource) -> list[str]:
    """The matrices whose effective mask is not their proxy (and not read exactly yet)."""
    return [
        n
        for n, e in res.effective_masks.items()
        if n in loaded.summaries and n not in exact and not _is(e, source.proxies.get(n))
    ]


def _wholly_alive(s: Summary) -> bool:
    return len(s.shape) == 2 and bool(s.rows.all()) and bool(s.cols.all())


def _is(a: torch.Tensor, b: torch.Tensor | None) -> bool:
    return b is not None and a.data_ptr() == b.data_ptr() and a.shape == b.shape and a.stride() == b.stride()


def analyze_lazily(loaded: Loaded, analyzer: Any) -> tuple[Any, dict[str, torch.Tensor]]:
    """The analysis of ``loaded`` equal to one with every true mask: ``(Analysis, masks read exactly)``."""
    exact: dict[str, torch.Tensor] = {}
    rewalked = 0
    analyzer.keep_walk = True
    try:
        ahead, loaded.walked = loaded.walked, None
        if ahead is None:
            source = ProxySource(analyzer.model, analyzer.names, loaded, exact)
            res = analyzer.run(source=source)
        else:  # walked while the last matrices were read: those stood in as wholly kept
            source, graph, w = ahead
            wrong = [n for n in source.assumed if not _wholly_alive(loaded.summaries[n])]
            source.assumed = set()  # the others' stand-ins were their proxies
            if not wrong:
                res = analyzer.result(graph, w, source)
            else:
                for n in wrong:
                    source.proxies.pop(n, None)
                res, source, quick = _again(analyzer, loaded, exact, source, wrong)
                rewalked += quick
        for _ in range(MAX_ROUNDS):
            pending = _pending(res, loaded, exact, source)
            if not pending:
                loaded.notes.append(
                    f"{len(exact)} of {len(loaded.summaries)} matrices were read a second time, exactly "
                    "(the rest are alive on both sides: their counts are exact from the first read)"
                    + (
                        "; the walk was redone only where they are (the rest of it checked unchanged)"
                        if rewalked
                        else ""
                    )
                )
                return res, exact
            del res  # before reading: the next walk's masks replace this one's
            exact.update(loaded.masks_of(pending))
            res, source, quick = _again(analyzer, loaded, exact, source, pending)
            rewalked += quick
    finally:
        analyzer.keep_walk, analyzer.last = False, None
        loaded.reader.wait()
        loaded.reader.ahead.clear()  # masks read early that no round asked for
    raise RuntimeError(f"the analysis did not settle in {MAX_ROUNDS} rounds of exact reads")


def _again(
    analyzer: Any, loaded: Loaded, exact: dict, source: ProxySource, changed: list[str]
) -> tuple[Any, Any, bool]:
    """(analysis, its source, whether only the ops reading ``changed`` were walked again) with the masks
    of ``exact``: the last walk redone where those masks changed when that is exact, else walked whole."""
    new = ProxySource(analyzer.model, analyzer.names, loaded, exact)
    new.proxies = source.proxies  # the ops not lowered again keep theirs
    quick = analyzer.rerun(changed, new, source.readers or {})
    if quick is None:  # statuses changed: walk the whole graph again
        new.proxies = {}
        return analyzer.run(source=new), new, False
    old, now = source.readers or {}, new.readers or {}
    new.readers = {k: old.get(k, set()) | now.get(k, set()) for k in {*old, *now}}
    return quick, new, True


def effective_mask(res: Any, loaded: Loaded, exact: dict[str, torch.Tensor], name: str) -> torch.Tensor:
    """The true effective mask of ``name`` after :func:`analyze_lazily`: the walk's where the mask was read
    exactly, else the mask itself (read again), since its layer is alive on both sides."""
    if name in exact or name not in loaded.summaries:
        return res.effective_masks[name]
    return loaded.mask(name)
