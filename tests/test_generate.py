"""Sampling filters, and the generation loop against the full forward pass.

No decoding (greedy, temperature, top-k, top-p, beam search; decoders and
encoder-decoders) emits a special token or a T5 sentinel; eos stays allowed
(issue 19, item 9).
"""

import types

import jax
import jax.numpy as jnp
import numpy as np
import pytest
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


@pytest.mark.parametrize("banned", [(), None])
def test_greedy_generation_equals_argmax_of_the_full_forward(banned):
  cfg = default_config().model
  cfg.update(num_layers=2, width=32, num_heads=4, vocab_size=61, max_len=32)
  model = MODELS["transformer"](cfg, rngs=nnx.Rngs(0))
  graphdef, params = nnx.split(model)
  merge = lambda p: nnx.merge(graphdef, p)
  prompt = [[5, 9, 13, 2]]
  new = generate.generate(merge, params, prompt, max_new_tokens=6, rng=jax.random.PRNGKey(0),
                          banned=banned)[0]
  # Greedy means: every new token is the argmax of the full forward pass over
  # everything before it, among the ids not banned (None: Trellis' specials).
  # One causal forward pass checks all positions.
  seq = prompt[0] + new
  logits = np.array(model.logits(model(jnp.asarray([seq]))))
  ids = generate.TRELLIS_BANNED if banned is None else banned
  logits[..., list(ids)] = -np.inf
  assert np.argmax(logits[0, 3:-1], -1).tolist() == new


# Special tokens: Trellis' fixed ids (data/tokenizer.py): 0 <pad> 1 <unk> 2 <s> 3 </s>
# 4 <mask> 5 <cls> 6 <sep> 7..38 <extra_id_0..31>, then ordinary pieces.
EOS, ORDINARY, VOCAB = 3, 39, 48


def _logits(eos: float):
  """Next-token logits [VOCAB]: every special id far above the ordinary ones, eos at `eos`."""
  logits = np.full(VOCAB, 5.0, np.float32)
  logits[ORDINARY:] = np.linspace(-1.0, 1.0, VOCAB - ORDINARY)
  logits[EOS] = eos
  return jnp.asarray(logits)


class FixedLogits:
  """A decoder or encoder-decoder whose next-token logits are always `logits`."""

  def __init__(self, logits):
    self.logits = logits

  def encode(self, source, segment_ids=None, positions=None):
    return jnp.zeros(source.shape + (4,), jnp.float32)

  def init_cache(self, batch, length, encoded=None, source_segment_ids=None, pad=None):
    return {"rows": jnp.zeros((batch,), jnp.int32)}

  def decode_step(self, tokens, cache):
    return jnp.broadcast_to(self.logits, tokens.shape + self.logits.shape), cache


MERGE = lambda p: FixedLogits(p["logits"])  # noqa: E731 (one jit cache for the tests)
DECODINGS = {"greedy": dict(), "temperature": dict(temperature=1.0),
             "top_k": dict(temperature=1.0, top_k=3), "top_p": dict(temperature=1.0, top_p=0.9)}


@pytest.mark.parametrize("how", sorted(DECODINGS))
def test_generation_never_emits_a_special_token(how):
  prompts = [[2, 40, 41]] * 32
  new = generate.generate(MERGE, {"logits": _logits(eos=-5.0)}, prompts, max_new_tokens=8,
                          rng=jax.random.PRNGKey(0), eos_id=EOS, **DECODINGS[how])
  tokens = np.asarray(new)
  assert tokens.shape == (32, 8) and tokens.min() >= ORDINARY, tokens[tokens < ORDINARY]
  if how == "greedy":  # the best of the others
    assert (tokens == VOCAB - 1).all()
  if how == "top_k":  # the 3 most likely of the others
    assert set(tokens.ravel().tolist()) == {VOCAB - 3, VOCAB - 2, VOCAB - 1}


@pytest.mark.parametrize("how", sorted(DECODINGS))
def test_eos_stays_allowed_and_ends_the_output(how):
  # Eos above every ordinary id (specials above it): greedy ends at once.
  new = generate.generate(MERGE, {"logits": _logits(eos=4.0)}, [[2, 40]] * 32,
                          max_new_tokens=8, rng=jax.random.PRNGKey(0), eos_id=EOS,
                          **DECODINGS[how])
  assert all(min(row, default=ORDINARY) >= ORDINARY for row in new), new
  if how == "greedy":
    assert new == [[]] * 32
  assert sum(len(row) < 8 for row in new) >= 16  # eos is drawn: most rows end early


@pytest.mark.parametrize("beam_size", [1, 3])
def test_translation_never_emits_a_special_token(beam_size):
  # translate_rows is what seq2seq evaluation decodes with (tasks/seq2seq.py).
  source = np.asarray([[40, 41, 42, EOS], [43, EOS, 0, 0]], np.int32)
  for eos, want in ((-5.0, [[VOCAB - 1] * 5] * 2), (4.0, [[], []])):
    out = generate.translate(MERGE, {"logits": _logits(eos)}, source,
                             (source > 0).astype(np.int32), max_new_tokens=5, bos_id=2,
                             eos_id=EOS, beam_size=beam_size)
    assert out == want, (eos, out)


def test_banned_ids_are_specials_and_sentinels_but_eos():
  from research.objectives.base import Vocab
  expected = (0, 1, 2) + tuple(range(4, 39))
  assert generate.banned_ids(Vocab(size=100)) == expected == generate.TRELLIS_BANNED
  # Whether or not a tokenizer's special_ids hold its sentinels.
  apart = types.SimpleNamespace(special_ids=tuple(range(7)), sentinel_ids=tuple(range(7, 39)),
                                eos_id=3)
  assert generate.banned_ids(apart) == expected
  # WordPiece: [PAD] 0, [UNK] 100, [CLS] 101 (bos), [SEP] 102 (eos), [MASK] 103, no sentinels.
  wordpiece = types.SimpleNamespace(special_ids=(0, 100, 101, 102, 103), sentinel_ids=(),
                                    eos_id=102)
  assert generate.banned_ids(wordpiece) == (0, 100, 101, 103)
  logits = generate.ban(jnp.zeros((2, 110)), generate.banned_ids(wordpiece))
  assert np.isinf(np.asarray(logits)).sum(-1).tolist() == [4, 4]
