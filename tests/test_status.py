import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from connectome.graph.status import Status, combine, dedupe_rows, union


def test_dedupe_rows_drops_empty_and_repeats():
    rows = np.array([[0, 1, 0], [0, 0, 0], [0, 1, 0], [1, 1, 1]], bool)
    table, idx = dedupe_rows(rows)
    assert idx[1] == -1
    assert idx[0] == idx[2] != idx[3]
    assert (table[idx[0]] == rows[0]).all() and (table[idx[3]] == rows[3]).all()
    assert len(table) == 2


def test_full_round_trip_any_cdim():
    rng = np.random.default_rng(0)
    arr = rng.random((2, 3, 4, 5)) > 0.6
    for cdim in range(4):
        s = Status.from_full(arr, cdim)
        assert s.channels == arr.shape[cdim]
        assert (s.full() == arr).all()
        for other in range(4):
            assert (s.with_cdim(other).full() == arr).all()


def test_uniform_and_alive_units():
    s = Status.uniform((1, 4, 2, 2), 1, True)
    assert s.is_full() and s.alive_units().all()
    d = Status.uniform((1, 4, 2, 2), 1, False)
    assert not d.any() and d.full().shape == (1, 4, 2, 2)


def test_map_channels_with_dead_marker():
    arr = np.zeros((1, 3, 2), bool)
    arr[0, 1, 0] = True
    s = Status.from_full(arr, 1).map_channels(np.array([1, -1, 1, 0]))
    full = s.full()
    assert full.shape == (1, 4, 2)
    assert full[0, 0, 0] and full[0, 2, 0] and not full[0, 1].any() and not full[0, 3].any()


def test_broadcast_and_reduce_are_adjoint():
    gate = np.array([True, False, True]).reshape(1, 3, 1, 1)
    s = Status.from_full(gate, 1).broadcast_to((2, 3, 4, 4))
    assert (s.full() == np.broadcast_to(gate, (2, 3, 4, 4))).all()
    back = s.reduce_to((1, 3, 1, 1))
    assert (back.full() == gate).all()


def test_combine_and_union_elementwise():
    rng = np.random.default_rng(1)
    a, b = rng.random((3, 5)) > 0.5, rng.random((3, 5)) > 0.5
    sa, sb = Status.from_full(a, 0), Status.from_full(b, 1)
    assert (union([sa, sb]).full() == (a | b)).all()
    assert (combine([sa, sb.with_cdim(0)], lambda x, y: x & y).full() == (a & b)).all()


def test_scalar_tensor_status():
    s = Status.uniform((), 0, True)
    assert s.full().shape == () and bool(s.full())
    assert Status.from_full(np.array(False), 0).any() is False


@pytest.mark.parametrize("shape", [(7,), (2, 7), (1, 3, 5, 5)])
def test_rows_match_full_layout(shape):
    arr = np.random.default_rng(2).random(shape) > 0.5
    s = Status.from_full(arr, len(shape) - 1)
    assert (np.moveaxis(arr, -1, 0).reshape(shape[-1], -1) == s.rows()).all()


@settings(max_examples=200, deadline=None)
@given(data=st.data(), k=st.integers(1, 4), c=st.integers(1, 40))
def test_distinct_tuples_equal_numpy_unique_rows(data, k, c):
    import numpy as np
    from connectome.graph.status import _distinct_tuples
    sizes = [data.draw(st.integers(0, 6)) for _ in range(k)]
    idxs = [np.array(data.draw(st.lists(st.integers(-1, n - 1), min_size=c, max_size=c)), np.int64) for n in sizes]
    uniq, inverse = _distinct_tuples(idxs, sizes)
    ref_u, ref_i = np.unique(np.stack(idxs, axis=1), axis=0, return_inverse=True)
    assert np.array_equal(uniq, ref_u) and np.array_equal(inverse, ref_i.ravel())
