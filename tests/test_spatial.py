import itertools

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from connectome.graph.spatial import adaptive_map, conv_taps, interp_map, transposed_taps


def _support_by_torch(n_in, n_out, k, stride, pad, dil, tap):
    """Which input index each output index reads through kernel tap `tap`, by running conv1d on a basis."""
    w = torch.zeros(1, 1, k, dtype=torch.float64)
    w[0, 0, tap] = 1
    eye = torch.eye(n_in, dtype=torch.float64).unsqueeze(1)  # batch of one-hot inputs
    out = F.conv1d(eye, w, stride=stride, padding=pad, dilation=dil)[:, 0, :]  # (n_in, n_out)
    assert out.shape[1] == n_out
    return (out.T != 0).numpy()


@pytest.mark.parametrize("n_in,k,stride,pad,dil", [(5, 3, 1, 1, 1), (7, 3, 2, 1, 1), (4, 3, 1, 2, 2),
                                                    (2, 3, 2, 1, 1), (1, 3, 1, 1, 1), (9, 7, 2, 3, 1)])
def test_conv_taps_match_torch(n_in, k, stride, pad, dil):
    n_out = (n_in + 2 * pad - dil * (k - 1) - 1) // stride + 1
    for a, tap in enumerate(conv_taps(n_in, n_out, k, stride, pad, dil)):
        assert (tap.matrix() == _support_by_torch(n_in, n_out, k, stride, pad, dil, a)).all()


def test_padding_only_tap_reads_nothing():
    taps = conv_taps(1, 1, 3, 1, 1, 1)  # 3-tap kernel on a single position: only the centre is real
    assert [t.reads_input() for t in taps] == [False, True, False]


@pytest.mark.parametrize("mode", ["reflect", "replicate", "circular"])
def test_padding_modes_match_torch(mode):
    n = 5
    taps = conv_taps(n, n, 3, 1, 1, 1, mode)
    eye = torch.eye(n, dtype=torch.float64).unsqueeze(1)
    padded = F.pad(eye, (1, 1), mode=mode)
    for a, tap in enumerate(taps):
        w = torch.zeros(1, 1, 3, dtype=torch.float64)
        w[0, 0, a] = 1
        ref = (F.conv1d(padded, w)[:, 0, :].T != 0).numpy()
        assert (tap.matrix() == ref).all()


@pytest.mark.parametrize("n_in,k,stride,pad,outpad", [(3, 3, 2, 1, 1), (4, 4, 2, 1, 0), (2, 3, 1, 0, 0)])
def test_transposed_taps_match_torch(n_in, k, stride, pad, outpad):
    n_out = (n_in - 1) * stride - 2 * pad + (k - 1) + outpad + 1
    eye = torch.eye(n_in, dtype=torch.float64).unsqueeze(1)
    for a, tap in enumerate(transposed_taps(n_in, n_out, k, stride, pad)):
        w = torch.zeros(1, 1, k, dtype=torch.float64)
        w[0, 0, a] = 1
        ref = (F.conv_transpose1d(eye, w, stride=stride, padding=pad, output_padding=outpad)[:, 0, :].T != 0).numpy()
        assert (tap.matrix() == ref).all()


def test_adaptive_map_windows():
    m = adaptive_map(5, 3).matrix()
    assert m.tolist() == [[1, 1, 0, 0, 0], [0, 1, 1, 1, 0], [0, 0, 0, 1, 1]]


def test_interp_nearest_and_bilinear_support():
    near = interp_map(2, 4, "nearest", None, 2.0).matrix()
    assert near.tolist() == [[1, 0], [1, 0], [0, 1], [0, 1]]
    lin = interp_map(2, 4, "bilinear", False, 2.0).matrix()
    assert lin[0].tolist() == [True, False] and lin[1].tolist() == [True, True]
    ac = interp_map(3, 5, "bilinear", True, None).matrix()  # align_corners: even outputs hit inputs exactly
    assert ac[0].tolist() == [True, False, False] and ac[2].tolist() == [False, True, False]


@pytest.mark.parametrize("transpose", [False, True])
@pytest.mark.parametrize("geometry", [
    [(9, 3, 2, 1, 1), (7, 3, 1, 1, 1)],          # strided 3x3
    [(12, 7, 2, 3, 1), (12, 7, 2, 3, 1)],        # a stem 7x7: padding on both sides
    [(6, 3, 1, 2, 2), None],                      # dilated, and a dim no tap moves
    [(8, 5, 1, 2, 1)] * 3,                        # 3-D, 125 taps: more than one int64 key holds
])
def test_distinct_columns_rebuild_the_all_alive_table(geometry, transpose):
    from connectome.graph.spatial import per_tap_all_alive, per_tap_all_alive_cols
    per_dim, pos = [], []
    for g in geometry:
        if g is None:
            per_dim.append((None,))
            pos.append(4)
            continue
        n_in, k, s, p, d = g
        n_out = (n_in + 2 * p - d * (k - 1) - 1) // s + 1
        per_dim.append(conv_taps(n_in, n_out, k, s, p, d))
        pos.append(n_in if transpose else n_out)
    taps = tuple(itertools.product(*per_dim))
    c = per_tap_all_alive_cols(taps, tuple(pos), transpose)
    full = per_tap_all_alive(taps, tuple(pos), transpose)
    assert c.table.shape[:2] == full.shape[:2] and c.table.shape[2] < full.shape[2]
    assert (c.table[..., c.cols] == full).all()
    # narrowing per-position rows ORs each column's positions
    rows = np.random.default_rng(0).random((5, full.shape[2])) < 0.01
    expect = np.zeros((5, c.table.shape[2]), bool)
    for s, col in enumerate(c.cols):
        expect[:, col] |= rows[:, s]
    assert (c.narrow(rows) == expect).all()
