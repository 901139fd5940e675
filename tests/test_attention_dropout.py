"""model.attention_dropout: dropout on the attention probabilities (BERT's attention_probs_dropout_prob).

Off (0.0, the default) the network computes exactly what it did before the
field existed; on, training outputs are random with the deterministic output
as their expectation, every stack (encoder, decoder, encoder-decoder) applies
it, and model.scan_layers gives the same masks.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from conftest import tiny_config
from research.config import validate
from research.errors import ConfigError
from research.models import MODELS, layers

KINDS = ("encoder", "decoder", "encoder_decoder")
V = 61


def _attention(rate):
  return layers.Attention(32, 4, dtype=jnp.float32, rngs=nnx.Rngs(0), dropout=rate)


def _inputs():
  x = jax.random.normal(jax.random.PRNGKey(1), (2, 6, 32))
  segments = jnp.asarray([[1, 1, 1, 1, 0, 0], [1, 1, 2, 2, 2, 2]])
  return x, segments, layers.attention_mask(segments, segments, False)


def test_attention_dropout_is_unbiased_and_off_when_deterministic():
  x, _, mask = _inputs()
  attn = _attention(0.3)
  deterministic = attn(x, mask)[0]
  np.testing.assert_array_equal(deterministic, _attention(0.0)(x, mask)[0])
  keys = jax.random.split(jax.random.PRNGKey(2), 4000)
  samples = jax.vmap(lambda k: attn(x, mask, dropout_rng=k)[0])(keys)
  assert not np.allclose(samples[0], deterministic, atol=1e-3)
  assert not np.allclose(samples[0], samples[1], atol=1e-3)
  # E[output] is the deterministic output (inverted dropout of the probabilities).
  mean, sem = samples.mean(0), samples.std(0) / np.sqrt(len(keys))
  assert np.all(np.abs(mean - deterministic) <= 5 * sem + 1e-6)


def test_explicit_attention_equals_the_fused_one_and_respects_the_mask():
  x, segments, mask = _inputs()
  attn = _attention(0.3)
  q, k, v = (attn._heads(p, x, attn.num_heads) for p in (attn.query, attn.key, attn.value))
  scale = 1 / np.sqrt(8)
  np.testing.assert_allclose(layers.softmax_attention(q, k, v, mask, scale, 0.0, None),
                             jax.nn.dot_product_attention(q, k, v, mask=mask, scale=scale),
                             atol=1e-6)
  # Keys outside a query's segment get no weight, dropped or not.
  other = x.at[0, 4:].set(100.0).at[1, :2].set(-50.0)
  key = jax.random.PRNGKey(5)
  out, out_other = attn(x, mask, dropout_rng=key)[0], attn(other, mask, dropout_rng=key)[0]
  np.testing.assert_allclose(out_other[0, :4], out[0, :4], atol=1e-5)
  np.testing.assert_allclose(out_other[1, 2:], out[1, 2:], atol=1e-5)


def _hidden(kind, scan=False, **model):
  cfg = tiny_config(**{"model.kind": kind, "model.vocab_size": V, "model.scan_layers": scan,
                       **{f"model.{k}": v for k, v in model.items()}})
  network = MODELS["transformer"](cfg.model, rngs=nnx.Rngs(0))
  tokens = jnp.asarray(np.random.default_rng(0).integers(0, V, (2, 8)), jnp.int32)

  def run(rng=None):
    train = rng is not None
    if kind != "encoder_decoder":
      return network(tokens, deterministic=not train, rng=rng)
    encoded = network.encode(tokens, deterministic=not train, rng=rng)
    return network.decode(tokens[:, ::-1], encoded, deterministic=not train,
                          rng=None if rng is None else jax.random.fold_in(rng, 1))
  return run


@pytest.mark.parametrize("kind", KINDS)
def test_every_stack_drops_attention_probabilities_alike_with_scan_layers(kind):
  key = jax.random.PRNGKey(3)
  run = _hidden(kind, attention_dropout=0.2)
  trained, deterministic = run(key), run()
  np.testing.assert_array_equal(deterministic, _hidden(kind)())
  assert np.abs(trained - deterministic).max() > 1e-3
  np.testing.assert_allclose(_hidden(kind, scan=True, attention_dropout=0.2)(key), trained,
                             atol=1e-5)


# Training-mode outputs of the code before model.attention_dropout existed (dropout 0.1,
# attention_dropout 0): sum, sum of |h| and h[0, 1, :3]. The new field must not move them.
BEFORE = {
    "encoder": (-105.32908250007313, 815.0051330780843, [1.320505, -0.539308, 1.325261]),
    "decoder": (-31.07423233470763, 807.0769697714422, [-0.926884, -1.818775, -0.033839]),
    "encoder_decoder": (27.40056807710789, 845.6276274321135, [0.616179, 0.488805, 1.051722]),
}


@pytest.mark.parametrize("kind", KINDS)
def test_zero_attention_dropout_computes_what_it_did_before(kind):
  cfg = tiny_config(**{"model.kind": kind, "model.dropout": 0.1, "model.vocab_size": V,
                       "model.prenorm": kind != "encoder"})
  model = MODELS["transformer"](cfg.model, rngs=nnx.Rngs(0))
  tokens = jnp.asarray(np.random.default_rng(0).integers(0, V, (2, 8)), jnp.int32)
  if kind == "encoder_decoder":
    encoded = model.encode(tokens, deterministic=False, rng=jax.random.PRNGKey(3))
    h = model.decode(tokens[:, ::-1], encoded, deterministic=False, rng=jax.random.PRNGKey(4))
  else:
    h = model(tokens, deterministic=False, rng=jax.random.PRNGKey(3))
  h = np.asarray(h, np.float64)
  total, absolute, first = BEFORE[kind]
  np.testing.assert_allclose([h.sum(), np.abs(h).sum()], [total, absolute], rtol=1e-5)
  np.testing.assert_allclose(h[0, 1, :3], first, atol=1e-5)


def test_attention_dropout_is_checked():
  for value in (-0.1, 1.0):
    with pytest.raises(ConfigError, match="model.attention_dropout"):
      validate(tiny_config(**{"model.attention_dropout": value}), 8)
