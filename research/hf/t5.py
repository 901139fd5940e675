"""Hugging Face T5 (v1.0 and v1.1 / Flan) as the Trellis encoder-decoder.

T5 is a pre-norm encoder-decoder with RMS norms (no mean, no bias), no biases
anywhere, unscaled attention scores (model.scale_attention=False: T5 folds the
1/sqrt(d) into its initialisation) and a learned relative position bias per
stack (model.position=relative): a [buckets, heads] table held by block 0's
self-attention and shared by every layer of that stack. v1.0 has a ReLU MLP
(`wi`, `wo`) and ties the output head to the embeddings, scaling the decoder's
output by d_model**-0.5 first (model.scale_logits; transformers 5's
scale_decoder_outputs); v1.1 has a GELU-gated
MLP (`wi_0` the gate, `wi_1` the up projection: model.mlp=geglu) and an untied
`lm_head`.

  shared                                          backbone/embed/embedding
  encoder.block.i.layer.0.SelfAttention.q|k|v|o   backbone/encoder_blocks/attn/query|key|value|out [i]
  encoder.block.i.layer.0.layer_norm              backbone/encoder_blocks/attn_norm [i]
  encoder.block.i.layer.1.DenseReluDense.wi|wi_0|wi_1|wo  .../mlp/up|gate|up|down [i]
  encoder.block.i.layer.1.layer_norm              backbone/encoder_blocks/mlp_norm [i]
  encoder.block.0.layer.0.SelfAttention.relative_attention_bias  backbone/encoder_relative_bias
  encoder.final_layer_norm                        backbone/encoder_norm
  decoder.block.i.layer.0 (self-attention), .layer.1.EncDecAttention (cross, its norm
  cross_norm), .layer.2 (the MLP), decoder.final_layer_norm: the decoder's alike.
"""

from research.errors import CheckpointError
from research.hf import folder
from research.hf.family import Family, require

# feed_forward_proj -> (model.mlp, model.gelu_approximate), as T5Config reads it
# ("gated-gelu" is the tanh GELU, gelu_new; a plain "gelu" the exact one).
_FEED_FORWARD = {"relu": ("relu", False), "gelu": ("gelu", False),
                 "gated-gelu": ("geglu", True), "gated-silu": ("swiglu", False)}
_PROJECTIONS = (("q", "query"), ("k", "key"), ("v", "value"), ("o", "out"))


def _model(c: dict) -> dict:
  f = "T5"
  layers = require(c, "num_layers", f)
  if c.get("num_decoder_layers", layers) != layers:
    raise CheckpointError(f"T5 num_decoder_layers={c['num_decoder_layers']} differs from "
                          f"num_layers={layers}: Trellis stacks have one depth (model.num_layers)")
  ff = c.get("feed_forward_proj", "relu")
  if ff not in _FEED_FORWARD:
    raise CheckpointError(f"T5 feed_forward_proj={ff!r} is not supported by Trellis "
                          f"(one of {', '.join(_FEED_FORWARD)})")
  width, heads = require(c, "d_model", f), require(c, "num_heads", f)
  head_dim = require(c, "d_kv", f)
  tied = c.get("tie_word_embeddings", True) is not False
  # transformers 5 reads the scaling from scale_decoder_outputs (older configs: from
  # tie_word_embeddings); the head is tied unless the checkpoint has its own lm_head.
  scale = bool(c.get("scale_decoder_outputs", tied))
  mlp, approximate = _FEED_FORWARD[ff]
  return {"model.arch": "transformer", "model.kind": "encoder_decoder",
          "model.num_layers": layers, "model.width": width, "model.num_heads": heads,
          "model.head_dim": 0 if head_dim * heads == width else head_dim,
          "model.num_kv_heads": 0, "model.mlp_dim": require(c, "d_ff", f),
          "model.vocab_size": require(c, "vocab_size", f),
          "model.max_len": c.get("n_positions", 512), "model.position": "relative",
          "model.relative_buckets": c.get("relative_attention_num_buckets", 32),
          "model.relative_max_distance": c.get("relative_attention_max_distance", 128),
          "model.norm": "rmsnorm", "model.norm_eps": c.get("layer_norm_epsilon", 1e-6),
          "model.prenorm": True, "model.mlp": mlp, "model.gelu_approximate": approximate,
          "model.qkv_bias": False, "model.out_bias": False, "model.mlp_bias": False,
          "model.scale_attention": False, "model.sliding_window": 0, "model.embed_norm": False,
          "model.tie_embeddings": tied, "model.scale_logits": scale,
          "model.vocab_transform": False, "model.vocab_bias": False,
          "model.dropout": c.get("dropout_rate", 0.1), "model.attention_dropout": 0.0}


def _needs(m) -> dict:
  return dict(kind="encoder_decoder", position="relative", norm="rmsnorm", prenorm=True,
              qkv_bias=False, out_bias=False, mlp_bias=False, scale_attention=False,
              num_kv_heads=0, sliding_window=0, embed_norm=False,
              vocab_transform=False, vocab_bias=False,
              **({"gelu_approximate": True} if m.mlp == "geglu" else {}))


def _config(m) -> dict:
  ff = {(mlp, approx): name for name, (mlp, approx) in _FEED_FORWARD.items()}
  key = (m.mlp, m.gelu_approximate if m.mlp in ("gelu", "geglu") else False)
  if key not in ff:
    raise CheckpointError(f"cannot export as T5: model.mlp={m.mlp!r} with "
                          f"model.gelu_approximate={m.gelu_approximate} has no T5 "
                          "feed_forward_proj (relu, exact gelu, tanh geglu, swiglu)")
  return {"model_type": "t5", "d_model": m.width, "num_layers": m.num_layers,
          "num_decoder_layers": m.num_layers, "num_heads": m.num_heads,
          "d_kv": m.head_dim or m.width // m.num_heads, "d_ff": m.mlp_dim or 4 * m.width,
          "vocab_size": m.vocab_size, "n_positions": m.max_len,
          "relative_attention_num_buckets": m.relative_buckets,
          "relative_attention_max_distance": m.relative_max_distance,
          "layer_norm_epsilon": m.norm_eps, "feed_forward_proj": ff[key],
          "is_gated_act": m.mlp in ("geglu", "swiglu"), "dropout_rate": m.dropout,
          # transformers 5 ties lm_head to `shared` when the file has no lm_head (export
          # writes one only when untied); tie_word_embeddings is also its scaling switch.
          "tie_word_embeddings": bool(m.scale_logits), "scale_decoder_outputs": bool(m.scale_logits),
          "is_encoder_decoder": True}


def _mlp(m, hf: str, ours: str, i: int) -> list:
  names = ((("wi_0", "gate"), ("wi_1", "up")) if m.mlp in ("geglu", "swiglu")
           else (("wi", "up"),)) + (("wo", "down"),)
  return [folder.plain(f"{hf}.DenseReluDense.{a}.weight", f"{ours}/mlp/{b}/kernel", i, True)
          for a, b in names] + folder.norm(f"{hf}.layer_norm", f"{ours}/mlp_norm", i, bias=False)


def _attention(hf: str, ours: str, norm_hf: str, norm_ours: str, i: int) -> list:
  """An attention's q/k/v/o (no biases) and the RMS norm before it."""
  return ([folder.plain(f"{hf}.{a}.weight", f"{ours}/{b}/kernel", i, True)
           for a, b in _PROJECTIONS] + folder.norm(norm_hf, norm_ours, i, bias=False))


def _specs(m) -> list:
  out = [folder.plain("shared.weight", "backbone/embed/embedding")]
  for stack in ("encoder", "decoder"):
    ours = f"backbone/{stack}_blocks"
    for i in range(m.num_layers):
      h = f"{stack}.block.{i}.layer"
      out += _attention(f"{h}.0.SelfAttention", f"{ours}/attn", f"{h}.0.layer_norm",
                        f"{ours}/attn_norm", i)
      if stack == "decoder":
        out += _attention(f"{h}.1.EncDecAttention", f"{ours}/cross", f"{h}.1.layer_norm",
                          f"{ours}/cross_norm", i)
      out += _mlp(m, f"{h}.{2 if stack == 'decoder' else 1}", ours, i)
    out.append(folder.plain(f"{stack}.block.0.layer.0.SelfAttention.relative_attention_bias"
                            ".weight", f"backbone/{stack}_relative_bias/embedding"))
    out += folder.norm(f"{stack}.final_layer_norm", f"backbone/{stack}_norm", bias=False)
  if not m.tie_embeddings:
    out.append(folder.plain("lm_head.weight", "backbone/head/kernel", transpose=True))
  return out


def _known(name: str) -> bool:
  """The embedding copies T5 keeps per stack (tied to `shared`)."""
  return name in ("encoder.embed_tokens.weight", "decoder.embed_tokens.weight")


T5 = Family("t5", ("t5",), "T5ForConditionalGeneration", _model, _needs, _config, _specs,
            prefix="", known=_known)
