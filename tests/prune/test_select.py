"""Selection: exact kept counts, ties to the earlier weight, the same masks from every path."""
import torch

from connectome.prune.quotas import budget, igq, kept_counts
from connectome.prune.select import Ranking, select, select_count, top_k


def _reference(scores: torch.Tensor, k: int) -> torch.Tensor:
    keep = torch.zeros(scores.numel(), dtype=torch.bool)
    keep[torch.argsort(scores.flatten(), descending=True, stable=True)[:k]] = True
    return keep.view(scores.shape)


def test_top_k_equals_a_stable_sort_with_many_ties():
    g = torch.Generator().manual_seed(0)
    for _ in range(300):
        n = int(torch.randint(1, 60, (1,), generator=g))
        s = torch.randint(0, 4, (n,), generator=g).double()
        s[torch.rand(n, generator=g) < 0.2] = float("-inf")
        k = int(torch.randint(0, n + 1, (1,), generator=g))
        assert torch.equal(top_k(s, k), _reference(s, k))
        assert torch.equal(Ranking({"a": s}).masks(k)["a"], _reference(s, k))


def test_global_and_per_layer_counts_are_exact():
    g = torch.Generator().manual_seed(1)
    scores = {"a": torch.rand(30, 40, generator=g), "b": torch.rand(20, 30, generator=g),
              "c": torch.rand(5, 20, generator=g)}
    shapes = [tuple(v.shape) for v in scores.values()]
    for sparsity in (0.5, 0.9, 0.99):
        m = select(scores, sparsity)
        assert sum(int(v.sum()) for v in m.values()) == budget(shapes, sparsity)
        q = select(scores, sparsity, quota="igq")
        assert [int(v.sum()) for v in q.values()] == kept_counts(shapes, igq(shapes, sparsity))
        r = Ranking(scores, "igq").masks(budget(shapes, sparsity))
        assert all(torch.equal(q[k], r[k]) for k in q)


def test_within_keeps_pruned_weights_out():
    scores = {"a": torch.tensor([5.0, 4.0, 3.0, 2.0])}
    within = {"a": torch.tensor([False, True, True, True])}
    assert select_count(scores, 2, within=within)["a"].tolist() == [False, True, True, False]
