"""Bad input to `connectome audit`: exit 2 and one line naming the problem, never a traceback.

One case per kind of bad input, then random byte flips and truncations of a real checkpoint.
"""
import json
import random

import pytest
import torch
from click.testing import CliRunner

from connectome.models import lenet_300_100
from connectome_cli.main import main

ARCH = ["--arch", "connectome:lenet_300_100"]


def run(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


def assert_one_line_error(r, *fragments):
    assert r.exit_code == 2, (r.exit_code, r.output)
    assert "Traceback" not in r.output
    err = r.stderr.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: "), r.stderr
    for f in fragments:
        assert f in err[0], (f, err[0])


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    d = tmp_path_factory.mktemp("bad")
    torch.manual_seed(0)
    m = lenet_300_100()
    torch.save(m.state_dict(), d / "good.pt")
    sd = m.state_dict()
    torch.save({k: v for k, v in sd.items() if k != "3.weight"}, d / "missing.pt")
    torch.save({**sd, "extra.weight": torch.zeros(3)}, d / "unexpected.pt")
    torch.save({**sd, "1.weight": torch.zeros(10, 784)}, d / "shape.pt")
    (d / "empty.pt").write_bytes(b"")
    (d / "text.pt").write_text("not a checkpoint\n")
    (d / "image.png").write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(100))
    (d / "data.json").write_text(json.dumps({"weights": [1, 2, 3]}))
    (d / "garbage.bin").write_bytes(bytes(random.Random(1).randrange(256) for _ in range(5000)))
    good = (d / "good.pt").read_bytes()
    (d / "truncated.pt").write_bytes(good[: len(good) // 2])
    (d / "bad.safetensors").write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{\"a\": broken}  ")
    torch.save({"epoch": 3, "lr": 0.1}, d / "notensors.pt")
    torch.save([torch.zeros(2)], d / "alist.pt")
    torch.save({"1.weight": torch.ones(5, 5)}, d / "badmasks.pt")
    torch.save({"nosuch.weight": torch.ones(5)}, d / "unknownmasks.pt")
    (d / "models.py").write_text(
        "import torch\n"
        "class Untraceable(torch.nn.Module):\n"
        "    def __init__(self):\n"
        "        super().__init__(); self.fc = torch.nn.Linear(4, 2)\n"
        "    def forward(self, x):\n"
        "        return self.fc(torch.from_numpy(x.detach().numpy()))\n"
        "def untraceable(): return Untraceable()\n"
        "def empty(): return torch.nn.Sequential()\n"
        "def no_prunable(): return torch.nn.Sequential(torch.nn.BatchNorm1d(4), torch.nn.ReLU())\n"
        "def not_a_module(): return 42\n")
    (d / "sub").mkdir()
    return d


CASES = [  # (args, fragment of the message); paths are relative to the fixture's folder
    (["{d}/nope.pt", *ARCH], "no such"),
    (["{d}/sub", *ARCH], "is a directory"),
    (["{d}/empty.pt", *ARCH], "empty"),
    (["{d}/truncated.pt", *ARCH], "truncated or corrupt"),
    (["{d}/garbage.bin", *ARCH], "not a PyTorch"),
    (["{d}/text.pt", *ARCH], "not a PyTorch"),
    (["{d}/image.png", *ARCH], "not a PyTorch"),
    (["{d}/data.json", *ARCH], "not a PyTorch"),
    (["{d}/bad.safetensors", *ARCH], "safetensors"),
    (["{d}/notensors.pt", *ARCH], "no tensors"),
    (["{d}/alist.pt", *ARCH], "not a state_dict"),
    (["{d}/missing.pt", *ARCH], "1 missing (3.weight)"),
    (["{d}/unexpected.pt", *ARCH], "1 unexpected (extra.weight)"),
    (["{d}/shape.pt", *ARCH], "1.weight: file (10, 784) vs model (300, 784)"),
    (["{d}/good.pt"], "--arch"),
    (["{d}/good.pt", "--arch", "nosuch_pkg.models:build"], "cannot import"),
    (["{d}/good.pt", "--arch", "torchvision:nosuch"], "torchvision has no model"),
    (["{d}/good.pt", "--arch", "connectome:nosuch"], "unknown connectome model"),
    (["{d}/good.pt", "--arch", "justaname"], "cannot resolve model"),
    (["{d}/good.pt", "--arch", "{d}/models.py:nosuch"], "no attribute"),
    (["{d}/good.pt", "--arch", "{d}/models.py:not_a_module"], "not a torch.nn.Module"),
    (["{d}/good.pt", *ARCH, "--arch-kwargs", "num_classes"], "NAME=VALUE"),
    (["{d}/good.pt", *ARCH, "--arch-kwargs", "nosuch=1"], "does not accept"),
    (["{d}/good.pt", *ARCH, "--input-shape", "1,3,32,32"], "input shape"),
    (["{d}/good.pt", *ARCH, "--input-shape", "1,a,3"], "bad input shape"),
    (["{d}/good.pt", *ARCH, "--input-shape", "0,784"], "positive"),
    (["--arch", "{d}/models.py:untraceable", "--input-shape", "1,4"], "cannot trace"),
    (["--arch", "{d}/models.py:empty", "--input-shape", "1,4"], "no parameters"),
    (["--arch", "{d}/models.py:no_prunable", "--input-shape", "2,4"], "no prunable layers"),
    (["{d}/good.pt", *ARCH, "--claim-sparsity", "1.5"], "claim-sparsity"),
    (["{d}/good.pt", *ARCH, "--max-dead-units", "2"], "max-dead-units"),
    (["{d}/good.pt", *ARCH, "--fail-on", "collapse,typo"], "typo"),
    (["{d}/good.pt", *ARCH, "--masks", "{d}/badmasks.pt"], "mask shapes"),
    (["{d}/good.pt", *ARCH, "--masks", "{d}/unknownmasks.pt"], "nosuch.weight"),
    (["{d}/good.pt", *ARCH, "--masks", "{d}/nope.pt"], "no such"),
    (["{d}/good.pt", *ARCH, "-o", "{d}/nodir/report.txt"], "no such directory"),
    ([], "CHECKPOINT"),
]


@pytest.mark.parametrize("args,fragment", CASES, ids=[c[1] for c in CASES])
def test_each_kind_of_bad_input(files, args, fragment):
    r = run("audit", *[a.format(d=files) for a in args])
    assert_one_line_error(r, fragment)


def test_debug_shows_the_traceback(files):
    r = run("--debug", "audit", files / "truncated.pt", *ARCH)
    assert r.exit_code == 2 and "Traceback" in r.stderr


def test_byte_flips_and_truncations_of_a_real_checkpoint(files, tmp_path):
    """50 damaged copies: each one is rejected with one line, or loads to exactly the original tensors."""
    good = (files / "good.pt").read_bytes()
    reference = torch.load(files / "good.pt", weights_only=True)
    rng = random.Random(0)
    rejected = intact = 0
    for i in range(70):
        data = bytearray(good)
        if i % 2:
            del data[rng.randrange(1, len(data)):]
        else:
            for _ in range(rng.randrange(1, 4)):
                data[rng.randrange(len(data))] ^= 1 << rng.randrange(8)
        path = tmp_path / f"damaged{i}.pt"
        path.write_bytes(bytes(data))
        r = run("audit", path, *ARCH, "--no-margin", "--fail-on", "none")
        if r.exit_code == 2:
            assert_one_line_error(r)
            rejected += 1
            continue
        # a flip in bytes that carry nothing (zip padding) leaves every tensor as it was
        assert r.exit_code == 0, r.output
        got = torch.load(path, weights_only=True)
        assert set(got) == set(reference) and all(torch.equal(got[k], reference[k]) for k in reference)
        intact += 1
    assert rejected >= 50, (rejected, intact)
