"""Entry point: the command group, shared options, and one place that turns errors into exit code 2."""

from __future__ import annotations

import errno
import os
import signal
import sys
import traceback
import warnings

import click

from connectome import memory
from connectome.data import DataError
from connectome.graph.lower.base import LowerError
from connectome.graph.trace import TraceError
from connectome.io.spec import SpecError
from connectome.memory import MemoryBudgetError
from connectome.prune import PruneError
from connectome.resnet import ShareError

USER_ERRORS = (
    SpecError,
    TraceError,
    LowerError,
    PruneError,
    ShareError,
    DataError,
    MemoryBudgetError,
    FileNotFoundError,
    IsADirectoryError,
    PermissionError,
)


_FULL = {errno.ENOSPC, errno.EFBIG, errno.EIO, errno.EDQUOT}


class Group(click.Group):
    """Runs a command; bad input becomes one line on stderr and exit code 2 (``--debug`` adds the traceback)."""

    def invoke(self, ctx: click.Context):
        if hasattr(signal, "SIGXFSZ"):  # past a file-size limit, a write fails (EFBIG) instead of killing us
            signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        memory.set_default(None)  # --max-memory, parsed with the command's options, sets it again
        try:
            with warnings.catch_warnings():  # `main` silences them without --debug; restored after the command
                return super().invoke(ctx)
        except KeyboardInterrupt:  # Ctrl-C: 130 as shells expect (1 means a policy failed); outputs are atomic
            click.echo("interrupted", err=True)
            sys.exit(130)
        except BrokenPipeError:  # `connectome rules | head -1`: the reader has what it wanted
            _quiet_stdout()
            sys.exit(0)
        except USER_ERRORS as e:
            self._fail(ctx, e)
        except click.UsageError as e:  # one line, like every other refusal; --help has the rest
            where = (
                f"connectome {e.ctx.command_path.partition(' ')[2]} --help".replace("  ", " ") if e.ctx else "--help"
            )
            self._fail(ctx, click.UsageError(f"{e.format_message()} (see {where})"))
        except OSError as e:
            if e.filename is None and e.errno in _FULL:  # stdout into a full disk or a dead terminal
                _quiet_stdout()
                self._fail(ctx, OSError(f"cannot write to standard output: {e.strerror}"))
            if e.filename is not None:
                self._fail(ctx, OSError(f"{e.strerror or e}: {e.filename}"))
            self._fail(ctx, e, internal=True)
        except MemoryError as e:  # an allocation the budget did not foresee failed
            self._fail(
                ctx,
                MemoryError(
                    f"out of memory ({e or 'an allocation failed'}): use a smaller --input-shape "
                    "or a lower --max-memory, or free memory"
                ),
            )
        except RecursionError:
            self._fail(
                ctx,
                RecursionError(
                    "the model is nested too deeply for Python's recursion limit: analyse a part of it with --submodule"
                ),
            )
        except (click.ClickException, click.exceptions.Exit, click.exceptions.Abort, SystemExit):
            raise
        except Exception as e:  # an unexpected failure is still one line unless --debug
            self._fail(ctx, e, internal=True)

    @staticmethod
    def _fail(ctx: click.Context, e: BaseException, internal: bool = False) -> None:
        if ctx.obj and ctx.obj.get("debug"):
            traceback.print_exc()
        msg = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        if internal:
            msg = f"internal error ({type(e).__name__}): {msg} (rerun with --debug and report it)"
        click.echo(f"error: {msg}", err=True)
        sys.exit(2)


def _quiet_stdout() -> None:
    """Point stdout at /dev/null, so that the interpreter's last flush into the closed pipe is silent."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())
    os.close(devnull)


@click.group(cls=Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--debug", is_flag=True, help="Show full tracebacks on errors.")
@click.version_option(package_name="connectome")
@click.pass_context
def main(ctx: click.Context, debug: bool) -> None:
    """connectome: effective sparsity of pruned PyTorch models.

    A nonzero weight whose unit has no path from the inputs, or no path to the outputs, does
    nothing. connectome traces a model, walks its unit graph from all inputs and all outputs, and
    reports which weights are effective, which units are dead and whether the network collapsed.

    Exit codes: 0 ok, 1 findings (a policy failed), 2 bad input or usage, 130 interrupted.
    """
    ctx.ensure_object(dict)["debug"] = debug
    # torch's warnings are for developers of the model: hidden, and shown (each once) with --debug
    warnings.simplefilter("default" if debug else "ignore")


from . import analyze, audit, compact, prune, render, rules, sweep, train  # noqa: E402,F401  (commands register themselves on `main`)
