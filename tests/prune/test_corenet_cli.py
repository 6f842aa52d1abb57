"""`connectome prune --method corenet` on a LeNet-300-100 trained by `connectome train`: against uniform
sampling at the same budget, after one epoch of masked fine-tuning, and its one-line errors."""
import re

import pytest
import torch
from click.testing import CliRunner
from torch.func import functional_call

from connectome import data
from connectome.models import lenet_300_100
from connectome.prune.corenet import baseline
from connectome_cli.main import main


def run(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


def _weights(path):
    sd = torch.load(path, weights_only=True)
    masks = {k[: -len("_mask")]: v for k, v in sd.items() if k.endswith("_mask")}
    out = {k: v for k, v in sd.items() if not k.endswith(("_mask", "_orig"))}
    out.update({k: sd[k + "_orig"] * m for k, m in masks.items()})
    return out, masks


def _accuracy(state, x, y):
    net = lenet_300_100()
    with torch.no_grad():
        return float((functional_call(net, state, (x,)).argmax(1) == y).float().mean())


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    folder = tmp_path_factory.mktemp("dense")
    r = run("train", "connectome:lenet_300_100", "--data", "mnist", "--sparsity", "0", "--epochs", "4", "-o", folder)
    assert r.exit_code == 0, r.output
    return folder / "checkpoint.pt"


def test_corenet_beats_uniform_sampling_and_fine_tunes_back(trained, tmp_path):
    x, y = data.load("mnist", "test")
    dense, _ = _weights(trained)
    original = _accuracy(dense, x, y)
    assert original >= 0.97
    out = tmp_path / "sparse.pt"
    r = run("prune", "connectome:lenet_300_100", "--weights", trained, "--method", "corenet", "--data", "mnist",
            "--keep", "0.15", "-o", out)
    assert r.exit_code == 0, r.output
    printed = re.search(r"test accuracy ([\d.]+)% before, ([\d.]+)% after", r.stdout)
    assert float(printed.group(1)) == pytest.approx(100 * original, abs=0.01)
    assert re.search(r"guarantee: [\d.]+% of 1,000 held-out inputs", r.stdout)
    sparse, masks = _weights(out)
    kept = sum(int(m.sum()) for m in masks.values())
    assert kept == int(0.15 * 266200)
    after = _accuracy(sparse, x, y)
    assert float(printed.group(2)) == pytest.approx(100 * after, abs=0.01)
    net = lenet_300_100()
    net.load_state_dict(dense)
    uniform = baseline("uniform", net, data.batch("mnist", 256, 0)[0], 0.15)
    assert after >= _accuracy({**dense, **uniform.weights}, x, y) + 0.3   # by a wide margin
    r = run("train", "connectome:lenet_300_100", "--weights", out, "--data", "mnist", "--epochs", "1", "--lr", "0.01",
            "-o", tmp_path / "ft")
    assert r.exit_code == 0, r.output
    tuned = float(re.search(r"test accuracy ([\d.]+)%", r.stdout).group(1))
    assert tuned >= 100 * original - 3


def test_without_a_budget_the_bound_keeps_almost_everything_and_meets_its_guarantee(trained, tmp_path):
    r = run("prune", "connectome:lenet_300_100", "--weights", trained, "--method", "corenet", "--data", "mnist",
            "--epsilon", "0.1", "-o", tmp_path / "b.pt")
    assert r.exit_code == 0, r.output
    # |S| from the paper's formula; every weight drawn but those whose input pixel is 0 on all of S
    assert "|S| = 197, draws from the bound for epsilon 0.1, delta 0.05" in r.stdout
    kept, total = (int(v.replace(",", "")) for v in re.search(r"kept ([\d,]+) of ([\d,]+) weights", r.stdout).groups())
    assert 0.99 * total < kept < total
    assert re.search(r"guarantee: [\d.]+% of 1,000 held-out inputs .* \(target 95.0%: met\)", r.stdout)


@pytest.mark.parametrize("args, says", [
    (["--keep", "0.15"], "add --data"),
    (["--data", "mnist", "--epsilon", "0"], "--epsilon above 0"),
    (["--keep", "1.5", "--data", "mnist"], "--keep must lie in (0, 1]"),
    (["--keep", "0.15", "--sparsity", "0.9", "--data", "mnist"], "give one of --keep, --sparsity or --compression"),
    (["--keep", "0.15", "--data", "cifar10", "--data-root", "."], None),
])
def test_bad_corenet_options_are_one_line(args, says, tmp_path):
    r = run("prune", "connectome:lenet_300_100", "--method", "corenet", *args, "-o", tmp_path / "x.pt")
    assert r.exit_code == 2 and len(r.stderr.strip().splitlines()) == 1, r.output
    assert says is None or says in r.stderr
    assert not (tmp_path / "x.pt").exists()


def test_keep_is_only_for_corenet(tmp_path):
    r = run("prune", "connectome:lenet_300_100", "--method", "random", "--keep", "0.1", "-o", tmp_path / "x.pt")
    assert r.exit_code == 2 and "--keep is for --method corenet" in r.stderr
