"""Every registered lowering rule is exercised, under every tracer, and keeps the soundness property."""
import pytest
import torch

from connectome.analysis import Analyzer
from connectome.graph.lower import RULES, lower
from connectome.graph.lower.base import rule
from connectome.io.masks import MaskSource
from corpus import CORPUS
from oracle import random_masks
from soundness import apply_masks, zero_additive

TRACERS = ["fx", "export", "export-core"]
USED: set = set()


@pytest.mark.parametrize("tracer", TRACERS)
@pytest.mark.parametrize("name", list(CORPUS))
def test_corpus_is_sound_and_fully_supported(name, tracer):
    factory, shape = CORPUS[name]
    torch.manual_seed(0)
    base = zero_additive(factory())
    model = apply_masks(base, random_masks(base, 0.5, seed=4))
    analyzer = Analyzer(model, input_shape=shape, tracer=tracer)
    assert analyzer.traced.tracer == tracer
    graph = lower(analyzer.traced, MaskSource(model))
    USED.update(fn for fn in graph.rule_of.values() if fn is not None)
    res = analyzer.run()
    assert res.unsupported_ops == []
    x = torch.randn(shape)
    with torch.no_grad():
        before, after = model(x), apply_masks(model, res.effective_masks)(x)
    assert torch.equal(before, after)


@pytest.mark.parametrize("name", list(CORPUS))
def test_tracers_agree(name):
    factory, shape = CORPUS[name]
    torch.manual_seed(0)
    model = factory().eval()
    results = [Analyzer(model, input_shape=shape, tracer=t).run() for t in TRACERS]
    for r in results[1:]:
        assert r.params_effective == results[0].params_effective


def test_every_rule_is_exercised():
    if len(USED) == 0:
        pytest.skip("run with the corpus tests")
    unused = {f"{fn.__module__}.{fn.__name__}" for fn in set(RULES.values()) - USED}
    assert not unused, f"rules no corpus module reaches: {sorted(unused)}"


def test_duplicate_registration_is_an_error():
    with pytest.raises(RuntimeError, match="duplicate"):
        rule(torch.nn.Linear)(lambda ctx: None)
