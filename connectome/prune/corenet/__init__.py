"""CoreNet (Baykal, Liebenwein, Gilitschenski, Feldman, Rus; ICLR 2019): sparsify a trained network by
sampling each neuron's incoming weights in proportion to their empirical sensitivity on a sample of
inputs, reweighted so that every pre-activation stays unbiased.

- :mod:`.sensitivity`: ``s_j = max_x`` of a weight's share of its sign set's pre-activation;
- :mod:`.sampling`: draws with replacement, the unbiased reweighting, and sample sizes that meet a
  budget of kept weights exactly; :mod:`.bounds`: the sample sizes the paper's guarantee asks for;
- :mod:`.kernel`: the loops, compiled by numba when it is installed;
- :mod:`.layers`: one pass over S by hooks; :mod:`.run`: :func:`corenet` and its variants;
- :mod:`.baselines`: uniform sampling, magnitude and SVD under the same budget.
"""

from .baselines import BASELINES, baseline
from .run import VARIANTS, Sparsified, corenet
from .sampling import Draws, allocate, distribution, draw, reweight, sample, sample_counts
from .sensitivity import Accumulator, conv_patches, sensitivities

__all__ = [
    "Accumulator",
    "BASELINES",
    "Draws",
    "Sparsified",
    "VARIANTS",
    "allocate",
    "baseline",
    "conv_patches",
    "corenet",
    "distribution",
    "draw",
    "reweight",
    "sample",
    "sample_counts",
    "sensitivities",
]
