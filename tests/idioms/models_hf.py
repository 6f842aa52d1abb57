"""Tiny Hugging Face transformers models built from configs (no download), word embeddings tied to the
output head. transformers 5 dropped torch.fx support: these run with the export tracers and ``auto`` only.

The compared output is the logits. The tied head is one tensor (``named_parameters()`` lists it once, by
the embedding's name); an effective mask under the head's name (``lm_head.weight``) is a bad key.
Kills act on the MLPs: dead hidden units make the down projection's columns ineffective.
"""
from __future__ import annotations

import torch
from torch import nn

from .idiom import NO_FX, Idiom, cols, ids, kills, rows

VOCAB = 50


def _hf(config_name: str, model_name: str, **kw):
    def build() -> nn.Module:
        import transformers
        from transformers.utils import logging as hf_logging
        hf_logging.set_verbosity_error()
        cfg = getattr(transformers, config_name)(vocab_size=VOCAB, tie_word_embeddings=True, use_cache=False,
                                                 attn_implementation="eager", **kw)
        torch.manual_seed(0)
        model = getattr(transformers, model_name)(cfg)
        return model.eval()
    build.__qualname__ = f"hf({model_name})"
    return build


class Seq2Seq(nn.Module):
    """T5's second positional argument is the attention mask: take (input_ids, decoder_input_ids)."""

    def __init__(self, build):
        super().__init__()
        self.model = build()

    def forward(self, input_ids, decoder_input_ids):
        return self.model(input_ids=input_ids, decoder_input_ids=decoder_input_ids).logits


def _t5():
    base = _hf("T5Config", "T5ForConditionalGeneration", num_layers=1, num_decoder_layers=1, d_model=16, d_kv=8,
               d_ff=32, num_heads=2, decoder_start_token_id=0, pad_token_id=0, eos_token_id=1)
    return Seq2Seq(base)


_IDS = (ids(1, 6, high=VOCAB),)
_LLAMA_MLP = "model.layers.0.mlp"

IDIOMS = [
    Idiom("hf_gpt2_tied", "hf",
          _hf("GPT2Config", "GPT2LMHeadModel", n_layer=1, n_embd=16, n_head=2, n_positions=16, bos_token_id=0,
              eos_token_id=0),
          _IDS, cols("transformer.h.0.mlp.c_fc.weight", 0, 1, 2), additive=("wpe",), tracers=NO_FX, vocab=VOCAB,
          note="GPT-2's Conv1D stores (in, out): columns of c_fc are hidden units; c_proj rows read them"),
    Idiom("hf_opt_tied", "hf",
          _hf("OPTConfig", "OPTForCausalLM", num_hidden_layers=1, hidden_size=16, num_attention_heads=2, ffn_dim=32,
              max_position_embeddings=16, word_embed_proj_dim=16, bos_token_id=0, eos_token_id=0, pad_token_id=1),
          _IDS, rows("model.decoder.layers.0.fc1.weight", 0, 1, 2), additive=("embed_positions",), tracers=NO_FX,
          vocab=VOCAB),
    Idiom("hf_t5_tied", "hf", _t5, _IDS + (ids(1, 6, high=VOCAB, seed=1),),
          kills(rows("model.encoder.block.0.layer.1.DenseReluDense.wi.weight", 0, 1),
                rows("model.decoder.block.0.layer.2.DenseReluDense.wi.weight", 3)),
          tracers=NO_FX, vocab=VOCAB,
          note="encoder-decoder; relative_attention_bias adds to scores (zeroed as a bias)"),
    Idiom("hf_gemma2_tied", "hf",
          _hf("Gemma2Config", "Gemma2ForCausalLM", num_hidden_layers=1, hidden_size=16, intermediate_size=32,
              num_attention_heads=2, num_key_value_heads=1, head_dim=8, max_position_embeddings=16, bos_token_id=0,
              eos_token_id=1, pad_token_id=0),
          _IDS, kills(rows(f"{_LLAMA_MLP}.up_proj.weight", 0, 1), rows(f"{_LLAMA_MLP}.gate_proj.weight", 2)),
          tracers=NO_FX, vocab=VOCAB, note="gelu-tanh gate: gate 0 gives 0, so both kills kill"),
    Idiom("hf_llama_tied", "hf",
          _hf("LlamaConfig", "LlamaForCausalLM", num_hidden_layers=1, hidden_size=16, intermediate_size=32,
              num_attention_heads=2, num_key_value_heads=1, max_position_embeddings=16, bos_token_id=0,
              eos_token_id=1, pad_token_id=0),
          _IDS, kills(rows(f"{_LLAMA_MLP}.up_proj.weight", 0, 1), rows(f"{_LLAMA_MLP}.gate_proj.weight", 2)),
          tracers=NO_FX, vocab=VOCAB, note="SwiGLU: up row dead -> gate row and down column ineffective"),
    Idiom("hf_qwen2_tied", "hf",
          _hf("Qwen2Config", "Qwen2ForCausalLM", num_hidden_layers=1, hidden_size=16, intermediate_size=32,
              num_attention_heads=2, num_key_value_heads=1, max_position_embeddings=16, bos_token_id=0,
              eos_token_id=1, pad_token_id=0),
          _IDS, kills(rows(f"{_LLAMA_MLP}.up_proj.weight", 0, 1), rows(f"{_LLAMA_MLP}.gate_proj.weight", 2)),
          tracers=NO_FX, vocab=VOCAB, note="q/k/v projections with biases (zeroed as biases)"),
    Idiom("hf_phi3_tied", "hf",
          _hf("Phi3Config", "Phi3ForCausalLM", num_hidden_layers=1, hidden_size=16, intermediate_size=32,
              num_attention_heads=2, num_key_value_heads=1, max_position_embeddings=16, bos_token_id=0,
              eos_token_id=1, pad_token_id=0),
          _IDS, rows(f"{_LLAMA_MLP}.gate_up_proj.weight", 0, 1), tracers=NO_FX, vocab=VOCAB,
          note="fused qkv_proj and gate_up_proj, sliced apart (partial rotary slices come out empty)"),
]
