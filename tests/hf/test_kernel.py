"""The one-pass matrix statistics (numba and numpy paths) against torch's own comparisons and loops."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from connectome.hf import kernel
from connectome.hf.kernel import summarize

DTYPES = [(torch.bfloat16, torch.int16, 0x7FFF, 0x7F80), (torch.float16, torch.int16, 0x7FFF, 0x7C00),
          (torch.float32, torch.int32, 0x7FFF_FFFF, 0x7F80_0000)]
SHAPES = [(1, 1), (3, 13), (5, 8), (2, 4), (17, 1), (4, 23), (64, 64)]


def _tensor(shape, dtype, seed):
    g = torch.Generator().manual_seed(seed)
    t = torch.randn(shape, generator=g)
    t[torch.rand(shape, generator=g) < 0.5] = 0.0
    t[torch.rand(shape, generator=g) < 0.1] = -0.0
    t[torch.rand(shape, generator=g) < 0.05] = float("nan")
    t[torch.rand(shape, generator=g) < 0.05] = float("-inf")
    return t.to(dtype)


def _groups(nz: torch.Tensor, m: int) -> list[int]:
    hist = [0] * (m + 1)
    for row in nz.tolist():
        for start in range(0, len(row), m):
            hist[sum(row[start : start + m])] += 1
    return hist


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("dtype, view, vbits, ebits", DTYPES)
@pytest.mark.parametrize("path", ["numba", "numpy"])
def test_stats_match_torch(shape, dtype, view, vbits, ebits, path, monkeypatch):
    if path == "numpy":
        monkeypatch.setenv("CONNECTOME_NO_NUMBA", "1")
    elif not kernel.have_numba():
        pytest.skip("numba is not installed")
    t = _tensor(shape, dtype, seed=sum(shape))
    s = summarize(t.view(view).numpy(), vbits, ebits, keep=True)
    nz = t.float() != 0  # NaN compares unequal to 0: it is kept
    assert s.count == int(nz.sum())
    assert s.rows.tolist() == nz.any(1).tolist() and s.cols.tolist() == nz.any(0).tolist()
    assert s.hist4 == _groups(nz, 4) and s.hist8 == _groups(nz, 8)
    assert s.nonfinite == int((~torch.isfinite(t.float())).sum())
    assert s.mask.tolist() == nz.tolist()


def test_fp8_bits(tmp_path):
    fp8 = pytest.importorskip("torch").float8_e4m3fn
    t = _tensor((6, 12), torch.float32, 3).nan_to_num(0.0, 0.0, 0.0).to(fp8)
    s = summarize(t.view(torch.uint8).numpy(), 0x7F, 0x7F, keep=True)
    nz = t.float() != 0
    assert s.count == int(nz.sum()) and s.mask.tolist() == nz.tolist() and s.nonfinite == 0


def test_conv1d_groups_run_along_the_first_axis(tmp_path):
    import os

    from safetensors.torch import save_file

    from connectome.hf.bits import stored_stats
    from connectome.hf.folder import Folder

    w = _tensor((16, 6), torch.bfloat16, 5)
    save_file({"c.weight": w}, os.path.join(tmp_path, "m.safetensors"))
    (tmp_path / "config.json").write_text("{}")
    f = Folder.open(str(tmp_path))
    s = stored_stats(f, f.entries["c.weight"], axis=0, keep=True)
    nz = w.float() != 0
    assert s.hist4 == _groups(nz.T, 4) and s.rows.tolist() == nz.any(1).tolist()
    assert np.array_equal(s.mask, nz.numpy())
