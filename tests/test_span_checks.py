"""Span corruption and learned positions refuse what they would silently get wrong.

More spans in a document than sentinel ids once wrapped the sentinels (two
spans under one sentinel: ambiguous targets); a noise density whose targets
(noise tokens plus a sentinel per span) outgrow the row once cut them off;
learned positions past model.max_len once read NaN out of the table.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from conftest import tiny_config
from research import config
from research.errors import ConfigError
from research.objectives import span
from research.objectives.base import Vocab

VOCAB = Vocab(size=500)


def _span_config(**overrides):
  return tiny_config(**{"model.kind": "encoder_decoder", **overrides}, objectives={"span": 1.0})


def _rows(batch: int, length: int, doc_len: int, seed: int = 0):
  """Ordinary tokens in documents of `doc_len` tokens, packed `length` to a row."""
  rng = np.random.default_rng(seed)
  tokens = rng.integers(len(VOCAB.special_ids), VOCAB.size, (batch, length)).astype(np.int32)
  segments = np.broadcast_to(np.arange(length) // doc_len + 1, (batch, length)).astype(np.int32)
  return jnp.asarray(tokens), jnp.asarray(segments)


def test_more_spans_than_sentinels_is_refused_in_validate():
  # 1024 tokens at density 0.15, mean span 3: 154 noise tokens in 51 spans, 32 sentinels.
  cfg = _span_config(**{"model.max_len": 1024, "data.seq_len": 1024})
  with pytest.raises(ConfigError, match="objective_options.mean_span_length"):
    config.validate(cfg, 8)
  config.validate(_span_config(**{"model.max_len": 640, "data.seq_len": 640}), 8)  # 32 spans


def test_corrupt_refuses_more_spans_than_sentinels():
  tokens, segments = _rows(2, 128, 128)  # 19 noise tokens, 6 spans
  vocab = VOCAB._replace(sentinel_ids=VOCAB.sentinel_ids[:4])
  with pytest.raises(ConfigError, match="sentinel"):
    span.corrupt(tokens, segments, jax.random.PRNGKey(0), vocab)


def test_every_span_of_a_document_has_its_own_sentinel_at_the_limit():
  tokens, segments = _rows(8, 640, 640)  # 96 noise tokens in 32 spans: every sentinel used
  inputs, _ = span.corrupt(tokens, segments, jax.random.PRNGKey(1), VOCAB)
  sentinels = np.asarray(inputs["tokens"])[np.isin(inputs["tokens"], VOCAB.sentinel_ids)]
  assert (np.sort(sentinels.reshape(8, -1), axis=1) == np.array(VOCAB.sentinel_ids)).all()


def test_targets_that_can_outgrow_the_row_are_refused_in_validate():
  with pytest.raises(ConfigError, match="objective_options.noise_density"):
    config.validate(_span_config(**{"objective_options.noise_density": 0.6}), 8)
  config.validate(_span_config(**{"objective_options.noise_density": 0.5}), 8)


def test_corrupt_refuses_targets_that_can_outgrow_the_row():
  # Density 0.8 of 64 tokens: 51 noise tokens in 17 spans need 68 target positions
  # even in a single document (the old code kept 43-47 of the 51).
  tokens, segments = _rows(4, 64, 64)
  with pytest.raises(ConfigError, match="noise_density"):
    span.corrupt(tokens, segments, jax.random.PRNGKey(0), VOCAB, density=0.8)


def test_targets_and_inputs_keep_every_token_at_the_densest_allowed():
  # One-token documents: each of the 32 noise tokens (density 0.5 of 64) is its own
  # span, so the targets (and the inputs) fill the row exactly.
  tokens, segments = _rows(16, 64, 1)
  inputs, targets = span.corrupt(tokens, segments, jax.random.PRNGKey(2), VOCAB, density=0.5)
  is_sentinel = lambda part: np.isin(np.asarray(part["tokens"]), VOCAB.sentinel_ids)
  real = lambda part: np.asarray(part["segment_ids"]) > 0
  assert ((real(targets) & ~is_sentinel(targets)).sum(1) == 32).all()
  assert ((real(inputs) & ~is_sentinel(inputs)).sum(1) == 32).all()
  assert ((real(targets) & is_sentinel(targets)).sum(1) == 32).all()
  assert ((real(inputs) & is_sentinel(inputs)).sum(1) == 32).all()


def test_learned_positions_past_max_len_are_refused_for_seq2seq():
  cfg = tiny_config(**{"model.kind": "encoder_decoder", "model.position": "learned",
                       "data.target_len": 48}, objectives={"seq2seq": 1.0})
  with pytest.raises(ConfigError, match="data.target_len=48.*model.max_len=32"):
    config.validate(cfg, 8)
  cfg.data.target_len = 32
  config.validate(cfg, 8)
  cfg.model.position, cfg.data.target_len = "rope", 48  # RoPE has no table to run past
  config.validate(cfg, 8)
