"""connectome audit: policies, findings, reports, the collapse margin against brute force."""
import itertools
import json
import os
import subprocess
import sys

import torch
from click.testing import CliRunner
from torch import nn

import connectome
from connectome.audit import audit, markdown
from connectome.io.checkpoint import Checkpoint
from connectome.margin import collapse_margin
from connectome_cli.main import main


def mlp(widths, masks=None):
    layers = []
    for a, b in zip(widths, widths[1:]):
        layers += [nn.Linear(a, b), nn.ReLU()]
    m = nn.Sequential(*layers[:-1])
    if masks:
        with torch.no_grad():
            for name, mk in masks.items():
                m.get_parameter(name).mul_(mk)
    return m


def run(*args):
    return CliRunner().invoke(main, list(args))


# ---- the claim policy -------------------------------------------------------------------------------
def test_claim_fails_on_collapsed_model_whose_direct_sparsity_meets_it():
    m = mlp([8, 6, 4, 2])
    with torch.no_grad():
        m[2].weight.zero_()              # the middle layer: 24 weights gone, direct sparsity 24/84
        m[0].weight[:, 4:] = 0           # and 24 more
    rep = audit(Checkpoint(m, (1, 8)), claim_sparsity=0.5, margin=False)
    assert rep.analysis.direct_sparsity >= 0.5 and rep.analysis.collapsed
    assert "claim" in rep.failed and "collapse" in rep.failed
    assert any(f.code == "claim-collapsed" for f in rep.findings)


def test_claim_fails_on_direct_when_only_effective_sparsity_meets_it():
    m = mlp([8, 6, 4, 2])
    with torch.no_grad():
        m[4].weight[:, 1:] = 0           # hidden units 1..3 of layer 2 reach no output
        m[0].weight[:, :3] = 0
    rep = audit(Checkpoint(m, (1, 8)), claim_sparsity=0.5, margin=False)
    res = rep.analysis
    assert res.direct_sparsity < 0.5 <= res.effective_sparsity and not res.collapsed
    assert rep.failed == ["claim"]
    (f,) = [f for f in rep.findings if f.code.startswith("claim")]
    assert f.code == "claim-direct" and "effective sparsity" in f.message


def test_claim_met_and_not_met():
    m = mlp([8, 6, 2])
    with torch.no_grad():
        m[0].weight[:, :4] = 0           # 24 of 60 weights: 40%
    assert audit(Checkpoint(m, (1, 8)), claim_sparsity=0.4, margin=False).passed
    rep = audit(Checkpoint(m, (1, 8)), claim_sparsity=0.41, margin=False)
    assert rep.failed == ["claim"] and any(f.code == "claim-effective" for f in rep.findings)
    assert audit(Checkpoint(m, (1, 8)), claim_sparsity=0.41, fail_on=["collapse"], margin=False).passed


def test_max_dead_units_and_nonfinite():
    m = mlp([4, 6, 2])
    with torch.no_grad():
        m[0].weight[:3] = 0              # 3 of 6 hidden units dead (of 8 units in all)
    ck = Checkpoint(m, (1, 4))
    assert audit(ck, max_dead_units=0.4, margin=False).passed
    assert audit(ck, max_dead_units=0.3, margin=False).failed == ["dead"]
    with torch.no_grad():
        m[2].weight[0, 4] = float("nan")
    rep = audit(ck, margin=False)
    assert rep.failed == ["nonfinite"]
    assert [f.layer for f in rep.findings if f.code == "nonfinite"] == ["2"]


def test_markdown_is_a_table_and_json_has_findings():
    m = mlp([6, 5, 3])
    with torch.no_grad():
        m[0].weight[2:] = 0
    rep = audit(Checkpoint(m, (1, 6)), claim_sparsity=0.5)
    md = markdown(rep)
    rows = [line for line in md.splitlines() if line.startswith("| `")]
    assert len(rows) == 2 and all(line.count("|") == 10 for line in rows)
    assert "|---|---|--:|--:|--:|--:|--:|--:|--:|" in md
    d = json.loads(json.dumps(rep.to_dict()))
    assert {"findings", "collapse_margin", "bottleneck_layer"} <= set(d)
    assert all(set(f) == {"code", "severity", "message", "layer"} for f in d["findings"])
    assert d["layers"] == rep.analysis.to_dict()["layers"]


# ---- the collapse margin ----------------------------------------------------------------------------
def brute_force_margin(m, shape):
    """The fewest effective weights whose removal collapses the network, by trying every subset."""
    res = connectome.analyze(m, input_shape=shape)
    eff = [(name, idx) for name, mk in res.effective_masks.items() for idx in mk.nonzero().tolist()]
    for k in range(len(eff) + 1):
        for subset in itertools.combinations(eff, k):
            masks = {n: mk.clone() for n, mk in res.masks.items()}
            for name, idx in subset:
                masks[name][tuple(idx)] = False
            if connectome.analyze(m, input_shape=shape, masks=masks).collapsed:
                return k
    raise AssertionError("never collapses")


def test_margin_equals_brute_force_on_small_mlps():
    checked = 0
    for seed in range(40):
        g = torch.Generator().manual_seed(seed)
        m = mlp([3, 3, 2, 2])
        with torch.no_grad():
            for lin in (m[0], m[2], m[4]):
                lin.weight.mul_(torch.rand(lin.weight.shape, generator=g) < 0.6)
        res = connectome.analyze(m, input_shape=(1, 3))
        if res.params_effective > 9:     # brute force tries every subset
            continue
        assert collapse_margin(res).margin == brute_force_margin(m, (1, 3)), seed
        checked += 1
    assert checked >= 10


def test_narrowest_layer_with_two_weights_gives_margin_two():
    m = mlp([4, 5, 3, 2])
    with torch.no_grad():
        m[2].weight.zero_()
        m[2].weight[0, 0] = m[2].weight[1, 3] = 1.0
    r = collapse_margin(connectome.analyze(m, input_shape=(1, 4)))
    assert (r.margin, r.bottleneck_layer, r.cut) == (2, "2", {"2": 2})
    assert brute_force_margin(m, (1, 4)) == 2


def test_margin_counts_conv_taps_and_residual_paths():
    class Res(nn.Module):
        def __init__(self):
            super().__init__()
            self.a = nn.Conv2d(1, 2, 3, padding=1)
            self.b = nn.Conv2d(2, 2, 1)
            self.fc = nn.Linear(2 * 16, 1)

        def forward(self, x):
            y = self.a(x)
            return self.fc(torch.flatten(y + self.b(y), 1))
    m = Res()
    with torch.no_grad():
        m.a.weight[1] = 0
        m.a.weight[0, 0, :, :2] = 0      # 3 taps left into channel 0
    r = collapse_margin(connectome.analyze(m, input_shape=(1, 1, 4, 4)))
    assert r.margin == 3 and r.bottleneck_layer == "a"


def test_margin_reported_for_resnet18_at_99_percent():
    import torchvision
    from oracle import random_masks
    m = torchvision.models.resnet18()
    masks = random_masks(m, 0.99, seed=0)
    res = connectome.analyze(m, input_shape=(1, 3, 32, 32), masks=masks)
    r = collapse_margin(res)
    assert r.margin is not None and 0 < r.margin <= int(res.effective_masks["conv1.weight"].sum())
    assert r.bottleneck_layer in r.cut and sum(r.cut.values()) == r.margin


# ---- the command ------------------------------------------------------------------------------------
def test_cli_exit_codes_formats_and_atomic_output(tmp_path):
    import torch.nn.utils.prune as prune
    from connectome.models import lenet_300_100
    m = lenet_300_100()
    prune.random_unstructured(m[1], "weight", amount=0.99)
    path = tmp_path / "p.pt"
    torch.save(m.state_dict(), path)
    r = run("audit", str(path), "--arch", "connectome:lenet_300_100", "--format", "json")
    assert r.exit_code == 0, r.output
    d = json.loads(r.stdout)
    assert d["passed"] and d["collapse_margin"] > 0
    assert d["layers"][0]["nonzero"] == int(m[1].weight_mask.sum())
    r = run("audit", str(path), "--arch", "connectome:lenet_300_100", "--claim-sparsity", "0.9",
            "--format", "markdown", "-o", str(tmp_path / "card.md"))
    assert r.exit_code == 1
    assert (tmp_path / "card.md").read_text().startswith("## Sparsity audit")
    assert not [p for p in os.listdir(tmp_path) if p.startswith(".connectome-")]   # no temp files left
    r = run("audit", str(path), "--arch", "connectome:lenet_300_100", "-o", str(path))
    assert r.exit_code == 2 and "input file" in r.output


def test_pickle_that_would_create_a_file_is_refused(tmp_path):
    marker = tmp_path / "pwned"
    code = f"""
import torch, os
class Payload:
    def __reduce__(self):
        return (open, ({str(marker)!r}, "w"))
m = torch.nn.Linear(2, 2)
m.payload = Payload()
torch.save(m, {str(tmp_path / 'evil.pt')!r})
"""
    subprocess.run([sys.executable, "-c", code], check=True)
    assert not marker.exists()
    exe = os.path.join(os.path.dirname(sys.executable), "connectome")
    for args in (["audit", str(tmp_path / "evil.pt")], ["analyze", str(tmp_path / "evil.pt"), "--input-shape", "1,2"]):
        p = subprocess.run([exe] + args, capture_output=True, text=True)
        assert p.returncode == 2, p.stderr
        assert len(p.stderr.strip().splitlines()) == 1 and "--trust" in p.stderr and "code" in p.stderr
        assert not marker.exists()


def test_margin_skipped_past_its_time_budget():
    m = mlp([6, 5, 3])
    r = collapse_margin(connectome.analyze(m, input_shape=(1, 6)), budget_s=0.0)
    assert r.margin is None and "budget" in r.note


def test_progress_on_a_terminal_and_silent_when_piped(tmp_path):
    import pty
    exe = os.path.join(os.path.dirname(sys.executable), "connectome")
    args = [exe, "audit", "--arch", "connectome:lenet_300_100", "--format", "json"]
    piped = subprocess.run(args, capture_output=True, text=True)
    assert piped.returncode == 0 and piped.stderr == ""
    leader, follower = pty.openpty()
    p = subprocess.run(args, stdout=subprocess.PIPE, stderr=follower)
    os.close(follower)
    shown = b""
    try:
        while True:
            chunk = os.read(leader, 4096)
            if not chunk:
                break
            shown += chunk
    except OSError:   # the terminal closes once the child is gone
        pass
    os.close(leader)
    assert p.returncode == 0 and json.loads(p.stdout)["passed"]
    assert b"[####" in shown and b"collapse margin" in shown
