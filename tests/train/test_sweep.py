"""Sweeps: the grid from a TOML spec, in-process and on a local Ray with 2 CPUs. A sweep resumes with
nothing to do, records a run that raises, and completes when a Ray worker is killed mid-run."""
import csv
import json
import os
import re
import signal
import subprocess
import sys
import time

import pytest

from connectome.sweep import Spec, SpecProblem, run_sweep

TINY = """name = "tiny"
[runs]
model = "connectome:lenet_300_100"
data = "mnist"
method = ["static", "rigl"]
sparsity = 0.9
lr = [0.1, 1e30]
epochs = 1
limit = 1500
val_size = 100
batch_size = 50
update_every = 5
"""


def test_the_grid_and_its_bad_forms():
    pts = Spec.parse(TINY).points()
    assert [p["id"] for p in pts] == [
        "model=connectome-lenet_300_100,method=static,lr=0.1", "model=connectome-lenet_300_100,method=static,lr=1e+30",
        "model=connectome-lenet_300_100,method=rigl,lr=0.1", "model=connectome-lenet_300_100,method=rigl,lr=1e+30"]
    for text, says in [("[runs]\nmodel='m'\nwidth=[1]\n", "unknown keys width"),
                       ("[runs]\nmodel='m'\ncompression=[10]\nsparsity=0.9\n", "not both"),
                       ("[runs]\nmodel='m'\nseed=[]\n", "the axis seed is empty"),
                       ("[runs\n", "not valid TOML"), ("name='x'\n", "needs a [runs] table"),
                       ("[runs]\nmodel='m'\nmethod=['rigl2']\n", "unknown training method 'rigl2'")]:
        with pytest.raises(SpecProblem, match=re.escape(says)):
            spec = Spec.parse(text)
            [spec.config(p) for p in spec.points()]


def test_a_local_sweep_records_failures_and_resumes_with_nothing_to_do(tmp_path):
    rows = run_sweep(Spec.parse(TINY), str(tmp_path), local=True)
    status = {r["id"].split(",", 1)[1]: r["status"] for r in rows}
    assert status == {"method=static,lr=0.1": "ok", "method=static,lr=1e+30": "failed",
                      "method=rigl,lr=0.1": "ok", "method=rigl,lr=1e+30": "failed"}
    failed = [r for r in rows if r["status"] == "failed"]
    assert all("the loss became nan" in r["error"] for r in failed)
    ok = [r for r in rows if r["status"] == "ok"]
    assert all(r["direct_sparsity"] == pytest.approx(0.9, abs=1e-4) and r["test_acc"] > 0.1 for r in ok)  # above chance after 28 steps
    with open(tmp_path / "results.csv") as f:
        assert len(list(csv.DictReader(f))) == 4
    stamps = {p: os.path.getmtime(tmp_path / p / "result.json") for p in os.listdir(tmp_path) if "=" in p}
    assert len(stamps) == 4
    again = run_sweep(Spec.parse(TINY), str(tmp_path), local=True)
    assert again == rows
    assert stamps == {p: os.path.getmtime(tmp_path / p / "result.json") for p in stamps}   # nothing ran


def test_model_kwargs_build_each_run_s_model(tmp_path):
    text = """[runs]
model = "connectome:vgg19"
model_kwargs = [{width = 4}, {width = 8}]
data = "fashion-mnist"
cifar_form = true
sparsity = 0.9
epochs = 1
limit = 300
val_size = 100
"""
    pts = Spec.parse(text).points()
    assert [p["id"] for p in pts] == ["model=connectome-vgg19,model_kwargs=width-4",
                                      "model=connectome-vgg19,model_kwargs=width-8"]
    rows = run_sweep(Spec.parse(text), str(tmp_path), local=True)
    assert [r["status"] for r in rows] == ["ok", "ok"], rows
    import torch
    firsts = [torch.load(tmp_path / r["folder"] / "checkpoint.pt")["0.weight_orig"].shape[0] for r in rows]
    assert firsts == [4, 8]
    for bad in ("model_kwargs = 16", "model_kwargs = [16]"):
        with pytest.raises(SpecProblem, match="model_kwargs is a table"):
            Spec.parse(text.replace("model_kwargs = [{width = 4}, {width = 8}]", bad))


RAY = """name = "ray"
[runs]
model = "connectome:lenet_300_100"
data = "mnist"
seed = [0, 1]
lr = [0.1, 1e30]
sparsity = 0.9
epochs = 3
limit = 3000
val_size = 200
"""


def _parent(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return int(f.read().rsplit(")", 1)[1].split()[1])
    except (OSError, ValueError, IndexError):
        return 0


def _workers(root: int) -> list[int]:
    """Ray workers running a run of the sweep started as process ``root`` (not of any other sweep)."""
    out = subprocess.run(["pgrep", "-f", "ray::run_point"], capture_output=True, text=True).stdout
    mine = []
    for pid in map(int, out.split()):
        p = pid
        while p > 1 and p != root:
            p = _parent(p)
        if p == root:
            mine.append(pid)
    return mine


def test_a_sweep_on_ray_survives_a_killed_worker_and_resumes(tmp_path):
    pytest.importorskip("ray")
    spec = tmp_path / "ray.toml"
    spec.write_text(RAY)
    cli = [os.path.join(os.path.dirname(sys.executable), "connectome")]
    args = [*cli, "sweep", str(spec), "-o", str(tmp_path / "out"), "--num-cpus", "2"]
    p = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    killed, deadline = None, time.monotonic() + 240
    while killed is None and p.poll() is None and time.monotonic() < deadline:
        workers = _workers(p.pid)
        started = [d for d in os.listdir(tmp_path / "out")] if (tmp_path / "out").exists() else []
        if workers and any(os.path.exists(tmp_path / "out" / d / "log.jsonl") for d in started):
            killed = workers[0]                       # a worker that has finished an epoch of its run
            os.kill(killed, signal.SIGKILL)
        time.sleep(0.2)
    stdout, stderr = p.communicate(timeout=600)
    assert killed is not None, "no Ray worker was seen running"
    assert p.returncode == 1, stderr[-3000:]                # exit 1: some runs failed, as they should
    assert "2 of 4 runs finished, 2 failed" in stdout
    lines = [line for line in stderr.splitlines() if line.startswith("[")]   # off a terminal: a line per run
    assert sorted(line.split("] ")[1].split()[0] for line in lines) == ["failed", "failed", "ok", "ok"], stderr
    assert all("the loss became nan" in line for line in lines if "] failed " in line)
    assert all(re.search(r"test accuracy \d+\.\d\d%", line) for line in lines if "] ok " in line)
    rows = [json.loads(line) for line in (tmp_path / "out" / "results.jsonl").read_text().splitlines()]
    assert {r["id"].split(",")[1:][0] + "," + r["id"].split(",")[2]: r["status"] for r in rows} == {
        "seed=0,lr=0.1": "ok", "seed=0,lr=1e+30": "failed", "seed=1,lr=0.1": "ok", "seed=1,lr=1e+30": "failed"}
    assert all("the loss became nan" in r["error"] for r in rows if r["status"] == "failed")
    stamps = {r["folder"]: os.path.getmtime(tmp_path / "out" / r["folder"] / "result.json") for r in rows}
    again = subprocess.run(args, capture_output=True, text=True, timeout=300)
    assert again.returncode == 1 and "2 of 4 runs finished, 2 failed" in again.stdout
    assert not [line for line in again.stderr.splitlines() if line.startswith("[")]
    assert stamps == {i: os.path.getmtime(tmp_path / "out" / i / "result.json") for i in stamps}  # nothing ran


def test_the_connectivity_reproduction_in_small(tmp_path):
    """examples/connectivity: the LeNet-300-100 grid, cut to two methods, one compression, one seed and a
    short run, goes through the sweep and the report (table and side-by-side plot)."""
    import importlib.util

    root = os.path.join(os.path.dirname(__file__), "..", "..", "examples", "connectivity")
    spec = Spec.load(os.path.join(root, "lenet300.toml"))
    assert len(spec.points()) == 180
    spec.runs.update(prune=spec.runs["prune"][2:4], compression=[100], seed=[0], epochs=1, limit=1500,
                     val_size=100, batch_size=50)
    rows = run_sweep(spec, str(tmp_path / "runs"), local=True)
    assert [r["status"] for r in rows] == ["ok"] * 4
    effective = [r for r in rows if r["target"] == "effective"]
    assert all(r["start_effective_sparsity"] <= 0.99 + 1e-3 for r in effective)   # aimed at effective 100x
    found = importlib.util.spec_from_file_location("report", os.path.join(root, "report.py"))
    report = importlib.util.module_from_spec(found)
    found.loader.exec_module(report)
    text = report.table(report.load(str(tmp_path / "runs")))
    assert text.count("| random (igq)") == 2 and text.count("| magnitude (global)") == 2
    report.plot(rows, str(tmp_path / "accuracy.png"))
    assert os.path.getsize(tmp_path / "accuracy.png") > 10_000


def _example(name):
    import importlib.util

    path = os.path.join(os.path.dirname(__file__), "..", "..", "examples", "connectivity", name)
    found = importlib.util.spec_from_file_location(name[:-3], path)
    module = importlib.util.module_from_spec(found)
    found.loader.exec_module(module)
    return module


def test_the_dynamic_sparse_training_comparison_in_small(tmp_path):
    """examples/connectivity/dst.toml cut to RigL with and without --reclaim at 99.5%, one seed, a short run:
    the sweep, then the report's table and its plot of effective sparsity over training."""
    root = os.path.join(os.path.dirname(__file__), "..", "..", "examples", "connectivity")
    spec = Spec.load(os.path.join(root, "dst.toml"))
    assert len(spec.points()) == 36
    spec.runs.update(policy=spec.runs["policy"][4:6], sparsity=[0.995], seed=[0], epochs=1, limit=1500,
                     val_size=100, batch_size=50, update_every=5)
    rows = run_sweep(spec, str(tmp_path / "runs"), local=True)
    assert [(r["method"], r["reclaim"], r["status"]) for r in rows] == [("rigl", False, "ok"), ("rigl", True, "ok")]
    report = _example("dst_report.py")
    loaded = report.load(str(tmp_path / "runs"))
    updates = [x for x in loaded[1]["log"] if x["event"] == "update"]
    assert updates and all(report.ineffective_share(x) == 0 for x in updates)   # reclaim leaves none
    start = next(x for x in loaded[1]["log"] if x["event"] == "start")
    assert report.ineffective_share(start) > 0.1   # a random ERK start at 99.5% strands many weights
    text = report.table(loaded)
    assert text.count("| 99.5% | rigl") == 2 and "/ 0.0% / 0.0% |" in text
    report.plot(loaded, str(tmp_path / "effective.png"))
    assert os.path.getsize(tmp_path / "effective.png") > 10_000
