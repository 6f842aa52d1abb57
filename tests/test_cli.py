"""The command line: exact outputs, exit codes, one-line errors, documented commands."""
import json
import os
import re

import torch
from click.testing import CliRunner

from connectome_cli.main import main

ROOT = os.path.dirname(os.path.dirname(__file__))
DEMO = os.path.join(ROOT, "examples", "pruned_lenet.py") + ":build"


def run(*args):
    return CliRunner().invoke(main, list(args))


def test_analyze_table_and_verdict():
    r = run("analyze", DEMO)
    assert r.exit_code == 0, r.output
    lines = r.output.splitlines()
    assert lines[0].split()[:3] == ["Layer", "Kind", "Params"]
    assert any(line.startswith("Total") for line in lines)
    assert lines[-1].startswith("DEAD WEIGHTS:")


def test_analyze_json_is_to_dict():
    import connectome
    from connectome.io.spec import load_model
    r = run("analyze", DEMO, "--json")
    assert r.exit_code == 0
    d = json.loads(r.output)
    model, shape = load_model(DEMO)
    assert d == json.loads(json.dumps(connectome.analyze(model, input_shape=shape).to_dict()))
    assert d["effective_sparsity"] > d["direct_sparsity"]


def test_builtin_and_torchvision_specs(tmp_path):
    r = run("analyze", "connectome:lenet_5", "--json")
    assert r.exit_code == 0 and json.loads(r.output)["collapsed"] is False
    import torchvision
    expected = sum(p.numel() for p in torchvision.models.resnet18().parameters() if p.dim() > 1)
    r = run("analyze", "torchvision:resnet18", "--input-shape", "1,3,32,32", "--json")
    assert r.exit_code == 0 and json.loads(r.output)["params_total"] == expected


def test_weights_file_in_prune_form(tmp_path):
    import torch.nn.utils.prune as prune
    from connectome.models import lenet_300_100
    m = lenet_300_100()
    prune.random_unstructured(m[1], "weight", amount=0.9)
    path = tmp_path / "pruned.pt"
    torch.save(m.state_dict(), path)
    before = path.read_bytes()
    r = run("analyze", "connectome:lenet_300_100", "--weights", str(path), "--json")
    assert r.exit_code == 0, r.output
    assert json.loads(r.stdout)["layers"][0]["nonzero"] == int(m[1].weight_mask.sum())
    assert path.read_bytes() == before  # inputs are never written


def test_pickle_refused_without_trust(tmp_path):
    from connectome.models import lenet_5
    path = tmp_path / "model.pt"
    torch.save(lenet_5(), path)
    r = run("analyze", str(path), "--input-shape", "1,1,28,28")
    assert r.exit_code == 2 and "--trust" in r.output and "Traceback" not in r.output
    r = run("analyze", str(path), "--input-shape", "1,1,28,28", "--trust", "--json")
    assert r.exit_code == 0


def test_bad_input_is_one_line_and_exit_2(tmp_path):
    bad = tmp_path / "junk.pt"
    bad.write_bytes(b"not a checkpoint")
    cases = [
        ["analyze", "nonsense"],
        ["analyze", "torchvision:no_such_model"],
        ["analyze", "connectome:lenet_5", "--input-shape", "1,a,3"],
        ["analyze", "connectome:lenet_5", "--input-shape", "1,3,32,32"],
        ["analyze", "connectome:lenet_5", "--weights", str(bad)],
        ["analyze", "connectome:lenet_5", "--weights", str(tmp_path / "missing.pt")],
        ["analyze", "no_such_module_xyz:build", "--input-shape", "1,2"],
        ["analyze", str(tmp_path)],
        ["analyze", DEMO.replace(":build", ":nothing")],
    ]
    for args in cases:
        r = run(*args)
        assert r.exit_code == 2, (args, r.output)
        out = r.output.strip().splitlines()
        assert len(out) == 1 and out[0].startswith("error: ") and "Traceback" not in r.output, (args, r.output)


def test_debug_shows_traceback():
    r = run("--debug", "analyze", "connectome:lenet_5", "--input-shape", "1,3,32,32")
    assert r.exit_code == 2 and "Traceback" in r.output


def test_every_command_has_help_and_is_documented():
    readme = open(os.path.join(ROOT, "README.md")).read()
    assert run("--help").exit_code == 0
    for name, cmd in main.commands.items():
        r = run(name, "--help")
        assert r.exit_code == 0 and cmd.help and len(cmd.help) > 40
        assert re.search(rf"connectome {name}\b", readme), f"README does not document `connectome {name}`"


def test_rules_lists_registry():
    r = run("rules", "--grep", "Conv2d")
    assert r.exit_code == 0 and "Conv2d" in r.output and "conv_module" in r.output


def test_token_model_with_integer_inputs(tmp_path):
    src = tmp_path / "tokens.py"
    src.write_text(
        "import torch\n"
        "def build():\n"
        "    layer = torch.nn.TransformerEncoderLayer(8, 2, 16, batch_first=True, dropout=0.0)\n"
        "    return torch.nn.Sequential(torch.nn.Embedding(50, 8), layer, torch.nn.Linear(8, 3))\n")
    r = run("analyze", f"{src}:build", "--input-shape", "1,6", "--input-dtype", "int64", "--json")
    assert r.exit_code == 0, r.output
    d = json.loads(r.output)
    assert d["collapsed"] is False and d["unsupported_ops"] == [] and d["tracer"] == "export"
    assert any(layer["kind"] == "embedding" for layer in d["layers"])
    r = run("analyze", f"{src}:build", "--input-shape", "1,6")       # float ids cannot index an embedding
    assert r.exit_code == 2 and r.output.startswith("error: ")
