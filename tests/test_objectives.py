"""The objectives' own mechanics: masking rates, NSP pairs, span corruption."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from research.data import pairs
from research.errors import ConfigError
from research.objectives import mlm, span
from research.objectives.base import Vocab

VOCAB = Vocab(size=500)


def _rows(seed=0, batch=64, length=128):
  rng = np.random.default_rng(seed)
  tokens = rng.integers(0, VOCAB.size, (batch, length)).astype(np.int32)  # specials included
  segments = np.where(np.arange(length) < 50, 1, 2) * np.ones((batch, 1), np.int32)
  segments[:, 120:] = 0  # padding
  tokens[:, 120:] = 0
  return jnp.asarray(tokens), jnp.asarray(segments)


def test_mlm_masking_rates_and_never_specials_or_padding():
  tokens, segments = _rows()
  inputs, chosen = jax.vmap(lambda k: mlm.mask_tokens(tokens, segments, k, VOCAB))(
      jax.random.split(jax.random.PRNGKey(0), 20))
  tokens_b = jnp.broadcast_to(tokens, inputs.shape)
  special = np.isin(np.asarray(tokens_b), VOCAB.special_ids)
  maskable = (np.asarray(segments) > 0) & ~special
  chosen = np.asarray(chosen)
  assert not chosen[~maskable].any()  # never padding or special tokens
  assert (np.asarray(inputs)[~maskable] == np.asarray(tokens_b)[~maskable]).all()
  assert abs(chosen[maskable].mean() - 0.15) < 0.01
  inputs, tokens_b = np.asarray(inputs)[chosen], np.asarray(tokens_b)[chosen]
  as_mask = (inputs == VOCAB.mask_id).mean()
  kept = (inputs == tokens_b).mean()
  assert abs(as_mask - 0.8) < 0.02 and abs(kept - 0.1) < 0.02
  replaced = inputs[(inputs != VOCAB.mask_id) & (inputs != tokens_b)]
  assert abs(len(replaced) / len(inputs) - 0.1) < 0.02
  assert not np.isin(replaced, VOCAB.special_ids).any()


def test_whole_word_masking_chooses_words_together():
  word_start = np.zeros(VOCAB.size, bool)
  word_start[::3] = True  # a third of the pieces start words
  vocab = VOCAB._replace(word_start=word_start)
  tokens, segments = _rows(1)
  _, chosen = mlm.mask_tokens(tokens, segments, jax.random.PRNGKey(3), vocab, whole_word=True)
  tokens, chosen = np.asarray(tokens), np.asarray(chosen)
  maskable = (np.asarray(segments) > 0) & ~np.isin(tokens, VOCAB.special_ids)
  for b in range(tokens.shape[0]):
    for t in range(1, tokens.shape[1]):
      continues_word = maskable[b, t] and maskable[b, t - 1] and not word_start[tokens[b, t]]
      if continues_word:
        assert chosen[b, t] == chosen[b, t - 1]
  assert 0.08 < chosen[maskable].mean() < 0.25


def test_nsp_pairs_are_balanced_and_true_pairs_consecutive():
  # Sentence ids are unique across the corpus, so contiguity is checkable.
  next_id = iter(range(100, 10**6))
  docs = [[np.array([next(next_id) for _ in range(np.random.default_rng(d * 7 + s).integers(3, 9))])
           for s in range(40)] for d in range(12)]
  stream = {int(x): (d, i) for d, doc in enumerate(docs)
            for i, x in enumerate(np.concatenate(doc))}
  out = pairs.build_pairs(docs, 48, VOCAB, seed=0)
  labels = out["nsp_label"]
  assert abs(labels.mean() - 0.5) < 0.12 and len(labels) > 60
  for row, types, label in zip(out["tokens"], out["token_type_ids"], labels):
    ids = row[row > 0]
    assert ids[0] == VOCAB.cls_id and ids[-1] == VOCAB.sep_id
    a, b = ids[1:][types[1:len(ids)] == 0][:-1], ids[types[:len(ids)] == 1][:-1]
    assert len(a) and len(b)
    (doc_a, end_a), (doc_b, start_b) = stream[int(a[-1])], stream[int(b[0])]
    if label == 1:
      assert doc_a == doc_b and start_b == end_a + 1
    else:
      assert doc_a != doc_b


def _reconstruct(inputs, targets, vocab):
  """The original row from corrupted inputs and targets (numpy, per segment)."""
  sentinel_set = set(vocab.sentinel_ids)
  spans, out = {}, []
  for seg in sorted(set(targets["segment_ids"].tolist()) - {0}):
    t = targets["tokens"][targets["segment_ids"] == seg].tolist()
    current = None
    for x in t:
      if x in sentinel_set:
        current = (seg, x)
        spans[current] = []
      else:
        spans[current].append(x)
  for x, seg in zip(inputs["tokens"].tolist(), inputs["segment_ids"].tolist()):
    if seg == 0:
      continue
    out.extend(spans[(seg, x)] if x in sentinel_set else [x])
  return out


def test_span_corruption_reconstructs_the_original():
  tokens, segments = _rows(2, batch=16)
  tokens = jnp.where(jnp.isin(tokens, jnp.asarray(VOCAB.special_ids)), 100, tokens)
  tokens = jnp.where(segments > 0, tokens, 0)
  inputs, targets = span.corrupt(tokens, segments, jax.random.PRNGKey(0), VOCAB)
  inputs = jax.tree.map(np.asarray, inputs)
  targets = jax.tree.map(np.asarray, targets)
  noise = []
  for b in range(16):
    original = np.asarray(tokens[b])[np.asarray(segments[b]) > 0].tolist()
    row_in = {k: v[b] for k, v in inputs.items()}
    row_t = {k: v[b] for k, v in targets.items()}
    assert _reconstruct(row_in, row_t, VOCAB) == original
    sentinels = np.isin(row_t["tokens"], VOCAB.sentinel_ids) & (row_t["segment_ids"] > 0)
    noise.append(((row_t["segment_ids"] > 0) & ~sentinels).sum() / len(original))
    # Sentinel numbering restarts in every document of the row.
    for seg in (1, 2):
      first = row_in["tokens"][(row_in["segment_ids"] == seg)
                               & np.isin(row_in["tokens"], VOCAB.sentinel_ids)]
      if len(first):
        assert first[0] == VOCAB.sentinel_ids[0]
  assert abs(np.mean(noise) - 0.15) < 0.03


def test_noise_mask_has_exact_count_and_mean_span():
  masks = np.asarray(jax.vmap(lambda k: span.noise_mask(k, 200, 0.15, 3.0))(
      jax.random.split(jax.random.PRNGKey(0), 50)))
  assert (masks.sum(1) == 30).all()
  starts = masks[:, 1:] & ~masks[:, :-1]
  assert abs(masks.sum() / (starts.sum() + masks[:, 0].sum()) - 3.0) < 0.2


def test_incompatible_objective_and_backbone_are_config_errors():
  from conftest import tiny_config
  from research.workdir import resolve
  with pytest.raises(ConfigError, match="mlm needs a bidirectional"):
    resolve(tiny_config(objectives={"mlm": 1.0}), 8)
  with pytest.raises(ConfigError, match="span needs an encoder-decoder"):
    resolve(tiny_config(**{"model.kind": "encoder"}, objectives={"span": 1.0}), 8)
  with pytest.raises(ConfigError, match="different examples"):
    resolve(tiny_config(**{"model.kind": "encoder_decoder"},
                        objectives={"nsp": 1.0, "span": 1.0}), 8)


def test_model_kinds_are_what_the_objectives_take_them_for():
  """Objectives declare the model.kinds they train: each kind builds the backbone they assume.

  decoder: causal; encoder: bidirectional; encoder_decoder: `encode`/`decode`, its
  __call__ the bidirectional encoder (so BIDIRECTIONAL objectives train it too).
  """
  from flax import nnx
  from research.config import default_config
  from research.models import MODELS, Network
  from research.objectives import OBJECTIVES
  from research.objectives.base import BIDIRECTIONAL, KINDS
  for objective in OBJECTIVES.values():
    assert objective.kinds and set(objective.kinds) <= set(KINDS), objective
  for arch, entry in MODELS.items():
    for kind in entry.kinds:
      cfg = default_config().model
      cfg.update(arch=arch, kind=kind, vocab_size=100)
      backbone = nnx.eval_shape(lambda: Network(cfg, {}, rngs=nnx.Rngs(0))).backbone
      assert backbone.causal == (kind == "decoder"), (arch, kind)
      seq2seq = hasattr(backbone, "encode") and hasattr(backbone, "decode")
      assert seq2seq == (kind == "encoder_decoder"), (arch, kind)
      assert (kind in BIDIRECTIONAL) == (not backbone.causal), (arch, kind)


def test_classify_pooling_first_last_and_mean_of_real_tokens():
  from research.objectives import classify
  hidden = jnp.arange(2 * 4 * 3, dtype=jnp.float32).reshape(2, 4, 3)
  segments = jnp.asarray([[1, 1, 1, 0], [1, 1, 0, 0]])
  for causal, auto in ((False, hidden[:, 0]), (True, hidden[jnp.arange(2), jnp.asarray([2, 1])])):
    np.testing.assert_array_equal(classify.pool(hidden, segments, causal), auto)
    mean = classify.pool(hidden, segments, causal, "mean")
    np.testing.assert_allclose(mean, [hidden[0, :3].mean(0), hidden[1, :2].mean(0)])
  from conftest import tiny_config
  from research.config import validate
  with pytest.raises(ConfigError, match="objective_options.pooling='max' is not one of"):
    validate(tiny_config(**{"objective_options.pooling": "max"}), 8)
