"""An embedded pruned model for `make demo`: LeNet-300-100 with 98% of its weights pruned at random.

Random pruning leaves many hidden units with no incoming or no outgoing weight; their remaining
weights are nonzero but do nothing, so the effective sparsity is well above the direct sparsity.
Run: connectome analyze examples/pruned_lenet.py:build
"""
import torch

from connectome.models import lenet_300_100


def random_lenet(keep: float, seed: int = 0) -> torch.nn.Module:
    """LeNet-300-100 keeping a random ``keep`` share of each layer's weights."""
    torch.manual_seed(seed)
    model = lenet_300_100()
    with torch.no_grad():
        for layer in model:
            if isinstance(layer, torch.nn.Linear):
                layer.weight.mul_(torch.rand_like(layer.weight) >= 1 - keep)
    return model


def build() -> torch.nn.Module:
    return random_lenet(0.02)


build.input_shape = (1, 1, 28, 28)
