"""Sampling filters, and the generation loop against the full forward pass."""

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from research import generate
from research.config import default_config
from research.models import MODELS


def test_top_k_keeps_exactly_the_k_largest():
  logits = jnp.asarray([[0.1, 3.0, -1.0, 2.0, 0.5]])
  kept = np.isfinite(np.asarray(generate.filter_logits(logits, top_k=2)))
  assert kept.tolist() == [[False, True, False, True, False]]


def test_top_p_keeps_the_smallest_nucleus():
  probs = jnp.asarray([[0.5, 0.3, 0.15, 0.05]])
  logits = jnp.log(probs)
  kept = lambda p: np.isfinite(np.asarray(generate.filter_logits(logits, top_p=p)))[0].tolist()
  assert kept(0.5) == [True, False, False, False]
  assert kept(0.6) == [True, True, False, False]
  assert kept(0.9) == [True, True, True, False]
  assert kept(1.0) == [True, True, True, True]


def test_sampling_follows_the_distribution():
  logits = jnp.log(jnp.asarray([[0.7, 0.2, 0.1]]))
  draws = jax.vmap(lambda k: generate.sample_token(logits, k, 1.0, 0, 1.0))(
      jax.random.split(jax.random.PRNGKey(0), 4000))
  freq = np.bincount(np.asarray(draws).ravel(), minlength=3) / 4000
  np.testing.assert_allclose(freq, [0.7, 0.2, 0.1], atol=0.03)


def test_greedy_generation_equals_argmax_of_the_full_forward():
  cfg = default_config().model
  cfg.update(num_layers=2, width=32, num_heads=4, vocab_size=61, max_len=32)
  model = MODELS["transformer"](cfg, rngs=nnx.Rngs(0))
  graphdef, params = nnx.split(model)
  merge = lambda p: nnx.merge(graphdef, p)
  prompt = [[5, 9, 13, 2]]
  new = generate.generate(merge, params, prompt, max_new_tokens=6, rng=jax.random.PRNGKey(0))[0]
  # Greedy means: every new token is the argmax of the full forward pass over
  # everything before it. One causal forward pass checks all positions.
  seq = prompt[0] + new
  logits = model.logits(model(jnp.asarray([seq])))
  assert jnp.argmax(logits[0, 3:-1], -1).tolist() == new
