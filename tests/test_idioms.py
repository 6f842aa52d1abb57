"""The idiom corpus (tests/idioms: 160+ small models of common PyTorch idioms) under every tracer.

Each entry is built, some of its units are killed, its additive parameters are zeroed, and every weight
the analysis calls ineffective is zeroed: the outputs must stay bit-identical (DESIGN.md's soundness
property), every key must name a parameter or a module's computed weight, and since units were killed,
some weights must be found ineffective.
"""
import pytest

from idioms.registry import IDIOMS, TRACERS, check

# torch.fx cannot trace these at all: item assignment on a proxy, torch.zeros or Tensor.expand with a size
# read off the input. auto falls back to torch.export for them.
FX_UNTRACEABLE = {"setitem_slice", "setitem_slice_iadd", "bool_index_setitem", "scatter_add_inplace",
                  "copy_into_zeros_buffer", "scatter_const_index", "mha_key_padding_mask", "kv_cache_constant_past",
                  "gather_const_index"}
# under an explicit fx tracer, torch.nn's Transformer layers are kept whole (reported as unsupported, all
# to all: sound but blind); auto sees inside them through torch.export
FX_OPAQUE = {"register_tokens", "encoder_layer_post_norm", "encoder_layer_pre_norm", "transformer_encoder_stack",
             "decoder_layer_post_norm", "decoder_layer_pre_norm", "detr_object_queries"}


@pytest.mark.parametrize("tracer", TRACERS)
@pytest.mark.parametrize("name", sorted(IDIOMS))
def test_idiom_is_sound_and_finds_the_killed_units(name, tracer):
    idiom = IDIOMS[name]
    if tracer not in idiom.tracers:
        pytest.skip(f"{name} is not traceable with {tracer} (transformers 5 dropped torch.fx)")
    row = check(idiom, tracer)
    if row["error"] is not None:
        assert tracer == "fx" and name in FX_UNTRACEABLE and "torch.fx could not trace" in row["error"], row["error"]
        return
    assert name not in FX_UNTRACEABLE or tracer != "fx", "fx traces it now: take it off FX_UNTRACEABLE"
    assert row["sound"], f"zeroing these changes the outputs: {row['culprits']}"
    assert row["bad_keys"] == []
    assert row["collapsed"] == (row["params_effective"] == 0)
    if tracer == "fx" and name in FX_OPAQUE:
        assert row["unsupported"] > 0
    else:
        assert row["ineffective_found"], "units were killed, yet every nonzero weight is called effective"


def test_corpus_covers_the_families():
    families = {}
    for idiom in IDIOMS.values():
        families[idiom.family] = families.get(idiom.family, 0) + 1
    assert len(IDIOMS) >= 100
    assert {"shared", "param", "inplace", "const"} <= set(families) and min(families.values()) >= 5
