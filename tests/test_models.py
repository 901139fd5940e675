"""Every registered backbone, every kind it offers: the contract in models/__init__.py.

Adding an architecture to MODELS puts it through all of these with no new
test code: shapes, finite gradients, no causal leak, packed documents that
never interact, and incremental decoding equal to the full forward pass.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from research.config import default_config
from research.models import MODELS

CASES = [(arch, kind) for arch in sorted(MODELS) for kind in MODELS[arch].kinds]
B, T, V = 2, 12, 97


def _model(arch, kind, **overrides):
  cfg = default_config().model
  cfg.update(arch=arch, kind=kind, num_layers=2, width=32, num_heads=4, vocab_size=V,
             max_len=32, **overrides)
  return MODELS[arch](cfg, rngs=nnx.Rngs(0))


def _tokens(seed=0):
  return jax.random.randint(jax.random.PRNGKey(seed), (B, T), 4, V)


@pytest.mark.parametrize("arch,kind", CASES)
def test_shapes_and_finite_gradients(arch, kind):
  model = _model(arch, kind, dropout=0.1)
  tokens = _tokens()
  hidden = model(tokens, deterministic=True)
  assert hidden.shape == (B, T, 32)
  assert model.logits(hidden).shape == (B, T, V)
  graphdef, params = nnx.split(model)

  def loss(params):
    m = nnx.merge(graphdef, params)
    h = m(tokens, deterministic=False, rng=jax.random.PRNGKey(1))
    return jnp.mean(m.logits(h) ** 2)

  grads = jax.grad(loss)(params)
  leaves = jax.tree.leaves(grads)
  assert leaves and all(np.isfinite(np.asarray(g)).all() for g in leaves)
  assert sum(float(jnp.abs(g).sum()) for g in leaves) > 0


@pytest.mark.parametrize("arch,kind", [c for c in CASES if _model(*c).causal])
def test_no_causal_leak(arch, kind):
  model = _model(arch, kind)
  # Changing tokens after t never changes outputs at <= t (and does change later ones).
  base = model(_tokens(3)[:1], deterministic=True)
  for t in (0, 5, T - 2):
    changed = _tokens(3)[:1].at[0, t + 1:].set(7)
    out = model(changed, deterministic=True)
    np.testing.assert_allclose(out[0, :t + 1], base[0, :t + 1], atol=1e-5)
    assert not np.allclose(out[0, t + 1:], base[0, t + 1:], atol=1e-5)


@pytest.mark.parametrize("arch,kind", CASES)
def test_packed_documents_do_not_interact(arch, kind):
  model = _model(arch, kind)
  segments = jnp.asarray([[1] * 5 + [2] * 4 + [3] * 3] * B)
  positions = jnp.asarray([list(range(5)) + list(range(4)) + list(range(3))] * B)
  tokens = _tokens(4)
  base = model(tokens, segment_ids=segments, positions=positions)
  other = tokens.at[:, 5:9].set(11)  # rewrite document 2 only
  out = model(other, segment_ids=segments, positions=positions)
  np.testing.assert_allclose(out[:, :5], base[:, :5], atol=1e-5)
  np.testing.assert_allclose(out[:, 9:], base[:, 9:], atol=1e-5)
  # Document 3 alone, unpacked, gives the same outputs as inside the pack.
  alone = model(tokens[:, 9:], segment_ids=jnp.ones((B, 3), jnp.int32),
                positions=positions[:, 9:])
  np.testing.assert_allclose(alone, base[:, 9:], atol=1e-5)


def _full_logits_and_cache(model, tokens, max_len):
  """The full-pass logits, and a fresh decoding cache; enc-decs decode against a fixed source."""
  if hasattr(model, "encode"):
    source = _tokens(6)[:, :T - 3]
    source_segments = jnp.ones_like(source).at[1, -2:].set(0)  # row 1 has source padding
    encoded = model.encode(source, segment_ids=source_segments)
    hidden = model.decode(tokens, encoded, source_segment_ids=source_segments)
    cache = model.init_cache(B, max_len, encoded=encoded, source_segment_ids=source_segments)
    return model.logits(hidden), cache
  return model.logits(model(tokens, deterministic=True)), model.init_cache(B, max_len)


@pytest.mark.parametrize("arch,kind", [c for c in CASES if hasattr(_model(*c), "decode_step")])
def test_incremental_decoding_equals_full_forward(arch, kind):
  model = _model(arch, kind)
  tokens = _tokens(5)
  full, cache = _full_logits_and_cache(model, tokens, T + 4)
  prompt = 5
  logits, cache = model.decode_step(tokens[:, :prompt], cache)
  steps = [logits]
  for t in range(prompt, T):
    logits, cache = model.decode_step(tokens[:, t:t + 1], cache)
    steps.append(logits)
  np.testing.assert_allclose(jnp.concatenate(steps, 1), full, atol=2e-4, rtol=2e-4)


def test_bfloat16_compute_keeps_float32_params_and_logits():
  model = _model("transformer", "decoder", dtype="bfloat16")
  assert all(p.dtype == jnp.float32 for p in jax.tree.leaves(nnx.state(model, nnx.Param)))
  hidden = model(_tokens(), deterministic=True)
  assert hidden.dtype == jnp.bfloat16
  logits32 = _model("transformer", "decoder").logits(
      _model("transformer", "decoder")(_tokens(), deterministic=True))
  logits16 = model.logits(hidden)
  assert logits16.dtype == jnp.float32
  np.testing.assert_allclose(logits16, logits32, atol=0.15)
