"""The unit graph as data: ``unit_matrices`` and ``to_networkx`` against references computed by hand or
from the masks alone (boolean reachability), never from the walk they are built on."""
import networkx as nx
import numpy as np
import pytest
import torch
import torch.nn.utils.prune as prune
from torch import nn

import connectome
from connectome.models import MODELS
from connectome.network import STATUSES, to_networkx, unit_matrices


def _edges(g: nx.DiGraph, kind: str, **attrs) -> set:
    return {(u, v) for u, v, d in g.edges(data=True)
            if d["kind"] == kind and all(d.get(k) == x for k, x in attrs.items())}


def _on_a_path(g: nx.DiGraph) -> set:
    """Units on some path from an input unit to an output unit (networkx alone)."""
    ins = [n for n in g if n[0] in g.graph["inputs"]]
    outs = [n for n in g if n[0] in g.graph["outputs"]]
    reach = set(ins).union(*(nx.descendants(g, n) for n in ins))
    back = set(outs).union(*(nx.ancestors(g, n) for n in outs))
    return reach & back


# ---- acceptance: LeNet-300-100, randomly pruned ----------------------------------------------------------
@pytest.mark.parametrize("compression", [1000, 100, 30])
def test_lenet_300_100_edges_are_the_effective_weights_and_paths_are_the_alive_units(compression):
    torch.manual_seed(0)
    model = MODELS["lenet_300_100"]()
    layers = [model[i] for i in (1, 3, 5)]
    prune.global_unstructured([(m, "weight") for m in layers], pruning_method=prune.RandomUnstructured,
                              amount=1 - 1 / compression)
    res = connectome.analyze(model, input_shape=(1, 1, 28, 28))
    g = res.to_networkx()
    assert res.params_effective > 0      # seed 0 leaves a path even at 1000x: the test is not vacuous

    # reference from the masks alone: alive-from-input forward, alive-to-output backward, per layer
    masks = [m.weight_mask.bool().numpy() for m in layers]
    fwd = [np.ones(784, bool)]
    for mk in masks:
        fwd.append((mk & fwd[-1][None, :]).any(1))
    bwd = [np.ones(10, bool)]
    for mk in reversed(masks):
        bwd.insert(0, (mk & bwd[0][:, None]).any(0))
    for k, (mk, key) in enumerate(zip(masks, ["1.weight", "3.weight", "5.weight"])):
        expected = mk & fwd[k][None, :] & bwd[k + 1][:, None]
        assert np.array_equal(res.effective_masks[key].numpy(), expected)
        edges = _edges(g, "weight", layer=key)
        assert {(u[1], v[1]) for u, v in edges} == {(i, o) for o, i in zip(*np.nonzero(expected))}
        assert all(g.nodes[u]["status"] == g.nodes[v]["status"] == "alive" for u, v in edges)
        matrix = res.unit_matrices()[key]
        assert matrix.nnz == len(edges) == int(expected.sum())

    assert len(_edges(g, "weight")) == res.params_effective      # and no other weight edges

    # networkx reachability agrees with the walk, unit by unit
    on_path = _on_a_path(g)
    assert all((n in on_path) == (g.nodes[n]["status"] == "alive") for n in g)
    for k, layer in enumerate(["1", "3", "5"]):
        tensor = next(n[0] for n, d in g.nodes(data=True) if d["layer"] == layer)   # the layer's output
        walk = res.units(layer)
        graph = np.array([(tensor, u) in on_path for u in range(len(fwd[k + 1]))])
        assert np.array_equal(graph, walk["alive_from_input"] & walk["alive_to_output"])
        assert np.array_equal(graph, fwd[k + 1] & bwd[k + 1])


@pytest.mark.parametrize("seed", range(3))
def test_lenet_5_weight_edges_and_paths_agree_with_the_walk(seed):
    # padded 5x5 convs, max pooling and a flatten: liveness varies with position inside a channel
    torch.manual_seed(seed)
    model = MODELS["lenet_5"]()
    with torch.no_grad():
        for p in (q for q in model.parameters() if q.dim() > 1):
            p.mul_(torch.rand_like(p) < 0.05)
    res = connectome.analyze(model, input_shape=(1, 1, 28, 28))
    g = res.to_networkx()
    for key, m in res.unit_matrices().items():
        assert {(u[1], v[1]) for u, v in _edges(g, "weight", layer=key)} == {(i, o) for o, i in zip(*m.nonzero())}
    on_path = _on_a_path(g)
    assert all((n in on_path) == (g.nodes[n]["status"] == "alive") for n in g)
    assert 0 < len(on_path) < g.number_of_nodes()


# ---- a tiny MLP, by hand ---------------------------------------------------------------------------------
class _Mlp(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc1, self.fc2, self.fc3 = nn.Linear(3, 4), nn.Linear(4, 3), nn.Linear(3, 2)
        with torch.no_grad():
            self.fc1.weight.copy_(torch.tensor([[1., -2., 0.], [0., 3., 0.], [0., 0., 4.], [0., 0., 0.]]))
            self.fc2.weight.copy_(torch.tensor([[.5, 0., 0., 1.], [0., -1.5, 0., 0.], [2., 0., 0., 0.]]))
            self.fc3.weight.copy_(torch.tensor([[1., 0., 0.], [0., -.25, 0.]]))

    def forward(self, x):
        return self.fc3(torch.relu(self.fc2(torch.relu(self.fc1(x)))))


def test_tiny_mlp_matrices_edges_and_statuses_by_hand():
    # hidden-1 unit 3 reads no input (biases do not count); unit 2 is read by nobody, so input 2 only
    # feeds a dead end; hidden-2 unit 2 is not read by fc3
    res = connectome.analyze(_Mlp(), input_shape=(1, 3))
    mats = {k: m.toarray().tolist() for k, m in unit_matrices(res).items()}
    assert mats == {"fc1.weight": [[1, 2, 0], [0, 3, 0], [0, 0, 0], [0, 0, 0]],
                    "fc2.weight": [[.5, 0, 0, 0], [0, 1.5, 0, 0], [0, 0, 0, 0]],
                    "fc3.weight": [[1, 0, 0], [0, .25, 0]]}
    g = to_networkx(res)
    weights = {(u, v): d["weight"] for u, v, d in g.edges(data=True) if d["kind"] == "weight"}
    assert weights == {(("x", 0), ("fc1", 0)): 1, (("x", 1), ("fc1", 0)): 2, (("x", 1), ("fc1", 1)): 3,
                       (("relu", 0), ("fc2", 0)): .5, (("relu", 1), ("fc2", 1)): 1.5,
                       (("relu_1", 0), ("fc3", 0)): 1, (("relu_1", 1), ("fc3", 1)): .25}
    assert _edges(g, "link") == {(("fc1", u), ("relu", u)) for u in range(4)} | \
        {(("fc2", u), ("relu_1", u)) for u in range(3)}
    status = {n: d["status"] for n, d in g.nodes(data=True)}
    a, dfi, dto = "alive", "dead-from-input", "dead-to-output"
    assert status == {("x", 0): a, ("x", 1): a, ("x", 2): dto,
                      **{(t, u): s for t in ("fc1", "relu") for u, s in enumerate([a, a, dto, dfi])},
                      **{(t, u): s for t in ("fc2", "relu_1") for u, s in enumerate([a, a, dto])},
                      ("fc3", 0): a, ("fc3", 1): a}
    assert set(status.values()) <= set(STATUSES)
    assert g.graph["inputs"] == ["x"] and g.graph["outputs"] == ["fc3"]
    assert g.nodes["fc2", 0]["layer"] == "fc2" and g.nodes["fc2", 0]["kind"] == "linear"


# ---- grouped convs and a flatten ---------------------------------------------------------------------------
class _GroupedNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(4, 6, 3, groups=2)       # valid convs: every tap reads every output position
        self.conv2 = nn.Conv2d(6, 6, 1, groups=3)
        self.fc = nn.Linear(6 * 4 * 4, 5)

    def forward(self, x):
        return self.fc(torch.flatten(torch.relu(self.conv2(torch.relu(self.conv1(x)))), 1))


def _manual(weight: torch.Tensor, eff: torch.Tensor, groups: int) -> np.ndarray:
    """Unit matrix of a conv weight, one entry at a time."""
    out, ig = weight.shape[:2]
    og = out // groups
    m = np.zeros((out, ig * groups))
    for o in range(out):
        for i in range(ig * groups):
            if i // ig == o // og:
                m[o, i] = float((weight[o, i % ig].abs() * eff[o, i % ig]).sum())
    return m


def test_grouped_conv_and_flatten_matrices_and_links():
    torch.manual_seed(1)
    model = _GroupedNet()
    with torch.no_grad():
        for p in (model.conv1.weight, model.conv2.weight, model.fc.weight):
            p.mul_(torch.rand_like(p) < 0.4)
        model.conv2.weight[3] = 0                        # channel 3 of conv2 reads nothing
    res = connectome.analyze(model, input_shape=(1, 4, 6, 6))
    mats = res.unit_matrices()
    assert {k: m.shape for k, m in mats.items()} == {"conv1.weight": (6, 4), "conv2.weight": (6, 6),
                                                     "fc.weight": (5, 96)}
    for row in res.layers:
        assert mats[row["name"] + ".weight"].shape == (row["units_out"], row["units_in"])
    for name, groups in (("conv1", 2), ("conv2", 3)):
        w, eff = getattr(model, name).weight.detach(), res.effective_masks[name + ".weight"]
        assert np.allclose(mats[name + ".weight"].toarray(), _manual(w, eff, groups))
    fc_eff = res.effective_masks["fc.weight"]
    assert np.allclose(mats["fc.weight"].toarray(), (model.fc.weight.detach().abs() * fc_eff).numpy())

    g = res.to_networkx()
    for name in ("conv1", "conv2", "fc"):
        m = mats[name + ".weight"]
        edges = {(u[1], v[1]): d["weight"] for u, v, d in g.edges(data=True) if d.get("layer") == name + ".weight"}
        assert edges == pytest.approx({(i, o): m[o, i] for o, i in zip(*m.nonzero())})
    flat = {(u, v) for u, v, d in g.edges(data=True) if d["op"] == "flatten"}
    assert flat == {(("relu_1", f // 16), ("flatten", f)) for f in range(96)}   # feature f is channel f // (4*4)
    assert g.nodes["conv2", 3]["status"] in ("dead-from-input", "dead")
    on_path = _on_a_path(g)
    assert all((n in on_path) == (g.nodes[n]["status"] == "alive") for n in g)


# ---- residual adds, pooling ----------------------------------------------------------------------------------
class _Residual(nn.Module):
    def __init__(self):
        super().__init__()
        self.stem, self.conv, self.bn = nn.Conv2d(3, 4, 3, padding=1), nn.Conv2d(4, 4, 3, padding=1), nn.BatchNorm2d(4)
        self.head = nn.Linear(4, 2)

    def forward(self, x):
        y = torch.relu(self.stem(x))
        y = torch.relu(self.bn(self.conv(y)) + y)
        return self.head(torch.flatten(nn.functional.adaptive_avg_pool2d(y, 1), 1))


@pytest.mark.parametrize("seed", range(4))
def test_residual_links_are_per_channel_and_paths_are_the_alive_units(seed):
    torch.manual_seed(seed)
    model = _Residual().eval()
    with torch.no_grad():
        for p in (model.stem.weight, model.conv.weight, model.head.weight):
            p.mul_(torch.rand_like(p) < 0.15)
    res = connectome.analyze(model, input_shape=(1, 3, 8, 8))
    g = res.to_networkx()
    add = {(u, v) for u, v, d in g.edges(data=True) if d["op"] == "add"}
    assert add == {((t, c), ("add", c)) for t in ("bn", "relu") for c in range(4)}
    on_path = _on_a_path(g)
    assert all((n in on_path) == (g.nodes[n]["status"] == "alive") for n in g)
    for key, m in res.unit_matrices().items():
        assert len(_edges(g, "weight", layer=key)) == m.nnz


# ---- layouts of the other kinds ----------------------------------------------------------------------------------
class _Others(nn.Module):
    def __init__(self):
        super().__init__()
        self.emb, self.rnn = nn.Embedding(7, 3), nn.LSTM(3, 2, batch_first=True)
        self.up = nn.ConvTranspose1d(2, 4, 2, groups=2)

    def forward(self, ids):
        return self.up(self.rnn(self.emb(ids))[0].transpose(1, 2))


def test_embedding_recurrent_and_transposed_conv_layouts():
    torch.manual_seed(0)
    model = _Others()
    with torch.no_grad():
        model.emb.weight[2:4] = 0
        model.rnn.weight_ih_l0[:, 1] = 0
    res = connectome.analyze(model, input_shape=(1, 5), input_dtype=torch.long)
    mats = res.unit_matrices()
    val = {k: (dict(model.named_parameters())[k].detach().abs() * e).numpy() for k, e in res.effective_masks.items()}
    assert np.allclose(mats["emb.weight"].toarray(), val["emb.weight"].T)              # (dim, vocab)
    for key in ("rnn.weight_ih_l0", "rnn.weight_hh_l0"):                               # 4 gates of 2 rows
        assert np.allclose(mats[key].toarray(), val[key].reshape(4, 2, -1).sum(0))
    up = np.zeros((4, 2))                                  # (in 2, out/groups 2, k): input i is group i
    for i in range(2):
        up[2 * i: 2 * i + 2, i] = val["up.weight"][i].sum(-1)
    assert np.allclose(mats["up.weight"].toarray(), up)
    g = res.to_networkx()   # every unit gets a node, whatever op computes it
    assert {n[0] for n in g} >= {"ids", "emb", "up"} and all(d["kind"] == "link" for *_, d in g.edges(data=True)
                                                               if d["op"] in ("emb", "rnn"))
