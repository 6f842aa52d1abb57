"""EAST's weight sharing in the CIFAR-form ResNets: the parameter count by hand, gradients from every
block that uses a shared tensor, one-line refusal where nothing would be shared, and the analysis sound on
a weight-shared DyReLU ResNet-34 under both tracers."""
import copy

import pytest
import torch
from torch import nn

import connectome
from connectome.resnet import ShareError, resnet18_cifar, resnet34_cifar, resnet50_cifar
from connectome.train.east.run import weight_counts
from connectome.train.east import DyReLU
from soundness import apply_masks, zero_additive


def _weights(m):
    return sum(p.numel() for p in m.parameters() if p.dim() > 1)


def test_sharing_removes_exactly_the_reused_convolutions():
    plain, shared = resnet34_cifar(width=8), resnet34_cifar(width=8, share=2)
    # blocks 2.. of each stage (1, 2, 4 and 1 of them) reuse block 1's two 3x3 convolutions
    reused = 2 * 9 * (1 * 8 * 8 + 2 * 16 * 16 + 4 * 32 * 32 + 1 * 64 * 64)
    assert _weights(plain) - _weights(shared) == reused == weight_counts(shared)[1]
    assert weight_counts(shared)[0] == _weights(shared)
    assert shared.layer3[5].conv1.weight is shared.layer3[1].conv1.weight
    assert shared.layer3[1].conv1.weight is not shared.layer3[0].conv1.weight   # block 0 keeps its own
    scalars = [p for n, p in shared.named_parameters() if ".scales." in n]
    assert len(scalars) == 2 * 8 and all(float(s.detach()) == 1.0 for s in scalars)
    # ratio 3 on ResNet-50: blocks 3.. reuse block 2's three convolutions
    b50 = resnet50_cifar(width=4, share=3)
    assert b50.layer3[4].conv3.weight is b50.layer3[2].conv3.weight and len(b50.layer3[5].scales) == 3


def test_gradients_reach_the_shared_tensor_from_every_block():
    torch.manual_seed(0)
    m = resnet34_cifar(width=4, share=2).train()
    with torch.no_grad():
        for blk in m.layer3[2:]:
            for s in blk.scales:
                s.fill_(0.7)
    x, y = torch.randn(4, 3, 32, 32), torch.tensor([0, 1, 2, 3])
    # the same network with the tie undone: each use of the tensor gets its own copy
    untied = copy.deepcopy(m)
    for blk in untied.layer3[2:]:
        blk.conv1.weight = nn.Parameter(untied.layer3[1].conv1.weight.detach().clone())
    nn.functional.cross_entropy(m(x), y).backward()
    nn.functional.cross_entropy(untied(x), y).backward()
    uses = [untied.layer3[j].conv1.weight.grad for j in range(1, 6)]
    assert all(float(g.abs().sum()) > 0 for g in uses)
    assert torch.allclose(m.layer3[1].conv1.weight.grad, sum(uses), rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("build", [lambda: resnet18_cifar(width=4, share=2), lambda: resnet34_cifar(width=4, share=6)])
def test_sharing_where_no_block_would_share_is_refused(build):
    with pytest.raises(ShareError, match="no block would share"):
        build()


@pytest.mark.parametrize("tracer", ["fx", "export"])
def test_the_analysis_is_sound_on_a_weight_shared_dyrelu_resnet(tracer):
    torch.manual_seed(0)
    m = resnet34_cifar(width=4, act=DyReLU, share=2).eval()
    with torch.no_grad():
        m.layer2[1].conv2.weight[3] = 0       # a shared tensor: one output channel, in blocks 1, 2 and 3
        m.layer3[0].conv1.weight[:, :2] = 0
        m.layer3[0].bn1.weight[1] = 0         # a norm that silences one output channel of a convolution
        m.fc.weight[:, 5] = 0                 # a channel of the last activation reaches no output
    x = torch.randn(2, 3, 32, 32)
    res = connectome.analyze(m, x, tracer=tracer)
    base = zero_additive(m)
    with torch.no_grad():
        assert torch.equal(base(x), apply_masks(base, res.effective_masks)(x))
    row = next(r for r in res.layers if r["name"] == "layer2.1.conv1")
    assert row["uses"] == 3 and row["shared_with"] == ["layer2.2.conv1.weight", "layer2.3.conv1.weight"]
    params = dict(m.named_parameters())
    found = {k: int((~v & (params[k] != 0)).sum()) for k, v in res.effective_masks.items()}
    # the silenced channel's kernels (8 inputs, 2 of them zero already, 3x3) do nothing; every other
    # channel stays alive through the activations' b terms, which mix all channels
    assert found["layer3.0.conv1.weight"] == 6 * 9 and sum(found.values()) == 54


def test_the_command_line_refuses_sharing_in_one_line(tmp_path):
    from click.testing import CliRunner

    from connectome_cli.main import main
    r = CliRunner().invoke(main, ["train", "connectome:resnet18", "--arch-kwargs", "share=2,width=4", "--data",
                                  "fashion-mnist", "--epochs", "1", "--limit", "100", "-o", str(tmp_path / "r")])
    assert r.exit_code == 2 and r.stderr.strip().splitlines() == [
        "error: no block would share: every stage has at most 2 blocks; choose a deeper ResNet (resnet34, resnet50) "
        "or a smaller ratio"]
