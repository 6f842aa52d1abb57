import os
import sys
import warnings

import torch

sys.path.insert(0, os.path.dirname(__file__))  # the oracle and soundness helpers
warnings.filterwarnings("ignore", category=UserWarning)
torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))
