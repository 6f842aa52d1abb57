"""Write a LeNet-300-100 pruned at random with torch.nn.utils.prune, the way a training script would.

    python examples/save_pruned_lenet.py lenet.pt [--amount 0.99] [--seed 0]
    connectome audit lenet.pt --arch connectome:lenet_300_100 --claim-sparsity 0.99
"""
import argparse

import torch
import torch.nn.utils.prune as prune
from torch import nn

from connectome.models import lenet_300_100


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("path")
    ap.add_argument("--amount", type=float, default=0.99, help="fraction of weights to prune (global, random)")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    torch.manual_seed(args.seed)
    model = lenet_300_100()
    layers = [(m, "weight") for m in model.modules() if isinstance(m, nn.Linear)]
    prune.global_unstructured(layers, pruning_method=prune.RandomUnstructured, amount=args.amount)
    torch.save(model.state_dict(), args.path)   # weight_orig + weight_mask per layer
    print(f"wrote {args.path}")


if __name__ == "__main__":
    main()
