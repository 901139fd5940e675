"""Hugging Face decoders: GPT-2, GPT-Neo, BLOOM, GPT-NeoX and the Llama family.

Each maps onto the pre-norm Trellis decoder; the switches that tell them apart
are ordinary model fields (research/config.py). Names below are the base
model's (the CausalLM classes add `prefix`):

  GPT-2     learned positions, LayerNorm, GELU (tanh), every bias, tied head.
            c_attn is one Conv1D ([in, out], no transpose) holding q|k|v side by
            side; c_proj and the MLP are Conv1D too.
  GPT-Neo   GPT-2's layout with nn.Linear projections, no q/k/v biases, scores
            not scaled by 1/sqrt(head_dim), and attention_types alternating
            global and local layers (model.sliding_window=window_size,
            model.window_layers=odd: a local layer sees keys q - k < window).
  BLOOM     ALiBi instead of positions (model.position=alibi), a LayerNorm on the
            embeddings (model.embed_norm), one fused query_key_value whose output
            rows are [head, q|k|v, head_dim].
  GPT-NeoX  rotary positions on the whole head (rotary_pct=1), sequential
            residuals (use_parallel_residual=False), query_key_value fused as
            BLOOM's, an untied `embed_out` head.
  Llama     RMSNorm, SwiGLU, rotary positions, no biases (attention_bias and
            mlp_bias add them), grouped-query attention (num_key_value_heads),
            an explicit head_dim; Mistral adds a sliding window on every layer,
            Qwen2 q/k/v biases without an output bias.

PyTorch Linear weights are [out, in] and Trellis kernels [in, out]: transposed.
Rotary positions: Hugging Face's rotate_half pairs dimension i with i + head_dim/2,
as Trellis' `layers.rope` does, so q/k weights need no permutation.

Why ~450 lines: five families, each four short functions (config -> fields,
fields needed, fields -> config, tensor names) kept side by side so their
differences read at a glance; a module per family would repeat the helpers.
"""

import numpy as np

from research.errors import CheckpointError
from research.hf import folder
from research.hf.family import Family, activation, refuse, require

_BLOCKS = "backbone/blocks"
_NO_TOKEN_TYPES = {"model.type_vocab_size": 0, "model.vocab_transform": False,
                   "model.vocab_bias": False}


def _decoder(**fields) -> dict:
  """Dotted overrides of a pre-norm Trellis decoder: `fields` (model.* names) on top."""
  base = {"model.arch": "transformer", "model.kind": "decoder", "model.prenorm": True,
          "model.num_kv_heads": 0, "model.head_dim": 0, "model.sliding_window": 0,
          "model.window_layers": "all", "model.scale_attention": True,
          "model.embed_norm": False, "model.scale_logits": False, **_NO_TOKEN_TYPES}
  base.update({f"model.{k}": v for k, v in fields.items()})
  return base


def _layers(m, per_layer) -> list:
  """per_layer(i) for every layer, flattened."""
  return [t for i in range(m.num_layers) for t in per_layer(i)]


def _final(m, embed: str, final_norm: str, *, head: str = "", norm_bias: bool = True):
  """The embeddings, the final norm and (untied) the head."""
  out = [folder.plain(embed, "backbone/embed/embedding")]
  out += folder.norm(final_norm, "backbone/final_norm", bias=norm_bias)
  if not m.tie_embeddings:
    out.append(folder.plain(head, "backbone/head/kernel", transpose=True))
  return out


def _qkv_names():
  return tuple(f"{_BLOCKS}/attn/{p}" for p in ("query", "key", "value"))


def _side_by_side(axis: int):
  """Split/join of a tensor holding q | k | v side by side on `axis` (GPT-2's c_attn)."""
  return (lambda a: tuple(np.split(a, 3, axis=axis)),
          lambda parts: np.concatenate(parts, axis=axis))


def _per_head(num_heads: int, weight: bool):
  """Split/join of BLOOM's and GPT-NeoX's query_key_value: output rows [head, 3, head_dim].

  A weight ([3 * width, width], PyTorch layout) gives three [width, width] kernels
  (transposed); a bias ([3 * width]) three [width] biases.
  """
  def split(a):
    rows = a.reshape(num_heads, 3, -1, *a.shape[1:])
    parts = [rows[:, j].reshape(-1, *a.shape[1:]) for j in range(3)]
    return tuple(p.T for p in parts) if weight else tuple(parts)

  def join(parts):
    parts = [p.T for p in parts] if weight else list(parts)
    rows = [p.reshape(num_heads, 1, -1, *p.shape[1:]) for p in parts]
    return np.concatenate(rows, axis=1).reshape(-1, *parts[0].shape[1:])

  return split, join


# --- GPT-2 ---------------------------------------------------------------------------

def _gpt2_model(c: dict) -> dict:
  f = "GPT-2"
  refuse(c, f, scale_attn_weights=(True,), scale_attn_by_inverse_layer_idx=(False,),
         add_cross_attention=(False,))
  width = require(c, "n_embd", f)
  return _decoder(num_layers=require(c, "n_layer", f), width=width,
                  num_heads=require(c, "n_head", f), mlp_dim=c.get("n_inner") or 4 * width,
                  vocab_size=require(c, "vocab_size", f), max_len=c.get("n_positions", 1024),
                  position="learned", norm="layernorm", norm_eps=c.get("layer_norm_epsilon", 1e-5),
                  qkv_bias=True, out_bias=True, mlp_bias=True,
                  tie_embeddings=bool(c.get("tie_word_embeddings", True)),
                  dropout=c.get("resid_pdrop", 0.1), attention_dropout=c.get("attn_pdrop", 0.1),
                  **{k[6:]: v for k, v in activation(c, "activation_function", f,
                                                    "gelu_new").items()})


def _gpt2_needs(m) -> dict:
  return dict(position="learned", norm="layernorm", mlp="gelu", prenorm=True, qkv_bias=True,
              out_bias=True, mlp_bias=True, num_kv_heads=0, head_dim=0, sliding_window=0,
              scale_attention=True, embed_norm=False, tie_embeddings=True)


def _gpt2_config(m) -> dict:
  return {"model_type": "gpt2", "n_embd": m.width, "n_layer": m.num_layers,
          "n_head": m.num_heads, "n_inner": m.mlp_dim or 4 * m.width,
          "vocab_size": m.vocab_size, "n_positions": m.max_len,
          "layer_norm_epsilon": m.norm_eps,
          "activation_function": "gelu_new" if m.gelu_approximate else "gelu",
          "resid_pdrop": m.dropout, "embd_pdrop": m.dropout, "attn_pdrop": m.attention_dropout,
          "tie_word_embeddings": True}


def _gpt2_specs(m) -> list:
  split, join = _side_by_side(axis=-1)

  def block(i):
    h = f"h.{i}"
    return [*folder.norm(f"{h}.ln_1", f"{_BLOCKS}/attn_norm", i),
            folder.fused(f"{h}.attn.c_attn.weight", [f"{n}/kernel" for n in _qkv_names()], i,
                         split, join),
            folder.fused(f"{h}.attn.c_attn.bias", [f"{n}/bias" for n in _qkv_names()], i,
                         split, join),
            *folder.linear(f"{h}.attn.c_proj", f"{_BLOCKS}/attn/out", i, transpose=False),
            *folder.norm(f"{h}.ln_2", f"{_BLOCKS}/mlp_norm", i),
            *folder.linear(f"{h}.mlp.c_fc", f"{_BLOCKS}/mlp/up", i, transpose=False),
            *folder.linear(f"{h}.mlp.c_proj", f"{_BLOCKS}/mlp/down", i, transpose=False)]

  return [folder.plain("wpe.weight", "backbone/pos_embed"), *_layers(m, block),
          *_final(m, "wte.weight", "ln_f", head="lm_head.weight")]


def _attention_buffers(name: str) -> bool:
  """GPT-2's and GPT-Neo's causal-mask buffers, NeoX's rotary table: not weights."""
  return name.endswith((".attn.bias", ".attn.masked_bias", ".attention.bias",
                        ".attention.masked_bias", "rotary_emb.inv_freq"))


GPT2 = Family("gpt2", ("gpt2",), "GPT2LMHeadModel", _gpt2_model, _gpt2_needs, _gpt2_config,
              _gpt2_specs, prefix="transformer.", known=_attention_buffers)


# --- GPT-Neo -------------------------------------------------------------------------

def _gpt_neo_windows(c: dict) -> dict:
  """model.sliding_window and model.window_layers of GPT-Neo's attention_types."""
  kinds = [kind for pattern, repeat in c.get("attention_types", [[["global"], 1]])
           for _ in range(repeat) for kind in pattern]
  if len(kinds) != c["num_layers"]:
    raise CheckpointError(f"GPT-Neo attention_types name {len(kinds)} layers, "
                          f"num_layers is {c['num_layers']}")
  if set(kinds) == {"global"}:
    return {"sliding_window": 0, "window_layers": "all"}
  window = int(require(c, "window_size", "GPT-Neo"))
  if set(kinds) == {"local"}:
    return {"sliding_window": window, "window_layers": "all"}
  if kinds == ["global" if i % 2 == 0 else "local" for i in range(len(kinds))]:
    return {"sliding_window": window, "window_layers": "odd"}
  raise CheckpointError(f"GPT-Neo attention_types {c['attention_types']} is not supported by "
                        "Trellis (all global, all local, or global/local alternating)")


def _gpt_neo_model(c: dict) -> dict:
  f = "GPT-Neo"
  width = require(c, "hidden_size", f)
  require(c, "num_layers", f)
  return _decoder(num_layers=c["num_layers"], width=width, num_heads=require(c, "num_heads", f),
                  mlp_dim=c.get("intermediate_size") or 4 * width,
                  vocab_size=require(c, "vocab_size", f),
                  max_len=c.get("max_position_embeddings", 2048), position="learned",
                  norm="layernorm", norm_eps=c.get("layer_norm_epsilon", 1e-5),
                  qkv_bias=False, out_bias=True, mlp_bias=True, scale_attention=False,
                  tie_embeddings=bool(c.get("tie_word_embeddings", True)),
                  dropout=c.get("resid_dropout", 0.0),
                  attention_dropout=c.get("attention_dropout", 0.0), **_gpt_neo_windows(c),
                  **{k[6:]: v for k, v in activation(c, "activation_function", f,
                                                    "gelu_new").items()})


def _gpt_neo_needs(m) -> dict:
  return dict(position="learned", norm="layernorm", mlp="gelu", prenorm=True, qkv_bias=False,
              out_bias=True, mlp_bias=True, num_kv_heads=0, head_dim=0,
              scale_attention=False, embed_norm=False, tie_embeddings=True)


def _gpt_neo_config(m) -> dict:
  if not m.sliding_window:
    types = [[["global"], m.num_layers]]
  elif m.window_layers == "all":
    types = [[["local"], m.num_layers]]
  elif m.num_layers % 2 == 0:
    types = [[["global", "local"], m.num_layers // 2]]
  else:
    raise CheckpointError("cannot export as GPT-Neo: model.window_layers=odd needs an even "
                          f"model.num_layers, not {m.num_layers}")
  return {"model_type": "gpt_neo", "hidden_size": m.width, "num_layers": m.num_layers,
          "num_heads": m.num_heads, "intermediate_size": m.mlp_dim or 4 * m.width,
          "vocab_size": m.vocab_size, "max_position_embeddings": m.max_len,
          "layer_norm_epsilon": m.norm_eps, "attention_types": types,
          "window_size": m.sliding_window or 256,
          "activation_function": "gelu_new" if m.gelu_approximate else "gelu",
          "resid_dropout": m.dropout, "embed_dropout": m.dropout,
          "attention_dropout": m.attention_dropout, "tie_word_embeddings": True}


def _gpt_neo_specs(m) -> list:
  def block(i):
    h, a = f"h.{i}", f"h.{i}.attn.attention"
    return [*folder.norm(f"{h}.ln_1", f"{_BLOCKS}/attn_norm", i),
            *[folder.plain(f"{a}.{p[0]}_proj.weight", f"{_BLOCKS}/attn/{p}/kernel", i, True)
              for p in ("query", "key", "value")],
            *folder.linear(f"{a}.out_proj", f"{_BLOCKS}/attn/out", i),
            *folder.norm(f"{h}.ln_2", f"{_BLOCKS}/mlp_norm", i),
            *folder.linear(f"{h}.mlp.c_fc", f"{_BLOCKS}/mlp/up", i),
            *folder.linear(f"{h}.mlp.c_proj", f"{_BLOCKS}/mlp/down", i)]

  return [folder.plain("wpe.weight", "backbone/pos_embed"), *_layers(m, block),
          *_final(m, "wte.weight", "ln_f", head="lm_head.weight")]


GPT_NEO = Family("gpt_neo", ("gpt_neo",), "GPTNeoForCausalLM", _gpt_neo_model, _gpt_neo_needs,
                 _gpt_neo_config, _gpt_neo_specs, prefix="transformer.",
                 known=_attention_buffers)


# --- BLOOM and GPT-NeoX: query_key_value fused per head ------------------------------

def _fused_block(m, i, h: str, attn: str, mlp: str):
  """A block with BLOOM's / GPT-NeoX's names under `h` (attention `attn`, MLP `mlp`)."""
  w_split, w_join = _per_head(m.num_heads, weight=True)
  b_split, b_join = _per_head(m.num_heads, weight=False)
  qkv = _qkv_names()
  return [*folder.norm(f"{h}.input_layernorm", f"{_BLOCKS}/attn_norm", i),
          folder.fused(f"{h}.{attn}.query_key_value.weight", [f"{n}/kernel" for n in qkv], i,
                       w_split, w_join),
          folder.fused(f"{h}.{attn}.query_key_value.bias", [f"{n}/bias" for n in qkv], i,
                       b_split, b_join),
          *folder.linear(f"{h}.{attn}.dense", f"{_BLOCKS}/attn/out", i),
          *folder.norm(f"{h}.post_attention_layernorm", f"{_BLOCKS}/mlp_norm", i),
          *folder.linear(f"{h}.{mlp}.dense_h_to_4h", f"{_BLOCKS}/mlp/up", i),
          *folder.linear(f"{h}.{mlp}.dense_4h_to_h", f"{_BLOCKS}/mlp/down", i)]


def _bloom_model(c: dict) -> dict:
  f = "BLOOM"
  refuse(c, f, apply_residual_connection_post_layernorm=(False,))
  width = require(c, "hidden_size", f) if "hidden_size" in c else require(c, "n_embed", f)
  return _decoder(num_layers=require(c, "n_layer", f), width=width,
                  num_heads=require(c, "n_head", f), mlp_dim=4 * width,
                  vocab_size=require(c, "vocab_size", f), max_len=c.get("seq_length", 2048),
                  position="alibi", norm="layernorm", norm_eps=c.get("layer_norm_epsilon", 1e-5),
                  embed_norm=True, mlp="gelu", gelu_approximate=True, qkv_bias=True,
                  out_bias=True, mlp_bias=True,
                  tie_embeddings=bool(c.get("tie_word_embeddings", True)),
                  dropout=c.get("hidden_dropout", 0.0),
                  attention_dropout=c.get("attention_dropout", 0.0))


def _bloom_needs(m) -> dict:
  return dict(position="alibi", norm="layernorm", mlp="gelu", gelu_approximate=True,
              prenorm=True, qkv_bias=True, out_bias=True, mlp_bias=True, num_kv_heads=0,
              head_dim=0, sliding_window=0, scale_attention=True, embed_norm=True,
              mlp_dim=4 * m.width, tie_embeddings=True)


def _bloom_config(m) -> dict:
  return {"model_type": "bloom", "hidden_size": m.width, "n_layer": m.num_layers,
          "n_head": m.num_heads, "vocab_size": m.vocab_size, "seq_length": m.max_len,
          "layer_norm_epsilon": m.norm_eps, "apply_residual_connection_post_layernorm": False,
          "hidden_dropout": m.dropout, "attention_dropout": m.attention_dropout,
          "tie_word_embeddings": True}


def _bloom_specs(m) -> list:
  return [*folder.norm("word_embeddings_layernorm", "backbone/embed_norm"),
          *_layers(m, lambda i: _fused_block(m, i, f"h.{i}", "self_attention", "mlp")),
          *_final(m, "word_embeddings.weight", "ln_f", head="lm_head.weight")]


BLOOM = Family("bloom", ("bloom",), "BloomForCausalLM", _bloom_model, _bloom_needs,
               _bloom_config, _bloom_specs, prefix="transformer.")


def _rope_theta(c: dict, family: str, default: float = 10000.0) -> float:
  """The rotary base of a config.json; scaled rotary variants are refused."""
  params = c.get("rope_parameters") or {}
  scaling = c.get("rope_scaling") or {}
  kind = params.get("rope_type") or scaling.get("rope_type") or scaling.get("type") or "default"
  if kind != "default":
    raise CheckpointError(f"{family} rope_type={kind!r} (rope scaling) is not supported by "
                          "Trellis (default rotary positions only)")
  return float(params.get("rope_theta") or c.get("rope_theta") or c.get("rotary_emb_base")
               or default)


def _gpt_neox_model(c: dict) -> dict:
  f = "GPT-NeoX"
  refuse(c, f, attention_bias=(True,))
  # transformers' defaults where config.json is silent: a quarter of each head rotary
  # (rotary_pct 0.25) and parallel residuals (Pythia's); Trellis computes neither.
  rotary = (c.get("rope_parameters") or {}).get("partial_rotary_factor",
                                                 c.get("rotary_pct", 0.25))
  if rotary != 1.0:
    raise CheckpointError(f"{f} rotary_pct (partial_rotary_factor)={rotary!r} is not supported "
                          "by Trellis (rotary positions on the whole head only: 1.0)")
  if c.get("use_parallel_residual", True):
    raise CheckpointError(f"{f} use_parallel_residual=True is not supported by Trellis "
                          "(sequential residuals only: False)")
  width = require(c, "hidden_size", f)
  return _decoder(num_layers=require(c, "num_hidden_layers", f), width=width,
                  num_heads=require(c, "num_attention_heads", f),
                  mlp_dim=c.get("intermediate_size") or 4 * width,
                  vocab_size=require(c, "vocab_size", f),
                  max_len=c.get("max_position_embeddings", 2048), position="rope",
                  rope_base=_rope_theta(c, f), norm="layernorm",
                  norm_eps=c.get("layer_norm_eps", 1e-5), qkv_bias=True, out_bias=True,
                  mlp_bias=True, tie_embeddings=bool(c.get("tie_word_embeddings", False)),
                  dropout=c.get("hidden_dropout", 0.0),
                  attention_dropout=c.get("attention_dropout", 0.0),
                  **{k[6:]: v for k, v in activation(c, "hidden_act", f, "gelu").items()})


def _gpt_neox_needs(m) -> dict:
  return dict(position="rope", norm="layernorm", mlp="gelu", prenorm=True, qkv_bias=True,
              out_bias=True, mlp_bias=True, num_kv_heads=0, head_dim=0, sliding_window=0,
              scale_attention=True, embed_norm=False)


def _gpt_neox_config(m) -> dict:
  return {"model_type": "gpt_neox", "hidden_size": m.width, "num_hidden_layers": m.num_layers,
          "num_attention_heads": m.num_heads, "intermediate_size": m.mlp_dim or 4 * m.width,
          "vocab_size": m.vocab_size, "max_position_embeddings": m.max_len,
          "rotary_pct": 1.0, "rotary_emb_base": m.rope_base,
          "rope_parameters": {"rope_type": "default", "rope_theta": m.rope_base,
                              "partial_rotary_factor": 1.0},
          "layer_norm_eps": m.norm_eps, "use_parallel_residual": False,
          "attention_bias": True, "hidden_act": "gelu_new" if m.gelu_approximate else "gelu",
          "hidden_dropout": m.dropout, "attention_dropout": m.attention_dropout,
          "tie_word_embeddings": bool(m.tie_embeddings)}


def _gpt_neox_specs(m) -> list:
  return [*_layers(m, lambda i: _fused_block(m, i, f"layers.{i}", "attention", "mlp")),
          *_final(m, "embed_in.weight", "final_layer_norm", head="embed_out.weight")]


GPT_NEOX = Family("gpt_neox", ("gpt_neox",), "GPTNeoXForCausalLM", _gpt_neox_model,
                  _gpt_neox_needs, _gpt_neox_config, _gpt_neox_specs, prefix="gpt_neox.",
                  head="embed_out.weight", known=_attention_buffers)


# --- Llama, Mistral, Qwen2 ------------------------------------------------------------

def _llama_model(c: dict) -> dict:
  kind = c.get("model_type", "llama")
  f = {"llama": "Llama", "mistral": "Mistral", "qwen2": "Qwen2"}.get(kind, kind)
  refuse(c, f, hidden_act=("silu",), pretraining_tp=(1,))
  width, heads = require(c, "hidden_size", f), require(c, "num_attention_heads", f)
  head_dim = c.get("head_dim") or width // heads
  if kind == "qwen2":
    if c.get("use_sliding_window"):
      raise CheckpointError("Qwen2 use_sliding_window=True is not supported by Trellis "
                            "(its window skips the first max_window_layers layers)")
    biases = {"qkv_bias": True, "out_bias": False, "mlp_bias": False}
    window = 0
  else:
    bias = bool(c.get("attention_bias", False))
    biases = {"qkv_bias": bias, "out_bias": bias, "mlp_bias": bool(c.get("mlp_bias", False))}
    window = int(c.get("sliding_window") or 0) if kind == "mistral" else 0
  return _decoder(num_layers=require(c, "num_hidden_layers", f), width=width, num_heads=heads,
                  num_kv_heads=c.get("num_key_value_heads") or heads,
                  head_dim=head_dim if head_dim * heads != width else 0,
                  mlp_dim=require(c, "intermediate_size", f),
                  vocab_size=require(c, "vocab_size", f),
                  max_len=c.get("max_position_embeddings", 2048), position="rope",
                  rope_base=_rope_theta(c, f), norm="rmsnorm",
                  norm_eps=c.get("rms_norm_eps", 1e-6), mlp="swiglu", sliding_window=window,
                  tie_embeddings=bool(c.get("tie_word_embeddings", False)),
                  dropout=0.0, attention_dropout=c.get("attention_dropout", 0.0), **biases)


def _llama_needs(m) -> dict:
  return dict(position="rope", norm="rmsnorm", mlp="swiglu", prenorm=True,
              scale_attention=True, embed_norm=False, window_layers="all")


def _llama_config(m) -> dict:
  """Llama, or Mistral (a sliding window), or Qwen2 (q/k/v biases, no output bias)."""
  common = {"hidden_size": m.width, "num_hidden_layers": m.num_layers,
            "num_attention_heads": m.num_heads,
            "num_key_value_heads": m.num_kv_heads or m.num_heads,
            "head_dim": m.head_dim or m.width // m.num_heads,
            "intermediate_size": m.mlp_dim or 4 * m.width, "vocab_size": m.vocab_size,
            "max_position_embeddings": m.max_len, "rope_theta": m.rope_base,
            "rope_parameters": {"rope_type": "default", "rope_theta": m.rope_base},
            "rms_norm_eps": m.norm_eps, "hidden_act": "silu",
            "attention_dropout": m.attention_dropout,
            "tie_word_embeddings": bool(m.tie_embeddings)}
  if m.qkv_bias and not m.out_bias:
    if m.mlp_bias or m.sliding_window:
      raise CheckpointError("cannot export as Qwen2 (q/k/v biases without an output bias): "
                            "it needs model.mlp_bias=False and model.sliding_window=0")
    return {"model_type": "qwen2", "architectures": ["Qwen2ForCausalLM"],
            "use_sliding_window": False, **common}
  if m.sliding_window:
    if m.qkv_bias or m.mlp_bias:
      raise CheckpointError("cannot export as Mistral (a sliding window): it needs "
                            "model.qkv_bias=False, model.out_bias=False, model.mlp_bias=False")
    return {"model_type": "mistral", "architectures": ["MistralForCausalLM"],
            "sliding_window": m.sliding_window, **common}
  return {"model_type": "llama", "architectures": ["LlamaForCausalLM"],
          "attention_bias": bool(m.qkv_bias), "mlp_bias": bool(m.mlp_bias), **common}


def _llama_specs(m) -> list:
  def block(i):
    h, a = f"layers.{i}", f"layers.{i}.self_attn"
    return [*folder.norm(f"{h}.input_layernorm", f"{_BLOCKS}/attn_norm", i, bias=False),
            *[t for p in ("query", "key", "value")
              for t in folder.linear(f"{a}.{p[0]}_proj", f"{_BLOCKS}/attn/{p}", i,
                                     bias=m.qkv_bias)],
            *folder.linear(f"{a}.o_proj", f"{_BLOCKS}/attn/out", i, bias=m.out_bias),
            *folder.norm(f"{h}.post_attention_layernorm", f"{_BLOCKS}/mlp_norm", i, bias=False),
            *[t for hf, ours in (("gate_proj", "gate"), ("up_proj", "up"), ("down_proj", "down"))
              for t in folder.linear(f"{h}.mlp.{hf}", f"{_BLOCKS}/mlp/{ours}", i,
                                     bias=m.mlp_bias)]]

  return [*_layers(m, block),
          *_final(m, "embed_tokens.weight", "norm", head="lm_head.weight", norm_bias=False)]


LLAMA = Family("llama", ("llama", "mistral", "qwen2"), "LlamaForCausalLM", _llama_model,
               _llama_needs, _llama_config, _llama_specs, prefix="model.",
               known=lambda name: name.endswith("rotary_emb.inv_freq"))

FAMILIES = (GPT2, GPT_NEO, BLOOM, GPT_NEOX, LLAMA)
