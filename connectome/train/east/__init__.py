"""EAST, extreme adaptive sparse training (arXiv 2411.13545): dynamic ReLU phased out into ReLU, weight
sharing inside residual stages, and a cyclic density, on ERK-initialised RigL. One module per technique:

- :mod:`.dyrelu`: DyReLU-B and its phasing;
- :mod:`.schedules`: the phasing factor, the cyclic density and the density adjusted for sharing;
- :mod:`.run`: the budget with shared weights, and the phasing during training;
- the cyclic sparsity is a mask policy, :mod:`connectome.train.policies.east`.
"""

from .dyrelu import DyReLU, phase, phase_out
from .schedules import adjusted_density, cyclic_density, phase_beta, phasing_window

__all__ = ["DyReLU", "phase", "phase_out", "adjusted_density", "cyclic_density", "phase_beta", "phasing_window"]
