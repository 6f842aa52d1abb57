"""The layer diagram's DOT text against hand-computed networks: boxes, edges, colours, labels, folding."""
import pytest
import torch
import torchvision
from torch import nn

import connectome
from connectome.render import to_dot
from connectome.render.style import CUT, CUT_BORDER, DEAD_EDGE, LIVE_EDGE, alive_colour
from dotparse import by_title, parse
from handnets import three_state_mlp


def _mlp() -> nn.Module:
    return three_state_mlp(4, 2)


def test_hand_mlp_boxes_edges_colours_and_labels():
    res = connectome.analyze(_mlp(), input_shape=(1, 4))
    nodes, edges = parse(to_dot(res).source)
    boxes = by_title(nodes)
    assert set(boxes) == {"input", "0", "1", "2", "output"}
    assert len(edges) == 4                      # input -> 0 -> 1 -> 2 -> output
    chain = [boxes[t]["id"] for t in ("input", "0", "1", "2", "output")]
    assert [(a, b) for a, b, _ in edges] == list(zip(chain, chain[1:]))
    assert all(e["color"] == LIVE_EDGE for _, _, e in edges)
    # fc1: 8 nonzero of 12, 4 effective (unit 0's row); its 3 output units: 1 alive, 1 dead each way
    lab = boxes["0"]["label"].split("\n")
    assert lab[1] == "Linear · 1×3"
    assert lab[2] == "direct 33.33% · effective 66.67%"
    assert lab[3] == "alive 1/3 units · 1 sees no input · 1 reaches no output"
    assert boxes["0"]["fillcolor"] == boxes["1"]["fillcolor"] == alive_colour(1 / 3)
    # fc2: 4 nonzero of 6, 2 effective; both outputs alive
    assert boxes["2"]["label"].split("\n")[2] == "direct 33.33% · effective 66.67%"
    assert boxes["2"]["fillcolor"] == alive_colour(1.0)
    assert "COLLAPSED" not in to_dot(res).source


def test_fully_pruned_middle_layer_is_the_cut():
    m = nn.Sequential(nn.Linear(4, 3), nn.ReLU(), nn.Linear(3, 3), nn.ReLU(), nn.Linear(3, 2))
    with torch.no_grad():
        m[2].weight.zero_()
    res = connectome.analyze(m, input_shape=(1, 4))
    source = to_dot(res).source
    nodes, edges = parse(source)
    boxes = by_title(nodes)
    cut = [k for k, a in nodes.items() if a["label"].startswith("✂ ")]
    assert cut == [boxes["2"]["id"]]
    assert boxes["2"]["color"] == CUT_BORDER and boxes["2"]["penwidth"] == "4"
    cut_edges = [(a, b) for a, b, e in edges if e["color"] == CUT]
    assert cut_edges == [(boxes["1"]["id"], boxes["2"]["id"])]
    assert all(e["color"] == DEAD_EDGE for a, b, e in edges if (a, b) not in cut_edges)
    # a collapsed network has no alive unit anywhere: every box is on the dead end of the scale
    assert {boxes[t]["fillcolor"] for t in ("0", "1", "2", "3", "4")} == {alive_colour(0.0)}
    assert "COLLAPSED" in source


class _Branches(nn.Module):
    """A residual add and a concat: both inputs of each must be drawn."""

    def __init__(self):
        super().__init__()
        self.a = nn.Conv2d(2, 2, 3, padding=1)
        self.b = nn.Conv2d(2, 2, 1)
        self.c = nn.Conv2d(4, 1, 1)

    def forward(self, x):
        y = self.a(x) + x
        return self.c(torch.cat([y, self.b(x)], 1))


def test_residual_and_concat_edges_are_drawn():
    res = connectome.analyze(_Branches(), input_shape=(1, 2, 5, 5))
    nodes, edges = parse(to_dot(res).source)
    boxes = by_title(nodes)
    into = lambda t: sorted(nodes[a]["label"].split("\n")[0] for a, b, _ in edges if b == boxes[t]["id"])
    assert into("add") == ["a", "input"]
    assert into("cat") == ["add", "b"]
    assert len(edges) == 8       # x->a, x->add, a->add, x->b, add->cat, b->cat, cat->c, c->output


def test_depth_groups_modules_and_keeps_their_stats():
    m = torchvision.models.resnet18()
    res = connectome.analyze(m, input_shape=(1, 3, 32, 32))
    nodes, edges = parse(to_dot(res, depth=1).source)
    titles = [a["label"].split("\n")[0] for a in nodes.values()]
    assert titles == ["input", "conv1", "bn1", "relu", "maxpool", "layer1", "layer2", "layer3", "layer4", "avgpool",
                      "flatten", "fc", "output"]
    layer1 = by_title(nodes)["layer1"]["label"].split("\n")
    assert layer1[1] == "Sequential · 1×64×8×8"
    assert len(edges) == 12


def test_fold_resnet50_one_box_per_block_type_per_stage():
    m = torchvision.models.resnet50()
    res = connectome.analyze(m, input_shape=(1, 3, 64, 64))
    plain, _ = parse(to_dot(res).source)
    nodes, edges = parse(to_dot(res, fold=True).source)
    boxes = by_title(nodes)
    for k, n in zip((1, 2, 3, 4), (3, 4, 6, 3)):
        stage = sorted(t for t in boxes if t.startswith(f"layer{k}."))
        assert stage == [f"layer{k}.0", f"layer{k}.1–{n - 1}"]
        assert boxes[f"layer{k}.0"]["label"].split("\n")[1].startswith("Bottleneck · ")
        assert boxes[f"layer{k}.1–{n - 1}"]["label"].split("\n")[1].startswith(f"Bottleneck × {n - 1} · ")
        assert boxes[f"layer{k}.1–{n - 1}"]["peripheries"] == "2"
    assert len(nodes) == 17 < len(plain)
    assert len(edges) == 16


def test_fold_never_hides_a_collapsed_block():
    m = torchvision.models.resnet50()
    with torch.no_grad():
        m.layer3[2].conv2.weight.zero_()           # kills that block's residual branch only
    res = connectome.analyze(m, input_shape=(1, 3, 64, 64))
    assert not res.collapsed
    boxes = by_title(parse(to_dot(res, fold=True).source)[0])
    assert sorted(t for t in boxes if t.startswith("layer3.")) == ["layer3.0", "layer3.1", "layer3.2", "layer3.3–5"]
    assert boxes["layer3.2"]["penwidth"] == "4"


def test_export_graph_is_drawn_per_module():
    m = torchvision.models.resnet18()
    res = connectome.analyze(m, input_shape=(1, 3, 32, 32), tracer="export")
    boxes = by_title(parse(to_dot(res, fold=True).source)[0])
    assert "layer1.0–1" in boxes and "layer2.0" in boxes and "conv1" in boxes


def test_bad_depth_is_refused():
    res = connectome.analyze(_mlp(), input_shape=(1, 4))
    with pytest.raises(ValueError, match="depth"):
        to_dot(res, depth=0)
