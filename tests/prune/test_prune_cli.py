"""`connectome prune`: the file loads with plain torch + torch.nn.utils.prune and audits clean at the
printed sparsity."""
import re

import torch
from click.testing import CliRunner
from torch.nn.utils import prune as torch_prune

from connectome.models import lenet_300_100
from connectome_cli.main import main


def run(*args):
    return CliRunner().invoke(main, list(args))


def _printed_sparsity(output: str) -> tuple[float, float]:
    m = re.search(r"direct sparsity ([\d.]+)% .*effective sparsity ([\d.]+)%", output)
    return float(m.group(1)) / 100, float(m.group(2)) / 100


def test_prune_file_loads_with_plain_pytorch_and_audits_clean(tmp_path):
    out = tmp_path / "lenet.pt"
    r = run("prune", "connectome:lenet_300_100", "--method", "random", "--quota", "igq", "--compression", "100",
            "--seed", "1", "-o", str(out))
    assert r.exit_code == 0, r.output
    direct, effective = _printed_sparsity(r.stdout)
    assert direct == 0.99 and effective >= direct
    sd = torch.load(out, weights_only=True)
    model = lenet_300_100()
    for i in (1, 3, 5):
        torch_prune.identity(model[i], "weight")
    model.load_state_dict(sd)                      # strict: every key matches
    kept = sum(int(model[i].weight_mask.sum()) for i in (1, 3, 5))
    assert kept == round(0.01 * 266200)
    model(torch.zeros(1, 1, 28, 28))              # prune's forward pre-hook recomputes weight = orig * mask
    assert all(torch.equal(model[i].weight, model[i].weight_orig * model[i].weight_mask) for i in (1, 3, 5))
    assert all(int((model[i].weight != 0).sum()) <= int(model[i].weight_mask.sum()) for i in (1, 3, 5))
    r = run("audit", str(out), "--arch", "connectome:lenet_300_100", "--claim-sparsity", f"{min(direct, effective)}")
    assert r.exit_code == 0, r.output
    assert "PASSED" in r.output


def test_effective_target_and_masks_only(tmp_path):
    out = tmp_path / "masks.pt"
    r = run("prune", "connectome:lenet_300_100", "--method", "random", "--quota", "uniform", "--sparsity", "0.99",
            "--target", "effective", "--masks-only", "-o", str(out))
    assert r.exit_code == 0, r.output
    direct, effective = _printed_sparsity(r.stdout)
    assert abs(effective - 0.99) <= 0.001 and direct < effective
    assert re.search(r"after \d+ analyses", r.stderr) and "effective targeting:" in r.stderr
    masks = torch.load(out, weights_only=True)
    assert set(masks) == {"1.weight", "3.weight", "5.weight"} and all(m.dtype == torch.bool for m in masks.values())
    r = run("audit", "--arch", "connectome:lenet_300_100", "--masks", str(out), "--claim-sparsity", f"{direct}")
    assert r.exit_code == 0, r.output


def test_snip_on_real_mnist(tmp_path):
    r = run("prune", "connectome:lenet_300_100", "--method", "snip", "--data", "mnist", "--batch-size", "64",
            "--sparsity", "0.9", "-o", str(tmp_path / "s.pt"))
    assert r.exit_code == 0, r.output
    assert _printed_sparsity(r.stdout)[0] == 0.9


def test_bad_requests_are_one_line(tmp_path):
    cases = [
        (["--method", "random", "-o", "x.pt"], "exactly one of --sparsity"),
        (["--method", "random", "--sparsity", "0.9", "--compression", "10", "-o", "x.pt"], "exactly one of"),
        (["--method", "random", "--sparsity", "1.2", "-o", "x.pt"], "--sparsity must lie in [0, 1)"),
        (["--method", "random", "--compression", "0.5", "-o", "x.pt"], "--compression must be 1 or more"),
        (["--method", "snip", "--sparsity", "0.9", "-o", "x.pt"], "add --data (mnist or fashion-mnist"),
        (["--method", "random", "--sparsity", "0.9", "-o", str(tmp_path / "no" / "x.pt")], "no such directory"),
        (["--method", "snip", "--data", "mnist", "--data-root", str(tmp_path), "--sparsity", "0.9",
          "-o", str(tmp_path / "x.pt")], "mnist files not found: put the mnist files in"),  # never other data
    ]
    for args, message in cases:
        r = run("prune", "connectome:lenet_300_100", *args)
        assert r.exit_code == 2, (args, r.output)
        assert r.stderr.count("\n") == 1 and message in r.stderr, r.stderr
    assert not (tmp_path / "no").exists()


def test_data_that_does_not_fit_the_model(tmp_path):
    r = run("prune", "connectome:vgg19", "--method", "snip", "--data", "mnist", "--batch-size", "8",
            "--sparsity", "0.9", "-o", str(tmp_path / "v.pt"))
    assert r.exit_code == 2
    assert r.stderr == ("error: the data's examples are 1x28x28 but the model takes 3x32x32: choose data that "
                        "fits the model (--data)\n")
    assert not (tmp_path / "v.pt").exists()


def test_a_collapsed_result_says_how_to_avoid_it(tmp_path):
    # global magnitude at initialisation empties VGG-19's last layers (docs/connectivity.md: from 18x)
    r = run("prune", "connectome:vgg19", "--method", "magnitude", "--compression", "100",
            "-o", str(tmp_path / "v.pt"))
    assert r.exit_code == 0, r.output
    assert "COLLAPSED" in r.stdout and "effective sparsity 100.00%" in r.stdout
    assert "note: no input reaches an output" in r.stderr and "--target effective" in r.stderr


def test_the_seed_fixes_the_initial_weights_of_a_model_built_from_code(tmp_path):
    out = []
    for i, seed in enumerate(["0", "0", "1"]):
        path = tmp_path / f"m{i}.pt"
        r = run("prune", "connectome:lenet_300_100", "--method", "magnitude", "--sparsity", "0.9", "--seed", seed,
                "--masks-only", "-o", str(path))
        assert r.exit_code == 0, r.output
        out.append(torch.load(path, weights_only=True))
    assert all(torch.equal(out[0][k], out[1][k]) for k in out[0])
    assert not all(torch.equal(out[0][k], out[2][k]) for k in out[0])


def test_iterative_methods_show_progress(tmp_path):
    r = run("prune", "connectome:lenet_300_100", "--method", "synflow", "--rounds", "25", "--compression", "100",
            "-o", str(tmp_path / "s.pt"))
    assert r.exit_code == 0, r.output
    rounds = [line for line in r.stderr.splitlines() if "round" in line]
    assert rounds == ["synflow round 10/25", "synflow round 20/25", "synflow round 25/25"]


def test_the_requested_sparsity_can_be_claimed(tmp_path):
    # (1 - 0.99913) * 266,200 = 231.6 weights: keeping 232 would fall short of the sparsity asked for
    out = tmp_path / "p.pt"
    r = run("prune", "connectome:lenet_300_100", "--method", "random", "--quota", "igq", "--sparsity", "0.99913",
            "-o", str(out))
    assert r.exit_code == 0, r.output
    assert "231 of 266,200 weights kept" in r.stderr
    r = run("audit", str(out), "--arch", "connectome:lenet_300_100", "--claim-sparsity", "0.99913")
    assert r.exit_code == 0 and "PASSED" in r.output, r.output
