"""Shards read past the page cache where their pages are not in it (O_DIRECT), against torch and the mapped reader."""

from __future__ import annotations

import os

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from connectome.hf import pread
from connectome.hf.bits import stored_stats
from connectome.hf.direct import PAGE, ShardFile, aligned
from connectome.hf.folder import Folder

from .test_words import FLOATS, _check, _tensor

pytestmark = pytest.mark.skipif(not pread.available(), reason="needs numba on Linux")


def _evict(path: str) -> None:
    """Drop the file's pages from the page cache (written pages first made clean)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    finally:
        os.close(fd)


def _load(path: str) -> None:
    with open(path, "rb") as f:
        while f.read(1 << 20):
            pass


def _folder(tmp_path, tensors: dict) -> tuple[Folder, str]:
    path = os.path.join(tmp_path, "model.safetensors")
    save_file(tensors, path)
    (tmp_path / "config.json").write_text("{}")
    return Folder.open(str(tmp_path)), path


def _shard(path: str) -> ShardFile:
    shard = ShardFile(path)
    if shard.pages is None or shard.dfd < 0:
        shard.close()
        pytest.skip("no page-cache residency or no O_DIRECT on this file system")
    return shard


def _tensors() -> dict[str, torch.Tensor]:
    # odd-sized vectors first in the file: the matrices start off pages and off words
    ts = {"a": torch.ones(3), "b": torch.ones(5, dtype=torch.bfloat16)}
    for i, kind in enumerate(FLOATS):
        ts[f"w{i}"] = _tensor((301 + 37 * i, 48), FLOATS[kind][0], seed=i)
    return ts


def test_the_buffer_is_page_aligned_with_room_for_two_more_pages():
    for n in (1, 4096, 12345):
        b = aligned(n)
        assert b.ctypes.data % PAGE == 0 and b.nbytes >= n + 2 * PAGE


def test_which_pages_are_cached_follows_the_page_cache(tmp_path):
    f, path = _folder(tmp_path, {"w": torch.ones(4096, 8)})
    _evict(path)
    with _shard(path) as shard:
        assert not shard.cached(0, os.path.getsize(path))
        e = f.entries["w"]
        assert shard.direct_for(e.start, e.start + e.numel * 4) == shard.dfd
    _load(path)
    with ShardFile(path) as shard:
        assert shard.cached(0, os.path.getsize(path)) and shard.dfd == -1  # all cached: no direct descriptor
        assert shard.direct_for(0, 100) == -1


@pytest.mark.parametrize("buffer_bytes", [1, 4096, 1 << 20])
def test_matrices_read_past_the_page_cache_count_as_torch(tmp_path, buffer_bytes):
    ts = _tensors()
    f, path = _folder(tmp_path, ts)
    assert any(f.entries[k].start % 8 for k in ts if k.startswith("w")), "a matrix off a word"
    for key, t in ts.items():
        if not key.startswith("w"):
            continue
        _evict(path)
        with _shard(path) as shard:
            e = f.entries[key]
            assert shard.direct_for(e.start, e.start + 1) >= 0
            _check(pread.count_stored(f.path, e, pread.buffer(buffer_bytes), shard), t)
            assert shard.dfd >= 0  # direct reads worked: not fallen back to buffered ones


@pytest.mark.parametrize("cold", [True, False])
@pytest.mark.parametrize("buffer_bytes", [1, 4096, 1 << 20])
def test_masks_read_again_equal_torch_and_the_mapped_reader(tmp_path, cold, buffer_bytes):
    ts = _tensors()
    f, path = _folder(tmp_path, ts)
    for key, t in ts.items():
        if not key.startswith("w"):
            continue
        e = f.entries[key]
        _evict(path) if cold else _load(path)
        with ShardFile(path) as shard:
            assert (shard.direct_for(e.start, e.start + 1, 8) >= 0) == (cold and shard.dfd >= 0 and e.start % 8 == 0)
            got = pread.read_mask(f.path, e, pread.buffer(buffer_bytes), shard)
        assert got.dtype == np.bool_ and got.shape == tuple(t.shape)
        assert torch.equal(torch.from_numpy(got), t.float() != 0), key
        assert np.array_equal(got, stored_stats(f, e, keep=True).mask), key


def test_several_masks_read_by_several_threads(tmp_path):
    ts = _tensors()
    f, path = _folder(tmp_path, ts)
    _evict(path)
    keys = {k: f.entries[k] for k in ts if k.startswith("w")}
    got = pread.read_masks(f.path, keys, 3)
    assert got.keys() == keys.keys()
    assert all(torch.equal(torch.from_numpy(got[k]), ts[k].float() != 0) for k in keys)


def test_a_truncated_shard_read_past_the_cache_is_one_line(tmp_path):
    from connectome.io.errors import SpecError

    f, path = _folder(tmp_path, {"w": torch.ones(4096, 16, dtype=torch.bfloat16)})
    os.truncate(path, os.path.getsize(path) - 5000)
    _evict(path)
    with _shard(path) as shard:
        with pytest.raises(SpecError, match="truncated"):
            pread.count_stored(f.path, f.entries["w"], pread.buffer(1 << 16), shard)
        with pytest.raises(SpecError, match="truncated"):
            pread.read_mask(f.path, f.entries["w"], pread.buffer(1 << 16), shard)


def test_the_small_tensors_the_caller_reads_are_in_the_page_cache_before_the_pass_counts(tmp_path):
    from connectome.hf.firstpass import FirstPass

    big = {f"{c}_w": _tensor((1024, 1024), torch.bfloat16, seed=i) for i, c in enumerate("bdf")}
    small = {f"{c}_norm": torch.ones(4096, dtype=torch.bfloat16) for c in "aceg"}  # between the matrices
    f, path = _folder(tmp_path, {**big, **small})
    assert [k for k, _ in sorted(f.entries.items(), key=lambda kv: kv[1].start)] == sorted(f.entries)
    _evict(path)
    _shard(path).close()  # skips where the page cache cannot be seen
    first = FirstPass(f)
    first._read_small()  # what entering the pass does before its threads start
    with ShardFile(path) as shard:
        for k in small:
            e = f.entries[k]
            assert shard.cached(e.start, e.start + e.nbytes), k
        e = f.entries["d_w"]
        assert not shard.cached(e.start, e.start + e.nbytes)  # the matrices are left to the pass


def test_masks_read_early_in_the_background_are_taken_and_not_read_again(tmp_path, monkeypatch):
    from connectome.hf import reader as reader_mod
    from connectome.hf.keys import Recipe
    from connectome.hf.reader import Reader

    ts = _tensors()
    f, path = _folder(tmp_path, ts)
    _evict(path)
    r = Reader(f, {k: Recipe((k,)) for k in ts})
    early = [k for k in ts if k.startswith("w")][:3]
    r.read_early(early)
    r.wait()
    assert sorted(r.ahead) == sorted(early)
    asked = []
    real = reader_mod.read_masks
    monkeypatch.setattr(
        reader_mod, "read_masks", lambda root, entries, n: asked.append(sorted(entries)) or real(root, entries, n)
    )
    rest = [k for k in ts if k.startswith("w")]
    r.read_ahead(rest)
    assert asked == [sorted(set(rest) - set(early))]  # only what was not read early
    for k in rest:
        assert torch.equal(r.mask(k), ts[k].float() != 0), k


def test_a_mask_the_background_read_failed_on_is_read_again_and_its_error_raised_there(tmp_path):
    from connectome.hf.keys import Recipe
    from connectome.hf.reader import Reader
    from connectome.io.errors import SpecError

    f, path = _folder(tmp_path, {"w": torch.ones(4096, 16, dtype=torch.bfloat16)})
    os.truncate(path, os.path.getsize(path) - 5000)
    r = Reader(f, {"w": Recipe(("w",))})
    r.read_early(["w"])  # fails in its thread, quietly
    r.wait()
    assert r.ahead == {}
    with pytest.raises(SpecError, match="truncated"):
        r.read_ahead(["w"])
