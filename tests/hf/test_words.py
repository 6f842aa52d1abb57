"""The word-at-a-time statistics (``swar``) and the chunked read of a shard, against torch's comparisons."""
from __future__ import annotations

import os

import pytest
import torch
from safetensors.torch import save_file

from connectome.hf import bits, kernel
from connectome.hf.bits import stored_stats
from connectome.hf.folder import Folder
from connectome.hf.swar import fits, summarize_words

pytestmark = pytest.mark.skipif(not kernel.have_numba(), reason="numba is not installed")

FLOATS = {
    "bf16": (torch.bfloat16, torch.int16, 0x7FFF, 0x7F80),
    "fp16": (torch.float16, torch.int16, 0x7FFF, 0x7C00),
    "fp32": (torch.float32, torch.int32, 0x7FFF_FFFF, 0x7F80_0000),
    "e4m3": (torch.float8_e4m3fn, torch.uint8, 0x7F, 0x7F),
    "e5m2": (torch.float8_e5m2, torch.uint8, 0x7F, 0x7C),
}
SHAPES = [(1, 8), (3, 16), (37, 64), (5, 1000), (130, 24)]


def _tensor(shape, dtype, seed):
    g = torch.Generator().manual_seed(seed)
    t = torch.randn(shape, generator=g) * 4
    t[torch.rand(shape, generator=g) < 0.5] = 0.0
    t[torch.rand(shape, generator=g) < 0.1] = -0.0
    t[:, 3] = 0.0  # a dead column and a dead row
    t[shape[0] // 2] = 0.0
    if dtype is not torch.float8_e4m3fn:  # e4m3 has no infinity; its NaN is the one all-ones pattern
        t[torch.rand(shape, generator=g) < 0.05] = float("-inf")
    t[torch.rand(shape, generator=g) < 0.05] = float("nan")
    return t.to(dtype)


def _groups(nz: torch.Tensor, m: int) -> list[int]:
    return torch.bincount(nz.reshape(nz.shape[0], -1, m).sum(-1).reshape(-1), minlength=m + 1).tolist()


def _check(s, t):
    nz = t.float() != 0  # NaN compares unequal to 0: it is kept
    assert s.count == int(nz.sum())
    assert s.rows.tolist() == nz.any(1).tolist() and s.cols.tolist() == nz.any(0).tolist()
    assert s.hist4 == _groups(nz, 4) and s.hist8 == _groups(nz, 8)
    assert s.nonfinite == int((~torch.isfinite(t.float())).sum())


@pytest.mark.parametrize("threads", [1, None])  # the serial kernel, and the parallel one on every thread
@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("kind", FLOATS)
def test_words_match_torch(kind, shape, threads):
    dtype, view, vbits, ebits = FLOATS[kind]
    t = _tensor(shape, dtype, seed=sum(shape))
    a = t.view(view).numpy()
    assert fits(a, vbits)
    _check(summarize_words(a, ebits, threads), t)


def test_what_does_not_fit_words():
    a = torch.zeros(4, 12, dtype=torch.int16).numpy()
    assert not fits(a, 0x7FFF)  # rows of 12: not whole groups of 8
    assert not fits(torch.zeros(4, 16, dtype=torch.int32).numpy(), -1)  # integers: every bit is a value bit
    assert not fits(torch.zeros(16, 8, dtype=torch.int16).numpy().T, 0x7FFF)  # not contiguous


@pytest.mark.parametrize("kind", FLOATS)
def test_a_shard_read_in_many_chunks_equals_torch(kind, tmp_path, monkeypatch):
    dtype, *_ = FLOATS[kind]
    t = _tensor((301, 40), dtype, seed=7)
    save_file({"a": torch.ones(3, dtype=dtype), "w": t}, os.path.join(tmp_path, "m.safetensors"))
    (tmp_path / "config.json").write_text("{}")
    f = Folder.open(str(tmp_path))
    row = 40 * t.element_size()
    monkeypatch.setattr(bits, "CHUNK", 7 * row)  # 43 chunks, the last one short
    _check(stored_stats(f, f.entries["w"]), t)
    eager = stored_stats(f, f.entries["w"], keep=True)  # the mapped path, byte per entry
    _check(eager, t)


def test_a_truncated_shard_is_one_line(tmp_path):
    from connectome.io.errors import SpecError

    save_file({"w": torch.ones(64, 16, dtype=torch.bfloat16)}, os.path.join(tmp_path, "m.safetensors"))
    (tmp_path / "config.json").write_text("{}")
    f = Folder.open(str(tmp_path))
    path = os.path.join(tmp_path, "m.safetensors")
    os.truncate(path, os.path.getsize(path) - 100)
    with pytest.raises(SpecError, match="truncated"):
        stored_stats(f, f.entries["w"])
