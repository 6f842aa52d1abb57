"""Part of a model (``submodule=``, ``--submodule``): a detector that cannot be traced whole has its backbone
analysed with the whole model's names, and the whole model's trace error names the parts that can be."""
import os
import sys

import pytest
import torch
from click.testing import CliRunner
from torch import nn

import connectome
from connectome.graph.trace import TraceError
from connectome.parts import analysable_parts, capture_inputs
from connectome_cli.main import main


class Backbone(nn.Module):
    def __init__(self):
        super().__init__()
        self.c1, self.c2 = nn.Conv2d(3, 4, 3, padding=1), nn.Conv2d(4, 4, 3, padding=1)

    def forward(self, x):
        f1 = torch.relu(self.c1(x))
        return {"p1": f1, "p2": torch.relu(self.c2(f1))}


class Detector(nn.Module):
    """Keeps the boxes whose score passes a threshold: a data-dependent shape, which no tracer can follow."""

    input_shape = (1, 3, 8, 8)

    def __init__(self):
        super().__init__()
        self.backbone, self.score = Backbone(), nn.Linear(4, 1)

    def forward(self, x):
        feats = self.backbone(x * 2)
        s = self.score(feats["p2"].flatten(2).transpose(1, 2)).squeeze(-1)
        return s[s > 0]


def detector():
    torch.manual_seed(0)
    m = Detector()
    with torch.no_grad():
        m.backbone.c1.weight[1] = 0          # channel 1 of p1 is dead, so c2's column 1 is ineffective
        m.backbone.c1.bias.zero_()
    return m


def test_a_part_is_analysed_under_the_whole_models_names():
    m = detector()
    res = connectome.analyze(m, input_shape=(1, 3, 8, 8), submodule="backbone")
    assert set(res.effective_masks) == {"backbone.c1.weight", "backbone.c2.weight"}
    assert [r["name"] for r in res.layers] == ["backbone.c1", "backbone.c2"]
    eff = res.effective_masks["backbone.c2.weight"]
    assert not eff[:, 1].any() and eff[:, 0].all()
    # both outputs of the part count: c1's units feed p1 directly, so they all reach an output
    assert res.effective_masks["backbone.c1.weight"][0].all()


def test_masks_named_for_the_whole_model_apply_to_the_part():
    m = detector()
    masks = {"backbone.c2.weight": torch.zeros(4, 4, 3, 3), "score.weight": torch.ones(1, 4)}
    res = connectome.analyze(m, input_shape=(1, 3, 8, 8), submodule="backbone", masks=masks)
    assert res.layers[1]["nonzero"] == 0
    # p1 still reaches an output of the part, so c1 stays effective
    assert res.layers[0]["effective"] == res.layers[0]["nonzero"]


def test_the_whole_models_error_names_the_parts_that_can_be_analysed():
    with pytest.raises(TraceError) as e:
        connectome.analyze(detector(), input_shape=(1, 3, 8, 8))
    assert "data-dependent" in str(e.value) or "depends on" in str(e.value)
    assert str(e.value).endswith("can be analysed (submodule=... or --submodule): backbone, score")
    assert "\n" not in str(e.value)


def test_captured_inputs_are_what_the_whole_model_hands_over():
    x = torch.randn(1, 3, 8, 8)
    (got,) = capture_inputs(detector(), (x,), "backbone")
    assert torch.equal(got, x * 2)
    assert analysable_parts(detector(), (x,)) == ["backbone", "score"]
    with pytest.raises(TraceError, match="no submodule 'neck'; its children are backbone, score"):
        capture_inputs(detector(), (x,), "neck")


def test_cli_submodule_with_and_without_an_input_shape(tmp_path):
    sys.path.insert(0, os.path.dirname(__file__))
    try:
        spec = "test_parts:detector"
        r = CliRunner().invoke(main, ["analyze", spec, "--submodule", "backbone", "--input-shape", "1,3,8,8"])
        assert r.exit_code == 0, r.output
        assert "backbone.c2" in r.output
        captured = CliRunner().invoke(main, ["analyze", spec, "--submodule", "backbone"])
        assert captured.exit_code == 0, captured.output
        assert captured.output == r.output       # the captured input has the same shape
        whole = CliRunner().invoke(main, ["analyze", spec])
        assert whole.exit_code == 2 and "--submodule): backbone, score" in whole.output
    finally:
        sys.path.remove(os.path.dirname(__file__))


def test_faster_rcnn_backbone_with_fpn_outputs():
    pytest.importorskip("torchvision")
    r = CliRunner().invoke(main, ["analyze", "torchvision:fasterrcnn_resnet50_fpn", "--submodule", "backbone",
                                  "--input-shape", "1,3,64,64", "--json"])
    assert r.exit_code == 0, r.output
    import json
    d = json.loads(r.output)
    names = [row["name"] for row in d["layers"]]
    assert names[0] == "backbone.body.conv1" and "backbone.fpn.layer_blocks.3.0" in names
    assert d["unsupported_ops"] == [] and not d["collapsed"]
