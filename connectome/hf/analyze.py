"""``connectome.analyze`` of a model folder, read one tensor at a time (eagerly, or lazily: no mask kept).

Examples
--------
>>> import tempfile, transformers
>>> cfg = transformers.LlamaConfig(vocab_size=32, hidden_size=8, intermediate_size=16, num_hidden_layers=1,
...                                num_attention_heads=2, num_key_value_heads=1, max_position_embeddings=16)
>>> d = tempfile.mkdtemp(); transformers.LlamaForCausalLM(cfg).save_pretrained(d)
>>> res, loaded = analyze_folder(d, progress=False)
>>> res.params_total == sum(m.numel() for m in loaded.masks.values()), res.collapsed
(True, False)
"""

from __future__ import annotations

from typing import Any

import torch

from .proxy import analyze_lazily
from .stitch import StackAnalyzer
from .stream import load_folder

__all__ = ["analyze_folder"]


def analyze_folder(
    spec: str, seq_len: int = 8, progress: bool | None = None, tracer: str = "auto", lazy: bool = False, **kw: Any
):
    """``connectome.analyze`` of a model folder, read one tensor at a time: ``(Analysis, Loaded)``.

    The input is ``seq_len`` token ids (the unit graph does not depend on their values). With ``lazy``,
    no mask is kept after the read (:mod:`connectome.hf.proxy`): the same result in memory that grows
    with the largest tensor; ``Analysis.masks`` then holds stand-ins, not masks.
    """

    def trace(model: torch.nn.Module) -> StackAnalyzer:  # while the weights are read
        return StackAnalyzer(model, input_shape=(1, seq_len), input_dtype=torch.long, tracer=tracer, **kw)

    loaded = load_folder(spec, progress, keep_masks=not lazy, during=trace)
    analyzer = loaded.made
    if lazy:
        res, loaded.exact = analyze_lazily(loaded, analyzer)
        return res, loaded
    return analyzer.run(loaded.masks), loaded
