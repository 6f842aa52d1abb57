"""``connectome.analyze``: trace, lower, walk, and the result every other part reads.

Examples
--------
>>> import torch
>>> m = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.ReLU(), torch.nn.Linear(3, 2))
>>> with torch.no_grad(): m[2].weight[:, 0] = 0      # unit 0 of the hidden layer reaches no output
>>> res = analyze(m, torch.zeros(1, 4))
>>> res.params_nonzero, res.params_effective       # its 4 incoming weights do nothing
(16, 12)
>>> res.layers[0]["dead_out"]
1
"""

from __future__ import annotations

import gc
from collections.abc import Iterable, Mapping
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import fx, nn

from . import memory
from .batching import input_shapes, reduced, same_results, smaller_shape_hint
from .graph.lower import Lowered, UnitGraph, lower, mask_free
from .graph.names import WeightNames
from .graph.refs import opaque_modules
from .graph.rewalk import rewalk
from .graph.status import Status
from .graph.trace import InputShape, Traced, TraceError, as_inputs, trace
from .graph.walk import Walk, walk
from .io.masks import MaskSource, dense_prefixes, in_dense, prunable_weights
from .layerrow import layer_table, op_weights
from .parts import prefixed, submodule_of, with_parts

if TYPE_CHECKING:
    import scipy.sparse

__all__ = ["Analysis", "analyze", "Analyzer"]


@dataclass
class Analysis:
    """The result of one analysis. ``to_dict()`` is the JSON schema of DESIGN.md."""

    effective_masks: dict[str, torch.Tensor]
    masks: dict[str, torch.Tensor]
    kinds: dict[str, str]
    layers: list[dict]
    collapsed: bool
    unsupported_ops: list[dict]
    walk: Walk = field(repr=False)
    tracer: str = "fx"
    input_shapes: list[list[int]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def params_total(self) -> int:
        return sum(r["numel"] for r in self.layers)

    @property
    def params_nonzero(self) -> int:
        return sum(r["nonzero"] for r in self.layers)

    @property
    def params_effective(self) -> int:
        return sum(r["effective"] for r in self.layers)

    @property
    def direct_sparsity(self) -> float:
        return 1 - self.params_nonzero / self.params_total if self.params_total else 0.0

    @property
    def effective_sparsity(self) -> float:
        return 1 - self.params_effective / self.params_total if self.params_total else 0.0

    @property
    def direct_compression(self) -> float | None:
        return self.params_total / self.params_nonzero if self.params_nonzero else None

    @property
    def effective_compression(self) -> float | None:
        return self.params_total / self.params_effective if self.params_effective else None

    def units(self, layer: str) -> dict[str, np.ndarray]:
        """Per output unit of a prunable layer: ``alive_from_input`` and ``alive_to_output`` (bool arrays).

        >>> import torch, connectome
        >>> m = torch.nn.Sequential(torch.nn.Linear(2, 3), torch.nn.Linear(3, 1))
        >>> with torch.no_grad(): m[0].weight[1] = 0
        >>> connectome.analyze(m, input_shape=(1, 2)).units("0")["alive_from_input"].tolist()
        [True, False, True]
        """
        node = self._owner_node(layer)
        op = self.walk.graph.ops[node]
        cdim = getattr(op, "cdim", None)
        fwd, bwd = self.walk.fwd.get(node), self.walk.bwd.get(node)
        fwd = fwd[0] if isinstance(fwd, tuple) else fwd
        bwd = bwd[0] if isinstance(bwd, tuple) else bwd
        if fwd is None:
            raise KeyError(f"layer {layer!r} has no unit status: the walk did not reach it")
        f = fwd.with_cdim(cdim) if isinstance(cdim, int) else fwd
        alive_out = bwd.with_cdim(f.cdim).alive_units() if isinstance(bwd, Status) else np.zeros(f.channels, np.bool_)
        return {"alive_from_input": f.alive_units(), "alive_to_output": alive_out}

    def channel_adjacency(self, layer: str) -> scipy.sparse.csr_matrix:
        """Effective weights between (output unit, input unit) of a layer, summed over kernel taps.

        A sparse (units_out x units_in) matrix of counts: the capacities of the unit graph.

        >>> import torch, connectome
        >>> m = torch.nn.Sequential(torch.nn.Conv2d(2, 2, 3, padding=1))
        >>> connectome.analyze(m, input_shape=(1, 2, 4, 4)).channel_adjacency("0").toarray().tolist()
        [[9, 9], [9, 9]]
        """
        import scipy.sparse

        name = next((n for n in self.effective_masks if n in (layer, layer + ".weight")), None)
        if name is None:
            raise KeyError(f"no prunable layer {layer!r}")
        m = self.effective_masks[name]
        counts = m.reshape(m.shape[0], m.shape[1], -1).sum(-1) if m.dim() > 1 else m.reshape(1, -1)
        if self.kinds.get(name, "").startswith("convT"):
            counts = counts.t()
        return scipy.sparse.csr_matrix(counts.numpy().astype(np.int64))

    def unit_matrices(self) -> dict[str, scipy.sparse.csr_array]:
        """Per prunable weight, its (units_out x units_in) effective weights, |w| summed over taps
        (:func:`connectome.network.unit_matrices`)."""
        from .network import unit_matrices

        return unit_matrices(self)

    def to_networkx(self) -> Any:
        """The units as a networkx DiGraph joined by effective weights (:func:`connectome.network.to_networkx`).

        >>> res = analyze(torch.nn.Linear(2, 1), input_shape=(1, 2))
        >>> res.unit_matrices()["weight"].shape, res.to_networkx().number_of_edges()
        ((1, 2), 2)
        """
        from .network import to_networkx

        return to_networkx(self)

    def _owner_node(self, layer: str) -> Any:
        for node, op in self.walk.graph.ops.items():
            if any(k in (layer, layer + ".weight") for w in op.weights for k in w.keys):
                return node
        raise KeyError(f"no prunable layer {layer!r} is used by the traced graph")

    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable summary (the schema in DESIGN.md, plus ``tracer`` and ``input_shapes``)."""
        return {
            "params_total": self.params_total,
            "params_nonzero": self.params_nonzero,
            "params_effective": self.params_effective,
            "direct_sparsity": self.direct_sparsity,
            "effective_sparsity": self.effective_sparsity,
            "direct_compression": self.direct_compression,
            "effective_compression": self.effective_compression,
            "collapsed": self.collapsed,
            "layers": [dict(r) for r in self.layers],
            "unsupported_ops": list(self.unsupported_ops),
            "tracer": self.tracer,
            "input_shapes": self.input_shapes,
            "notes": list(self.notes),
        }


class Analyzer:
    """Trace once, then analyse any number of mask sets (for pruning loops and sparse training).

    >>> import torch
    >>> m = torch.nn.Sequential(torch.nn.Linear(3, 3), torch.nn.Linear(3, 1))
    >>> a = Analyzer(m, input_shape=(1, 3))
    >>> a.run({"1.weight": torch.zeros(1, 3, dtype=torch.bool)}).collapsed
    True
    """

    def __init__(
        self,
        model: nn.Module,
        example_inputs: Any = None,
        input_shape: InputShape | None = None,
        tracer: str = "auto",
        input_dtype: torch.dtype | None = None,
        submodule: str | None = None,
        max_memory: int | None = None,
    ):
        self.prefix = submodule or ""
        whole, model = model, submodule_of(model, submodule) if submodule else model
        self.model = model
        self.tracer = tracer
        self.max_memory = max_memory
        self._given = {"example_inputs": example_inputs, "input_shape": input_shape, "input_dtype": input_dtype}
        self.input_shapes = input_shapes(example_inputs, input_shape, input_dtype)
        self.notes: list[str] = []
        self.keep_walk = False  # keep the last run's walk (``last``) for :meth:`rerun`
        self.last: tuple[Traced, UnitGraph, Walk] | None = None
        self.reuse: dict[fx.Node, Lowered] | None = None  # ops lowered ahead (:meth:`prelower`)
        self._pair: tuple[Traced, Traced] | None = None
        with _gc_paused(), self._budget():
            if not submodule:
                self._pair = reduced(self._trace, example_inputs, input_shape, input_dtype)
            if self._pair is not None:
                self.traced: Traced = self._pair[0]
            else:
                try:
                    self.traced = self._trace(**self._given)
                except TraceError as e:
                    err = (
                        with_parts(e, whole, lambda: as_inputs(example_inputs, input_shape, input_dtype))
                        if not submodule
                        else e
                    )
                    if err is e:
                        raise
                    raise err from e
            self.names = WeightNames(model)
            self.kinds = prunable_weights(model, self.names)
            self.dense = dense_prefixes(model)

    def _trace(self, **inputs: Any) -> Traced:
        traced = trace(self.model, tracer=self.tracer, **inputs)
        if self.tracer == "auto" and opaque_modules(traced):
            # fx keeps every torch.nn module whole; for those without a rule (nn.TransformerEncoderLayer),
            # torch.export sees inside, down to ops that have rules
            with suppress(TraceError):
                traced = trace(self.model, tracer="export", **inputs)
        return traced

    def _budget(self):
        text = ";".join("x".join(map(str, s)) for s in self.input_shapes)
        shapes = self.input_shapes
        return memory.budget(
            self.max_memory, f"input {text}" if text else "", lambda need, lim: smaller_shape_hint(shapes, need, lim)
        )

    def run(self, masks: Mapping[str, torch.Tensor] | None = None, source: MaskSource | None = None) -> Analysis:
        """Analyse with ``masks`` (name -> 0/1 tensor) overriding the model's own masks, or with the masks
        ``source`` gives (a :class:`~connectome.io.masks.MaskSource` that reads them its own way)."""
        if self.prefix and masks:  # the whole model's names: keep this part's, without the prefix
            masks = {k[len(self.prefix) + 1 :]: v for k, v in masks.items() if k.startswith(self.prefix + ".")}
        with _gc_paused(), self._budget():
            if self._pair is not None:  # first run: is the batch irrelevant after all?
                pair, self._pair = self._pair, None
                res = same_results(lambda t: self._run(t, masks, source), pair)
                if res is None:
                    self.traced = self._trace(**self._given)
                else:
                    b = self.input_shapes[0][0]
                    self.notes.append(
                        f"the batch of {b} was analysed as {pair[0].vals[pair[0].inputs[0]].shape[0]}:"
                        " the unit graph does not depend on it (checked)"
                    )
            else:
                res = None
            if res is None:
                res = self._run(self.traced, masks, source)
        return self._finish(res)

    def prelower(self, source: MaskSource) -> None:
        """Lower the trace now with ``source``'s masks (stand-ins will do), and keep the ops whose lowering
        read no mask: later runs take them as they are (:func:`~connectome.graph.lower.mask_free`). For
        time spent waiting anyway (a model folder's shards being read)."""
        with _gc_paused(), self._budget():
            self.reuse = mask_free(lower(self.traced, source.track()))

    def rerun(self, changed: Iterable[str], source: MaskSource, readers: Mapping[str, set]) -> Analysis | None:
        """The analysis with ``source``'s masks, which differ from the last :meth:`run`'s only for keys
        ``changed``, from that run's walk redone where the masks changed (:func:`~connectome.graph.rewalk.rewalk`);
        None where that is not exact (then :meth:`run` it). Needs ``keep_walk`` set before the last run."""
        if self.last is None:
            return None
        traced, graph, w = self.last
        with _gc_paused(), self._budget():
            w2 = rewalk(graph, w, changed, source, readers)
            if w2 is None:
                return None
            self.last = (traced, w2.graph, w2)
            res = self._result(traced, w2.graph, w2, source)
        return self._finish(res)

    def walk_only(self, source: MaskSource) -> tuple[UnitGraph, Walk] | None:
        """Lower and walk the trace with ``source``'s masks, but leave the result to :meth:`result` (with
        masks or counts known later); kept for :meth:`rerun`. None before a first :meth:`run` has checked
        the batch (see :mod:`connectome.batching`).

        >>> m = torch.nn.Sequential(torch.nn.Linear(3, 3), torch.nn.Linear(3, 1))
        >>> a, source = Analyzer(m, input_shape=(1, 3)), MaskSource(m, {"1.weight": torch.tensor([[1, 0, 0]])})
        >>> graph, w = a.walk_only(source)
        >>> a.result(graph, w, source).params_effective, a.run(source=source).params_effective
        (4, 4)
        """
        if self._pair is not None:
            return None
        with _gc_paused(), self._budget():
            graph = lower(self.traced, source, self.reuse)
            w = walk(graph)
        self.last = (self.traced, graph, w)
        return graph, w

    def result(self, graph: UnitGraph, w: Walk, source: MaskSource) -> Analysis:
        """The analysis of a walk of :meth:`walk_only`, with the masks and counts ``source`` gives now."""
        with _gc_paused(), self._budget():
            return self._finish(self._result(self.traced, graph, w, source))

    def _finish(self, res: Analysis) -> Analysis:
        res.input_shapes = [list(s) for s in self.input_shapes] or res.input_shapes
        res.notes = list(self.notes)
        return res

    def _run(self, traced: Traced, masks: Mapping[str, torch.Tensor] | None, source: MaskSource | None) -> Analysis:
        source = source if source is not None else MaskSource(self.model, masks, self.names)
        source.prefetch(self.kinds)
        graph = lower(traced, source, self.reuse if traced is self.traced else None)
        w = walk(graph)
        self.last = (traced, graph, w) if self.keep_walk else None
        return self._result(traced, graph, w, source)

    def _result(self, traced: Traced, graph: UnitGraph, w: Walk, source: MaskSource) -> Analysis:
        eff, masks, kinds, layers, collapsed, unsupported = layer_table(
            traced, graph, w, source, self.kinds, self.dense
        )
        res = Analysis(eff, masks, kinds, layers, collapsed, unsupported, w, traced.tracer, _shapes(traced))
        kept = [n for n in op_weights(graph) if in_dense(n, self.dense)]
        note = f"{len(kept)} weight tensors kept dense (DyReLU hyper-networks) are not counted"
        if kept and note not in self.notes:
            self.notes.append(note)
        return prefixed(res, self.prefix)


@contextmanager
def _gc_paused():
    # tracing and lowering make thousands of small objects and no garbage cycles; a collection in the
    # middle (the gen-2 threshold is crossed every few analyses) costs 10 ms and frees nothing
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


def analyze(
    model: nn.Module,
    example_inputs: Any = None,
    input_shape: InputShape | None = None,
    masks: Mapping[str, torch.Tensor] | None = None,
    tracer: str = "auto",
    input_dtype: torch.dtype | None = None,
    submodule: str | None = None,
    max_memory: int | None = None,
) -> Analysis:
    """Effective masks, dead units and collapse of ``model`` for the given input (tensor, tuple or shape).

    Masks are ``masks[name]`` when given, else ``torch.nn.utils.prune``'s ``weight_mask`` buffers,
    else ``weight != 0``. With ``input_shape``, inputs are float32 unless ``input_dtype`` says otherwise
    (``torch.long`` for token ids). With ``submodule`` (``"backbone"``), only that part is analysed, with
    its own inputs (the inputs given are the part's: see :func:`connectome.parts.capture_inputs` to get
    them from the whole model's) and its own outputs; names stay the whole model's. The analysis
    stops with :class:`~connectome.memory.MemoryBudgetError` when it would grow by more than
    ``max_memory`` bytes (default: half the machine's memory); a large batch costs what a batch of
    two does where the model keeps its examples apart (:mod:`connectome.batching`).
    """
    with _gc_paused():  # one pause for both steps: re-enabling the collector costs a young-generation pass
        return Analyzer(model, example_inputs, input_shape, tracer, input_dtype, submodule, max_memory).run(masks)


def _shapes(traced: Traced) -> list[list[int]]:
    return [list(traced.vals[n].shape) for n in traced.inputs if isinstance(traced.vals.get(n), torch.Tensor)]
