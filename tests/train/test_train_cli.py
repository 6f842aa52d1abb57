"""`connectome train`: a short run writes its checkpoint (prune form), log and plot, and resumes; bad
requests are one line with exit code 2 and write nothing over."""
import json
import os

import pytest
import torch
from click.testing import CliRunner

from connectome.io.checkpoint import load
from connectome_cli.main import main

QUICK = ["--data", "mnist", "--epochs", "1", "--limit", "1200", "--val-size", "200", "--update-every", "5"]


def run(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


def test_a_short_run_writes_checkpoint_log_and_plot_and_resumes(tmp_path):
    out = tmp_path / "run"
    r = run("train", "connectome:lenet_300_100", *QUICK, "--method", "rigl", "--sparsity", "0.95", "-o", out)
    assert r.exit_code == 0, r.output
    assert sorted(os.listdir(out)) == ["checkpoint.pt", "log.jsonl", "plot.png", "state.pt"]
    records = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    epochs = [rec for rec in records if rec["event"] == "epoch"]
    assert len(epochs) == 1 and epochs[0]["direct_sparsity"] == pytest.approx(0.95, abs=1e-4)
    assert any(rec["event"] == "update" for rec in records)
    assert f"direct sparsity {100 * epochs[0]['direct_sparsity']:.2f}%" in r.stdout
    ck = load(str(out / "checkpoint.pt"), arch="connectome:lenet_300_100")
    kept = sum(int(m.sum()) for m in ck.masks.values())
    assert kept == epochs[0]["kept"]                     # the checkpoint holds the run's masks
    before = (out / "state.pt").read_bytes()
    again = run("train", "connectome:lenet_300_100", *QUICK, "--method", "rigl", "--sparsity", "0.95", "-o", out)
    assert again.exit_code == 0 and (out / "state.pt").read_bytes() == before    # nothing left to do
    # a pruned checkpoint trains with its own masks
    ft = run("train", "connectome:lenet_300_100", "--weights", out / "checkpoint.pt", *QUICK, "-o", tmp_path / "ft")
    assert ft.exit_code == 0, ft.output
    ft_ck = load(str(tmp_path / "ft" / "checkpoint.pt"), arch="connectome:lenet_300_100")
    assert all(torch.equal(ft_ck.masks[k], ck.masks[k]) for k in ck.masks)


@pytest.mark.parametrize("args, says", [
    (["--method", "nosuch"], "Invalid value for '--method'"),
    (["--sparsity", "1.5"], "Invalid value for '--sparsity'"),
    (["--data", "fashion-mnist", "--cifar-form"], "the model does not take fashion-mnist's examples (3x32x32)"),
    (["--lr", "1e30"], "the loss became nan at epoch 1"),
    (["--device", "cuda:7"], "no CUDA device here"),
])
def test_bad_requests_are_one_line(tmp_path, args, says):
    if "cuda" in " ".join(args) and torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    r = run("train", "connectome:lenet_300_100", *QUICK, *args, "-o", tmp_path / "r")
    assert r.exit_code == 2, r.output
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and says in lines[0], r.stderr
    assert not (tmp_path / "r" / "checkpoint.pt").exists()


def test_a_run_resumed_with_other_options_is_refused(tmp_path):
    out = tmp_path / "run"
    assert run("train", "connectome:lenet_300_100", *QUICK, "-o", out).exit_code == 0
    before = (out / "checkpoint.pt").read_bytes()
    r = run("train", "connectome:lenet_300_100", *QUICK, "--sparsity", "0.8", "-o", out)
    assert r.exit_code == 2 and "holds a run with other options (sparsity: 0.9 then, 0.8 now)" in r.stderr
    assert (out / "checkpoint.pt").read_bytes() == before
