"""The ``connectome`` executable: for the audit of a model folder, the shards start being read before the
heavy imports (:mod:`connectome_cli.early`) and the garbage collector stays off (one audit, then
exit); then the command group runs."""

from __future__ import annotations

import contextlib
import gc
import os
import sys


def run() -> None:
    """Entry point of the ``connectome`` script."""
    from . import early

    reading = early.start(sys.argv[1:]) is not None
    if reading:
        # One audit, then os._exit below. The collector's full passes over torch's, transformers' and the
        # trace's objects took 0.3-0.45 s each, 1.3 s in all for a 7B folder, one of them after the read
        # (on the audit's critical path); without them the peak grew by 17 MB.
        gc.disable()
        early.count()  # the audit's counting pass, started before torch is imported
    from .main import main

    try:
        main()
    except SystemExit as e:
        code = e.code
        if reading and (code is None or isinstance(code, int)):
            # The audit of a model folder has written its outputs (atomically) and closed its files;
            # tearing down torch, transformers and numba would add a second or two for nothing.
            for stream in (sys.stdout, sys.stderr):
                with contextlib.suppress(OSError, ValueError):  # a reader gone (a closed pipe)
                    stream.flush()
            os._exit(code or 0)
        raise
