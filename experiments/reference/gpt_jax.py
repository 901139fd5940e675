"""A minimal GPT train step in plain JAX + optax: the framework-overhead baseline.

The same architecture as Trellis' decoder (pre-norm RMSNorm blocks, RoPE,
biased projections, tanh-GELU MLP, tied embeddings, final norm) and the same
optimizer (AdamW with global-norm clipping), written as one would by hand:
params in a dict, one `jax.jit`, no sharding, no packing (one document per row).
"""

import jax
import jax.numpy as jnp
import optax


def init(key, *, vocab: int, width: int, layers: int, mlp: int) -> dict:
  """Params: float32, fan-in scaled normals."""
  keys = iter(jax.random.split(key, 2 + 6 * layers))
  dense = lambda n_in, n_out: {"w": jax.random.normal(next(keys), (n_in, n_out)) * n_in ** -0.5,
                               "b": jnp.zeros((n_out,))}
  blocks = [{"norm1": jnp.ones((width,)), "q": dense(width, width), "k": dense(width, width),
             "v": dense(width, width), "o": dense(width, width), "norm2": jnp.ones((width,)),
             "up": dense(width, mlp), "down": dense(mlp, width)} for _ in range(layers)]
  return {"embed": jax.random.normal(next(keys), (vocab, width)) * width ** -0.5,
          "blocks": blocks, "norm": jnp.ones((width,))}


def _rms(x, scale):
  x = x.astype(jnp.float32)
  return x * jax.lax.rsqrt(jnp.mean(x * x, -1, keepdims=True) + 1e-6) * scale


def _rope(x):
  half = x.shape[-1] // 2
  angle = jnp.arange(x.shape[1])[:, None] * 10000.0 ** (-jnp.arange(half) / half)
  sin, cos = jnp.sin(angle)[None, :, None], jnp.cos(angle)[None, :, None]
  x1, x2 = jnp.split(x.astype(jnp.float32), 2, -1)
  return jnp.concatenate([x1 * cos - x2 * sin, x2 * cos + x1 * sin], -1)


def forward(params, tokens, heads: int, dtype):
  """Logits [B, T-1, V] in float32 (no logits for the last token, which has no target).

  Matmuls take `dtype` inputs and accumulate in float32.
  """
  mm = lambda x, p: (jnp.matmul(x.astype(dtype), p["w"].astype(dtype),
                                preferred_element_type=jnp.float32) + p["b"])
  x = params["embed"][tokens]
  for blk in params["blocks"]:
    h = _rms(x, blk["norm1"])
    split = lambda y: y.reshape(*y.shape[:2], heads, -1)
    q, k, v = _rope(split(mm(h, blk["q"]))), _rope(split(mm(h, blk["k"]))), split(mm(h, blk["v"]))
    y = jax.nn.dot_product_attention(q.astype(dtype), k.astype(dtype), v.astype(dtype),
                                     is_causal=True)
    x = x + mm(y.reshape(x.shape), blk["o"])
    x = x + mm(jax.nn.gelu(mm(_rms(x, blk["norm2"]), blk["up"])), blk["down"])
  x = _rms(x[:, :-1], params["norm"])
  return jnp.matmul(x.astype(dtype), params["embed"].T.astype(dtype),
                    preferred_element_type=jnp.float32)


def make_step(tx: optax.GradientTransformation, heads: int, dtype):
  """A jitted (params, opt_state, tokens) -> (params, opt_state, loss), state donated."""

  def loss_fn(params, tokens):
    logits = forward(params, tokens, heads, dtype)
    return optax.softmax_cross_entropy_with_integer_labels(logits, tokens[:, 1:]).mean()

  @jax.jit(donate_argnums=(0, 1))
  def step(params, opt_state, tokens):
    loss, grads = jax.value_and_grad(loss_fn)(params, tokens)
    updates, opt_state = tx.update(grads, opt_state, params)
    return optax.apply_updates(params, updates), opt_state, loss

  return step
