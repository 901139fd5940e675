"""Blocks shared by the backbones: embeddings, norms, MLP, attention, masks.

Every parameter carries logical axis names in its `axes` metadata (e.g.
`("embed", "mlp")`); research/sharding.py maps them to mesh axes through the
rules in the config, so no model file mentions a mesh.

Params are float32. `dtype` is the compute dtype: with bfloat16 the matmuls
take bfloat16 inputs and accumulate in float32 (`preferred_element_type`),
while norms, softmax and logits stay in float32.
"""

import contextlib
import contextvars
import math

import jax
import jax.numpy as jnp
from flax import nnx

DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16}

# model.remat: what a block keeps from its forward pass for the backward; the rest is
# recomputed. "minimal" keeps the outputs of the weight matmuls (costly to redo, a few
# [B, T, D] arrays) and recomputes norms, activations and the [B, H, T, T] attention
# scores; "full" keeps only each block's input.
REMAT_POLICIES = {
    "minimal": jax.checkpoint_policies.dots_with_no_batch_dims_saveable,
    "full": jax.checkpoint_policies.nothing_saveable,
}

# How arrays are laid out on the mesh while a sharded program is traced: a function
# (logical axes, shape) -> sharding, set by the Trainer (research/sharding.py makes it).
# Unset (one device, generation, tests of a bare model) nothing is constrained.
_LAYOUT = contextvars.ContextVar("trellis_layout", default=None)


@contextlib.contextmanager
def laid_out(layout):
  """Within it, `constrain` places arrays by `layout(logical_axes, shape)`."""
  token = _LAYOUT.set(layout)
  try:
    yield
  finally:
    _LAYOUT.reset(token)


def constrain(x, logical_axes: tuple):
  """x laid out by its logical axes on the mesh being traced for (as is, without one)."""
  layout = _LAYOUT.get()
  return x if layout is None else jax.lax.with_sharding_constraint(x, layout(logical_axes,
                                                                             x.shape))


# model.attention -> `implementation` of jax.nn.dot_product_attention (None: JAX chooses).
ATTENTION_IMPLEMENTATIONS = {"auto": None, "xla": "xla", "cudnn": "cudnn"}


def axes(*names):
  """Metadata for a parameter's logical axis names."""
  return {"axes": names}


def dense(in_features, out_features, logical_axes, *, dtype, rngs, use_bias=True,
          init_scale=1.0):
  """A Linear layer with logical axes on its kernel (the bias follows the output axis)."""
  return nnx.Linear(
      in_features, out_features, use_bias=use_bias, dtype=dtype,
      preferred_element_type=jnp.float32,
      kernel_init=nnx.initializers.variance_scaling(init_scale, "fan_in", "truncated_normal"),
      kernel_metadata=axes(*logical_axes), bias_metadata=axes(logical_axes[-1]),
      rngs=rngs)


def norm(kind: str, width: int, *, rngs, eps: float = 1e-6):
  """RMSNorm or LayerNorm, computed in float32."""
  if kind == "rmsnorm":
    return nnx.RMSNorm(width, epsilon=eps, dtype=jnp.float32, scale_metadata=axes("norm"),
                       rngs=rngs)
  return nnx.LayerNorm(width, epsilon=eps, dtype=jnp.float32, scale_metadata=axes("norm"),
                       bias_metadata=axes("norm"), rngs=rngs)


def dropout(x, rate: float, rng, deterministic: bool):
  """Inverted dropout from an explicit key (no RNG state lives in the model)."""
  if deterministic or rate == 0.0:
    return x
  keep = jax.random.bernoulli(rng, 1.0 - rate, x.shape)
  return jnp.where(keep, x / (1.0 - rate), 0).astype(x.dtype)


def remat(fn, policy: str, *, in_scan: bool = False):
  """`fn(module, *args)` rematerialised under a REMAT_POLICIES key ("none": `fn` itself).

  Gradients are those of `fn`: the backward recomputes what the policy did not save,
  dropout included (its masks come from explicit keys). `in_scan`: `fn` is the body
  of a `lax.scan` (model.scan_layers), which needs no barrier against CSE.
  """
  if policy == "none":
    return fn
  return nnx.remat(fn, policy=REMAT_POLICIES[policy], prevent_cse=not in_scan)


def split_rng(rng, n: int):
  """n independent keys, or n Nones when there is no key (deterministic runs)."""
  return [None] * n if rng is None else list(jax.random.split(rng, n))


class Embedder(nnx.Module):
  """Token embedding whose matrix doubles as the output head when tied."""

  def __init__(self, vocab_size: int, width: int, *, dtype, rngs):
    self.dtype = dtype
    # std 1/sqrt(width): unit-scale logits from the tied head at initialisation.
    self.embedding = nnx.Param(
        nnx.initializers.normal(width ** -0.5)(rngs.params(), (vocab_size, width)),
        axes=("vocab", "embed"))

  def __call__(self, tokens):
    # A lookup reads whole rows: the table's embed dim (FSDP shards it) is gathered
    # first. Gathering from the sharded table made XLA replicate the whole [B, T, D]
    # output ("Involuntary full rematerialization" on a data x fsdp mesh).
    table = constrain(self.embedding[...], ("vocab", None))
    return jnp.take(table, tokens, axis=0).astype(self.dtype)

  def attend(self, hidden):
    """Logits against every embedding row, in float32."""
    return jnp.einsum("...d,vd->...v", hidden.astype(self.dtype),
                      self.embedding[...].astype(self.dtype),
                      preferred_element_type=jnp.float32)


def token_types(num_types: int, width: int, *, rngs):
  """The token-type (sentence A/B) embedding table of an encoder, BERT-style."""
  return nnx.Param(nnx.initializers.normal(0.02)(rngs.params(), (num_types, width)),
                   axes=(None, "embed"))


def add_token_types(model, x, token_type_ids):
  """x plus `model.type_embed[token_type_ids]` (type 0 when None).

  A model without a type table (decoders, or type_vocab_size=0) rejects
  explicit ids rather than silently dropping them.
  """
  table = getattr(model, "type_embed", None)
  if table is None:
    if token_type_ids is not None:
      raise ValueError(f"{type(model).__name__} has no token-type embeddings "
                       "(an encoder with model.type_vocab_size > 0 has)")
    return x
  table = constrain(table[...], (None, None))  # whole rows, as Embedder's lookup
  if token_type_ids is None:
    return x + table[0].astype(x.dtype)
  return x + jnp.take(table, token_type_ids, axis=0).astype(x.dtype)


def vocab_logits(model, hidden):
  """Vocabulary logits in float32: `model.head` if it has one, else the tied embedding."""
  if hasattr(model, "head"):
    return model.head(hidden).astype(jnp.float32)
  return model.embed.attend(hidden)


# model.mlp -> the activation of the MLP's hidden units (gated kinds multiply by `up`).
_GATED = {"swiglu": lambda x, approximate: jax.nn.silu(x),
          "geglu": lambda x, approximate: jax.nn.gelu(x, approximate=approximate)}


class MLP(nnx.Module):
  """Position-wise feed-forward: GELU, ReLU (T5 v1.0), or gated: SwiGLU (Shazeer 2020;
  Llama) and GELU-gated GeGLU (T5 v1.1), act(gate(x)) * up(x)."""

  def __init__(self, width: int, hidden: int, kind: str, *, dtype, rngs,
               gelu_approximate: bool = True, use_bias: bool = True):
    self.gelu_approximate = gelu_approximate
    self.kind = kind
    self.up = dense(width, hidden, ("embed", "mlp"), dtype=dtype, rngs=rngs, use_bias=use_bias)
    if kind in _GATED:
      self.gate = dense(width, hidden, ("embed", "mlp"), dtype=dtype, rngs=rngs,
                        use_bias=use_bias)
    self.down = dense(hidden, width, ("mlp", "embed"), dtype=dtype, rngs=rngs,
                      use_bias=use_bias)
    self.dtype = dtype

  def __call__(self, x):
    h = self.up(x)
    if self.kind in _GATED:
      h = _GATED[self.kind](self.gate(x), self.gelu_approximate) * h
    elif self.kind == "relu":
      h = jax.nn.relu(h)
    else:
      h = jax.nn.gelu(h, approximate=self.gelu_approximate)
    return self.down(h.astype(self.dtype)).astype(self.dtype)


def rope(x, positions, base: float):
  """Rotary position embedding (Su et al. 2021) of x [B, T, H, Dh] at positions [B, T]."""
  half = x.shape[-1] // 2
  freq = base ** (-jnp.arange(half, dtype=jnp.float32) / half)
  angle = positions[..., None].astype(jnp.float32) * freq  # [B, T, half]
  sin, cos = jnp.sin(angle)[:, :, None, :], jnp.cos(angle)[:, :, None, :]
  x1, x2 = jnp.split(x.astype(jnp.float32), 2, axis=-1)
  return jnp.concatenate([x1 * cos - x2 * sin, x2 * cos + x1 * sin], -1).astype(x.dtype)


def attention_mask(q_segments, k_segments, causal: bool, q_index=None, k_index=None,
                   window: int = 0):
  """Boolean mask [B, 1, Tq, Tk]: same packed segment, and no look-ahead if causal.

  Causality is by index in the row (`q_index`/`k_index`, default arange), not by
  `positions`, so it holds across segment boundaries too. `window` > 0 keeps only
  keys less than `window` places before (or, not causal, after) the query
  (Mistral's and GPT-Neo's sliding window: q - k < window).
  """
  mask = q_segments[:, :, None] == k_segments[:, None, :]
  if causal or window:
    q_index = jnp.arange(q_segments.shape[1]) if q_index is None else q_index
    k_index = jnp.arange(k_segments.shape[1]) if k_index is None else k_index
    distance = q_index[..., :, None] - k_index[..., None, :]
    if causal:
      mask &= distance >= 0
    if window:
      mask &= jnp.abs(distance) < window
  return mask[:, None]


def alibi_slopes(num_heads: int) -> jnp.ndarray:
  """ALiBi's per-head slopes (Press et al. 2022; BLOOM's), geometric from 2^(-8/n).

  For a head count that is not a power of two, the slopes of the nearest lower
  power of two, then every other slope of the next power up (as BLOOM builds them).
  """
  closest = 2 ** math.floor(math.log2(num_heads))
  base = 2.0 ** (-(2.0 ** -(math.log2(closest) - 3)))
  slopes = [base ** (i + 1) for i in range(closest)]
  if closest < num_heads:
    extra = 2.0 ** (-(2.0 ** -(math.log2(2 * closest) - 3)))
    slopes += [extra ** (i + 1) for i in range(0, 2 * (num_heads - closest), 2)]
  return jnp.asarray(slopes, jnp.float32)


def alibi_bias(num_heads: int, q_positions, k_positions):
  """ALiBi's additive attention bias [B, H, Tq, Tk]: -slope_h * |q - k| (positions [B, T]).

  BLOOM adds slope_h * k instead; the two differ by a constant per query, which
  the softmax cancels.
  """
  distance = jnp.abs(q_positions[:, :, None] - k_positions[:, None, :]).astype(jnp.float32)
  return -alibi_slopes(num_heads)[None, :, None, None] * distance[:, None]


def relative_buckets(relative, *, bidirectional: bool, num_buckets: int, max_distance: int):
  """T5's bucket of each relative position k - q: exact below half the (per-side)
  buckets, logarithmic up to `max_distance`, the last bucket beyond."""
  buckets = 0
  if bidirectional:
    num_buckets //= 2
    buckets = (relative > 0).astype(jnp.int32) * num_buckets
    relative = jnp.abs(relative)
  else:
    relative = -jnp.minimum(relative, 0)
  max_exact = num_buckets // 2
  is_small = relative < max_exact
  # float32 and a floor cast, as T5's own code computes it.
  large = max_exact + (jnp.log(jnp.maximum(relative, 1).astype(jnp.float32) / max_exact)
                       / math.log(max_distance / max_exact)
                       * (num_buckets - max_exact)).astype(jnp.int32)
  large = jnp.minimum(large, num_buckets - 1)
  return buckets + jnp.where(is_small, relative, large)


class RelativeBias(nnx.Module):
  """T5's learned relative position bias: one [buckets, heads] table per stack, shared
  by its layers' self-attention."""

  def __init__(self, cfg, *, bidirectional: bool, rngs):
    self.bidirectional = bidirectional
    self.num_buckets, self.max_distance = cfg.relative_buckets, cfg.relative_max_distance
    self.embedding = nnx.Param(
        nnx.initializers.normal(cfg.width ** -0.5)(rngs.params(),
                                                     (cfg.relative_buckets, cfg.num_heads)),
        axes=(None, "heads"))

  def __call__(self, q_positions, k_positions):
    """The additive bias [B, H, Tq, Tk] of positions [B, Tq] and [B, Tk]."""
    relative = k_positions[:, None, :] - q_positions[:, :, None]
    buckets = relative_buckets(relative, bidirectional=self.bidirectional,
                               num_buckets=self.num_buckets, max_distance=self.max_distance)
    return jnp.moveaxis(jnp.take(self.embedding[...], buckets, axis=0), -1, 1)


def softmax_attention(q, k, v, mask, scale: float, rate: float, rng, bias=None):
  """Attention written out, with dropout on the probabilities (`rate`, key `rng`).

  q [B, T, H, Dh], k/v [B, S, K, Dh] (K key/value heads divide H: grouped-query),
  mask [B, 1, T, S], bias (optional) [B, H, T, S] added to the scaled scores; what
  `jax.nn.dot_product_attention` computes (it has no dropout), softmax in float32.
  """
  groups = q.shape[2] // k.shape[2]
  k, v = jnp.repeat(k, groups, axis=2), jnp.repeat(v, groups, axis=2)
  scores = jnp.einsum("bthd,bshd->bhts", q, k, preferred_element_type=jnp.float32) * scale
  if bias is not None:
    scores = scores + bias
  scores = jnp.where(mask, scores, jnp.finfo(jnp.float32).min)
  probs = dropout(jax.nn.softmax(scores, axis=-1), rate, rng, rng is None)
  return jnp.einsum("bhts,bshd->bthd", probs.astype(v.dtype), v,
                    preferred_element_type=jnp.float32).astype(q.dtype)


class Attention(nnx.Module):
  """Multi-head attention through `jax.nn.dot_product_attention`.

  Self-attention when `context` is None; cross-attention otherwise, where
  `context` is either the context states [B, S, D] or their keys and values
  from `project_context` (computed once per source when decoding). With a
  `cache` ({"k", "v"} of [B, L, K, Dh]), the new keys and values are written
  at `cache_index` and the queries attend to the whole cache. `implementation` is a
  key of ATTENTION_IMPLEMENTATIONS; cuDNN receives the boolean mask as an additive
  bias (jax 0.10), so packed documents stay apart there too. `dropout` is the
  rate of dropout on the attention probabilities, applied when a `dropout_rng` is
  given (training); the softmax is then computed explicitly (`softmax_attention`).

  `num_kv_heads` (default `num_heads`) key/value heads are shared by groups of
  query heads (grouped-query attention); `head_dim` defaults to width // num_heads;
  `scale=False` leaves the scores unscaled (GPT-Neo, T5). `bias` [B, H, T, S]
  (ALiBi, T5's relative positions) is added to the scores.
  """

  def __init__(self, width: int, num_heads: int, *, dtype, rngs, use_bias=True,
               rope_base: float | None = None, implementation: str = "auto",
               dropout: float = 0.0, num_kv_heads: int = 0, head_dim: int = 0,
               out_bias: bool | None = None, scale: bool = True):
    self.num_heads, self.dtype = num_heads, dtype
    self.num_kv_heads = num_kv_heads or num_heads
    self.head_dim = head_dim or width // num_heads
    self.rope_base, self.dropout = rope_base, dropout
    self.scale = 1.0 / math.sqrt(self.head_dim) if scale else 1.0
    self.implementation = ATTENTION_IMPLEMENTATIONS[implementation]
    proj = lambda heads: dense(width, heads * self.head_dim, ("embed", "heads"), dtype=dtype,
                               rngs=rngs, use_bias=use_bias)
    self.query, self.key, self.value = (proj(num_heads), proj(self.num_kv_heads),
                                        proj(self.num_kv_heads))
    self.out = dense(num_heads * self.head_dim, width, ("heads", "embed"), dtype=dtype,
                     rngs=rngs, use_bias=use_bias if out_bias is None else out_bias)

  def _heads(self, layer, x, heads):
    y = layer(x).astype(self.dtype)
    return y.reshape(*y.shape[:-1], heads, self.head_dim)

  def __call__(self, x, mask, *, positions=None, context=None, context_positions=None,
               cache=None, cache_index=None, dropout_rng=None, bias=None):
    q = self._heads(self.query, x, self.num_heads)
    if isinstance(context, dict):
      k, v = context["k"], context["v"]
    else:
      source = x if context is None else context
      k = self._heads(self.key, source, self.num_kv_heads)
      v = self._heads(self.value, source, self.num_kv_heads)
    if self.rope_base is not None:
      q = rope(q, positions, self.rope_base)
      k = rope(k, positions if context is None else context_positions, self.rope_base)
    if cache is not None:
      k = jax.lax.dynamic_update_slice_in_dim(cache["k"], k.astype(cache["k"].dtype),
                                              cache_index, 1)
      v = jax.lax.dynamic_update_slice_in_dim(cache["v"], v.astype(cache["v"].dtype),
                                              cache_index, 1)
      cache = {"k": k, "v": v}
    if self.dropout > 0 and dropout_rng is not None:
      y = softmax_attention(q, k, v, mask, self.scale, self.dropout, dropout_rng, bias)
    else:
      # Softmax in float32 keeps bfloat16 runs stable; XLA fuses the casts.
      y = jax.nn.dot_product_attention(q, k, v, bias=bias, mask=mask, scale=self.scale,
                                       implementation=self.implementation)
    y = y.reshape(*y.shape[:-2], self.num_heads * self.head_dim).astype(self.dtype)
    return self.out(y).astype(self.dtype), cache

  def project_context(self, context):
    """Cross-attention keys and values {"k", "v"} [B, S, K, Dh] of a fixed context."""
    return {"k": self._heads(self.key, context, self.num_kv_heads),
            "v": self._heads(self.value, context, self.num_kv_heads)}

  def init_cache(self, batch: int, max_len: int, dtype):
    shape = (batch, max_len, self.num_kv_heads, self.head_dim)
    return {"k": jnp.zeros(shape, dtype), "v": jnp.zeros(shape, dtype)}


class VocabTransform(nnx.Module):
  """BERT's MLM head transform: dense, GELU (the MLP's), norm, before the vocabulary head."""

  def __init__(self, cfg, *, dtype, rngs):
    self.dtype, self.gelu_approximate = dtype, cfg.gelu_approximate
    self.dense = dense(cfg.width, cfg.width, ("embed", "embed"), dtype=dtype,
                              rngs=rngs)
    self.norm = norm(cfg.norm, cfg.width, rngs=rngs, eps=cfg.norm_eps)

  def __call__(self, hidden):
    h = jax.nn.gelu(self.dense(hidden.astype(self.dtype)), approximate=self.gelu_approximate)
    return self.norm(h).astype(self.dtype)


class VocabBias(nnx.Module):
  """BERT's MLM output bias: one learned logit offset per token (starts at 0)."""

  def __init__(self, vocab_size: int):
    self.bias = nnx.Param(jnp.zeros((vocab_size,), jnp.float32), axes=("vocab",))

  def __call__(self, logits):
    return logits + self.bias[...]
