"""Per decoder block of a language model: direct and effective sparsity, dead heads, neurons and experts.

Read from the effective masks, so "dead" means what the walk proved: zeroing it changes no output.

- A **dead attention head** is one whose slice of the output projection's input carries no effective
  weight: nothing it computes reaches the output (its value rows are dead, or its output columns
  are zero, or what follows is dead). A head whose query or key rows carry nothing still averages
  its values uniformly and is alive; such heads are counted as ``blind``.
- A **dead key/value head** (grouped-query attention) is one whose value rows carry nothing.
- A **dead MLP neuron** is an input column of the down projection with no effective weight (a row, for
  GPT-2's Conv1D, which stores the matrix transposed); a **dead expert** has no effective weight in its
  down projection.

Examples
--------
>>> split_heads(8, 2)
[(0, 4), (4, 8)]
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

import torch

__all__ = ["BlockRow", "blocks", "split_heads"]

_BLOCK = re.compile(r"^(.*?\.(?:layers|h|blocks|block|layer|decoder_layers)\.(\d+))\.")
_ATTN_OUT = ("o_proj", "out_proj", "attn.c_proj", "attention.dense", "self_attention.dense", "attention.wo")
_MLP_DOWN = ("down_proj", "mlp.c_proj", "fc2", "dense_4h_to_h", "w2", "mlp.wo")
_Q, _K, _V = ("q_proj", "query"), ("k_proj", "key"), ("v_proj", "value")


@dataclass
class BlockRow:
    name: str
    index: int
    params: int = 0
    nonzero: int = 0
    effective: int = 0
    heads: int = 0
    dead_heads: list[int] = field(default_factory=list)
    blind_heads: int = 0
    kv_heads: int = 0
    dead_kv_heads: list[int] = field(default_factory=list)
    neurons: int = 0
    dead_neurons: int = 0
    experts: int = 0
    dead_experts: list[int] = field(default_factory=list)

    @property
    def direct_sparsity(self) -> float:
        return 1 - self.nonzero / self.params if self.params else 0.0

    @property
    def effective_sparsity(self) -> float:
        return 1 - self.effective / self.params if self.params else 0.0

    def to_dict(self) -> dict[str, Any]:
        d = dict(self.__dict__)
        d["direct_sparsity"], d["effective_sparsity"] = self.direct_sparsity, self.effective_sparsity
        return d


def split_heads(width: int, heads: int) -> list[tuple[int, int]]:
    """Index ranges of ``heads`` equal slices of ``width``."""
    size = width // heads if heads else 0
    return [(h * size, (h + 1) * size) for h in range(heads)] if size else []


def _attn_shape(config: Any) -> tuple[int, int, int]:
    heads = getattr(config, "num_attention_heads", None) or getattr(config, "n_head", 0) or 0
    kv = getattr(config, "num_key_value_heads", None) or heads
    hidden = getattr(config, "hidden_size", None) or getattr(config, "n_embd", 0) or 0
    head_dim = getattr(config, "head_dim", None) or (hidden // heads if heads else 0)
    return int(heads), int(kv), int(head_dim)


def _any(e: torch.Tensor, dim: int | None = None) -> torch.Tensor:
    """``e.any(dim)`` reading one slice along each broadcast (stride 0) dimension: a lazily read
    layer's effective mask is a view "row keeps any AND column keeps any" of a few bytes."""
    if dim is not None and e.stride(dim) == 0:
        return e.select(dim, 0)
    small = e[tuple(slice(0, 1) if st == 0 and d != dim else slice(None) for d, st in enumerate(e.stride()))]
    if dim is None:
        return small.any()
    shape = e.shape[:dim] + e.shape[dim + 1 :]
    return small.any(dim).expand(shape)


def _find(names: list[str], prefix: str, ends: tuple[str, ...], suffix: str = ".weight") -> str | None:
    for end in ends:
        for n in names:
            if n.startswith(prefix) and n.endswith("." + end + suffix) and ".experts." not in n:
                return n
    return None


def blocks(res: Any, model: torch.nn.Module, config: Any) -> list[BlockRow]:
    """One :class:`BlockRow` per decoder block of the analysed ``model``, in order."""
    transposed = {f"{n}.weight" for n, m in model.named_modules() if type(m).__name__ == "Conv1D"}
    heads, kv, hd = _attn_shape(config)
    rows: dict[str, BlockRow] = {}
    for r in res.layers:
        m = _BLOCK.match(r["name"])
        if m is None:
            continue
        row = rows.setdefault(m.group(1), BlockRow(m.group(1), int(m.group(2))))
        row.params += r["numel"]
        row.nonzero += r["nonzero"]
        row.effective += r["effective"]
    eff = res.effective_masks
    names = list(eff)
    for prefix, row in rows.items():
        p = prefix + "."
        out = _find(names, p, _ATTN_OUT)
        if out is not None and heads and hd:
            e = eff[out]
            used = _any(e, 1) if out in transposed else _any(e, 0)  # per input feature of the projection
            row.heads = heads
            row.dead_heads = [h for h, (a, b) in enumerate(split_heads(heads * hd, heads)) if not bool(used[a:b].any())]
            q, k = _find(names, p, _Q), _find(names, p, _K)
            if q is not None and k is not None:
                q_rows, k_rows = _any(eff[q], 1), _any(eff[k], 1)
                per = heads // kv if kv else 1
                for h in range(heads):
                    g = h // per
                    sees = bool(q_rows[h * hd : (h + 1) * hd].any()) and bool(k_rows[g * hd : (g + 1) * hd].any())
                    row.blind_heads += int(h not in row.dead_heads and not sees)
            v = _find(names, p, _V)
            if v is not None:
                v_rows = _any(eff[v], 1)
                row.kv_heads = kv
                row.dead_kv_heads = [g for g in range(kv) if not bool(v_rows[g * hd : (g + 1) * hd].any())]
        down = _find(names, p, _MLP_DOWN)
        if down is not None:
            e = eff[down]
            used = _any(e, 1) if down in transposed else _any(e, 0)
            row.neurons, row.dead_neurons = int(used.numel()), int((~used).sum())
        for n in (n for n in names if n.startswith(p) and re.search(r"\.experts\.down_proj$", n)):
            e = eff[n]  # (experts, hidden, intermediate): one down projection per expert
            row.experts += e.shape[0]
            row.dead_experts += [i for i in range(e.shape[0]) if not bool(_any(e[i]))]
            used = _any(e, 1)
            row.neurons += int(used.numel())
            row.dead_neurons += int((~used).sum())
        per_module = {}
        for n in names:
            mm = re.match(re.escape(p) + r"(.*\.experts)\.(\d+)\.(w2|down_proj)\.weight$", n)
            if mm:
                per_module[int(mm.group(2))] = n
        for i, n in sorted(per_module.items()):
            used = _any(eff[n], 0)
            row.experts += 1
            row.neurons += int(used.numel())
            row.dead_neurons += int((~used).sum())
            if not bool(_any(eff[n])):
                row.dead_experts.append(i)
    return sorted(rows.values(), key=lambda r: r.index)
