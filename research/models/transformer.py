"""Transformer backbones: decoder (GPT-style) and encoder (BERT-style).

Pre-norm blocks, tied embeddings, RoPE or learned positions. Packed rows are
handled by `segment_ids` (tokens attend only within their segment) and
`positions` (restart at every segment), so documents never see each other.
"""

import jax.numpy as jnp
from flax import nnx

from research.errors import ConfigError
from research.models import layers


class Block(nnx.Module):
  """Pre-norm attention + MLP, each a residual branch with dropout."""

  def __init__(self, cfg, *, dtype, rngs):
    self.dropout = cfg.dropout
    rope_base = cfg.rope_base if cfg.position == "rope" else None
    self.attn_norm = layers.norm(cfg.norm, cfg.width, rngs=rngs)
    self.attn = layers.Attention(cfg.width, cfg.num_heads, dtype=dtype, rngs=rngs,
                                 rope_base=rope_base)
    self.mlp_norm = layers.norm(cfg.norm, cfg.width, rngs=rngs)
    self.mlp = layers.MLP(cfg.width, cfg.mlp_dim or 4 * cfg.width, cfg.mlp, dtype=dtype,
                          rngs=rngs)

  def __call__(self, x, mask, positions, rng, deterministic, cache=None, cache_index=None):
    r1, r2 = layers.split_rng(rng, 2)
    h, cache = self.attn(self.attn_norm(x).astype(x.dtype), mask, positions=positions,
                         cache=cache, cache_index=cache_index)
    x = x + layers.dropout(h, self.dropout, r1, deterministic)
    h = self.mlp(self.mlp_norm(x).astype(x.dtype))
    return x + layers.dropout(h, self.dropout, r2, deterministic), cache


class Transformer(nnx.Module):
  """A stack of blocks; `causal=True` is a decoder, `causal=False` an encoder."""

  def __init__(self, cfg, *, causal: bool, rngs: nnx.Rngs):
    self.causal = causal
    self.dtype = layers.DTYPES[cfg.dtype]
    self.dropout = cfg.dropout
    self.embed = layers.Embedder(cfg.vocab_size, cfg.width, dtype=self.dtype, rngs=rngs)
    if cfg.position == "learned":
      self.pos_embed = nnx.Param(
          nnx.initializers.normal(0.02)(rngs.params(), (cfg.max_len, cfg.width)),
          axes=("length", "embed"))
    self.blocks = nnx.List([Block(cfg, dtype=self.dtype, rngs=rngs)
                            for _ in range(cfg.num_layers)])
    self.final_norm = layers.norm(cfg.norm, cfg.width, rngs=rngs)
    if not cfg.tie_embeddings:
      self.head = layers.dense(cfg.width, cfg.vocab_size, ("embed", "vocab"),
                               dtype=self.dtype, rngs=rngs, use_bias=False)

  def _embed(self, tokens, positions):
    x = self.embed(tokens)
    if hasattr(self, "pos_embed"):
      x = x + jnp.take(self.pos_embed[...], positions, axis=0).astype(x.dtype)
    return x

  def __call__(self, tokens, *, segment_ids=None, positions=None, deterministic=True,
               rng=None):
    """Hidden states [B, T, width] of token ids [B, T]."""
    if segment_ids is None:
      segment_ids = jnp.ones_like(tokens)
    if positions is None:
      positions = jnp.broadcast_to(jnp.arange(tokens.shape[1]), tokens.shape)
    mask = layers.attention_mask(segment_ids, segment_ids, self.causal)
    rngs = layers.split_rng(rng, len(self.blocks) + 1)
    x = layers.dropout(self._embed(tokens, positions), self.dropout, rngs[-1], deterministic)
    for block, block_rng in zip(self.blocks, rngs):
      x, _ = block(x, mask, positions, block_rng, deterministic)
    return self.final_norm(x).astype(self.dtype)

  def logits(self, hidden):
    """Vocabulary logits in float32 (the tied embedding, or a separate head)."""
    if hasattr(self, "head"):
      return self.head(hidden).astype(jnp.float32)
    return self.embed.attend(hidden)



class Decoder(Transformer):
  """The causal stack, plus the KV cache for incremental decoding."""

  def __init__(self, cfg, *, rngs: nnx.Rngs):
    super().__init__(cfg, causal=True, rngs=rngs)

  def init_cache(self, batch: int, max_len: int):
    """An empty KV cache for incremental decoding of up to max_len tokens."""
    return {"layers": [b.attn.init_cache(batch, max_len, self.dtype) for b in self.blocks],
            "index": jnp.zeros((), jnp.int32)}

  def decode_step(self, tokens, cache):
    """Logits for the next tokens [B, S] given the cache; returns the updated cache.

    S may be more than 1 (a prompt is fed in one call). Equal to the full
    forward pass over the concatenated sequence.
    """
    index = cache["index"]
    steps = tokens.shape[1]
    positions = jnp.broadcast_to(index + jnp.arange(steps), tokens.shape)
    max_len = cache["layers"][0]["k"].shape[1]
    ones_q, ones_k = jnp.ones_like(tokens), jnp.ones((tokens.shape[0], max_len), tokens.dtype)
    # Keys past the write offset are still zeros: the causal mask hides them.
    mask = layers.attention_mask(ones_q, ones_k, True, q_index=positions[0],
                                 k_index=jnp.arange(max_len))
    x = self._embed(tokens, positions)
    new_layers = []
    for block, layer_cache in zip(self.blocks, cache["layers"]):
      x, layer_cache = block(x, mask, positions, None, True, cache=layer_cache,
                             cache_index=index)
      new_layers.append(layer_cache)
    logits = self.logits(self.final_norm(x).astype(self.dtype))
    return logits, {"layers": new_layers, "index": index + steps}


def build(cfg, *, rngs: nnx.Rngs) -> nnx.Module:
  """The Transformer of `cfg.kind`."""
  if cfg.kind == "decoder":
    return Decoder(cfg, rngs=rngs)
  if cfg.kind == "encoder":
    return Transformer(cfg, causal=False, rngs=rngs)
  raise ConfigError(f"model.kind={cfg.kind} is not available for model.arch=transformer yet")
