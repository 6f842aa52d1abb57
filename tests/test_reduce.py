"""The byte-lane reductions equal torch's own reductions on every shape, offset and density."""
import torch
from hypothesis import given, settings, strategies as st

from connectome.reduce import any_along, count_true


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


def test_count_true_no_byte_overflow_when_all_true():
    # 255 lanes of eight ones each: every byte of the lane sum reaches exactly 255
    x = torch.ones(255 * 8 * 3 + 5, dtype=torch.bool)
    assert count_true(x) == x.numel()
