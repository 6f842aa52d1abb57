"""``connectome sweep``: a grid of training runs from a TOML spec, on Ray."""

from __future__ import annotations

import sys

import click

from connectome.io.spec import SpecError
from connectome.sweep import Spec, SpecProblem, run_sweep

from .main import main


@main.command()
@click.argument("spec_file", metavar="SPEC.toml")
@click.option("-o", "--output", default=None, metavar="DIR", help="Where the runs go (default: runs/<name>).")
@click.option("--address", default=None, metavar="HOST:PORT", help="Join this Ray cluster ('auto': the local one).")
@click.option(
    "--num-cpus", type=click.IntRange(min=1), default=None, help="Workers of a local Ray (default: all cores)."
)
@click.option("--local", is_flag=True, help="Run in this process, one run after another, without Ray (debugging).")
@click.option("--retry-failed", is_flag=True, help="Run again the runs that failed last time.")
def sweep(spec_file, output, address, num_cpus, local, retry_failed):
    """Run every point of the grid in SPEC.toml as a training run; skip the finished ones.

    List values in the spec's [runs] table are the grid's axes; other values are fixed. Each run
    gets a folder (checkpoint, log, result.json); results.jsonl and results.csv hold a row per run,
    failed runs included, with their error.

    \b
    Example spec:
      name = "lenet"
      [runs]
      model = "connectome:lenet_300_100"
      data = "mnist"
      init = ["random", "snip"]
      quota = ["erk", "igq"]
      compression = [10, 100, 1000]
      seed = [0, 1, 2]
      epochs = 10
    """
    try:
        spec = Spec.load(spec_file)
        spec.points()  # a bad grid fails now
    except SpecProblem as e:
        raise SpecError(str(e)) from None
    out = output or f"runs/{spec.name}"
    shown = sys.stderr.isatty()

    counts = [0, 0]

    def progress(done: int, failed: int, total: int) -> None:
        counts[:] = [done, total]
        if shown:
            click.echo(f"\r{done}/{total} done, {failed} failed", err=True, nl=False)

    def finished(row: dict) -> None:  # off a terminal (a log file, CI), one line per run instead
        if not shown:
            what = f"test accuracy {100 * row['test_acc']:.2f}%" if row.get("status") == "ok" else row.get("error")
            click.echo(
                f"[{counts[0]}/{counts[1]}] {row.get('status')} {row['id']}: {what} ({row.get('seconds')} s)", err=True
            )

    try:
        rows = run_sweep(spec, out, address, num_cpus, local, retry_failed, progress, finished)
    except SpecProblem as e:
        raise SpecError(str(e)) from None
    if shown:
        click.echo("", err=True)
    failed = [r for r in rows if r.get("status") != "ok"]
    click.echo(f"{len(rows) - len(failed)} of {len(rows)} runs finished, {len(failed)} failed: see {out}/results.csv")
    for r in failed[:5]:
        click.echo(f"  failed {r['id']}: {r.get('error', '?')}", err=True)
    sys.exit(1 if failed else 0)
