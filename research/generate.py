"""Text generation with a decoder's incremental state (KV cache, RNN state, ...).

Sampling is greedy (temperature 0), or temperature sampling optionally
restricted by top-k and/or top-p (nucleus). The prompt is fed in one
`decode_step` call, then one token per step inside a jitted `lax.scan`.
Encoder-decoders decode greedily or by beam search (`translate_rows`). Every
output ends where `cut_at_eos` cuts it: before the first eos.
"""

import functools
import os
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from research.data.tokenizer import Tokenizer
from research.errors import ConfigError
from research.workdir import restore_params


def filter_logits(logits, top_k: int = 0, top_p: float = 1.0):
  """Logits with everything outside the top-k and the top-p nucleus set to -inf."""
  if top_k > 0:
    kth = jax.lax.top_k(logits, top_k)[0][..., -1:]
    logits = jnp.where(logits < kth, -jnp.inf, logits)
  if top_p < 1.0:
    sorted_logits = jnp.sort(logits, axis=-1)[..., ::-1]
    probs = jax.nn.softmax(sorted_logits, axis=-1)
    # Keep a token while the mass before it is below top_p (the first always stays).
    mass_before = jnp.cumsum(probs, axis=-1) - probs
    cutoff = jnp.min(jnp.where(mass_before < top_p, sorted_logits, jnp.inf), axis=-1,
                     keepdims=True)
    logits = jnp.where(logits < cutoff, -jnp.inf, logits)
  return logits


def sample_token(logits, rng, temperature: float, top_k: int, top_p: float):
  """Next token ids [B] from last-position logits [B, V]."""
  if temperature == 0.0:
    return jnp.argmax(logits, axis=-1)
  logits = filter_logits(logits / temperature, top_k, top_p)
  return jax.random.categorical(rng, logits, axis=-1)


def sample_loop(model, cache, first_logits, rng, max_new_tokens: int, temperature: float,
                top_k: int, top_p: float, dtype=jnp.int32):
  """Tokens [B, max_new_tokens]: sample, feed back through `decode_step`, repeat."""

  def step(carry, key):
    last_logits, cache = carry
    token = sample_token(last_logits, key, temperature, top_k, top_p)
    logits, cache = model.decode_step(token[:, None].astype(dtype), cache)
    return (logits[:, -1], cache), token

  _, tokens = jax.lax.scan(step, (first_logits, cache), jax.random.split(rng, max_new_tokens))
  return tokens.T


def _reorder(cache, rows):
  """The cache with batch rows gathered by `rows` (every non-scalar leaf is batch-major)."""
  return jax.tree.map(lambda x: x[rows] if x.ndim else x, cache)


class _Beams(NamedTuple):
  """Live hypotheses (raw log-probabilities) and finished ones (length-normalised)."""
  live_seqs: jax.Array  # [B, K, T] int32
  live_scores: jax.Array  # [B, K] float32; -inf: an empty slot
  done_seqs: jax.Array  # [B, K, T] int32, eos from the end on
  done_scores: jax.Array  # [B, K] float32; -inf: an empty slot


def _gnmt_penalty(length, alpha: float):
  """GNMT's length penalty ((5 + length) / 6) ** alpha."""
  return ((5.0 + length) / 6.0) ** alpha


def _beam_step(beams: _Beams, log_probs, t, *, eos_id: int, alpha: float):
  """Extends the live hypotheses by token t; (new beams, each new live one's parent [B, K])."""
  batch, k, vocab = log_probs.shape
  length = beams.live_seqs.shape[-1]
  candidates = (beams.live_scores[..., None] + log_probs).reshape(batch, k * vocab)
  # Each parent ends in eos at most once, so the top 2K leave K that go on.
  scores, index = jax.lax.top_k(candidates, min(2 * k, k * vocab))
  parent, token = index // vocab, index % vocab
  seqs = jnp.take_along_axis(beams.live_seqs, parent[..., None], axis=1).at[:, :, t].set(token)
  ends = token == eos_id
  # Finished: scored with the penalty of their own length, merged into the best K.
  ended_seqs = jnp.where(jnp.arange(length) > t, eos_id, seqs)
  ended_scores = jnp.where(ends, scores / _gnmt_penalty(t + 1, alpha), -jnp.inf)
  done_scores, pick = jax.lax.top_k(
      jnp.concatenate([beams.done_scores, ended_scores], axis=1), k)
  done_seqs = jnp.take_along_axis(jnp.concatenate([beams.done_seqs, ended_seqs], axis=1),
                                  pick[..., None], axis=1)
  live_scores, pick = jax.lax.top_k(jnp.where(ends, -jnp.inf, scores), k)
  live_seqs = jnp.take_along_axis(seqs, pick[..., None], axis=1)
  return (_Beams(live_seqs, live_scores, done_seqs, done_scores),
          jnp.take_along_axis(parent, pick, axis=1))


def _cannot_improve(beams: _Beams, t, length: int, alpha: float):
  """True when no live hypothesis (now t tokens) can beat any example's worst finished one.

  Log-probabilities only fall as tokens are added, so a live score s can reach
  at best s / (the largest penalty of a length in [t + 1, length]), taken at an
  end of that range as the penalty is monotone in the length.
  """
  best_penalty = jnp.maximum(_gnmt_penalty(t + 1, alpha), _gnmt_penalty(length, alpha))
  best_live = jnp.max(beams.live_scores, axis=1) / best_penalty
  return jnp.all(jnp.min(beams.done_scores, axis=1) > best_live)


def beam_search(model, cache, first_logits, *, beam_size: int, max_new_tokens: int,
                eos_id: int, length_penalty: float):
  """The best hypothesis [B, max_new_tokens] by log-probability / GNMT length penalty.

  The standard search (fairseq, Hugging Face, T5X): beam_size live hypotheses
  and a separate set of beam_size finished ones. Each step takes the top
  2 * beam_size continuations of the live ones; those that end in eos join
  the finished set, scored with the length penalty of their length, and the
  best beam_size others stay live. The search stops when no live hypothesis
  can beat the worst finished one of any example, or at max_new_tokens, where
  the live ones end unfinished (scored at that length). Positions after an
  eos hold eos. `cache` and `first_logits` [B * beam_size, V] hold each
  example's state repeated beam_size times (row b * beam_size + k).
  """
  rows, vocab = first_logits.shape
  batch, k, length = rows // beam_size, beam_size, max_new_tokens
  step = functools.partial(_beam_step, eos_id=eos_id, alpha=length_penalty)
  base = (jnp.arange(batch) * k)[:, None]

  def log_probs(logits):
    return jax.nn.log_softmax(logits.astype(jnp.float32)).reshape(batch, k, vocab)

  empty = jnp.full((batch, k), -jnp.inf)
  seqs = jnp.zeros((batch, k, length), jnp.int32)
  # The K rows start identical: only one is live, or the search would hold K copies.
  beams = _Beams(seqs, empty.at[:, 0].set(0.0), seqs, empty)
  beams, parent = step(beams, log_probs(first_logits), 0)
  cache = _reorder(cache, (base + parent).reshape(-1))

  def cond(carry):
    t, beams, _ = carry
    return (t < length) & ~_cannot_improve(beams, t, length, length_penalty)

  def body(carry):
    t, beams, cache = carry
    logits, cache = model.decode_step(beams.live_seqs[:, :, t - 1].reshape(rows, 1), cache)
    beams, parent = step(beams, log_probs(logits[:, -1]), t)
    return t + 1, beams, _reorder(cache, (base + parent).reshape(-1))

  t, beams, _ = jax.lax.while_loop(cond, body, (jnp.int32(1), beams, cache))
  # Live hypotheses count only if they reached the length limit (an early stop
  # means none of them can win anyway).
  live = jnp.where(t == length, beams.live_scores / _gnmt_penalty(length, length_penalty),
                   -jnp.inf)
  scores = jnp.concatenate([beams.done_scores, live], axis=1)
  seqs = jnp.concatenate([beams.done_seqs, beams.live_seqs], axis=1)
  best = jnp.argmax(scores, axis=1)
  return jnp.take_along_axis(seqs, best[:, None, None], axis=1)[:, 0]


@functools.partial(jax.jit, static_argnames=("merge", "max_new_tokens", "temperature",
                                             "top_k", "top_p"))
def _generate(params, prompt, rng, *, merge, max_new_tokens, temperature, top_k, top_p):
  model = merge(params)
  cache = model.init_cache(prompt.shape[0], prompt.shape[1] + max_new_tokens)
  logits, cache = model.decode_step(prompt, cache)
  return sample_loop(model, cache, logits[:, -1], rng, max_new_tokens, temperature, top_k,
                     top_p, prompt.dtype)


def translate_rows(model, source, source_segments, *, max_new_tokens: int, bos_id: int,
                   eos_id: int, beam_size: int = 1, length_penalty: float = 0.6):
  """Output tokens [B, max_new_tokens] of an encoder-decoder for source rows [B, S] (traceable).

  Greedy with beam_size 1, else beam search with the GNMT length penalty;
  segment_ids 0 mark padding. Rows run on past eos: `cut_at_eos` ends them.
  """
  positions = jnp.broadcast_to(jnp.arange(source.shape[1]), source.shape)
  encoded = model.encode(source, segment_ids=source_segments, positions=positions)
  if beam_size > 1:
    encoded = jnp.repeat(encoded, beam_size, axis=0)
    source_segments = jnp.repeat(source_segments, beam_size, axis=0)
  rows = encoded.shape[0]
  cache = model.init_cache(rows, max_new_tokens + 1, encoded=encoded,
                           source_segment_ids=source_segments)
  logits, cache = model.decode_step(jnp.full((rows, 1), bos_id, jnp.int32), cache)
  if beam_size > 1:
    return beam_search(model, cache, logits[:, -1], beam_size=beam_size,
                       max_new_tokens=max_new_tokens, eos_id=eos_id,
                       length_penalty=length_penalty)
  return sample_loop(model, cache, logits[:, -1], jax.random.PRNGKey(0), max_new_tokens, 0.0,
                     0, 1.0)


@functools.partial(jax.jit, static_argnames=("merge", "max_new_tokens", "beam_size",
                                             "length_penalty", "bos_id", "eos_id"))
def _translate(params, source, source_segments, *, merge, max_new_tokens, beam_size,
               length_penalty, bos_id, eos_id):
  return translate_rows(merge(params), source, source_segments, max_new_tokens=max_new_tokens,
                        bos_id=bos_id, eos_id=eos_id, beam_size=beam_size,
                        length_penalty=length_penalty)


def translate(merge, params, source, source_segments, *, max_new_tokens: int, bos_id: int,
              eos_id: int, beam_size: int = 1, length_penalty: float = 0.6) -> list[list[int]]:
  """`translate_rows` of source rows [B, S] in one jitted call, each output cut before eos.

  Evaluation decodes through the Trainer's sharded, batched predict instead
  (tasks/seq2seq.py).
  """
  tokens = _translate(params, jnp.asarray(source), jnp.asarray(source_segments), merge=merge,
                      max_new_tokens=max_new_tokens, beam_size=beam_size,
                      length_penalty=length_penalty, bos_id=bos_id, eos_id=eos_id)
  return cut_at_eos(jax.device_get(tokens), eos_id)


def cut_at_eos(tokens, eos_id: int | None) -> list[list[int]]:
  """Each row of tokens [B, T] up to (not including) its first eos: where every output ends."""
  rows = np.asarray(tokens).tolist()
  return [row[:row.index(eos_id)] if eos_id is not None and eos_id in row else row
          for row in rows]


def generate(merge, params, prompt_ids: list[list[int]], *, max_new_tokens: int, rng,
             temperature: float = 0.0, top_k: int = 0, top_p: float = 1.0,
             eos_id: int | None = None) -> list[list[int]]:
  """New token ids for each prompt (prompts of equal length), cut before eos_id.

  `merge(params)` must return the backbone (a hashable callable, e.g. a bound
  method of a frozen dataclass, so the jitted loop is cached).
  """
  prompt = jnp.asarray(prompt_ids, jnp.int32)
  tokens = _generate(params, prompt, rng, merge=merge, max_new_tokens=max_new_tokens,
                     temperature=temperature, top_k=top_k, top_p=top_p)
  return cut_at_eos(jax.device_get(tokens), eos_id)


def generate_text(workdir: str, prompts: list[str], *, max_new_tokens: int = 64,
                  temperature: float = 0.0, top_k: int = 0, top_p: float = 1.0,
                  seed: int = 0) -> tuple[int, list[str]]:
  """(checkpoint step, continuations) of each prompt from a run's latest checkpoint."""
  if temperature < 0 or not 0 < top_p <= 1 or top_k < 0 or max_new_tokens < 1:
    raise ConfigError("need temperature >= 0, 0 < top_p <= 1, top_k >= 0, max_new_tokens >= 1")
  cfg, netdef, params, step = restore_params(workdir)
  if cfg.model.kind != "decoder":
    raise ConfigError(f"model.arch={cfg.model.arch} model.kind={cfg.model.kind} cannot "
                      "generate text: it is not a decoder")
  tokenizer = Tokenizer(os.path.join(workdir, "tokenizer.model"))
  merge = lambda p: netdef.merge(p).backbone
  texts = []
  for text in prompts:
    ids = [tokenizer.bos_id] + tokenizer.encode(text)
    if len(ids) + max_new_tokens > cfg.model.max_len:
      raise ConfigError(f"prompt + max_new_tokens = {len(ids) + max_new_tokens} tokens is above "
                        f"model.max_len={cfg.model.max_len}")
    new = generate(merge, params, [ids], max_new_tokens=max_new_tokens,
                   rng=jax.random.PRNGKey(seed), temperature=temperature, top_k=top_k,
                   top_p=top_p, eos_id=tokenizer.eos_id)[0]
    texts.append(tokenizer.decode(new))
  return step, texts
