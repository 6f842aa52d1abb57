"""The ``connectome`` script's early read of a model folder's shards, before the imports."""

from __future__ import annotations

import pytest

from connectome_cli import early


@pytest.fixture
def folder(tmp_path):
    (tmp_path / "config.json").write_text("{}")
    for i, size in enumerate((3000, 5000)):
        (tmp_path / f"model-{i}.safetensors").write_bytes(bytes(size))
    (tmp_path / "notes.txt").write_bytes(bytes(7000))  # not a shard: not read
    return tmp_path


def test_the_audit_of_a_folder_reads_every_shard_once(folder, monkeypatch):
    monkeypatch.setattr(early, "STEP", 1024)
    monkeypatch.setattr(early, "CACHED", float("inf"))  # no read counts as coming from the page cache
    t = early.start(["audit", "--format", "json", str(folder)])
    assert t is not None
    t.join()
    assert early.done == 8000


def test_a_shard_already_in_the_page_cache_is_skipped(folder, monkeypatch):
    monkeypatch.setattr(early, "STEP", 1024)
    monkeypatch.setattr(early, "CACHED", 0.0)  # every first read is fast: each shard is taken as cached
    early.start(["audit", str(folder)]).join()
    assert early.done == 2048


def test_it_stops_at_its_limit_and_when_told(folder, monkeypatch):
    monkeypatch.setattr(early, "STEP", 1024)
    monkeypatch.setattr(early, "CACHED", float("inf"))
    monkeypatch.setattr(early, "LIMIT", 2048)
    early.start(["audit", str(folder)]).join()
    assert early.done == 2048
    monkeypatch.setattr(early, "LIMIT", 1 << 30)
    early.start(["audit", str(folder)])
    early.stop()  # joins: the thread is gone, having read at most what it had begun
    assert early._thread is not None and not early._thread.is_alive()


@pytest.mark.parametrize("argv", [["analyze", "FOLDER"], ["audit", "model.pt"], ["audit"], []])
def test_only_the_audit_of_a_model_folder_reads_early(argv, folder, tmp_path):
    argv = [str(folder) if a == "FOLDER" else str(tmp_path / a) if a.endswith(".pt") else a for a in argv]
    assert early.start(argv) is None


def test_the_script_exits_with_the_audits_code_after_writing_everything(tmp_path):
    """The audit of a folder leaves without the interpreter's teardown: its exit code and its report
    on standard output must come through whole."""
    import json
    import subprocess
    import sys

    transformers = pytest.importorskip("transformers")
    cfg = transformers.LlamaConfig(
        vocab_size=32,
        hidden_size=16,
        intermediate_size=32,
        num_hidden_layers=1,
        num_attention_heads=2,
        num_key_value_heads=1,
        max_position_embeddings=16,
    )
    transformers.LlamaForCausalLM(cfg).save_pretrained(tmp_path)  # dense: not 2:4
    run = "import sys; from connectome_cli.entry import run; run()"
    out = subprocess.run(
        [sys.executable, "-c", run, "audit", str(tmp_path), "--claim-structure", "2:4", "--format", "json"],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert out.returncode == 1, out.stderr
    report = json.loads(out.stdout)
    assert report["passed"] is False and report["failed"] == ["claim"]


def test_the_script_counts_a_big_folder_before_torch_is_imported_and_the_audit_takes_the_pass_over(
    tmp_path, monkeypatch
):
    """The script starts the audit's counting pass itself (connectome.hf.firstpass.start_early); the audit
    adopts it, and reports what an audit in this process reports."""
    import json
    import subprocess
    import sys

    pytest.importorskip("transformers")
    from click.testing import CliRunner

    from connectome.hf import folder
    from connectome_cli.main import main
    from tests.hf.families import build, save

    model, _ = build("llama")
    save(model, str(tmp_path))
    code = (
        "import sys; import connectome.hf.folder as f; f.LAZY_LIMIT = 0\n"  # every folder is big
        "import connectome.hf.firstpass as fp\n"
        "adopt, start = fp.adopt, fp.start_early\n"
        "def adopted(folder):\n"
        "    p = adopt(folder); print('adopted', p is not None, file=sys.stderr); return p\n"
        "def started(*a, **k):\n"
        "    p = start(*a, **k); print('started', p is not None, 'torch' in sys.modules, file=sys.stderr); return p\n"
        "fp.adopt, fp.start_early = adopted, started\n"
        "from connectome_cli.entry import run; run()"
    )
    out = subprocess.run(
        [sys.executable, "-c", code, "audit", str(tmp_path), "--no-margin", "--format", "json"],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert out.returncode == 0, out.stderr
    assert "started True False" in out.stderr and "adopted True" in out.stderr  # started before torch
    monkeypatch.setattr(folder, "LAZY_LIMIT", 0)
    here = CliRunner().invoke(main, ["audit", str(tmp_path), "--no-margin", "--format", "json"])
    assert here.exit_code == 0, here.output
    assert json.loads(out.stdout) == json.loads(here.output)
