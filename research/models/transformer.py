"""Transformer backbones: decoder (GPT), encoder (BERT) and encoder-decoder (T5).

Blocks are pre-norm (GPT-2, T5) or post-norm (BERT: `model.prenorm=False`);
embeddings are tied; positions are RoPE or learned. A pre-norm stack ends with
a norm (`final_norm`; `encoder_norm`/`decoder_norm` in an encoder-decoder), a
post-norm stack instead norms its embeddings (`embed_norm`,
`encoder_embed_norm`/`decoder_embed_norm`: BERT's embedding LayerNorm, which
learns and freezes with the embeddings). The vocabulary head may carry BERT's
MLM transform and output bias (`model.vocab_transform`, `model.vocab_bias`).
`model.attention_dropout` drops attention probabilities in training. Encoders add token-type
embeddings (`model.type_vocab_size`). Packed rows are handled by `segment_ids`
(tokens attend only within their segment) and `positions` (restart at every
segment), so documents never see each other. Training passes run each block
under `model.remat` (layers.remat); attention goes through `model.attention`.

Each stack of blocks is one Block whose params are stacked on a leading
"layers" logical axis (LAYER_AXIS): "backbone/blocks/attn/query/kernel" is
[num_layers, width, width], layer i at [i]; decoding caches are stacked alike,
on axis 1. `model.scan_layers` only chooses how the stack runs: one `lax.scan`
over the layers (the step compiles one block body, whatever the depth) or a
Python loop running each block on its slice of the params. The params, their
names and a seed's weights are the same either way, so it may change on resume.

Why ~480 lines: the three kinds share their blocks, embeddings, masks (sliding
windows), position biases (ALiBi, T5's relative buckets) and decoding helpers
here, and each stack runs scanned or unrolled from the same params.
"""

from typing import NamedTuple

import jax
import jax.numpy as jnp
from flax import nnx

from research.errors import ConfigError
from research.models import layers
from research.models.backbone import Backbone


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
    attention = dict(dtype=dtype, rngs=rngs, implementation=cfg.attention,
                     dropout=cfg.attention_dropout, num_kv_heads=cfg.num_kv_heads,
                     head_dim=cfg.head_dim, use_bias=cfg.qkv_bias, out_bias=cfg.out_bias,
                     scale=cfg.scale_attention)
    rope_base = cfg.rope_base if cfg.position == "rope" else None
    self.attn_norm = layers.norm(cfg.norm, cfg.width, rngs=rngs, eps=cfg.norm_eps)
    self.attn = layers.Attention(cfg.width, cfg.num_heads, rope_base=rope_base, **attention)
    if cross:
      # No positions across two sequences: the source's order is in its states.
      self.cross_norm = layers.norm(cfg.norm, cfg.width, rngs=rngs, eps=cfg.norm_eps)
      self.cross = layers.Attention(cfg.width, cfg.num_heads, **attention)
    self.mlp_norm = layers.norm(cfg.norm, cfg.width, rngs=rngs, eps=cfg.norm_eps)
    self.mlp = layers.MLP(cfg.width, cfg.mlp_dim or 4 * cfg.width, cfg.mlp, dtype=dtype,
                          gelu_approximate=cfg.gelu_approximate, use_bias=cfg.mlp_bias,
                          rngs=rngs)

  def _input(self, norm, x):
    return norm(x).astype(x.dtype) if self.prenorm else x

  def _output(self, norm, x, h, rng, deterministic):
    x = x + layers.dropout(h, self.dropout, rng, deterministic)
    return x if self.prenorm else norm(x).astype(x.dtype)

  def __call__(self, x, mask, positions, rng, deterministic, cache=None, cache_index=None,
               context=None, context_mask=None, bias=None):
    """One block; `mask` [B, 1, T, S] and `bias` (None, or [B, H, T, S] added to the
    scores) are its self-attention's."""
    r1, r2, r3 = layers.split_rng(rng, 3)
    # Attention-probability dropout keys are folded from the block's key, so the
    # residual dropout keys (and results with attention_dropout=0) stay as they were.
    attn_rng, cross_rng = ((None, None) if rng is None or deterministic
                           else (jax.random.fold_in(rng, 3), jax.random.fold_in(rng, 4)))
    h, cache = self.attn(self._input(self.attn_norm, x), mask, positions=positions,
                         cache=cache, cache_index=cache_index, dropout_rng=attn_rng,
                         bias=bias)
    x = self._output(self.attn_norm, x, h, r1, deterministic)
    if context is not None:
      h, _ = self.cross(self._input(self.cross_norm, x), context_mask, context=context,
                        dropout_rng=cross_rng)
      x = self._output(self.cross_norm, x, h, r3, deterministic)
    h = self.mlp(self._input(self.mlp_norm, x))
    return self._output(self.mlp_norm, x, h, r2, deterministic), cache


# The logical name of the leading axis of a stack's params: layer i of "blocks/<rest>" is [i].
LAYER_AXIS = "layers"


def _blocks(cfg, *, dtype, rngs, cross: bool = False):
  """One Block holding all `cfg.num_layers` layers' params, stacked on a leading LAYER_AXIS.

  Built by a scan that carries the params stream's count from layer to layer, so
  layer i draws the keys it would draw were the blocks built one after the other,
  and initialisation compiles one block whatever the depth.
  """
  stream, graphdefs = rngs.params, []

  def build(count, _):
    layer_rngs = nnx.Rngs(params=stream.key[...])
    layer_rngs.params.count[...] = count
    graphdef, state = nnx.split(Block(cfg, dtype=dtype, rngs=layer_rngs, cross=cross))
    graphdefs.append(graphdef)
    return layer_rngs.params.count[...], state

  count, stacked = jax.lax.scan(build, stream.count[...], length=cfg.num_layers)
  stream.count[...] = count

  def add_axis(variable):
    axes = variable.get_metadata().get("axes") or (None,) * (variable.ndim - 1)
    return variable.replace(axes=(LAYER_AXIS, *axes))

  stacked = jax.tree.map(add_axis, stacked, is_leaf=lambda x: isinstance(x, nnx.Variable))
  return nnx.merge(graphdefs[0], stacked)


def _layer(graphdef, params, i: int):
  """Block i of a stack split as (graphdef, stacked params): its params are [i] of each."""
  return nnx.merge(graphdef, jax.tree.map(lambda a: a[i], params))


class Masks(NamedTuple):
  """A stack's self-attention masks [B, 1, T, S]: `full` for its global layers, `local`
  (the sliding window; None: there is none) for the layers `model.local_layers` marks."""
  full: jax.Array
  local: jax.Array | None = None

  def layer(self, local):
    """The mask of a layer whose `local` flag (a bool, or a traced one in a scan) is given."""
    if self.local is None:
      return self.full
    if isinstance(local, bool):
      return self.local if local else self.full
    return jnp.where(local, self.local, self.full)


def _masks(model, q_segments, k_segments, causal: bool, q_index=None, k_index=None) -> Masks:
  """The Masks of a stack (its sliding window per model.sliding_window)."""
  full = layers.attention_mask(q_segments, k_segments, causal, q_index, k_index)
  if not model.window:
    return Masks(full)
  local = layers.attention_mask(q_segments, k_segments, causal, q_index, k_index,
                                window=model.window)
  return Masks(local) if all(model.local_layers) else Masks(full, local)


def _run(model, blocks, x, masks: Masks, positions, rngs, deterministic, **context):
  """x through every block, each rematerialised per `model.remat`.

  `rngs[i]` is block i's key (None: deterministic). model.scan_layers runs the
  blocks as one lax.scan over the stacked params; otherwise a Python loop runs
  each on its slice of them (the same params either way).
  """
  graphdef, params = nnx.split(blocks)
  local = jnp.asarray(model.local_layers)
  if model.scan_layers:

    def body(x, layer):
      params, rng, is_local = layer
      return nnx.merge(graphdef, params)(x, masks.layer(is_local), positions, rng,
                                         deterministic, **context)[0]

    body = layers.remat(body, model.remat, in_scan=True)
    keys = None if rngs[0] is None else jnp.stack(rngs[:model.num_layers])
    return jax.lax.scan(lambda x, layer: (body(x, layer), None), x, (params, keys, local))[0]

  def call(block, x, rng, mask):
    return block(x, mask, positions, rng, deterministic, **context)[0]

  call = layers.remat(call, model.remat)
  for i in range(model.num_layers):
    x = call(_layer(graphdef, params, i), x, rngs[i], masks.layer(model.local_layers[i]))
  return x


def _per_layer(model, blocks, fn):
  """fn(block) of every layer, its arrays stacked on axis 1 ([B, L, ...]: batch-major)."""
  graphdef, params = nnx.split(blocks)
  if model.scan_layers:
    return jax.vmap(lambda p: fn(nnx.merge(graphdef, p)), out_axes=1)(params)
  outs = [fn(_layer(graphdef, params, i)) for i in range(model.num_layers)]
  return jax.tree.map(lambda *xs: jnp.stack(xs, 1), *outs)


def _layer_slice(tree, i):
  """Layer i of caches stacked on axis 1 ([B, L, ...]: batch-major, as beam search needs)."""
  return jax.tree.map(lambda a: jax.lax.dynamic_index_in_dim(a, i, 1, keepdims=False), tree)


def _decode_blocks(model, blocks, x, masks: Masks, positions, cache, cross=None, cross_mask=None,
                   bias=None):
  """x through every block of one decoding step; returns (x, the new self-attention caches).

  The caches (and `cross`, the cross-attention keys and values) hold every
  layer stacked on axis 1; layer i's step updates [:, i] of them in place, in
  one lax.scan over the layers (model.scan_layers) or a Python loop.
  """
  graphdef, params = nnx.split(blocks)
  index = cache["index"]

  local = jnp.asarray(model.local_layers)

  def step(x, kv, block, i):
    context = None if cross is None else _layer_slice(cross, i)
    x, layer_kv = block(x, masks.layer(local[i]), positions, None, True,
                        cache=_layer_slice(kv, i), cache_index=index, context=context,
                        context_mask=cross_mask, bias=bias)
    kv = jax.tree.map(lambda a, u: jax.lax.dynamic_update_index_in_dim(a, u, i, 1), kv, layer_kv)
    return x, kv

  if model.scan_layers:

    def body(carry, layer):
      params, i = layer
      return step(*carry, nnx.merge(graphdef, params), i), None

    return jax.lax.scan(body, (x, cache["layers"]), (params, jnp.arange(model.num_layers)))[0]
  kv = cache["layers"]
  for i in range(model.num_layers):
    x, kv = step(x, kv, _layer(graphdef, params, i), i)
  return x, kv


def _init_layer_caches(model, blocks, batch: int, max_len: int):
  """Empty self-attention KV caches of every layer, stacked on axis 1 ([B, L, max_len, ...])."""
  one = blocks.attn.init_cache(batch, max_len, model.dtype)
  return jax.tree.map(lambda c: jnp.zeros((batch, model.num_layers, *c.shape[1:]), c.dtype), one)


class _Embedded(Backbone):
  """What every Transformer shares: learned positions, and norms named for where they sit."""

  def _init_shared(self, cfg, rngs, token_types: bool):
    """The embeddings (learned positions included) and the untied head of every stack."""
    self._init_embeddings(cfg, rngs, token_types=token_types, positions=True)
    self.prenorm, self.num_layers, self.scan_layers = cfg.prenorm, cfg.num_layers, cfg.scan_layers
    self.position, self.num_heads, self.window = cfg.position, cfg.num_heads, cfg.sliding_window
    # Which layers the sliding window applies to (GPT-Neo alternates global and local).
    self.local_layers = tuple(cfg.window_layers == "all" or i % 2 == 1
                              for i in range(cfg.num_layers))
    self._init_head(cfg, rngs)

  def _init_relative_bias(self, cfg, rngs, name: str, bidirectional: bool):
    """T5's relative position bias table `name` of one stack (model.position=relative)."""
    if cfg.position == "relative":
      setattr(self, name, layers.RelativeBias(cfg, bidirectional=bidirectional, rngs=rngs))

  def _position_bias(self, name: str, q_positions, k_positions):
    """The additive self-attention bias [B, H, Tq, Tk] of positions, None for rope/learned."""
    if self.position == "alibi":
      return layers.alibi_bias(self.num_heads, q_positions, k_positions)
    if self.position == "relative":
      return getattr(self, name)(q_positions, k_positions)
    return None

  def _stack_norm(self, cfg, rngs, prenorm_name: str, postnorm_name: str):
    """The norm outside a stack's blocks, named for where it sits.

    Pre-norm: `prenorm_name`, at the stack's output. Post-norm: `postnorm_name`, on
    the embeddings (BERT's embedding LayerNorm); "embed" in its name makes it learn
    and freeze with the embeddings (optim.layer_index). Same place in the params
    stream either way, so a seed gives the same weights.
    """
    self._init_norm(cfg, rngs, prenorm_name if cfg.prenorm else postnorm_name)
    if cfg.prenorm and cfg.embed_norm:  # BLOOM's word_embeddings_layernorm
      self._init_norm(cfg, rngs, postnorm_name)

  def _norm_if(self, name: str, x):
    """Norm `name` of x where this model has it (pre-norm: the output norm and maybe an
    embedding norm; post-norm: the embedding norm)."""
    return getattr(self, name)(x).astype(self.dtype) if hasattr(self, name) else x


class Transformer(_Embedded):
  """A stack of blocks; `causal=True` is a decoder, `causal=False` an encoder.

  Pre-norm stacks end with `final_norm`; post-norm (BERT) ones instead norm
  the embeddings (`embed_norm`, BERT's embedding LayerNorm). Encoders take
  optional `token_type_ids` [B, T].
  """

  def __init__(self, cfg, *, causal: bool, rngs: nnx.Rngs):
    self.causal = causal
    self._init_shared(cfg, rngs, token_types=not causal)
    self.blocks = _blocks(cfg, dtype=self.dtype, rngs=rngs)
    self._stack_norm(cfg, rngs, "final_norm", "embed_norm")
    self._init_vocab_head(cfg, rngs)
    self._init_relative_bias(cfg, rngs, "relative_bias", bidirectional=not causal)

  def __call__(self, tokens, *, segment_ids=None, positions=None, deterministic=True,
               rng=None, token_type_ids=None):
    """Hidden states [B, T, width] of token ids [B, T]."""
    segment_ids, positions = _defaults(tokens, segment_ids, positions)
    masks = _masks(self, segment_ids, segment_ids, self.causal)
    rngs = layers.split_rng(rng, self.num_layers + 1)
    x = self._norm_if("embed_norm", self._embed(tokens, positions, token_type_ids))
    x = layers.dropout(x, self.dropout, rngs[-1], deterministic)
    x = _run(self, self.blocks, x, masks, positions, rngs, deterministic,
             bias=self._position_bias("relative_bias", positions, positions))
    return self._norm_if("final_norm", x)


class Decoder(Transformer):
  """The causal stack, plus the KV cache for incremental decoding."""

  def __init__(self, cfg, *, rngs: nnx.Rngs):
    super().__init__(cfg, causal=True, rngs=rngs)

  def init_cache(self, batch: int, max_len: int, pad=None):
    """An empty KV cache for incremental decoding of up to max_len tokens.

    `pad` [B] (default 0) is each row's count of left padding: prompts of
    different lengths, right-aligned, feed in one call; a row's first `pad`
    columns are never attended to and its positions start after them.
    """
    return {"layers": _init_layer_caches(self, self.blocks, batch, max_len),
            "index": jnp.zeros((), jnp.int32), "pad": _pad(batch, pad)}

  def decode_step(self, tokens, cache):
    """Logits for the next tokens [B, S] given the cache; returns the updated cache.

    S may be more than 1 (a prompt is fed in one call). Equal to the full
    forward pass over the concatenated sequence.
    """
    x, masks, positions, k_positions = _step_inputs(self, tokens, cache)
    x = self._norm_if("embed_norm", x)
    x, new_layers = _decode_blocks(self, self.blocks, x, masks, positions, cache,
                                   bias=self._position_bias("relative_bias", positions,
                                                            k_positions))
    logits = self.logits(self._norm_if("final_norm", x))
    return logits, dict(cache, layers=new_layers, index=cache["index"] + tokens.shape[1])


def _pad(batch: int, pad):
  """Each row's left-padding count [B] int32 (None: none)."""
  return jnp.zeros((batch,), jnp.int32) if pad is None else jnp.asarray(pad, jnp.int32)


def _step_inputs(model, tokens, cache):
  """Embeddings, causal cache Masks, positions of tokens [B, S] fed at cache["index"], and
  the cache's key positions [B, max_len].

  A row's left padding (cache["pad"]) is a segment of its own: real tokens never
  attend to it, and positions count from the first real token.
  """
  index, steps = cache["index"], tokens.shape[1]
  max_len = jax.tree.leaves(cache["layers"])[0].shape[-3]  # [..., max_len, heads, head_dim]
  pad = cache["pad"][:, None]
  q_index, k_index = index + jnp.arange(steps), jnp.arange(max_len)
  positions = jnp.maximum(q_index - pad, 0)
  # Keys past the write offset are still zeros: the causal mask hides them.
  masks = _masks(model, (q_index >= pad).astype(jnp.int32), (k_index >= pad).astype(jnp.int32),
                 True, q_index=q_index, k_index=k_index)
  k_positions = jnp.maximum(k_index - pad, 0)
  return model._embed(tokens, positions), masks, positions, k_positions


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
    self._init_shared(cfg, rngs, token_types=False)
    self.encoder_blocks = _blocks(cfg, dtype=self.dtype, rngs=rngs)
    self._stack_norm(cfg, rngs, "encoder_norm", "encoder_embed_norm")
    self.decoder_blocks = _blocks(cfg, dtype=self.dtype, rngs=rngs, cross=True)
    self._stack_norm(cfg, rngs, "decoder_norm", "decoder_embed_norm")
    self._init_vocab_head(cfg, rngs)
    self._init_relative_bias(cfg, rngs, "encoder_relative_bias", bidirectional=True)
    self._init_relative_bias(cfg, rngs, "decoder_relative_bias", bidirectional=False)

  def encode(self, tokens, *, segment_ids=None, positions=None, deterministic=True, rng=None):
    """Encoded source [B, S, width] of source ids [B, S]."""
    segment_ids, positions = _defaults(tokens, segment_ids, positions)
    masks = _masks(self, segment_ids, segment_ids, False)
    rngs = layers.split_rng(rng, self.num_layers + 1)
    x = self._norm_if("encoder_embed_norm", self._embed(tokens, positions))
    x = layers.dropout(x, self.dropout, rngs[-1], deterministic)
    x = _run(self, self.encoder_blocks, x, masks, positions, rngs, deterministic,
             bias=self._position_bias("encoder_relative_bias", positions, positions))
    return self._norm_if("encoder_norm", x)

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
    masks = _masks(self, segment_ids, segment_ids, True)
    cross_mask = layers.attention_mask(segment_ids, source_segment_ids, False)
    rngs = layers.split_rng(rng, self.num_layers + 1)
    x = self._norm_if("decoder_embed_norm", self._embed(targets, positions))
    x = layers.dropout(x, self.dropout, rngs[-1], deterministic)
    x = _run(self, self.decoder_blocks, x, masks, positions, rngs, deterministic,
             context=encoded, context_mask=cross_mask,
             bias=self._position_bias("decoder_relative_bias", positions, positions))
    return self._norm_if("decoder_norm", x)

  def init_cache(self, batch: int, max_len: int, *, encoded, source_segment_ids=None):
    """Decoding state for up to max_len target tokens against one encoded source.

    Holds each decoder layer's self-attention KV cache, the cross-attention
    keys and values of `encoded` [B, S, width] (projected once, here), and the
    source mask: `source_segment_ids` [B, S] > 0 (default: no padding).
    """
    valid = (jnp.ones(encoded.shape[:2], bool) if source_segment_ids is None
             else source_segment_ids > 0)
    cross = _per_layer(self, self.decoder_blocks,
                       lambda block: block.cross.project_context(encoded))
    return {"layers": _init_layer_caches(self, self.decoder_blocks, batch, max_len),
            "cross": cross, "source_mask": valid[:, None, None, :],
            "index": jnp.zeros((), jnp.int32), "pad": _pad(batch, None)}

  def decode_step(self, tokens, cache):
    """Logits for the next target tokens [B, S]; equals `logits(decode(...))` in full."""
    x, masks, positions, k_positions = _step_inputs(self, tokens, cache)
    x = self._norm_if("decoder_embed_norm", x)
    x, new_layers = _decode_blocks(self, self.decoder_blocks, x, masks, positions, cache,
                                   cross=cache["cross"], cross_mask=cache["source_mask"],
                                   bias=self._position_bias("decoder_relative_bias",
                                                            positions, k_positions))
    logits = self.logits(self._norm_if("decoder_norm", x))
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


def flops(cfg, *, length: int, target_length: int = 0, vocab_positions: int = 0) -> float:
  """Forward matmul FLOPs of one row (training costs 3x: the backward is two matmuls per one).

  `length` tokens run through the stack (an encoder-decoder's encoder), `target_length`
  through an encoder-decoder's decoder (0: it does not run, e.g. classification reads only
  the encoder) and `vocab_positions` through the vocabulary head (0: no objective reads
  it). Per token and layer: 2 * 4 * width^2 for the query/key/value/output projections,
  2 * width * mlp_dim per MLP matrix (SwiGLU has three), and 4 * width * L for the
  attention scores QK^T and their product with V over the L keys (all of them: a causal
  mask hides half but XLA computes it). A decoder layer adds cross-attention: query and
  output projections per target token, key and value projections per source token, scores
  over the source. The vocabulary head is 2 * width * vocab per position, plus
  2 * width^2 with model.vocab_transform. Embedding lookups are gathers, and norms,
  softmax and biases are elementwise (PaLM, appendix B): neither is counted.
  """
  d = cfg.width
  q = cfg.num_heads * (cfg.head_dim or d // cfg.num_heads)  # query (and output) width
  kv = (cfg.num_kv_heads or cfg.num_heads) * (cfg.head_dim or d // cfg.num_heads)
  mlp = 2 * d * (cfg.mlp_dim or 4 * d) * (3 if cfg.mlp in ("swiglu", "geglu") else 2)
  self_attention = lambda n: n * (2 * d * (2 * q + 2 * kv) + 4 * q * n)
  stack = cfg.num_layers * (self_attention(length) + length * mlp)
  if cfg.kind == "encoder_decoder" and target_length:
    cross = target_length * (2 * 2 * d * q + 4 * q * length) + length * 2 * 2 * d * kv
    stack += cfg.num_layers * (self_attention(target_length) + cross + target_length * mlp)
  head = 2 * d * (cfg.vocab_size + (d if cfg.vocab_transform else 0))
  return float(stack + head * vocab_positions)
