"""Loading checkpoints written by the real APIs: the masks found equal the masks written."""
import os

import pytest
import torch
import torch.nn.utils.prune as prune
from torch import nn

import connectome
from connectome.io.checkpoint import load
from connectome.models import lenet_300_100
from connectome.io.spec import SpecError


def pruned_lenet(seed=0, amount=0.9):
    torch.manual_seed(seed)
    m = lenet_300_100()
    for mod in m.modules():
        if isinstance(mod, nn.Linear):
            prune.random_unstructured(mod, "weight", amount=amount)
    masks = {name + ".weight": mod.weight_mask.bool() & (mod.weight_orig != 0)
             for name, mod in m.named_modules() if hasattr(mod, "weight_mask")}
    return m, masks


def assert_masks(ck, expected):
    assert set(ck.masks) == set(expected)
    for k, v in expected.items():
        assert torch.equal(ck.masks[k], v), k
    res = connectome.analyze(ck.model, input_shape=(1, 1, 28, 28), masks=ck.masks)
    assert res.params_nonzero == sum(int(v.sum()) for v in expected.values())


def test_prune_form_state_dict(tmp_path):
    m, masks = pruned_lenet()
    path = tmp_path / "p.pt"
    torch.save(m.state_dict(), path)
    ck = load(str(path), arch="connectome:lenet_300_100")
    assert_masks(ck, masks)
    for name, mod in m.named_modules():   # weights are weight_orig * weight_mask
        if hasattr(mod, "weight_mask"):
            assert torch.equal(ck.model.get_submodule(name).weight, mod.weight_orig * mod.weight_mask)
    assert any("prune form" in n for n in ck.notes)


def test_safetensors_dataparallel_nested_and_compile_prefixes(tmp_path):
    from safetensors.torch import save_file
    m, masks = pruned_lenet(1)
    sd = {k: v.contiguous() for k, v in m.state_dict().items()}
    save_file(sd, str(tmp_path / "p.safetensors"))
    assert_masks(load(str(tmp_path / "p.safetensors"), arch="connectome:lenet_300_100"), masks)

    torch.save({"epoch": 3, "model_state_dict": nn.DataParallel(m).state_dict()}, tmp_path / "dp.pt")
    ck = load(str(tmp_path / "dp.pt"), arch="connectome:lenet_300_100")
    assert_masks(ck, masks)
    assert "stripped prefix 'module.'" in ck.notes and "weights nested under 'model_state_dict'" in ck.notes

    torch.save({"state_dict": torch.compile(m).state_dict()}, tmp_path / "c.pt")
    ck = load(str(tmp_path / "c.pt"), arch="connectome:lenet_300_100")
    assert_masks(ck, masks)
    assert "stripped prefix '_orig_mod.'" in ck.notes


def test_plain_state_dict_and_separate_mask_file(tmp_path):
    m, masks = pruned_lenet(2)
    for mod in m.modules():
        if hasattr(mod, "weight_mask"):
            prune.remove(mod, "weight")          # plain weights with zeros
    torch.save(m.state_dict(), tmp_path / "w.pt")
    ck = load(str(tmp_path / "w.pt"), arch="connectome:lenet_300_100")
    assert ck.masks == {}
    res = connectome.analyze(ck.model, input_shape=(1, 1, 28, 28))
    assert res.params_nonzero == sum(int(v.sum()) for v in masks.values())
    torch.save({k: v.float() for k, v in masks.items()}, tmp_path / "masks.pt")
    ck = load(str(tmp_path / "w.pt"), arch="connectome:lenet_300_100", masks=str(tmp_path / "masks.pt"))
    assert_masks(ck, masks)
    assert all(n == 0 for n in ck.disagree.values())


def test_mask_disagreeing_with_weight_is_counted(tmp_path):
    m = lenet_300_100()
    mask = torch.ones_like(m[1].weight)
    mask[0, :5] = 0      # masked out, but the stored weight stays nonzero
    torch.save({"1.weight": mask}, tmp_path / "m.pt")
    ck = load(arch=m, masks=str(tmp_path / "m.pt"))
    assert ck.disagree["1.weight"] == int((m[1].weight[0, :5] != 0).sum())
    assert not ck.masks["1.weight"][0, :5].any()


def test_whole_model_pickle_needs_trust(tmp_path):
    m, _ = pruned_lenet(3)
    torch.save(m, tmp_path / "whole.pt")
    with pytest.raises(SpecError, match="--trust"):
        load(str(tmp_path / "whole.pt"))
    ck = load(str(tmp_path / "whole.pt"), trust=True)
    assert isinstance(ck.model, nn.Sequential) and set(ck.masks) == set()


def test_input_files_are_not_modified(tmp_path):
    m, _ = pruned_lenet(4)
    path = tmp_path / "p.pt"
    torch.save(m.state_dict(), path)
    before, mtime = path.read_bytes(), os.stat(path).st_mtime_ns
    load(str(path), arch="connectome:lenet_300_100")
    assert path.read_bytes() == before and os.stat(path).st_mtime_ns == mtime
