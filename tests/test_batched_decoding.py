"""Prompts of different lengths decode in one batch exactly as one at a time, for every
decoder family: left padding is invisible to attention, recurrence and convolutions."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from research import generate
from research.config import default_config
from research.models import MODELS

PROMPTS = [[5, 9, 13, 2, 7, 30, 11], [7, 3]]
FAMILIES = {
    "gpt-learned": dict(arch="transformer", position="learned", norm="layernorm", mlp="gelu"),
    "llama-rope-gqa": dict(arch="transformer", position="rope", norm="rmsnorm", mlp="swiglu",
                           num_kv_heads=2),
    "bloom-alibi": dict(arch="transformer", position="alibi", norm="layernorm", mlp="gelu",
                        embed_norm=True),
    "neo-window": dict(arch="transformer", position="learned", sliding_window=3,
                       window_layers="odd"),
    "relative": dict(arch="transformer", position="relative", relative_buckets=8,
                     relative_max_distance=16),
    "lstm": dict(arch="lstm"),
    "gru": dict(arch="gru"),
    "cnn": dict(arch="cnn", kernel_size=3),
}
MODES = {
    "greedy": dict(),
    "sampled": dict(temperature=1.0, top_k=20),
    "beam": dict(beam_size=3),
}
# Every registry family decodes in every mode; ALiBi (whose bias reads the shifted key
# positions) greedily; the other Transformer variants' padded prompt logits are checked
# against the unpadded forward, which covers the same cache paths at less compile time.
ALL_MODES = ("llama-rope-gqa", "lstm", "gru", "cnn")
GREEDY = ALL_MODES + ("bloom-alibi",)


def _model(family):
  cfg = default_config().model
  cfg.update(kind="decoder", num_layers=2, width=32, num_heads=4, vocab_size=53, max_len=32,
             **FAMILIES[family])
  model = MODELS[cfg.arch](cfg, rngs=nnx.Rngs(0))
  graphdef, params = nnx.split(model)
  return model, params, (lambda p: nnx.merge(graphdef, p))


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_a_batch_of_prompts_decodes_as_each_prompt_alone(family):
  model, params, merge = _model(family)
  keys = generate.row_keys(jax.random.PRNGKey(3), len(PROMPTS))
  for mode, options in MODES.items():
    if family not in (ALL_MODES if mode != "greedy" else GREEDY):
      continue
    kw = dict(max_new_tokens=6, eos_id=1, banned=(), **options)
    batched = generate.generate(merge, params, PROMPTS, rng=keys, **kw)
    alone = [generate.generate(merge, params, [p], rng=keys[i:i + 1], **kw)[0]
             for i, p in enumerate(PROMPTS)]
    assert batched == alone, (family, mode)
  # The left-padded prompt's last logits are the unpadded full forward's.
  rows, pad = generate.left_pad(PROMPTS)
  cache = model.init_cache(len(PROMPTS), rows.shape[1] + 1, pad=jnp.asarray(pad))
  logits, _ = model.decode_step(jnp.asarray(rows), cache)
  for i, p in enumerate(PROMPTS):
    full = model.logits(model(jnp.asarray([p])))[0, -1]
    np.testing.assert_allclose(np.asarray(logits[i, -1]), np.asarray(full), atol=2e-5,
                               err_msg=family)
