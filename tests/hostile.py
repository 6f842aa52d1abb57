"""Run the command line as a stranger's input would: in a child process held under a memory cap.

Each run records the exit code, stderr, the child's own peak resident memory, and kills
the child the moment its resident memory passes the cap, so that a regression fails one test instead
of taking the machine. Used by ``test_hostile.py``.
"""
from __future__ import annotations

import ctypes
import hashlib
import os
import resource
import shlex
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from typing import Callable

CAP = 2 * 2**30  # bytes of resident memory a hostile case may reach (a plain LeNet audit needs 0.7 GB)
# The command line, reporting its own peak at exit: VmHWM counts this process's memory only, where
# wait4's maxrss would count the test process's pages that fork lends the child before it runs
LAUNCH = """import atexit, os, sys
def peak():
    with open("/proc/self/status") as f:
        hwm = next(line for line in f if line.startswith("VmHWM:")).split()[1]
    with open(os.environ["CONNECTOME_PEAK_FILE"], "w") as f:
        f.write(hwm)
atexit.register(peak)
sys.argv[0] = "connectome"
from connectome_cli.main import main
main()
"""


@dataclass
class Run:
    code: int  # exit code; -N when killed by signal N
    stdout: str
    stderr: str
    peak: int  # bytes of resident memory at the child's peak
    capped: bool  # killed for passing the cap


def _rss(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def run(args: list[str], cwd: str, *, stdin: str | None = None, fsize: int | None = None,
        interrupt_when: str | None = None, timeout: float = 240, shell: bool = False,
        env: dict | None = None, unprivileged: bool = False) -> Run:
    """``connectome ARGS`` (or a shell line with ``shell``) in ``cwd`` under the cap.

    ``unprivileged``: without root's power to read and write any file, so that modes are obeyed.
    """

    def limits() -> None:
        if unprivileged and os.geteuid() == 0:
            libc = ctypes.CDLL(None, use_errno=True)
            for cap in (1, 2):  # CAP_DAC_OVERRIDE, CAP_DAC_READ_SEARCH: gone from the bounding set at exec
                libc.prctl(24, cap, 0, 0, 0)  # PR_CAPBSET_DROP
        # a backstop for one huge allocation between two polls: address space beyond the cap's reach
        resource.setrlimit(resource.RLIMIT_AS, (16 * 2**30, 16 * 2**30))
        if fsize is not None:
            resource.setrlimit(resource.RLIMIT_FSIZE, (fsize, fsize))

    out_path, err_path = os.path.join(cwd, ".stdout"), os.path.join(cwd, ".stderr")
    peak_path, launch = os.path.join(cwd, ".peak"), os.path.join(cwd, ".launch.py")
    with open(launch, "w") as f:
        f.write(LAUNCH)
    cli = f"{shlex.quote(sys.executable)} {shlex.quote(launch)}"
    with open(out_path, "wb") as out, open(err_path, "wb") as err:
        cmd = args[0].format(cli=cli) if shell else [sys.executable, launch, *args]
        env = dict(os.environ, CONNECTOME_PEAK_FILE=peak_path, **(env or {}))
        p = subprocess.Popen(cmd, cwd=cwd, stdout=out, stderr=err, preexec_fn=limits, shell=shell, env=env,
                             stdin=subprocess.PIPE if stdin is not None else subprocess.DEVNULL)
        if stdin is not None:
            assert p.stdin is not None
            p.stdin.write(stdin.encode())
            p.stdin.close()
        capped, done = threading.Event(), threading.Event()
        highest = [0]

        def watch() -> None:
            start = time.monotonic()
            while not done.wait(0.01):
                highest[0] = max(highest[0], _rss(p.pid))
                if highest[0] > CAP:
                    capped.set()
                    p.kill()
                    return
                if interrupt_when and not interrupted.is_set() and interrupt_when in open(err_path).read():
                    p.send_signal(signal.SIGINT)  # Ctrl-C, once the work is under way
                    interrupted.set()
                if time.monotonic() - start > timeout:
                    p.kill()
                    return

        interrupted = threading.Event()
        t = threading.Thread(target=watch, daemon=True)
        t.start()
        p.wait()
        done.set()
        t.join()
    stdout, stderr = open(out_path).read(), open(err_path).read()
    peak = int(open(peak_path).read()) * 1024 if os.path.exists(peak_path) else highest[0]
    for f in (out_path, err_path, peak_path, launch):
        if os.path.exists(f):
            os.unlink(f)
    return Run(p.returncode, stdout, stderr, max(peak, highest[0]), capped.is_set())


def identity(path: str) -> tuple:
    """What must not change about an input: its inode, device, mode and contents."""
    st = os.lstat(path)
    digest = hashlib.sha256(open(path, "rb").read()).hexdigest() if os.path.isfile(path) else ""
    return st.st_ino, st.st_dev, st.st_mode, digest


def listing(folder: str) -> set[str]:
    """Every file under ``folder``, relative to it."""
    found = set()
    for root, _, files in os.walk(folder):
        for f in files:
            found.add(os.path.relpath(os.path.join(root, f), folder))
    return found


@dataclass
class Case:
    name: str
    setup: Callable[[str], list[str]]  # makes the files in a folder, returns the command's arguments
    code: int | tuple[int, ...] = 2
    says: str = ""  # a fragment of the one stderr line ("" for a quiet success)
    inputs: tuple[str, ...] = ()  # files (in the folder, or absolute) that must come out unchanged
    outputs: tuple[str, ...] = ()  # files a success may leave
    run: dict = field(default_factory=dict)  # extra arguments of hostile.run
    stderr_lines: int | None = 1  # None: only the last line is checked
    prints: str = ""  # a line that stdout must hold
