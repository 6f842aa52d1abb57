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


@pytest.mark.parametrize("name", ["all", "none", "rows", "cols", "outer"])
@pytest.mark.parametrize("dead", ["rows", "cols", "both", "neither"])
def test_a_gated_stand_in_equals_the_gated_mask(name, dead):
    """A layer's effective mask, dead outputs and inputs cleared, from a stand-in (kept a view where it can)."""
    import numpy as np

    from connectome.graph.lower.mixing import _gated, _gated_view

    conn = VIEWS[name].unsqueeze(-1)
    rows = np.array([True, dead not in ("rows", "both"), True])
    cols = np.array([[dead not in ("cols", "both"), True, True, True]])
    want = conn & torch.from_numpy(rows)[:, None, None] & torch.from_numpy(cols)[..., None]
    assert torch.equal(_gated(conn, rows, cols), want)
    view = _gated_view(conn, rows, cols)
    # a view when the gate clears only along the vector the stand-in repeats
    viewable = {
        "all": dead != "both",
        "none": dead != "both",
        "rows": dead in ("rows", "neither"),
        "cols": dead in ("cols", "neither"),
        "outer": False,
    }[name]
    assert (view is not None) == viewable
    if view is not None:
        assert torch.equal(view, want) and 0 in view.stride()  # no matrix-sized array made


@pytest.mark.parametrize("name", ["all", "none", "rows", "cols", "outer", "middle3d"])
@pytest.mark.parametrize("dim", [0, 1])
def test_group_reach_of_a_stand_in_equals_that_of_its_copy(name, dim):
    """Which groups of rows (or columns) reach each column (row): read off the one stored slice of a view."""
    import numpy as np

    from connectome.graph.lower.mixing import _group_reach

    conn = VIEWS[name] if VIEWS[name].dim() == 3 else VIEWS[name].unsqueeze(-1)
    u8 = conn.view(torch.uint8)  # as the layer reads it: the view keeps the stand-in's strides
    rng = np.random.default_rng(0)
    for n in (1, 2, 3):
        for _ in range(4):
            idx = rng.integers(-1, n, conn.shape[dim])
            want = _group_reach(u8.contiguous(), idx, n, dim)
            assert np.array_equal(_group_reach(u8, idx, n, dim), want), (n, idx)
