"""The unit diagram's DOT text: unit states, effective vs faint edges, grouping, windows, the size limit."""
import re

import pytest
import torch
from torch import nn

import connectome
from connectome.models import lenet_300_100
from connectome.render import to_dot
from connectome.render.style import DEAD_EDGE, LIVE_EDGE, UNIT_COLOURS
from dotparse import parse
from handnets import three_state_mlp


def _clusters(source: str) -> list[str]:
    return re.findall(r'subgraph cluster_s\d+ \{ label="([^"]*)"', source)


def _hand() -> nn.Module:
    return three_state_mlp(3, 1)


def test_hand_network_unit_states_and_edges():
    res = connectome.analyze(_hand(), input_shape=(1, 3))
    nodes, edges = parse(to_dot(res, level="unit", all_units=True).source)
    units = {k: a for k, a in nodes.items() if a.get("shape") == "circle"}
    assert len(units) == 3 + 3 + 1
    colour = {k: a["fillcolor"] for k, a in units.items()}
    assert colour["s1u0"] == UNIT_COLOURS["alive"]
    assert colour["s1u1"] == UNIT_COLOURS["dead to outputs"]
    assert colour["s1u2"] == UNIT_COLOURS["dead from inputs"]
    assert colour["s0u0"] == colour["s2u0"] == UNIT_COLOURS["alive"]
    solid = sorted((a, b) for a, b, e in edges if e["color"] == LIVE_EDGE)
    faint = sorted((a, b) for a, b, e in edges if e["color"] == DEAD_EDGE)
    assert solid == [("s0u0", "s1u0"), ("s0u1", "s1u0"), ("s0u2", "s1u0"), ("s1u0", "s2u0")]
    assert faint == [("s0u0", "s1u1"), ("s0u1", "s1u1"), ("s0u2", "s1u1"), ("s1u2", "s2u0")]


def test_units_without_effective_weights_are_grouped_by_state():
    res = connectome.analyze(_hand(), input_shape=(1, 3))
    nodes, edges = parse(to_dot(res, level="unit").source)
    groups = {k: a for k, a in nodes.items() if a.get("shape") == "box"}
    assert set(groups) == {"s1g1", "s1g2"}
    assert groups["s1g2"]["label"] == "1 unit\ndead to outputs"
    assert groups["s1g1"]["label"] == "1 unit\ndead from inputs"
    assert len(edges) == 8


def test_grouped_conv_connects_units_within_groups_only():
    m = nn.Sequential(nn.Conv2d(4, 4, 3, padding=1, groups=2))
    res = connectome.analyze(m, input_shape=(1, 4, 6, 6))
    _, edges = parse(to_dot(res, level="unit").source)
    pairs = sorted((int(a[3:]), int(b[3:])) for a, b, _ in edges)
    assert pairs == [(i, o) for i in range(4) for o in range(4) if i // 2 == o // 2]


def test_channelwise_ops_are_seen_through_and_reshapes_start_a_column():
    m = nn.Sequential(nn.Linear(4, 3), nn.ReLU(), nn.BatchNorm1d(3), nn.Dropout(), nn.Linear(3, 2)).eval()
    res = connectome.analyze(m, input_shape=(2, 4))
    assert len(_clusters(to_dot(res, level="unit").source)) == 3
    cnn = nn.Sequential(nn.Conv2d(1, 2, 3), nn.ReLU(), nn.MaxPool2d(2), nn.Conv2d(2, 2, 1), nn.Flatten(),
                        nn.Linear(2 * 3 * 3, 2))
    source = to_dot(connectome.analyze(cnn, input_shape=(1, 1, 8, 8)), level="unit").source
    assert _clusters(source) == ["input · input\\n1 units", "0 · Conv2d\\n2 units", "3 · Conv2d\\n2 units",
                                 "4 · Flatten\\n18 units", "5 · Linear\\n2 units"]
    feeds = [e for e in parse(source)[1] if e[2].get("style") == "dashed"]
    assert len(feeds) == 1 and feeds[0][2]["ltail"] == "cluster_s2" and feeds[0][2]["lhead"] == "cluster_s3"


def _lenet_random(compression: float, seed: int) -> nn.Module:
    torch.manual_seed(seed)
    m = lenet_300_100()
    with torch.no_grad():
        for layer in m:
            if isinstance(layer, nn.Linear):
                layer.weight.mul_(torch.rand_like(layer.weight) < 1 / compression)
    return m


def test_lenet_at_1000x_is_a_small_readable_picture():
    res = connectome.analyze(_lenet_random(1000, 0), input_shape=(1, 1, 28, 28))
    d = to_dot(res, level="unit")
    nodes, edges = parse(d.source)
    assert d.notes == []
    assert len(nodes) <= 40
    effective = sum(int(m.sum()) for m in res.effective_masks.values())
    assert effective > 0
    assert sum(e["color"] == LIVE_EDGE for _, _, e in edges) == effective   # one edge per effective weight
    assert all(a["fillcolor"] == UNIT_COLOURS["alive"] for a in nodes.values() if a.get("shape") == "circle")


def test_too_large_window_falls_back_to_one_node_per_column():
    res = connectome.analyze(_lenet_random(10, 0), input_shape=(1, 1, 28, 28))
    d = to_dot(res, level="unit")
    assert len(d.notes) == 1 and "too many to read" in d.notes[0] and "--layers" in d.notes[0]
    nodes, edges = parse(d.source)
    assert sorted(nodes) == ["s0", "s1", "s2", "s3"]
    labels = [e["label"] for _, _, e in edges]
    row = {r["name"]: r for r in res.layers}["3"]
    assert f"3: {row['effective']:,} of {row['nonzero']:,} effective" in labels


def test_layer_window_by_pattern():
    res = connectome.analyze(_lenet_random(10, 0), input_shape=(1, 1, 28, 28))
    source = to_dot(res, level="unit", layers="3,5", all_units=True, max_units=1000).source
    assert _clusters(source) == ["1 · Linear\\n300 units", "3 · Linear\\n100 units", "5 · Linear\\n10 units"]
    with pytest.raises(ValueError, match="no linear or conv layer matches --layers 'fc\\*'; layers are: 1, 3, 5"):
        to_dot(res, level="unit", layers="fc*")
