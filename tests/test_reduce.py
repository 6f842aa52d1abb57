"""The fast reductions and the numpy read equal torch's own on every shape, offset, density and dtype."""
import pytest
import torch
import torch.nn.utils.prune
from hypothesis import given, settings, strategies as st

from connectome.io.masks import nonzero
from connectome.graph.reduce import any_along, count_true


@settings(max_examples=200, deadline=None)
@given(o=st.integers(1, 6), n=st.sampled_from([1, 3, 8, 16, 64, 96, 512, 2048, 4096]),
       t=st.sampled_from([1, 2, 3, 9, 25]), density=st.sampled_from([0.0, 0.001, 0.1, 1.0]),
       seed=st.integers(0, 2**16), dim=st.integers(0, 2))
def test_any_along_equals_amax(o, n, t, density, seed, dim):
    g = torch.Generator().manual_seed(seed)
    x = (torch.rand(o, n, t, generator=g) < density).to(torch.uint8)
    assert torch.equal(any_along(x, dim), x.amax(dim))


@settings(max_examples=200, deadline=None)
@given(n=st.integers(0, 20000), offset=st.integers(0, 9), density=st.sampled_from([0.0, 0.01, 0.5, 1.0]),
       seed=st.integers(0, 2**16))
def test_count_true_equals_sum_at_any_offset(n, offset, density, seed):
    g = torch.Generator().manual_seed(seed)
    base = torch.rand(n + offset, generator=g) < density
    x = base[offset:]   # a view whose bytes need not start on an 8-byte boundary
    assert count_true(x) == int(x.sum())
    assert count_true(x.reshape(-1, 1)) == int(x.sum())


@settings(max_examples=25, deadline=None)
@given(extra=st.integers(0, 20000), offset=st.integers(0, 9), density=st.sampled_from([0.0, 0.01, 0.5, 1.0]),
       seed=st.integers(0, 2**16))
def test_count_true_on_large_masks_equals_sum(extra, offset, density, seed):
    # from 2^20 elements on, count_true adds int64 lanes instead of calling numpy
    g = torch.Generator().manual_seed(seed)
    base = torch.rand((1 << 20) + extra + offset, generator=g) < density
    x = base[offset:]
    assert count_true(x) == int(x.sum())


def test_count_true_no_byte_overflow_when_all_true():
    # runs of 255 lanes of eight ones each: every byte of a lane sum reaches exactly 255
    x = torch.ones(255 * 8 * 600 + 5, dtype=torch.bool)
    assert x.numel() >= 1 << 20 and count_true(x) == x.numel()


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.float16, torch.bfloat16, torch.int8,
                                   torch.int64, torch.bool])
def test_nonzero_equals_torch_comparison(dtype):
    g = torch.Generator().manual_seed(0)
    x = (torch.randn(40, 30, generator=g) * (torch.rand(40, 30, generator=g) > 0.5)).to(dtype)
    for t in (x, x.t(), x[::3, 1::2], torch.nn.Parameter(x.float()) if dtype.is_floating_point else x):
        got = nonzero(t)
        assert got.dtype == torch.bool and torch.equal(got, t.detach() != 0)
    special = torch.tensor([0.0, -0.0, float("nan"), float("inf"), 1e-45])
    assert nonzero(special).tolist() == [False, False, True, True, True]


def _pruned_net() -> torch.nn.Module:
    """Big enough for two threads (> 2^20 weights), with every way a mask can be stored."""
    g = torch.Generator().manual_seed(1)
    net = torch.nn.Sequential(torch.nn.Linear(1024, 1100), torch.nn.Conv2d(64, 128, 3), torch.nn.Linear(300, 5),
                              torch.nn.Linear(8, 8).to(torch.bfloat16), torch.nn.Linear(16, 4))
    with torch.no_grad():
        for p in net.parameters():
            p.mul_((torch.rand(p.shape, generator=g) > 0.5).to(p.dtype))
    # prune's form: a kept weight can be exactly zero and a pruned one nonzero in weight_orig
    torch.nn.utils.prune.random_unstructured(net[0], "weight", amount=0.7)
    net[0].weight_orig.data[0, :10] = 0.0
    torch.nn.utils.prune.random_unstructured(net[2], "weight", amount=0.3)
    return net


def test_prefetch_reads_and_counts_what_one_at_a_time_reads():
    from connectome.io.masks import MaskSource, prunable_weights
    net = _pruned_net()
    names = list(prunable_weights(net))
    explicit = {"4.weight": torch.ones(4, 16)}
    one, both = MaskSource(net, explicit), MaskSource(net, explicit)
    both.prefetch(names)
    assert set(both) == set(names) - {"4.weight"}   # explicit masks need no read
    for n in names:
        expect = one[n]
        mod = net[int(n.split(".")[0])]
        ref = (getattr(mod, "weight_orig", mod.weight) != 0) & (getattr(mod, "weight_mask", 1) != 0)
        ref = explicit[n].bool() if n in explicit else ref
        assert torch.equal(expect, ref) and torch.equal(both[n], expect), n
        assert both.count(n) == one.count(n) == int(ref.sum()), n
        red = both.reduced(n)
        if n in explicit or mod.weight.dtype == torch.bfloat16:   # given, or read by torch: nothing to reuse
            assert red is None
            continue
        flat = ref.reshape(ref.shape[0], -1)
        assert torch.equal(torch.from_numpy(red.cols), flat.any(0)), n
        one_tap = ref.dim() == 2   # a conv's rows are reduced only for 1x1 kernels
        assert (red.rows is None) != one_tap and (not one_tap or torch.equal(torch.from_numpy(red.rows), flat.any(1)))


@settings(max_examples=200, deadline=None)
@given(values=st.lists(st.integers(-5, 40), max_size=30))
def test_all_distinct_equals_set_size(values):
    from connectome.graph.reduce import all_distinct
    import numpy as np
    assert all_distinct(np.array(values, dtype=np.int64)) == (len(set(values)) == len(values))


def test_prefetch_in_a_forked_child_after_the_parent_read():
    # the parent's reader thread does not survive fork(); the child must start its own, not wait on it
    import multiprocessing
    from connectome.io.masks import MaskSource, prunable_weights
    net = _pruned_net()
    names = list(prunable_weights(net))
    MaskSource(net).prefetch(names)   # the parent's reader thread now exists
    ctx = multiprocessing.get_context("fork")
    out = ctx.Queue()
    child = ctx.Process(target=_child_counts, args=(net, names, out))   # fork: nothing is pickled
    child.start()
    try:
        counts = out.get(timeout=60)
    finally:
        child.join(5)
        if child.is_alive():
            child.kill()
    one = MaskSource(net)
    assert counts == [one.count(n) for n in names]


def _child_counts(net, names, out):
    from connectome.io.masks import MaskSource
    s = MaskSource(net)
    s.prefetch(names)
    out.put([s.count(n) for n in names])


@settings(max_examples=200, deadline=None)
@given(shape=st.tuples(st.integers(1, 40), st.integers(1, 70), st.integers(1, 3)), dim=st.integers(0, 1),
       n=st.integers(1, 4), layout=st.sampled_from(["runs", "scattered", "one", "dead"]),
       density=st.sampled_from([0.0, 0.05, 0.5]), seed=st.integers(0, 2**16), by_products=st.booleans())
def test_group_reach_equals_any_over_each_group(shape, dim, n, layout, density, seed, by_products):
    """A layer's reach per group of channels (a few runs, many scattered, one group, none alive) equals numpy's
    ``any`` over the channels of each group, by run slices and by products alike."""
    import numpy as np

    from connectome.graph.lower import mixing

    rng = np.random.default_rng(seed)
    g = torch.Generator().manual_seed(seed)
    u8 = (torch.rand(shape, generator=g) < density).to(torch.uint8)
    k = shape[dim]
    if layout == "runs":  # heads: a few blocks of equal groups
        idx = np.repeat(rng.integers(-1, n, 4), -(-k // 4))[:k]
    elif layout == "scattered":
        idx = rng.integers(-1, n, k)
    else:
        idx = np.full(k, 0 if layout == "one" else -1)
    want = np.stack([np.take(u8.numpy(), np.flatnonzero(idx == j), axis=dim).any(axis=dim) for j in range(n)])
    limits = mixing.ROW_RUNS, mixing.MIDDLE_RUNS
    if by_products:  # no run read on its own: every group by its product
        mixing.ROW_RUNS = mixing.MIDDLE_RUNS = 0
    try:
        assert np.array_equal(mixing._group_reach(u8, idx, n, dim), want)
    finally:
        mixing.ROW_RUNS, mixing.MIDDLE_RUNS = limits
