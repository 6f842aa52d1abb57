"""Sweeps: a grid of training runs from a TOML spec, each run a Ray task, resumable and fault-tolerant.

>>> s = Spec.parse('[runs]\\nmodel = "connectome:lenet_300_100"\\nmethod = ["static", "rigl"]\\n')
>>> [p["id"] for p in s.points()]
['model=connectome-lenet_300_100,method=static', 'model=connectome-lenet_300_100,method=rigl']
"""

from .runner import RESULT, rows, run_point, run_sweep
from .spec import KEYS, Spec, SpecProblem

__all__ = ["Spec", "SpecProblem", "KEYS", "run_point", "run_sweep", "rows", "RESULT"]
