"""The fast reductions and the numpy read equal torch's own on every shape, offset, density and dtype."""
import pytest
import torch
from hypothesis import given, settings, strategies as st

from connectome.masks import nonzero
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
