"""Transformer backbones: decoder (GPT), encoder (BERT) and encoder-decoder (T5).

Blocks are pre-norm (GPT-2, T5) or post-norm (BERT: `model.prenorm=False`);
embeddings are tied; positions are RoPE or learned. Encoders add token-type
embeddings (`model.type_vocab_size`). Packed rows are handled by `segment_ids`
(tokens attend only within their segment) and `positions` (restart at every
segment), so documents never see each other. Training passes run each block
under `model.remat` (layers.remat); attention goes through `model.attention`.
"""

import jax.numpy as jnp
from flax import nnx

from research.errors import ConfigError
from research.models import layers


def _defaults(tokens, segment_ids, positions):
  """One segment and positions 0..T-1 where the caller gave none."""
  if segment_ids is None:
    segment_ids = jnp.ones_like(tokens)
  if positions is None:
    positions = jnp.broadcast_to(jnp.arange(tokens.shape[1]), tokens.shape)
  return segment_ids, positions


class Block(nnx.Module):
  """Self-attention, optional cross-attention, MLP: residual branches with dropout.

  Pre-norm computes x + f(norm(x)); post-norm computes norm(x + f(x)).
  """

  def __init__(self, cfg, *, dtype, rngs, cross: bool = False):
    self.dropout, self.prenorm = cfg.dropout, cfg.prenorm
    rope_base = cfg.rope_base if cfg.position == "rope" else None
    self.attn_norm = layers.norm(cfg.norm, cfg.width, rngs=rngs, eps=cfg.norm_eps)
    self.attn = layers.Attention(cfg.width, cfg.num_heads, dtype=dtype, rngs=rngs,
                                 rope_base=rope_base, implementation=cfg.attention)
    if cross:
      # No rotary positions across two sequences: the source's order is in its states.
      self.cross_norm = layers.norm(cfg.norm, cfg.width, rngs=rngs, eps=cfg.norm_eps)
      self.cross = layers.Attention(cfg.width, cfg.num_heads, dtype=dtype, rngs=rngs,
                                    implementation=cfg.attention)
    self.mlp_norm = layers.norm(cfg.norm, cfg.width, rngs=rngs, eps=cfg.norm_eps)
    self.mlp = layers.MLP(cfg.width, cfg.mlp_dim or 4 * cfg.width, cfg.mlp, dtype=dtype,
                          gelu_approximate=cfg.gelu_approximate,
                          rngs=rngs)

  def _input(self, norm, x):
    return norm(x).astype(x.dtype) if self.prenorm else x

  def _output(self, norm, x, h, rng, deterministic):
    x = x + layers.dropout(h, self.dropout, rng, deterministic)
    return x if self.prenorm else norm(x).astype(x.dtype)

  def __call__(self, x, mask, positions, rng, deterministic, cache=None, cache_index=None,
               context=None, context_mask=None):
    r1, r2, r3 = layers.split_rng(rng, 3)
    h, cache = self.attn(self._input(self.attn_norm, x), mask, positions=positions,
                         cache=cache, cache_index=cache_index)
    x = self._output(self.attn_norm, x, h, r1, deterministic)
    if context is not None:
      h, _ = self.cross(self._input(self.cross_norm, x), context_mask, context=context)
      x = self._output(self.cross_norm, x, h, r3, deterministic)
    h = self.mlp(self._input(self.mlp_norm, x))
    return self._output(self.mlp_norm, x, h, r2, deterministic), cache


def _run(blocks, x, mask, positions, rngs, deterministic, remat, **context):
  """x through every block, each rematerialised per `remat` (model.remat)."""

  def call(block, x, rng):
    return block(x, mask, positions, rng, deterministic, **context)[0]

  call = layers.remat(call, remat)
  for block, rng in zip(blocks, rngs):
    x = call(block, x, rng)
  return x


class _Embedded(nnx.Module):
  """What every Transformer shares: token/position embeddings and the vocabulary head."""

  def _init_embeddings(self, cfg, rngs, token_types: bool):
    self.dtype = layers.DTYPES[cfg.dtype]
    self.dropout, self.prenorm, self.remat = cfg.dropout, cfg.prenorm, cfg.remat
    self.embed = layers.Embedder(cfg.vocab_size, cfg.width, dtype=self.dtype, rngs=rngs)
    if cfg.position == "learned":
      self.pos_embed = nnx.Param(
          nnx.initializers.normal(0.02)(rngs.params(), (cfg.max_len, cfg.width)),
          axes=("length", "embed"))
    if token_types and cfg.type_vocab_size > 0:
      self.type_embed = layers.token_types(cfg.type_vocab_size, cfg.width, rngs=rngs)
    if not cfg.tie_embeddings:
      self.head = layers.dense(cfg.width, cfg.vocab_size, ("embed", "vocab"),
                               dtype=self.dtype, rngs=rngs, use_bias=False)

  def _embed(self, tokens, positions, token_type_ids=None):
    x = self.embed(tokens)
    if hasattr(self, "pos_embed"):
      x = x + jnp.take(self.pos_embed[...], positions, axis=0).astype(x.dtype)
    return layers.add_token_types(self, x, token_type_ids)

  def _norm_if(self, prenorm: bool, norm, x):
    """`norm(x)` when this model's norms sit there (pre-norm: output; post-norm: input)."""
    return norm(x).astype(self.dtype) if self.prenorm == prenorm else x

  def logits(self, hidden):
    """Vocabulary logits in float32 (the tied embedding, or a separate head)."""
    return layers.vocab_logits(self, hidden)


class Transformer(_Embedded):
  """A stack of blocks; `causal=True` is a decoder, `causal=False` an encoder.

  Pre-norm stacks end with `final_norm`; post-norm (BERT) ones instead norm
  the embeddings (`final_norm` then sits at the input, as BERT's embedding
  LayerNorm). Encoders take optional `token_type_ids` [B, T].
  """

  def __init__(self, cfg, *, causal: bool, rngs: nnx.Rngs):
    self.causal = causal
    self._init_embeddings(cfg, rngs, token_types=not causal)
    self.blocks = nnx.List([Block(cfg, dtype=self.dtype, rngs=rngs)
                            for _ in range(cfg.num_layers)])
    self.final_norm = layers.norm(cfg.norm, cfg.width, rngs=rngs, eps=cfg.norm_eps)

  def __call__(self, tokens, *, segment_ids=None, positions=None, deterministic=True,
               rng=None, token_type_ids=None):
    """Hidden states [B, T, width] of token ids [B, T]."""
    segment_ids, positions = _defaults(tokens, segment_ids, positions)
    mask = layers.attention_mask(segment_ids, segment_ids, self.causal)
    rngs = layers.split_rng(rng, len(self.blocks) + 1)
    x = self._norm_if(False, self.final_norm, self._embed(tokens, positions, token_type_ids))
    x = layers.dropout(x, self.dropout, rngs[-1], deterministic)
    x = _run(self.blocks, x, mask, positions, rngs, deterministic, self.remat)
    return self._norm_if(True, self.final_norm, x)


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
    x, mask, positions = _step_inputs(self, tokens, cache)
    x = self._norm_if(False, self.final_norm, x)
    new_layers = []
    for block, layer_cache in zip(self.blocks, cache["layers"]):
      x, layer_cache = block(x, mask, positions, None, True, cache=layer_cache,
                             cache_index=cache["index"])
      new_layers.append(layer_cache)
    logits = self.logits(self._norm_if(True, self.final_norm, x))
    return logits, {"layers": new_layers, "index": cache["index"] + tokens.shape[1]}


def _step_inputs(model, tokens, cache):
  """Embeddings, causal cache mask and positions of tokens [B, S] fed at cache["index"]."""
  index, steps = cache["index"], tokens.shape[1]
  positions = jnp.broadcast_to(index + jnp.arange(steps), tokens.shape)
  max_len = cache["layers"][0]["k"].shape[1]
  ones_q, ones_k = jnp.ones_like(tokens), jnp.ones((tokens.shape[0], max_len), tokens.dtype)
  # Keys past the write offset are still zeros: the causal mask hides them.
  mask = layers.attention_mask(ones_q, ones_k, True, q_index=positions[0],
                               k_index=jnp.arange(max_len))
  return model._embed(tokens, positions), mask, positions


class EncoderDecoder(_Embedded):
  """T5-style: a bidirectional encoder, and a causal decoder that cross-attends to it.

  One embedding matrix serves the source, the target and the output head.
  `model(tokens, ...)` is the encoder (the encoder contract, shared with
  `kind="encoder"`), so `causal` is False for the model as a whole; the
  decoder is causal. `model.num_layers` blocks per stack. Packed seq2seq rows
  pair target segment k with source segment k.
  """

  def __init__(self, cfg, *, rngs: nnx.Rngs):
    self.causal = False
    self._init_embeddings(cfg, rngs, token_types=False)
    self.encoder_blocks = nnx.List([Block(cfg, dtype=self.dtype, rngs=rngs)
                                    for _ in range(cfg.num_layers)])
    self.encoder_norm = layers.norm(cfg.norm, cfg.width, rngs=rngs, eps=cfg.norm_eps)
    self.decoder_blocks = nnx.List([Block(cfg, dtype=self.dtype, rngs=rngs, cross=True)
                                    for _ in range(cfg.num_layers)])
    self.decoder_norm = layers.norm(cfg.norm, cfg.width, rngs=rngs, eps=cfg.norm_eps)

  def encode(self, tokens, *, segment_ids=None, positions=None, deterministic=True, rng=None):
    """Encoded source [B, S, width] of source ids [B, S]."""
    segment_ids, positions = _defaults(tokens, segment_ids, positions)
    mask = layers.attention_mask(segment_ids, segment_ids, False)
    rngs = layers.split_rng(rng, len(self.encoder_blocks) + 1)
    x = self._norm_if(False, self.encoder_norm, self._embed(tokens, positions))
    x = layers.dropout(x, self.dropout, rngs[-1], deterministic)
    x = _run(self.encoder_blocks, x, mask, positions, rngs, deterministic, self.remat)
    return self._norm_if(True, self.encoder_norm, x)

  def __call__(self, tokens, *, segment_ids=None, positions=None, deterministic=True,
               rng=None, token_type_ids=None):
    """The encoder's hidden states (see `encode`); there are no token types."""
    x = self.encode(tokens, segment_ids=segment_ids, positions=positions,
                    deterministic=deterministic, rng=rng)
    return layers.add_token_types(self, x, token_type_ids)

  def decode(self, targets, encoded, *, segment_ids=None, positions=None,
             source_segment_ids=None, deterministic=True, rng=None):
    """Decoder hidden states [B, T, width] of target ids [B, T] given `encode`'s output.

    Target t sees targets <= t of its segment and the source tokens of the
    same segment (`source_segment_ids`, default all 1; 0 marks padding when
    the targets are one segment of 1s).
    """
    segment_ids, positions = _defaults(targets, segment_ids, positions)
    if source_segment_ids is None:
      source_segment_ids = jnp.ones(encoded.shape[:2], segment_ids.dtype)
    mask = layers.attention_mask(segment_ids, segment_ids, True)
    cross_mask = layers.attention_mask(segment_ids, source_segment_ids, False)
    rngs = layers.split_rng(rng, len(self.decoder_blocks) + 1)
    x = self._norm_if(False, self.decoder_norm, self._embed(targets, positions))
    x = layers.dropout(x, self.dropout, rngs[-1], deterministic)
    x = _run(self.decoder_blocks, x, mask, positions, rngs, deterministic, self.remat,
             context=encoded, context_mask=cross_mask)
    return self._norm_if(True, self.decoder_norm, x)

  def init_cache(self, batch: int, max_len: int, *, encoded, source_segment_ids=None):
    """Decoding state for up to max_len target tokens against one encoded source.

    Holds each decoder layer's self-attention KV cache, the cross-attention
    keys and values of `encoded` [B, S, width] (projected once, here), and the
    source mask: `source_segment_ids` [B, S] > 0 (default: no padding).
    """
    valid = (jnp.ones(encoded.shape[:2], bool) if source_segment_ids is None
             else source_segment_ids > 0)
    return {"layers": [b.attn.init_cache(batch, max_len, self.dtype)
                       for b in self.decoder_blocks],
            "cross": [b.cross.project_context(encoded) for b in self.decoder_blocks],
            "source_mask": valid[:, None, None, :], "index": jnp.zeros((), jnp.int32)}

  def decode_step(self, tokens, cache):
    """Logits for the next target tokens [B, S]; equals `logits(decode(...))` in full."""
    x, mask, positions = _step_inputs(self, tokens, cache)
    x = self._norm_if(False, self.decoder_norm, x)
    new_layers = []
    for block, layer_cache, kv in zip(self.decoder_blocks, cache["layers"], cache["cross"]):
      x, layer_cache = block(x, mask, positions, None, True, cache=layer_cache,
                             cache_index=cache["index"], context=kv,
                             context_mask=cache["source_mask"])
      new_layers.append(layer_cache)
    logits = self.logits(self._norm_if(True, self.decoder_norm, x))
    return logits, dict(cache, layers=new_layers, index=cache["index"] + tokens.shape[1])


def build(cfg, *, rngs: nnx.Rngs) -> nnx.Module:
  """The Transformer of `cfg.kind`."""
  if cfg.kind == "decoder":
    return Decoder(cfg, rngs=rngs)
  if cfg.kind == "encoder":
    return Transformer(cfg, causal=False, rngs=rngs)
  if cfg.kind == "encoder_decoder":
    return EncoderDecoder(cfg, rngs=rngs)
  raise ConfigError(f"model.kind={cfg.kind} is not available for model.arch=transformer")
