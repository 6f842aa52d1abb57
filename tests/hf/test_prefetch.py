"""The read-ahead thread stays within its budget ahead of the pass, and goes to the end as the pass does."""

import time

from connectome.hf import prefetch
from connectome.hf.prefetch import Prefetch


def _until(cond, seconds=10.0):
    end = time.monotonic() + seconds
    while not cond() and time.monotonic() < end:
        time.sleep(0.01)
    return cond()


def test_prefetch_waits_for_the_pass(tmp_path, monkeypatch):
    monkeypatch.setattr(prefetch, "STEP", 1024)
    paths = []
    for i, size in enumerate((6000, 4240)):  # 10 KiB over two shards; the last step of each is short
        p = tmp_path / f"s{i}.safetensors"
        p.write_bytes(b"\0" * size)
        paths.append(str(p))
    with Prefetch(paths, ahead=2048) as pf:
        assert _until(lambda: pf.issued == 3072)  # one step past the budget, then it waits
        time.sleep(0.2)
        assert pf.issued == 3072
        pf.consumed(4000)
        assert _until(lambda: pf.issued == 7024)  # the first shard's 6000, then 1024 of the second
        pf.consumed(6240)
        assert _until(lambda: pf.issued == 10240)


def test_prefetch_stops_with_the_pass(tmp_path, monkeypatch):
    monkeypatch.setattr(prefetch, "STEP", 1024)
    p = tmp_path / "s.safetensors"
    p.write_bytes(b"\0" * 100_000)
    with Prefetch([str(p), str(tmp_path / "missing.safetensors")], ahead=0) as pf:
        assert _until(lambda: pf.issued == 1024)
    assert not pf._thread.is_alive() and pf.issued == 1024


def test_a_shard_in_the_page_cache_is_skipped(tmp_path, monkeypatch):
    monkeypatch.setattr(prefetch, "STEP", 1024)
    monkeypatch.setattr(prefetch, "PROBE", 2048)
    monkeypatch.setattr(prefetch, "CACHED", 0.0)  # every read counts as fast: the shard is taken as cached
    p = tmp_path / "s.safetensors"
    p.write_bytes(b"\0" * 100_000)
    with Prefetch([str(p)], ahead=1 << 20) as pf:
        assert _until(lambda: pf.issued == 100_000)
        assert _until(lambda: not pf._thread.is_alive())
    monkeypatch.setattr(prefetch, "CACHED", float("inf"))  # none is: it is read to the end
    with Prefetch([str(p)], ahead=1 << 20) as pf:
        assert _until(lambda: not pf._thread.is_alive()) and pf.issued == 100_000
