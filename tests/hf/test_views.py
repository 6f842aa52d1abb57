"""Reductions of the broadcast stand-ins a lazy analysis leaves for its effective masks."""

import pytest
import torch

from connectome.hf.blocks import _any

ROWS = torch.tensor([True, False, True])
COLS = torch.tensor([False, False, True, True])
VIEWS = {
    "all": torch.ones((), dtype=torch.bool).expand(3, 4),
    "none": torch.zeros((), dtype=torch.bool).expand(3, 4),
    "rows": ROWS[:, None].expand(3, 4),
    "cols": COLS[None, :].expand(3, 4),
    "outer": ROWS[:, None] & COLS[None, :],
    "dense3d": torch.rand(2, 3, 4, generator=torch.Generator().manual_seed(0)) > 0.7,
    "middle3d": (torch.rand(2, 1, 4, generator=torch.Generator().manual_seed(1)) > 0.5).expand(2, 3, 4),
}


@pytest.mark.parametrize("name", VIEWS)
def test_any_of_a_broadcast_view_equals_torch_any(name):
    e = VIEWS[name]
    assert torch.equal(_any(e), e.any())
    for d in range(e.dim()):
        assert torch.equal(_any(e, d), e.any(d)), d
