"""Training with masks: fixed masks or dynamic sparse training (SET, RigL, GMP), watching the
*effective* sparsity after every mask update.

>>> from connectome.models import lenet_300_100
>>> run = train(lenet_300_100(), Config(method="set", sparsity=0.95, epochs=1, limit=600, val_size=100))
>>> [r["event"] for r in run.history][-1], run.history[-1]["collapsed"]
('epoch', False)
"""

from .loop import Config, Run, evaluate, train
from .masked import Masks, TrainError, strip_pruning
from .policies import POLICIES, Policy, Update
from .schedules import LearningRate, drop_fraction, gmp_sparsity
from .watch import Watch

__all__ = [
    "Config",
    "Run",
    "train",
    "evaluate",
    "Masks",
    "TrainError",
    "strip_pruning",
    "POLICIES",
    "Policy",
    "Update",
    "LearningRate",
    "drop_fraction",
    "gmp_sparsity",
    "Watch",
]
