"""Soundness on models with normalisation and attention, where the path-count oracle does not apply."""
import pytest
import torch

import connectome
from oracle import random_masks
from soundness import apply_masks, fill_zero_weights, outputs, zero_additive

MODELS = {"vit_b_16": 224, "swin_t": 64, "maxvit_t": 224, "convnext_tiny": 64}


@pytest.mark.parametrize("name", list(MODELS))
def test_zeroing_ineffective_weights_leaves_outputs_unchanged(name):
    tv = pytest.importorskip("torchvision")
    torch.manual_seed(0)
    size = MODELS[name]
    base = zero_additive(fill_zero_weights(tv.models.get_model(name, weights=None)))
    x = torch.randn(2, 3, size, size)
    for sparsity in (0.5, 0.99):
        model = apply_masks(base, random_masks(base, sparsity, seed=3))
        res = connectome.analyze(model, input_shape=(1, 3, size, size))
        assert res.unsupported_ops == []
        assert torch.equal(outputs(model, x), outputs(apply_masks(model, res.effective_masks), x))


@pytest.mark.parametrize("name", ["vit_b_16", "swin_t"])
def test_killed_units_show_ineffective_weights(name):
    tv = pytest.importorskip("torchvision")
    size = MODELS[name]
    model = fill_zero_weights(tv.models.get_model(name, weights=None))
    fc2 = next(m for n, m in model.named_modules()
               if "mlp" in n and isinstance(m, torch.nn.Linear) and m.out_features < m.in_features)
    with torch.no_grad():
        fc2.weight[:, :5] = 0      # five hidden units of the first MLP reach no output any more
    res = connectome.analyze(model, input_shape=(1, 3, size, size))
    assert 0 < res.params_effective < res.params_nonzero
    # their incoming weights are the ineffective ones (a hidden unit with no input would not do: a
    # class token makes its LayerNorm's dead rows nonzero, so it may carry a constant to the next norm)
    fc1 = next(m for n, m in model.named_modules()
               if "mlp" in n and isinstance(m, torch.nn.Linear) and m.out_features > m.in_features)
    assert res.params_nonzero - res.params_effective >= 5 * fc1.in_features


def test_torch_nn_transformer_goes_through_export_and_is_sound():
    from torch import nn
    torch.manual_seed(0)
    model = nn.Sequential(nn.Embedding(50, 8), nn.TransformerEncoderLayer(8, 2, 16, batch_first=True, dropout=0.0),
                          nn.Linear(8, 3)).eval()
    base = zero_additive(model)
    pruned = apply_masks(base, random_masks(base, 0.7, seed=1))
    res = connectome.analyze(pruned, input_shape=(1, 6), input_dtype=torch.long)
    assert res.tracer == "export" and res.unsupported_ops == []   # fx would keep the layer whole
    assert res.params_effective < res.params_nonzero
    x = torch.randint(0, 50, (2, 6))
    assert torch.equal(outputs(pruned, x), outputs(apply_masks(pruned, res.effective_masks), x))


def test_swin3d_analyses_through_empty_slices_and_is_sound():
    tv = pytest.importorskip("torchvision")
    torch.manual_seed(0)
    base = zero_additive(tv.models.video.swin3d_t(weights=None))   # its window padding makes empty slices
    model = apply_masks(base, random_masks(base, 0.9, seed=2))
    fc = next(m for n, m in model.named_modules() if "mlp" in n and isinstance(m, torch.nn.Linear))
    with torch.no_grad():
        fc.weight[:5] = 0          # five hidden units of the first MLP see no input
    shape = (1, 3, 4, 32, 32)
    res = connectome.analyze(model, input_shape=shape)
    assert res.unsupported_ops == [] and 0 < res.params_effective < res.params_nonzero
    x = torch.randn(shape)
    assert torch.equal(outputs(model, x), outputs(apply_masks(model, res.effective_masks), x))


@pytest.mark.parametrize("tracer", ["fx", "export"])
def test_swin_v2_position_bias_mlp_stays_effective(tracer):
    """V2's position bias is computed by a small MLP from constants and shapes every attention score:
    its weights make a constant that meets live signal, so zeroing them would change the outputs."""
    sw = pytest.importorskip("torchvision.models.swin_transformer")
    torch.manual_seed(0)
    model = sw.SwinTransformer([4, 4], 16, [2, 2], [2, 4], [4, 4], block=sw.SwinTransformerBlockV2,
                               downsample_layer=sw.PatchMergingV2, num_classes=5)
    base = zero_additive(model)
    model = apply_masks(base, random_masks(base, 0.5, seed=0))
    res = connectome.analyze(model, input_shape=(1, 3, 24, 24), tracer=tracer)
    assert res.unsupported_ops == []
    assert res.effective_masks["features.1.0.attn.cpb_mlp.2.weight"].any()
    x = torch.randn(2, 3, 24, 24)
    assert torch.equal(outputs(model, x), outputs(apply_masks(model, res.effective_masks), x))
