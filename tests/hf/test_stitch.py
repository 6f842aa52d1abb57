"""A stitched trace of a deep decoder stack analyses exactly as the trace of the whole model."""
from __future__ import annotations

import pytest
import torch

from connectome.analysis import Analyzer
from connectome.hf.stitch import StackAnalyzer, stitched
from connectome.hf.skeleton import build_model, placeholders

from .families import configs

pytest.importorskip("transformers")

LAYERS = 5


def _deep(family: str, seed: int = 0):
    import transformers

    cfg = configs()[family]
    key = "n_layer" if family == "gpt2" else "num_hidden_layers"
    d = cfg.to_dict()
    d.pop("layer_types", None)  # made again for the new depth
    cfg = cfg.__class__(**{**d, key: LAYERS})
    cfg._attn_implementation = "eager"
    torch.manual_seed(seed)
    model = transformers.AutoModelForCausalLM.from_config(cfg).eval()
    gen = torch.Generator().manual_seed(seed)
    masks = {}
    for name, w in model.named_parameters():
        if w.dim() >= 2:  # sparse enough that units die in several layers, differently in each
            masks[name] = torch.rand(w.shape, generator=gen) < (0.9 if "embed" in name or "wte" in name else 0.12)
    return model, masks


@pytest.mark.parametrize("family", ["llama", "mistral", "qwen2", "gpt2", "mixtral"])
def test_stitched_equals_whole(family):
    model, masks = _deep(family)
    whole = Analyzer(model, input_shape=(1, 8), input_dtype=torch.long, tracer="export")
    fast = StackAnalyzer(model, input_shape=(1, 8), input_dtype=torch.long, tracer="export")
    assert any("traced as 3" in n for n in fast.notes)
    assert len(list(fast.traced.graph.nodes)) == len(list(whole.traced.graph.nodes))
    a, b = whole.run(masks), fast.run(masks)
    assert a.effective_masks.keys() == b.effective_masks.keys()
    for name in a.effective_masks:
        assert torch.equal(a.effective_masks[name], b.effective_masks[name]), name
    assert (a.layers, a.collapsed, a.unsupported_ops) == (b.layers, b.collapsed, b.unsupported_ops)
    dead = sum(int((~e.any(0)).sum()) for n, e in a.effective_masks.items() if e.dim() == 2)
    assert dead > 0  # the masks kill units, so equality says something


def test_a_stack_of_unlike_layers_is_traced_whole():
    import transformers

    cfg = configs()["gemma2"]  # sliding-window layers alternate with full ones
    d = cfg.to_dict()
    d.pop("layer_types", None)
    cfg = cfg.__class__(**{**d, "num_hidden_layers": LAYERS, "sliding_window": 4})
    assert len(set(cfg.layer_types)) == 2
    model = placeholders(transformers.AutoModelForCausalLM.from_config(cfg).eval())

    def make(k):
        return placeholders(build_model({**cfg.to_dict(), "num_hidden_layers": k,
                                         "layer_types": cfg.layer_types[:k]}))

    assert stitched(model, make, input_shape=(1, 8), input_dtype=torch.long) is None
