"""Small language models of six families saved with ``save_pretrained`` into several shards, with
planted dead MLP neurons, dead attention heads (and, for Mixtral, a dead expert), some layers pruned
to exact 2:4 and the rest to 50% at random.

Each plant is listed so the tests can compare what the audit finds with what was planted.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import torch

VOCAB = 64
HIDDEN, HEADS, KV, INTER = 32, 4, 2, 64
HEAD_DIM = HIDDEN // HEADS


@dataclass
class Planted:
    family: str
    dead_neurons: dict[int, set[int]] = field(default_factory=dict)  # block -> neuron indices
    dead_heads: dict[int, set[int]] = field(default_factory=dict)
    dead_experts: dict[int, set[int]] = field(default_factory=dict)
    two_four: set[str] = field(default_factory=set)  # weights pruned to exact 2:4


def to_2_4(w: torch.Tensor, axis: int = -1) -> None:
    """Keep the 2 largest of every 4 consecutive weights along ``axis``, in place."""
    v = w.data.movedim(axis, -1)
    g = v.reshape(*v.shape[:-1], -1, 4)
    keep = torch.zeros_like(g, dtype=torch.bool).scatter_(-1, g.abs().topk(2, dim=-1).indices, True)
    g.mul_(keep)
    w.data.copy_(g.reshape(v.shape).movedim(-1, axis))


def _common(**kw):
    base = dict(vocab_size=VOCAB, num_hidden_layers=2, use_cache=False, max_position_embeddings=32,
                bos_token_id=0, eos_token_id=1, pad_token_id=0)
    base.update(kw)
    return base


def configs():
    import transformers as t
    llama_like = dict(hidden_size=HIDDEN, intermediate_size=INTER, num_attention_heads=HEADS,
                      num_key_value_heads=KV)
    return {
        "llama": t.LlamaConfig(**_common(**llama_like)),
        "mistral": t.MistralConfig(**_common(**llama_like, sliding_window=None)),
        "qwen2": t.Qwen2Config(**_common(**llama_like)),
        "gemma2": t.Gemma2Config(**_common(**llama_like, head_dim=HEAD_DIM)),
        "mixtral": t.MixtralConfig(**_common(**{**llama_like, "intermediate_size": 16}, num_local_experts=4,
                                             num_experts_per_tok=2)),
        "gpt2": t.GPT2Config(**_common(n_embd=HIDDEN, n_head=HEADS, n_layer=2, n_positions=32)),
    }


@torch.no_grad()
def build(family: str, seed: int = 0):
    """The pruned model and what was planted in it."""
    import transformers

    cfg = configs()[family]
    torch.manual_seed(seed)
    model = transformers.AutoModelForCausalLM.from_config(cfg).eval()
    gen = torch.Generator().manual_seed(seed)
    p = Planted(family)
    for name, w in model.named_parameters():
        if w.dim() >= 2 and "embed" not in name and "wte" not in name and "wpe" not in name:
            w.mul_(torch.rand(w.shape, generator=gen) < 0.5)
    if family == "gpt2":
        h = model.transformer.h
        h[0].mlp.c_fc.weight[:, [3, 17]] = 0  # Conv1D (in, out): columns are the neurons
        h[0].mlp.c_fc.bias[[3, 17]] = 0
        p.dead_neurons[0] = {3, 17}
        h[1].attn.c_proj.weight[2 * HEAD_DIM : 3 * HEAD_DIM] = 0  # rows: head 2's outputs
        p.dead_heads[1] = {2}
        to_2_4(h[1].mlp.c_fc.weight, axis=0)
        p.two_four.add("transformer.h.1.mlp.c_fc.weight")
        return model, p
    layers = model.model.layers
    if family == "mixtral":
        ex = layers[0].mlp.experts
        ex.down_proj[1] = 0  # expert 1 computes nothing that reaches the output
        inter = ex.down_proj.shape[-1]
        ex.gate_up_proj[2, inter + 5] = 0  # expert 2's up row 5: its neuron 5 is dead
        p.dead_experts[0] = {1}
        p.dead_neurons[0] = {1 * inter + i for i in range(inter)} | {2 * inter + 5}
    else:
        mlp = layers[0].mlp
        mlp.up_proj.weight[[4, 9]] = 0
        mlp.down_proj.weight[:, 30] = 0
        p.dead_neurons[0] = {4, 9, 30}
        to_2_4(layers[1].mlp.gate_proj.weight)
        to_2_4(layers[1].mlp.up_proj.weight)
        p.two_four |= {"model.layers.1.mlp.gate_proj.weight", "model.layers.1.mlp.up_proj.weight"}
    layers[1].self_attn.o_proj.weight[:, 1 * HEAD_DIM : 2 * HEAD_DIM] = 0
    p.dead_heads[1] = {1}
    to_2_4(layers[0].self_attn.q_proj.weight)
    p.two_four.add("model.layers.0.self_attn.q_proj.weight")
    return model, p


def save(model, folder, shard: str = "40KB") -> None:
    model.save_pretrained(folder, max_shard_size=shard)
