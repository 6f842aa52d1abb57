"""Running a sweep: each point of the grid is one training run, as a Ray task (or in-process).

A run's folder holds the training run (``connectome.train``'s checkpoint, log and state) and
``result.json``, written last: a folder with it is finished and is skipped next time. A run that
raises is recorded with its error (``status: failed``) and the sweep goes on. A worker process that
dies (killed, out of memory) is Ray's business: the task is retried on another worker, and the run
resumes from its last finished epoch. ``results.jsonl`` and ``results.csv`` hold one row per run.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import os
import time
import traceback
from collections.abc import Callable
from typing import Any

from ..io.files import write_atomic
from .spec import Spec, SpecProblem

__all__ = ["run_point", "run_sweep", "folder_of", "rows", "RESULT"]

RESULT = "result.json"
_METRICS = ("test_acc", "val_acc", "direct_sparsity", "effective_sparsity", "dead_units", "collapsed")


def run_point(spec_runs: dict[str, Any], point: dict[str, Any], folder: str) -> dict[str, Any]:
    """Train one point into ``folder`` and return its row; never raises (a failure is a row)."""
    import torch

    from ..io.spec import load_model
    from ..train import train

    started = time.perf_counter()
    row: dict[str, Any] = dict(point, folder=os.path.basename(folder))
    try:
        model_spec, cfg = Spec("", spec_runs).config(point)
        torch.manual_seed(cfg.seed)  # the model's own initial weights
        kwargs = point.get("model_kwargs") or {}
        if cfg.method == "east":  # DyReLU and weight sharing are built into the model
            from ..train.east.run import east_kwargs

            kwargs = east_kwargs(model_spec, kwargs, cfg.dyrelu, cfg.sharing)
        model, _ = load_model(model_spec, kwargs=kwargs or None)
        run = train(model, cfg, out=folder)
        start = next(r for r in run.history if r["event"] == "start")
        last = [r for r in run.history if r["event"] == "epoch"][-1]
        row.update({"status": "ok", **{k: last[k] for k in _METRICS}})
        row.update(
            {
                "start_direct_sparsity": start["direct_sparsity"],
                "start_effective_sparsity": start["effective_sparsity"],
                "start_collapsed": start["collapsed"],
            }
        )
    except Exception as e:  # recorded, so that one bad point does not stop the sweep
        row.update(
            {
                "status": "failed",
                "error": f"{type(e).__name__}: {str(e).strip().splitlines()[0][:300]}"
                if str(e).strip()
                else type(e).__name__,
                "traceback": traceback.format_exc()[-2000:],
            }
        )
    row["seconds"] = round(time.perf_counter() - started, 2)
    os.makedirs(folder, exist_ok=True)
    write_atomic(os.path.join(folder, RESULT), json.dumps(row, indent=1))
    return row


def folder_of(point: dict[str, Any]) -> str:
    """A run's folder name: its id, and a hash of every value (a changed fixed value is another run)."""
    digest = hashlib.sha256(json.dumps(point, sort_keys=True, default=str).encode()).hexdigest()[:8]
    return f"{point['id']}.{digest}"


def _finished(folder: str) -> dict[str, Any] | None:
    try:
        with open(os.path.join(folder, RESULT)) as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


def _write_results(out: str, rows: list[dict[str, Any]]) -> None:
    rows = sorted(rows, key=lambda r: r["id"])
    write_atomic(os.path.join(out, "results.jsonl"), "".join(json.dumps(_plain(r)) + "\n" for r in rows))
    keys: list[str] = []
    for r in rows:
        keys += [k for k in _plain(r) if k not in keys]
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=keys)
    w.writeheader()
    w.writerows(_plain(r) for r in rows)
    write_atomic(os.path.join(out, "results.csv"), buf.getvalue())


def _plain(row: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in row.items() if k != "traceback"}


def run_sweep(
    spec: Spec,
    out: str,
    address: str | None = None,
    num_cpus: int | None = None,
    local: bool = False,
    retry_failed: bool = False,
    progress: Callable[[int, int, int], None] | None = None,
    on_row: Callable[[dict[str, Any]], None] | None = None,
) -> list[dict[str, Any]]:
    """Run every unfinished point of ``spec`` into ``out/<run id>``; the rows of all points.

    ``local`` runs in this process, one after another (for debugging); otherwise each run is a Ray
    task, on the cluster at ``address`` or on a local Ray with ``num_cpus`` workers. ``progress`` gets
    (done, failed, total) at the start and after each run; ``on_row`` gets each new row.

    Example: ``run_sweep(Spec.load("examples/connectivity/dst.toml"), "runs/dst", num_cpus=2)``.
    """
    points = spec.points()
    for p in points:  # a typo in the spec fails now, not once per run after Ray has started
        spec.config(p)[1].check()
    os.makedirs(out, exist_ok=True)
    rows: dict[str, dict[str, Any]] = {}
    todo = []
    for p in points:
        done = _finished(os.path.join(out, folder_of(p)))
        if done is None:  # a folder named by the id alone (earlier versions): its row must hold the same values
            old = _finished(os.path.join(out, p["id"]))
            done = old if old is not None and all(old.get(k) == v for k, v in p.items()) else None
        if done is not None and (done.get("status") == "ok" or not retry_failed):
            rows[p["id"]] = done
        else:
            todo.append(p)
    show = progress or (lambda done, failed, total: None)

    def record(row: dict[str, Any]) -> None:
        rows[row["id"]] = row
        _write_results(out, list(rows.values()))
        show(len(rows), sum(r.get("status") != "ok" for r in rows.values()), len(points))
        if on_row is not None:
            on_row(row)

    show(len(rows), sum(r.get("status") != "ok" for r in rows.values()), len(points))
    if todo and local:
        for p in todo:
            record(run_point(spec.runs, p, os.path.join(out, folder_of(p))))
    elif todo:
        _on_ray(spec, out, todo, address, num_cpus, record)
    _write_results(out, list(rows.values()))
    return sorted(rows.values(), key=lambda r: r["id"])


def _on_ray(spec: Spec, out: str, todo: list, address: str | None, num_cpus: int | None, record) -> None:
    try:
        import ray
    except ImportError:
        raise SpecProblem("sweeps run on Ray: pip install 'connectome[sweep]', or pass --local") from None
    started_here = not ray.is_initialized()
    if started_here:
        ray.init(
            address=address,
            num_cpus=None if address else num_cpus,
            include_dashboard=False,
            log_to_driver=False,
            configure_logging=False,
        )
    try:
        # a dead worker is retried elsewhere (the run resumes from its last epoch); an exception inside
        # a run is not an error of Ray's: run_point returns it as a row
        task = ray.remote(num_cpus=1, max_retries=3)(run_point)
        pending = {
            task.options(num_gpus=1 if str(p.get("device", "cpu")).startswith("cuda") else 0).remote(
                spec.runs, p, os.path.abspath(os.path.join(out, folder_of(p)))
            ): p
            for p in todo
        }
        while pending:
            ready, _ = ray.wait(list(pending), num_returns=1)
            p = pending.pop(ready[0])
            try:
                record(ray.get(ready[0]))
            except Exception as e:  # retries exhausted: the worker kept dying
                first = (str(e).strip().splitlines() or [""])[0][:300]
                record({**p, "status": "failed", "error": f"{type(e).__name__}: {first}"})
    finally:
        if started_here:
            ray.shutdown()


def rows(folder: str, logs: bool = False) -> list[dict[str, Any]]:
    """A finished sweep's rows (its ``results.jsonl``), one per run; with ``logs``, each run that finished
    also carries its ``log.jsonl`` records under ``"log"``.

    Example: ``rows("runs/dst", logs=True)[0]["log"][-1]["effective_sparsity"]``.
    """
    with open(os.path.join(folder, "results.jsonl")) as f:
        out = [json.loads(line) for line in f if line.strip()]
    for r in out if logs else []:
        path = os.path.join(folder, r["folder"], "log.jsonl")
        if r.get("status") == "ok" and os.path.isfile(path):
            with open(path) as f:
                r["log"] = [json.loads(line) for line in f if line.strip()]
    return out
