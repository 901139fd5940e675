"""The backbone registry, and the network that trains: backbone plus heads.

`MODELS[cfg.model.arch](cfg.model, rngs=...)` returns an `nnx.Module` with
`model(tokens, *, segment_ids, positions, deterministic, rng) -> hidden
[B, T, D]`, `model.logits(hidden)` (the tied vocabulary head) and
`model.causal`; encoders also take `token_type_ids` [B, T] (sentence A/B,
default 0) when they have token-type embeddings. Decoder-capable backbones
add `init_cache(batch, max_len, pad=None)` and `decode_step(tokens, cache) ->
(logits, cache)`; `pad` [B] counts each row's left padding, so prompts of
different lengths decode in one batch exactly as one at a time. Encoder-decoders (kind "encoder_decoder") are encoders by this
contract (`model(...)` is the encoder) and add `encode`, `decode`, and
`init_cache(batch, max_len, encoded=...)` for `decode_step`. Adding an
architecture is one file and one line here; the registry tests then cover it
(tests/test_flops.py checks its FLOP function against XLA's count of the step).
"""

from typing import Callable, NamedTuple

import jax.numpy as jnp
from flax import nnx

from research.models import cnn, layers, rnn, transformer


class Architecture(NamedTuple):
  """A registry entry: how to build the backbone, the kinds it offers, what it costs.

  `flops(model_cfg, *, length, target_length=0, vocab_positions=0)` is the forward
  matmul FLOPs of one row: `length` tokens through the backbone (an encoder-decoder's
  encoder), `target_length` through its decoder (0: not run), `vocab_positions`
  through the vocabulary head (0: unused). research/throughput.step_flops turns it
  into a train step's FLOPs, the numerator of every MFU Trellis reports.
  """
  build: Callable  # (model_cfg, *, rngs) -> nnx.Module
  kinds: tuple[str, ...]  # the model.kind values it supports
  flops: Callable  # (model_cfg, *, length, target_length, vocab_positions) -> float

  def __call__(self, model_cfg, *, rngs):
    return self.build(model_cfg, rngs=rngs)


MODELS = {
    "transformer": Architecture(transformer.build, ("decoder", "encoder", "encoder_decoder"),
                                transformer.flops),
    "lstm": Architecture(rnn.build("lstm"), ("decoder", "encoder"), rnn.flops("lstm")),
    "gru": Architecture(rnn.build("gru"), ("decoder", "encoder"), rnn.flops("gru")),
    "cnn": Architecture(cnn.build, ("decoder", "encoder"), cnn.flops),
}


class ClassifierHead(nnx.Module):
  """Pooled features [B, D] -> tanh dense -> class logits (BERT's pooler + classifier)."""

  def __init__(self, width: int, num_outputs: int, *, rngs):
    self.pool = layers.dense(width, width, ("embed", "embed"), dtype=jnp.float32, rngs=rngs)
    self.out = layers.dense(width, num_outputs, ("embed", "classes"), dtype=jnp.float32,
                            rngs=rngs)

  def __call__(self, pooled):
    return self.out(jnp.tanh(self.pool(pooled.astype(jnp.float32))))

  @staticmethod
  def flops(width: int, num_outputs: int, length: int) -> float:
    """Forward matmul FLOPs per row: one pooled position through both layers."""
    del length
    return 2.0 * width * (width + num_outputs)


class TokenHead(nnx.Module):
  """Per-position logits [B, T, n] (e.g. answer start/end for extractive QA)."""

  def __init__(self, width: int, num_outputs: int, *, rngs):
    self.out = layers.dense(width, num_outputs, ("embed", "classes"), dtype=jnp.float32,
                            rngs=rngs)

  def __call__(self, hidden):
    return self.out(hidden.astype(jnp.float32))

  @staticmethod
  def flops(width: int, num_outputs: int, length: int) -> float:
    """Forward matmul FLOPs per row: every position through the output layer."""
    return 2.0 * width * num_outputs * length


# kind -> head class; each has `flops(width, num_outputs, length)`, forward FLOPs per row.
HEADS = {"pooled": ClassifierHead, "token": TokenHead}


class Network(nnx.Module):
  """What a run trains: a registered backbone and the heads its objectives need.

  `heads` maps a head name to (kind, outputs), kind a key of HEADS.
  """

  def __init__(self, model_cfg, heads: dict[str, tuple[str, int]], *, rngs: nnx.Rngs):
    self.backbone = MODELS[model_cfg.arch](model_cfg, rngs=rngs)
    self.heads = nnx.Dict({name: HEADS[kind](model_cfg.width, n, rngs=rngs)
                           for name, (kind, n) in sorted(heads.items())})
