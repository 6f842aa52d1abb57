"""Dead-unit diagrams: DOT text of the layer graph or the unit graph, and rendering it with graphviz.

>>> import torch, connectome
>>> from connectome.render import to_dot
>>> m = torch.nn.Sequential(torch.nn.Linear(3, 2), torch.nn.ReLU(), torch.nn.Linear(2, 1))
>>> d = to_dot(connectome.analyze(m, input_shape=(1, 3)))
>>> d.source.startswith("digraph"), d.notes
(True, [])
"""

from .draw import FORMATS, Diagram, RenderError, format_of, render, to_dot
from .layers import layer_dot, layer_graph

__all__ = ["Diagram", "RenderError", "render", "to_dot", "layer_dot", "layer_graph", "format_of", "FORMATS"]
