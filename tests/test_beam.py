"""Beam search against a plain numpy beam search and an exhaustive search.

The "model" is a fixed random next-token table per case: the logits at step
t depend on t and on the previous token. The numpy reference is the standard
search (fairseq, Hugging Face, T5X): beam_size live hypotheses, a separate
set of finished ones scored with the GNMT length penalty when they end.
"""

import functools
import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from research import generate

EOS = 1
CASES = 200


class TableModel:
  """A decoder whose logits are cache["table"][row, step, previous token]."""

  def decode_step(self, tokens, cache):
    table, step = cache["table"], cache["step"]
    logits = table[jnp.arange(tokens.shape[0]), step, tokens[:, 0]]
    return logits[:, None], {"table": table, "step": step + 1}


def _tables(seed: int, length: int, vocab: int) -> np.ndarray:
  """Log-probabilities [CASES, length, vocab (previous token), vocab], eos made likely."""
  rng = np.random.default_rng(seed)
  logits = rng.normal(0.0, 2.0, (CASES, length, vocab, vocab))
  logits[..., EOS] += rng.normal(0.0, 1.0, (CASES, 1, 1))  # per case: short or long outputs
  return np.asarray(jax.nn.log_softmax(logits, -1))


@functools.partial(jax.jit, static_argnames=("beam_size", "alpha"))
def _jax_beam(tables, *, beam_size, alpha):
  rows = jnp.repeat(tables, beam_size, axis=0)  # example b's state in rows b * beam_size + k
  cache = {"table": rows, "step": jnp.int32(1)}
  return generate.beam_search(TableModel(), cache, rows[:, 0, 0], beam_size=beam_size,
                              max_new_tokens=tables.shape[1], eos_id=EOS, length_penalty=alpha)


def _penalty(length: int, alpha: float) -> float:
  return ((5.0 + length) / 6.0) ** alpha


def _score(table: np.ndarray, seq, alpha: float) -> float:
  """Length-normalised log-probability of an output row (cut after its first eos)."""
  seq = list(seq)
  length = seq.index(EOS) + 1 if EOS in seq else len(seq)
  prev, total = 0, 0.0
  for t, token in enumerate(seq[:length]):
    total += table[t, prev, token]
    prev = token
  return total / _penalty(length, alpha)


def _reference_beam(table: np.ndarray, beam_size: int, alpha: float) -> float:
  """Best normalised score of a standard beam search, written plainly."""
  length, vocab = table.shape[0], table.shape[-1]
  live, finished = [((), 0.0)], []
  for t in range(length):
    candidates = sorted(((score + table[t, seq[-1] if seq else 0, v], seq + (v,))
                         for seq, score in live for v in range(vocab)), reverse=True)
    candidates = candidates[:2 * beam_size]
    finished += [score / _penalty(t + 1, alpha) for score, seq in candidates if seq[-1] == EOS]
    finished = sorted(finished, reverse=True)[:beam_size]
    live = [(seq, score) for score, seq in candidates if seq[-1] != EOS][:beam_size]
  # Hypotheses still live at the length limit end there, unfinished.
  return max(finished + [score / _penalty(length, alpha) for _, score in live])


def _exhaustive(table: np.ndarray, alpha: float) -> float:
  """Best normalised score over every output (eos only last, or no eos)."""
  length, vocab = table.shape[0], table.shape[-1]
  return max(_score(table, seq, alpha)
             for seq in itertools.product(range(vocab), repeat=length))


def _disagreements(tables, beam_size, alpha, best) -> list[tuple[int, float, float]]:
  out = np.asarray(_jax_beam(jnp.asarray(tables), beam_size=beam_size, alpha=alpha))
  got = [_score(table, row, alpha) for table, row in zip(tables, out)]
  want = [best(table) for table in tables]
  return [(i, g, w) for i, (g, w) in enumerate(zip(got, want)) if not np.isclose(g, w, atol=1e-5)]


@pytest.mark.parametrize("beam_size,alpha", [(2, 0.6), (3, 0.6), (3, 1.5), (4, 0.0), (2, -0.5)])
def test_beam_search_matches_the_standard_search(beam_size, alpha):
  tables = _tables(beam_size * 10 + int(alpha * 10), length=6, vocab=6)
  bad = _disagreements(tables, beam_size, alpha,
                       lambda table: _reference_beam(table, beam_size, alpha))
  assert not bad, f"{len(bad)} of {CASES} cases differ (case, got, want): {bad[:3]}"


@pytest.mark.parametrize("alpha", [0.6, 1.0])
def test_a_wide_beam_finds_the_exhaustive_best(alpha):
  # 4 tokens, 3 of them not eos: at most 27 live prefixes, so 64 beams keep every one.
  tables = _tables(7, length=4, vocab=4)
  bad = _disagreements(tables, 64, alpha, lambda table: _exhaustive(table, alpha))
  assert not bad, f"{len(bad)} of {CASES} cases differ (case, got, want): {bad[:3]}"


@pytest.mark.parametrize("beam_size", [2, 3])
def test_a_banned_id_never_wins(beam_size):
  # Ids 2 and 4 hold nearly all the mass everywhere; the others are very unlikely.
  banned = (2, 4)
  tables = np.array(_tables(5, length=6, vocab=6))
  tables[..., list(banned)] += 40.0
  tables = np.asarray(jax.nn.log_softmax(tables, -1))
  rows = jnp.repeat(jnp.asarray(tables), beam_size, axis=0)
  out = np.asarray(jax.jit(lambda rows: generate.beam_search(
      TableModel(), {"table": rows, "step": jnp.int32(1)}, rows[:, 0, 0], beam_size=beam_size,
      max_new_tokens=6, eos_id=EOS, length_penalty=0.6, banned=banned))(rows))
  assert not np.isin(out, banned).any()
  # And the search is the standard one over the other ids (banned masked, renormalised).
  masked = np.where(np.isin(np.arange(6), banned), -np.inf, tables)
  masked = np.asarray(jax.nn.log_softmax(masked, -1))
  got = [_score(table, row, 0.6) for table, row in zip(masked, out)]
  np.testing.assert_allclose(got, [_reference_beam(table, beam_size, 0.6) for table in masked],
                             atol=1e-5)


def test_search_stops_once_no_live_hypothesis_can_win():
  steps = []

  class CountingModel(TableModel):
    def decode_step(self, tokens, cache):
      jax.debug.callback(lambda step: steps.append(int(step)), cache["step"])
      return super().decode_step(tokens, cache)

  tables = np.array(_tables(11, length=12, vocab=6))
  tables[..., EOS] += 3.0  # eos is likely: the finished set fills in the first steps
  tables = np.asarray(jax.nn.log_softmax(tables, -1))
  rows = jnp.repeat(jnp.asarray(tables), 3, axis=0)
  out = jax.jit(lambda rows: generate.beam_search(
      CountingModel(), {"table": rows, "step": jnp.int32(1)}, rows[:, 0, 0], beam_size=3,
      max_new_tokens=12, eos_id=EOS, length_penalty=0.0))(rows)
  got = [_score(table, row, 0.0) for table, row in zip(tables, np.asarray(out))]
  np.testing.assert_allclose(got, [_reference_beam(table, 3, 0.0) for table in tables],
                             atol=1e-5)
  assert 0 < max(steps) < 11, steps  # decode steps run: 1, 2, ... (11 without an early stop)
