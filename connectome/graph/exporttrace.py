"""The ``torch.export`` half of tracing: export a model quietly, and read its graph signature.

``trace`` tries ``torch.fx`` first and falls back on ``torch.export`` (see ``trace.py``). Exporting is
noisy (a failed export logs whole tracebacks and prints the partial graph) and its graph lists the model's
inputs, parameters, buffers and constants alike as placeholders, told apart only by the program's
signature. Both concerns are torch.export's alone, so they live here; ``trace.py`` builds the ``Traced``
record from what these return (this module imports nothing from it).

Examples
--------
>>> import torch
>>> ep = export_program(torch.nn.Linear(4, 3), (torch.zeros(2, 4),))
>>> inputs, params, outputs = split_signature(ep)
>>> [n.name for n in inputs], sorted(params.values()), len(outputs)
(['input'], ['bias', 'weight'], 1)
"""

from __future__ import annotations

import contextlib
import io
import logging
import warnings
from typing import TYPE_CHECKING

from torch import fx, nn

if TYPE_CHECKING:
    from torch.export import ExportedProgram

__all__ = ["export_program", "split_signature"]


def export_program(model: nn.Module, inputs: tuple, core: bool = False) -> ExportedProgram:
    """``torch.export`` of ``model`` on ``inputs`` (non-strict), in functional form, without its logs.

    With ``core`` the graph is decomposed to core ATen (``convolution``, ``addmm``...).

    >>> import torch
    >>> ep = export_program(torch.nn.Linear(2, 2), (torch.zeros(1, 2),), core=True)
    >>> [str(n.target) for n in ep.graph.nodes if n.op == "call_function"]
    ['aten.permute.default', 'aten.addmm.default']
    """
    from torch.export import export

    quiet = logging.root.manager.disable
    logging.disable(logging.ERROR)  # a failed export logs whole tracebacks; the error we raise says it in a line
    try:
        # a failed export also prints the partial graph to stderr (thousands of lines for a detector)
        with warnings.catch_warnings(), contextlib.redirect_stderr(io.StringIO()):
            warnings.simplefilter("ignore")
            ep = export(model, inputs, strict=False)
            # functional form: in-place writes into views become slice_scatter, copy, index_put...
            try:
                ep = ep.run_decompositions() if core else ep.run_decompositions({})
            except Exception:
                if core:
                    raise
                # torch cannot always re-run the program (a submodule's parameter read directly); the
                # exported training graph is used as it is: export keeps writes, whose rules then apply
                pass
    finally:
        logging.disable(quiet)
    return ep


def split_signature(ep: ExportedProgram) -> tuple[list[fx.Node], dict[fx.Node, str], list[fx.Node]]:
    """The exported graph's user-input placeholders, its parameter/buffer/constant placeholders (node ->
    qualified name) and the tensor nodes the model returns (not the buffers it mutates).

    >>> import torch
    >>> ep = export_program(torch.nn.BatchNorm1d(3), (torch.zeros(2, 3),))
    >>> inputs, params, outputs = split_signature(ep)
    >>> len(inputs), sorted(params.values()), len(outputs)
    (1, ['bias', 'num_batches_tracked', 'running_mean', 'running_var', 'weight'], 1)
    """
    from torch.export.graph_signature import InputKind, OutputKind

    nodes = {n.name: n for n in ep.graph.nodes}
    user, param_nodes = [], {}
    for spec in ep.graph_signature.input_specs:
        node = nodes[spec.arg.name]
        if spec.kind == InputKind.USER_INPUT:
            user.append(node)
        elif spec.target is not None:
            param_nodes[node] = spec.target
    out_node = next(n for n in ep.graph.nodes if n.op == "output")
    outs = [
        a
        for a, spec in zip(out_node.args[0], ep.graph_signature.output_specs)
        if spec.kind == OutputKind.USER_OUTPUT and isinstance(a, fx.Node)
    ]
    return user, param_nodes, outs
