"""``connectome compact``: the file it writes, the figures it prints, and its refusals."""

import json
import os

import torch
from click.testing import CliRunner
from torch import nn
from torch.nn.utils import prune

from connectome.analysis import analyze
from connectome_cli.main import main

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(__file__)))
DEMO = os.path.join(ROOT, "examples", "pruned_lenet.py") + ":build"


def run(*args):
    return CliRunner().invoke(main, list(args))


def _demo():
    from connectome.io.spec import load_model

    model, shape = load_model(DEMO)
    return model.eval(), shape


def test_the_demo_model_compacts_to_a_file_with_the_same_outputs_and_no_dead_unit(tmp_path):
    out = str(tmp_path / "small.pt")
    r = run("compact", DEMO, "-o", out, "--runs", "2", "--align", "1")
    assert r.exit_code == 0, r.output
    assert "parameters" in r.output and "FLOPs" in r.output and "CPU latency" in r.output
    assert "checked: outputs agree" in r.output
    small = torch.load(out, weights_only=False)
    model, shape = _demo()
    x = torch.randn(5, *shape[1:])
    assert torch.allclose(small(x), model(x), rtol=0, atol=1e-5)
    res = analyze(small, input_shape=shape)
    assert all(row["dead_in"] == row["dead_out"] == 0 for row in res.layers)
    assert sum(p.numel() for p in small.parameters()) < sum(p.numel() for p in model.parameters())


def test_json_gives_the_figures_and_the_kept_units_per_layer(tmp_path):
    out = str(tmp_path / "small.pt2")
    r = run("compact", DEMO, "-o", out, "--runs", "0", "--json")
    assert r.exit_code == 0, r.output
    d = json.loads(r.stdout)
    model, shape = _demo()
    assert d["params_before"] == sum(p.numel() for p in model.parameters())
    assert d["params_after"] < d["params_before"] and d["flops_after"] < d["flops_before"]
    assert d["latency_before_s"] is None
    # LeNet-300-100's first layer: 784 inputs, 300 units; its kept inputs and units, as sliced
    first = d["layers"]["1"]
    assert first["in"][1] == 784 and first["out"][1] == 300 and first["out"][0] < 300
    ep = torch.export.load(out)
    x = torch.randn(1, *shape[1:])
    assert torch.allclose(ep.module()(x), model(x), rtol=0, atol=1e-5)


def test_prune_masks_in_a_checkpoint_are_carried_to_the_written_model(tmp_path):
    m = nn.Sequential(nn.Linear(6, 8), nn.ReLU(), nn.Linear(8, 2))
    mask = (torch.rand(8, 6, generator=torch.Generator().manual_seed(0)) < 0.5).float()
    mask[:3] = 0
    prune.custom_from_mask(m[0], "weight", mask)
    weights = str(tmp_path / "pruned.pt")
    torch.save(m.state_dict(), weights)
    spec = str(tmp_path / "net.py")
    with open(spec, "w") as f:
        f.write("import torch\n\ndef build():\n    return torch.nn.Sequential(torch.nn.Linear(6, 8), torch.nn.ReLU(), ")
        f.write("torch.nn.Linear(8, 2))\n")
    out = str(tmp_path / "small.pt")
    r = run("compact", f"{spec}:build", "--weights", weights, "--input-shape", "1,6", "-o", out, "--runs", "0", "--align", "1")
    assert r.exit_code == 0, r.output
    small = torch.load(out, weights_only=False)
    first = small.get_submodule("0")
    assert first.weight_mask.shape == (5, 6) and torch.equal(first.weight_mask, mask[3:])


def test_a_collapsed_model_is_refused_in_one_line_and_nothing_is_written(tmp_path):
    spec = str(tmp_path / "dead.py")
    with open(spec, "w") as f:
        f.write("import torch\n\ndef build():\n    m = torch.nn.Sequential(torch.nn.Linear(3, 3), torch.nn.Linear(3, 1))\n")
        f.write("    torch.nn.init.zeros_(m[1].weight)\n    return m\n")
    out = str(tmp_path / "small.pt")
    r = run("compact", f"{spec}:build", "--input-shape", "1,3", "-o", out)
    assert r.exit_code == 2
    assert r.output.strip().count("\n") == 0 and "collapsed" in r.output
    assert not os.path.exists(out)


def test_a_bad_output_name_and_an_output_over_the_input_are_refused(tmp_path):
    r = run("compact", DEMO, "-o", str(tmp_path / "small.onnx"))
    assert r.exit_code == 2 and ".pt2" in r.output and r.output.count("\n") == 1
    weights = str(tmp_path / "w.pt")
    torch.save(_demo()[0].state_dict(), weights)
    r = run("compact", DEMO, "--weights", weights, "-o", weights)
    assert r.exit_code == 2 and "refusing to write over the input" in r.output


def test_the_audit_says_what_compacting_the_dead_units_saves(tmp_path):
    model, shape = _demo()
    ck_path = str(tmp_path / "lenet.pt")
    torch.save(model.state_dict(), ck_path)
    r = run("audit", ck_path, "--arch", "connectome:lenet_300_100", "--format", "json")
    d = json.loads(r.stdout)
    found = [f for f in d["findings"] if f["code"] == "compaction"]
    assert len(found) == 1 and "compacting removes" in found[0]["message"]
    section = d["compaction"]
    assert section["params_before"] == sum(p.numel() for p in model.parameters())
    assert section["params_after"] < section["params_before"] and section["max_relative_error"] <= 1e-9
    assert f"{section['params_after']:,}" in found[0]["message"]
