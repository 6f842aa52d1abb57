"""The hostile-input corpus (issue 14): every kind of hostile file, option and environment, run as a child
process under a 2 GB memory cap. Each case asserts its exit code, exactly one stderr line naming the
problem, inputs unchanged (inode, mode and contents), nothing partial left behind, and peak memory under
the cap. The files are made here, at test time: nothing large is committed or written to disk.
"""
from __future__ import annotations

import os
import stat
from concurrent.futures import ThreadPoolExecutor

import pytest

import hostile_files
from hostile import CAP, Case, identity, listing, run

LENET = ["--arch", "connectome:lenet_300_100"]


def _file(d: str, name: str, text: str) -> str:
    path = os.path.join(d, name)
    with open(path, "w") as f:
        f.write(text)
    return path


NONE_OUT = "import torch\nclass M(torch.nn.Module):\n    def __init__(s):\n        super().__init__(); " \
           "s.fc = torch.nn.Linear(4, 2)\n    def forward(s, x):\n        s.fc(x)\n" \
           "def build(): return M()\nbuild.input_shape = (1, 4)\n"
DEEP = "import torch\ndef build():\n    m = torch.nn.Linear(4, 4)\n    for _ in range(2000):\n" \
       "        m = torch.nn.Sequential(m)\n    return m\nbuild.input_shape = (1, 4)\n"
WARNS = "import warnings, torch\nclass M(torch.nn.Module):\n    def __init__(s):\n        super().__init__(); " \
        "s.fc = torch.nn.Linear(4, 2); warnings.warn('M is deprecated', DeprecationWarning)\n" \
        "    def forward(s, x):\n        warnings.warn('forward warns'); return s.fc(x)\n" \
        "def build(): return M()\nbuild.input_shape = (1, 4)\n"
FACTORY = "import torch\ndef build():\n    return torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.ReLU(), " \
          "torch.nn.Linear(3, 2))\nbuild.input_shape = (1, 4)\n"
PRUNE = ["prune", "connectome:lenet_300_100", "--method", "random"]

CASES = [
    # memory: sizes are checked before anything that large is made
    Case("image of 10^10 pixels", lambda d: ["analyze", "torchvision:resnet18", "--input-shape", "1,3,100000,100000"],
         says="over the memory budget"),
    Case("image over --max-memory", lambda d: ["analyze", "torchvision:resnet18", "--input-shape", "1,3,20000,20000",
                                               "--max-memory", "1G"], says="use a smaller --input-shape, such as"),
    Case("batch of a million", lambda d: ["analyze", "connectome:lenet_300_100", "--input-shape", "1000000,1,28,28"],
         code=0, says="note: the batch of 1000000 was analysed as 2"),
    Case("synflow on a huge image", lambda d: ["prune", "torchvision:resnet18", "--input-shape", "1,3,4000,4000",
                                               "--method", "synflow", "--sparsity", "0.5", "-o", "p.pt",
                                               "--max-memory", "2G"], says="scoring by synflow on 1 example(s)"),
    Case("bad --max-memory", lambda d: ["analyze", "connectome:lenet_300_100", "--max-memory", "lots"],
         says="bad memory size 'lots'"),
    # models that do odd things
    Case("forward returns None", lambda d: ["analyze", _file(d, "m.py", NONE_OUT) + ":build"], says="returns no tensor",
         inputs=("m.py",)),
    Case("2,000 nested modules", lambda d: ["analyze", _file(d, "m.py", DEEP) + ":build"], says="recursion limit",
         inputs=("m.py",)),
    Case("warnings stay quiet", lambda d: ["analyze", _file(d, "m.py", WARNS) + ":build"], code=0, says="",
         stderr_lines=0, inputs=("m.py",)),
    # outputs: never over an input or a device, never partial
    Case("output over the factory's file", lambda d: [*PRUNE[:1], _file(d, "m.py", FACTORY) + ":build", *PRUNE[2:],
                                                      "--sparsity", "0.5", "-o", "m.py"],
         says="refusing to write over the input file", inputs=("m.py",)),
    Case("/dev/null as a sink", lambda d: ["audit", *LENET, "-o", os.devnull], code=(0, 1), says="wrote /dev/null",
         inputs=(os.devnull,)),
    Case("stdout on a full device", lambda d: ["{cli} rules > /dev/full"], says="cannot write to standard output",
         run={"shell": True}),
    Case("stdout into a closed pipe", lambda d: ["bash -c '{cli} rules | head -1 > /dev/null; "
                                                 "exit ${{PIPESTATUS[0]}}'"],
         code=0, stderr_lines=0, run={"shell": True}),
    Case("file-size limit", lambda d: ["analyze", "connectome:lenet_300_100", "--html", "r.html"],
         says="cannot write r.html: File too large", run={"fsize": 4096}),
    Case("Ctrl-C during a long prune", lambda d: [*PRUNE[:3], "synflow", "--rounds", "100000", "--sparsity", "0.9",
                                                  "-o", "p.pt"],
         code=130, says="interrupted", stderr_lines=None, run={"interrupt_when": "round"}),
    # option values outside their domain: the parser refuses them, in one line
    Case("--rounds 0", lambda d: [*PRUNE, "--rounds", "0", "--sparsity", "0.5", "-o", "p.pt"],
         says="'--rounds': 0 is not in the range"),
    Case("--compression inf", lambda d: [*PRUNE, "--compression", "inf", "-o", "p.pt"], says="finite"),
    Case("--sparsity 1", lambda d: [*PRUNE, "--sparsity", "1", "-o", "p.pt"], says="--sparsity must lie in [0, 1)"),
    Case("--seed -1", lambda d: [*PRUNE, "--seed", "-1", "--sparsity", "0.5", "-o", "p.pt"], says="'--seed'"),
    Case("-o ''", lambda d: [*PRUNE, "--sparsity", "0.5", "-o", ""], says="the output path is empty"),
    *hostile_files.CASES,
]


@pytest.fixture(scope="module")
def results(tmp_path_factory):
    """Every case, two at a time (each child is one process under its own cap)."""

    def one(case: Case):
        d = str(tmp_path_factory.mktemp("hostile"))
        args = case.setup(d)
        paths = [p if os.path.isabs(p) else os.path.join(d, p) for p in case.inputs]
        before = {p: identity(p) for p in paths}
        files = listing(d)
        r = run(args, d, **case.run)
        return r, before, {p: identity(p) for p in paths}, files, listing(d)

    with ThreadPoolExecutor(2) as pool:
        return dict(zip((c.name for c in CASES), pool.map(one, CASES)))


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_hostile_case(case, results):
    r, before, after, files_before, files_after = results[case.name]
    assert not r.capped and r.peak < CAP, f"peak {r.peak / 2**30:.2f} GB"
    codes = case.code if isinstance(case.code, tuple) else (case.code,)
    assert r.code in codes, (r.code, r.stderr[-2000:])
    lines = r.stderr.strip().splitlines()
    assert "Traceback" not in r.stderr
    if case.stderr_lines is not None:
        assert len(lines) == case.stderr_lines, r.stderr[-2000:]
    if case.says:
        assert case.says in lines[-1], lines[-1:]
        if case.code == 2:
            assert lines[-1].startswith("error: ") and len(lines[-1]) < 400
    if case.prints:
        assert case.prints in r.stdout.splitlines(), r.stdout[-2000:]
    assert after == before  # inputs: same inode, mode and bytes
    new = files_after - files_before
    assert new <= set(case.outputs), new  # nothing partial: no temp file, no output on failure
    if os.devnull in before:
        assert stat.S_ISCHR(os.stat(os.devnull).st_mode)


def test_warnings_are_shown_with_debug(tmp_path):
    """The quiet case above hides them; --debug shows them (pytest would record them in-process)."""
    spec = _file(str(tmp_path), "m.py", WARNS) + ":build"
    r = run(["--debug", "analyze", spec], str(tmp_path))
    assert r.code == 0 and "UserWarning: forward warns" in r.stderr, r.stderr
