"""Memory and speed options change how the network computes, never what it computes.

model.remat, model.attention and objective_options.chunked_loss give the same
losses and gradients as the defaults (and use less memory where they should);
train.compilation_cache serves a second compile of the same step from disk.
"""

import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from conftest import tiny_config
from research import objectives, throughput, train
from research.config import check_compatible, default_config, validate
from research.errors import ConfigError
from research.models import MODELS, Network
from research.objectives.base import Context, Vocab
from research.workdir import load_config, resolve

B, T, V = 2, 12, 97


def _tokens(seed=0, shape=(B, T), vocab=V):
  return jax.random.randint(jax.random.PRNGKey(seed), shape, 4, vocab)


@pytest.mark.parametrize("arch,policies", [("transformer", ("none", "minimal", "full")),
                                           ("cnn", ("none", "full")), ("lstm", ("none", "full"))])
def test_remat_gives_the_same_gradients(arch, policies):
  tokens = _tokens()
  graphdefs = []
  for policy in policies:  # the same init: only the static remat attribute differs
    cfg = default_config().model
    cfg.update(arch=arch, kind="decoder", num_layers=2, width=16, num_heads=2, vocab_size=V,
               max_len=32, dropout=0.1, remat=policy)
    graphdef, params = nnx.split(MODELS[arch](cfg, rngs=nnx.Rngs(0)))
    graphdefs.append(graphdef)

  def loss(params, graphdef):
    model = nnx.merge(graphdef, params)
    hidden = model(tokens, deterministic=False, rng=jax.random.PRNGKey(1))  # dropout too
    return jnp.mean(model.logits(hidden) ** 2)

  # One program for every policy: one compile.
  grads = jax.jit(lambda p: [jax.grad(loss)(p, g) for g in graphdefs])(params)
  for other in grads[1:]:
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6),
                 other, grads[0])


def test_attention_implementations_agree_and_cudnn_is_refused_off_gpu():
  cfg = default_config().model
  cfg.update(num_layers=1, width=32, num_heads=4, vocab_size=V, max_len=32)
  outputs = []
  for implementation in ("auto", "xla"):
    cfg.attention = implementation
    outputs.append(MODELS["transformer"](cfg, rngs=nnx.Rngs(0))(_tokens()))
  np.testing.assert_array_equal(outputs[0], outputs[1])  # auto is XLA off GPU
  full = tiny_config(**{"model.attention": "cudnn", "model.dtype": "bfloat16"})
  if jax.default_backend() != "gpu":
    with pytest.raises(ConfigError, match="cudnn needs a GPU") as error:
      validate(full, 8)
    assert "\n" not in str(error.value)


def _loss_and_grads(batch, chunk, vocab):
  """Compiled (loss, metrics), gradients and temp bytes of the clm loss.

  mlm and span compute their loss through the same `vocab_cross_entropy`.
  """
  cfg = default_config()
  cfg.model.update(num_layers=1, width=32, num_heads=4, vocab_size=vocab, max_len=64)
  graphdef, params = nnx.split(Network(cfg.model, {}, rngs=nnx.Rngs(0)))
  options = dict(cfg.objective_options.to_dict(), chunked_loss=chunk)
  ctx = Context(Vocab(vocab), options)
  loss_fn = objectives.combine({"clm": 1.0}, ctx)
  loss = lambda p: loss_fn(nnx.merge(graphdef, p), batch, jax.random.PRNGKey(2))
  compiled = jax.jit(jax.value_and_grad(loss, has_aux=True)).lower(params).compile()
  return compiled(params), compiled.memory_analysis().temp_size_in_bytes


def test_chunked_loss_equals_the_whole_and_holds_less():
  vocab, length = 4096, 63  # chunks of 8 positions do not divide the length
  segments = jnp.where(jnp.arange(length) < 40, 1, 2) * jnp.ones((4, 1), jnp.int32)
  segments = segments.at[:, -5:].set(0)  # padding
  positions = jnp.broadcast_to(jnp.arange(length), (4, length))
  batch = {"tokens": _tokens(3, (4, length), vocab), "segment_ids": segments,
           "positions": positions}
  whole, whole_bytes = _loss_and_grads(batch, 0, vocab)
  chunked, chunked_bytes = _loss_and_grads(batch, 8, vocab)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6),
               chunked, whole)
  # The whole loss holds [4, 63, 4096] float32 logits (4 MiB) and their gradient.
  assert chunked_bytes < whole_bytes / 2, (chunked_bytes, whole_bytes)


def test_options_are_checked_and_do_not_block_resuming():
  for field, value in (("model.remat", "some"), ("model.attention", "flash"),
                       ("objective_options.chunked_loss", -1)):
    with pytest.raises(ConfigError, match=field.split(".")[-1]):
      validate(tiny_config(**{field: value}), 8)
  cfg = tiny_config(**{"model.remat": "full", "objective_options.chunked_loss": 16})
  validate(cfg, 8)
  # A run saved before these fields existed, or with others, resumes with these.
  saved = tiny_config().to_dict()
  del saved["model"]["remat"], saved["model"]["attention"]
  check_compatible(saved, cfg)


def test_saved_configs_get_defaults_for_newer_fields(tmp_path):
  saved = tiny_config().to_dict()
  del saved["model"]["remat"], saved["objective_options"]["chunked_loss"]
  (tmp_path / "config.json").write_text(json.dumps(saved))
  cfg = load_config(str(tmp_path))
  assert cfg.model.remat == "none" and cfg.objective_options.chunked_loss == 0
  assert cfg.to_dict() == tiny_config().to_dict()


@pytest.fixture
def restore_cache_dir():
  """Puts JAX's persistent cache back where the session had it (conftest's)."""
  from jax.experimental.compilation_cache import compilation_cache
  previous = jax.config.jax_compilation_cache_dir
  yield
  jax.config.update("jax_compilation_cache_dir", previous)
  compilation_cache.reset_cache()


def test_second_compile_is_served_from_the_cache(tmp_path, restore_cache_dir):
  cache = tmp_path / "cache"
  hits = []
  listener = lambda event, **kwargs: hits.append(event)
  cfg = resolve(tiny_config(**{"train.compilation_cache": str(cache),
                                     "model.num_layers": 1}), 1)
  batch = throughput.synthetic_batch(cfg)
  jax.monitoring.register_event_listener(listener)
  try:
    first = train.Trainer(cfg, devices=jax.devices()[:1])
    first.compile(first.init(), batch)
    assert os.listdir(cache)
    before = hits.count("/jax/compilation_cache/cache_hits")
    second = train.Trainer(cfg, devices=jax.devices()[:1])
    second.compile(second.init(), batch)
  finally:
    jax.monitoring.unregister_event_listener(listener)
  assert hits.count("/jax/compilation_cache/cache_hits") > before
