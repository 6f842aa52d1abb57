"""The ``connectome`` executable: for the audit of a model folder, the shards start being read before the
heavy imports (:mod:`connectome_cli.early`); then the command group runs."""

from __future__ import annotations

import contextlib
import os
import sys


def run() -> None:
    """Entry point of the ``connectome`` script."""
    from . import early

    reading = early.start(sys.argv[1:]) is not None
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
