"""What every backbone family shares: embeddings, token types, the final norm, the vocab head.

Transformer, RNN and CNN backbones subclass `Backbone` and call its `_init_*`
methods in their own order: the order fixes which random numbers each param
draws, so a seed keeps giving the same weights.
"""

import jax.numpy as jnp
from flax import nnx

from research.models import layers


class Backbone(nnx.Module):
  """Token embeddings (optionally learned positions and token types) and the vocab head."""

  def _init_embeddings(self, cfg, rngs, *, token_types: bool, positions: bool = False):
    """`embed`, `pos_embed` (positions and model.position=learned) and `type_embed`
    (token_types and model.type_vocab_size > 0), with dtype, dropout and remat."""
    self.dtype = layers.DTYPES[cfg.dtype]
    self.dropout, self.remat = cfg.dropout, cfg.remat
    self.embed = layers.Embedder(cfg.vocab_size, cfg.width, dtype=self.dtype, rngs=rngs)
    if positions and cfg.position == "learned":
      self.pos_embed = nnx.Param(
          nnx.initializers.normal(0.02)(rngs.params(), (cfg.max_len, cfg.width)),
          axes=("length", "embed"))
    if token_types and cfg.type_vocab_size > 0:
      self.type_embed = layers.token_types(cfg.type_vocab_size, cfg.width, rngs=rngs)

  def _init_head(self, cfg, rngs):
    """A separate vocabulary head, unless model.tie_embeddings; model.scale_logits scales
    the hidden states by width**-0.5 before it (T5 v1.0's)."""
    self.logits_scale = cfg.width ** -0.5 if cfg.scale_logits else None
    if not cfg.tie_embeddings:
      self.head = layers.dense(cfg.width, cfg.vocab_size, ("embed", "vocab"),
                               dtype=self.dtype, rngs=rngs, use_bias=False)

  def _init_norm(self, cfg, rngs, name: str = "final_norm"):
    setattr(self, name, layers.norm(cfg.norm, cfg.width, rngs=rngs, eps=cfg.norm_eps))

  def _init_vocab_head(self, cfg, rngs):
    """BERT's MLM head parts of the vocabulary head, where the config asks for them."""
    if cfg.vocab_transform:
      self.vocab_transform = layers.VocabTransform(cfg, dtype=self.dtype, rngs=rngs)
    if cfg.vocab_bias:
      self.vocab_bias = layers.VocabBias(cfg.vocab_size)

  def _embed(self, tokens, positions=None, token_type_ids=None):
    """Token embeddings [B, T, D], plus learned positions and token types where present."""
    x = self.embed(tokens)
    if hasattr(self, "pos_embed"):
      table = layers.constrain(self.pos_embed[...], ("length", None))  # as Embedder's
      x = x + jnp.take(table, positions, axis=0).astype(x.dtype)
    return layers.add_token_types(self, x, token_type_ids)

  def logits(self, hidden):
    """Vocabulary logits in float32: the tied embedding (or a separate head).

    With model.vocab_transform the hidden states first go through
    VocabTransform, and model.vocab_bias adds a per-token bias (BERT's MLM head).
    """
    if hasattr(self, "vocab_transform"):
      hidden = self.vocab_transform(hidden)
    if self.logits_scale is not None:
      hidden = hidden * self.logits_scale
    logits = layers.vocab_logits(self, hidden)
    return self.vocab_bias(logits) if hasattr(self, "vocab_bias") else logits
