"""The first pass: matrices counted by compiled reads (``pread``) while the model is traced, against torch."""

from __future__ import annotations

import os

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from connectome.hf import pread
from connectome.hf.bits import stored_stats
from connectome.hf.firstpass import FirstPass, counted_early
from connectome.hf.folder import Folder
from connectome.io.errors import SpecError

from .test_words import FLOATS, _check, _tensor

pytestmark = pytest.mark.skipif(not pread.available(), reason="needs numba on Linux")


def _folder(tmp_path, tensors: dict) -> Folder:
    save_file(tensors, os.path.join(tmp_path, "model.safetensors"))
    (tmp_path / "config.json").write_text("{}")
    return Folder.open(str(tmp_path))


@pytest.mark.parametrize("kind", FLOATS)
@pytest.mark.parametrize("rows_per_read", [1, 7, 1000])
def test_a_matrix_read_and_counted_in_one_compiled_call_equals_torch(kind, rows_per_read, tmp_path):
    dtype = FLOATS[kind][0]
    t = _tensor((301, 40), dtype, seed=11)
    f = _folder(tmp_path, {"a": torch.ones(3, dtype=dtype), "w": t})
    buf = pread.buffer(rows_per_read * 40 * t.element_size())  # 301 rows: the last read is short
    _check(pread.count_stored(f.path, f.entries["w"], buf), t)


def test_a_row_longer_than_the_buffer_is_read_whole(tmp_path):
    t = _tensor((5, 1000), torch.bfloat16, seed=3)
    f = _folder(tmp_path, {"w": t})
    _check(pread.count_stored(f.path, f.entries["w"], pread.buffer(64)), t)


def test_a_truncated_shard_is_one_line(tmp_path):
    f = _folder(tmp_path, {"w": torch.ones(64, 16, dtype=torch.bfloat16)})
    path = os.path.join(tmp_path, "model.safetensors")
    os.truncate(path, os.path.getsize(path) - 100)
    with pytest.raises(SpecError, match="truncated"):
        pread.count_stored(f.path, f.entries["w"], pread.buffer(1 << 10))


def _mixed(tmp_path) -> tuple[Folder, dict]:
    ts = {
        f"m{i}": _tensor((17 + i, 8 * (i + 1)), dtype, seed=i)
        for i, dtype in enumerate([torch.bfloat16, torch.float16, torch.float32, torch.float8_e4m3fn] * 3)
    }
    ts["vector"] = torch.ones(8)
    ts["ints"] = torch.ones(4, 8, dtype=torch.int32)  # integers are not counted by words
    ts["odd"] = torch.ones(4, 12, dtype=torch.bfloat16)  # nor rows that are not whole groups of 8
    return _folder(tmp_path, ts), ts


def test_the_pass_counts_every_float_matrix_in_file_order_and_nothing_else(tmp_path):
    f, ts = _mixed(tmp_path)
    keys = counted_early(f)
    assert sorted(keys) == sorted(k for k in ts if k.startswith("m"))
    assert [f.entries[k].start for k in keys] == sorted(f.entries[k].start for k in keys)
    seen = []
    with FirstPass(f, done=seen.append) as first:
        first.hurry()
        for k in ts:
            s = first.take(k)
            if k.startswith("m"):
                _check(s, ts[k])
                ref = stored_stats(f, f.entries[k])
                assert (s.count, s.hist4, s.hist8) == (ref.count, ref.hist4, ref.hist8)
                assert np.array_equal(s.rows, ref.rows) and np.array_equal(s.cols, ref.cols)
            else:
                assert s is None
    assert sorted(seen) == sorted(keys)


def test_an_error_goes_to_the_matrix_it_was_met_on_and_the_rest_are_left_to_the_caller(tmp_path):
    f, ts = _mixed(tmp_path)
    keys = counted_early(f)
    path = os.path.join(tmp_path, "model.safetensors")
    bad = keys[5]
    e = f.entries[bad]
    os.truncate(path, e.start + 10)  # the sixth matrix is cut short; the ones after it are gone
    with FirstPass(f) as first:
        for k in keys[:5]:
            _check(first.take(k), ts[k])
        with pytest.raises(SpecError, match="truncated"):
            first.take(bad)
        assert all(first.take(k) is None for k in keys[6:])
        assert first.finished


def test_leaving_early_stops_the_threads(tmp_path):
    f, _ = _mixed(tmp_path)
    with FirstPass(f) as first:
        pass
    assert first.finished and all(not t.is_alive() for t in first._threads)


def test_watch_credits_every_matrix_once_whenever_it_starts(tmp_path):
    f, _ = _mixed(tmp_path)
    keys = counted_early(f)
    for wait_for in (None, keys[0], keys[len(keys) // 2], keys[-1]):  # before, during, after the counting
        seen: list[str] = []
        with FirstPass(f) as first:
            if wait_for is not None:
                first.take(wait_for)
            first.watch(seen.append)
            first.hurry()
            for k in keys:
                first.take(k)
        assert sorted(seen) == sorted(keys), wait_for


def test_the_first_pass_and_the_early_script_import_neither_torch_nor_transformers():
    import subprocess
    import sys

    code = (
        "import sys; import connectome.hf.firstpass, connectome_cli.early, connectome_cli.entry; "
        "print(sorted(m for m in ('torch', 'transformers') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"


@pytest.fixture(scope="module")
def llamas(tmp_path_factory):
    pytest.importorskip("transformers")
    from .families import build, save

    out = []
    for i in range(2):
        model, _ = build("llama")
        path = str(tmp_path_factory.mktemp(f"llama{i}"))
        save(model, path)
        out.append(path)
    return out


def _summaries(loaded) -> dict:
    return {
        k: (s.shape, s.count, s.rows.tolist(), s.cols.tolist(), loaded.nm[k].hist) for k, s in loaded.summaries.items()
    }


def test_a_pass_started_before_the_audit_is_the_one_it_reads_with(llamas, monkeypatch):
    from connectome.hf import firstpass, folder, stream

    monkeypatch.setattr(folder, "LAZY_LIMIT", 0)  # every folder is big: audited without its masks
    want = _summaries(stream.load_folder(llamas[0], progress=False, keep_masks=False))
    first = firstpass.start_early(llamas[0])
    assert first is not None and firstpass._early is first

    def no_second_pass(*a, **k):
        raise AssertionError("the audit started a pass of its own")

    monkeypatch.setattr(stream, "FirstPass", no_second_pass)
    got = stream.load_folder(llamas[0], progress=False, keep_masks=False)
    assert firstpass._early is None and first.finished
    assert sorted(first.results) == sorted(first.keys) and first.keys
    assert _summaries(got) == want


def test_a_pass_on_another_folder_is_stopped_and_the_audit_reads_its_own(llamas, monkeypatch):
    from connectome.hf import firstpass, folder, stream

    monkeypatch.setattr(folder, "LAZY_LIMIT", 0)
    want = _summaries(stream.load_folder(llamas[1], progress=False, keep_masks=False))
    first = firstpass.start_early(llamas[0])
    got = stream.load_folder(llamas[1], progress=False, keep_masks=False)
    assert firstpass._early is None and first.finished and all(not t.is_alive() for t in first._threads)
    assert _summaries(got) == want


def test_a_folder_read_with_its_masks_stops_the_pass(llamas, monkeypatch):
    from connectome.hf import firstpass, folder, stream

    monkeypatch.setattr(folder, "LAZY_LIMIT", 0)
    first = firstpass.start_early(llamas[0])
    loaded = stream.load_folder(llamas[0], progress=False, keep_masks=True)
    assert firstpass._early is None and first.finished and loaded.masks


def test_a_small_folder_or_a_broken_one_is_not_counted_early(llamas, tmp_path):
    from connectome.hf import firstpass

    assert firstpass.start_early(llamas[0]) is None  # below LAZY_LIMIT: its audit keeps the masks
    (tmp_path / "config.json").write_text("{}")
    (tmp_path / "model.safetensors").write_bytes(b"\x10")  # not a shard: the audit names it
    assert firstpass.start_early(str(tmp_path)) is None and firstpass._early is None
