"""Text generation with a decoder's incremental state (KV cache, RNN state, ...).

Sampling is greedy (temperature 0), or temperature sampling optionally
restricted by top-k and/or top-p (nucleus), each row from its own key. Prompts
of different lengths are left-padded into one batch (`continue_rows`) and fed
in one `decode_step` call, then one token per step inside a jitted `lax.scan`:
a prompt decodes batched exactly as alone.
Encoder-decoders decode greedily or by beam search (`translate_rows`). Every
output ends where `cut_at_eos` cuts it: before the first eos.

No decoding emits a special token: `ban` sets the logits of `<pad>`, `<unk>`,
`<s>`, `<mask>`, `<cls>`, `<sep>` and the T5 sentinels `<extra_id_N>` to -inf
before any argmax, sampling filter or beam score (`sample_token`,
`beam_search`), so greedy picks the best other id. Eos stays allowed: it ends
the output. The ids come from the tokenizer (`banned_ids`); by default those
every Trellis tokenizer fixes (objectives.base.Vocab's).

Why ~420 lines: one decoding path for every model (decoders, encoder-decoders,
batched prompts), its samplers, the beam search and the prompt checks; split,
each part would need the others' conventions (row keys, banned ids, eos).
"""

import functools
import sys
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from research.data.hf_tokenizer import load_tokenizer
from research.errors import ConfigError
from research.objectives.base import Vocab
from research.workdir import restore_params


def banned_ids(vocab) -> tuple[int, ...]:
  """Ids decoding never emits: a tokenizer's (or Vocab's) special ids and sentinels, but eos.

  The union, as a tokenizer's `special_ids` may or may not hold its sentinels.
  """
  return tuple(sorted((set(vocab.special_ids) | set(vocab.sentinel_ids)) - {vocab.eos_id}))


# The default: every tokenizer Trellis trains has these special ids (data/tokenizer.py).
TRELLIS_BANNED = banned_ids(Vocab(size=0))


def _banned(banned: tuple[int, ...] | None, eos_id: int | None) -> tuple[int, ...]:
  """`banned` (None: TRELLIS_BANNED) without eos_id, sorted: a static jit argument."""
  ids = TRELLIS_BANNED if banned is None else banned
  return tuple(sorted({int(i) for i in ids} - {eos_id}))


def ban(logits, banned: tuple[int, ...]):
  """Logits [..., V] with the ids in `banned` at -inf: never chosen, whatever the decoding."""
  vocab = logits.shape[-1]
  ids = [i for i in banned if 0 <= i < vocab]
  if not ids:
    return logits
  mask = np.zeros(vocab, bool)
  mask[ids] = True
  return jnp.where(mask, -jnp.inf, logits)


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


def sample_token(logits, rng, temperature: float, top_k: int, top_p: float,
                 banned: tuple[int, ...] = ()):
  """Next token ids [B] from last-position logits [B, V], never one of `banned`.

  `rng` is one key for the batch, or one key per row ([B, 2]): a row's draw
  then depends on its own key only, whatever else is in the batch.
  """
  logits = ban(logits, banned)
  if temperature == 0.0:
    return jnp.argmax(logits, axis=-1)
  logits = filter_logits(logits / temperature, top_k, top_p)
  if rng.ndim == logits.ndim:
    return jax.vmap(lambda key, row: jax.random.categorical(key, row))(rng, logits)
  return jax.random.categorical(rng, logits, axis=-1)


def row_keys(rng, rows: int):
  """Keys [rows, 2]: `rng` if it already is one per row, else row i's fold_in(rng, i)."""
  rng = jnp.asarray(rng)
  if rng.ndim == 2:
    return rng
  return jax.vmap(jax.random.fold_in, (None, 0))(rng, jnp.arange(rows))


def sample_loop(model, cache, first_logits, keys, max_new_tokens: int, temperature: float,
                top_k: int, top_p: float, dtype=jnp.int32, banned: tuple[int, ...] = ()):
  """Tokens [B, max_new_tokens]: sample (no banned id), feed back through `decode_step`, repeat.

  `keys` [B, 2] are the rows' keys (step t draws from fold_in(key, t)); greedy
  decoding (temperature 0) reads none.
  """

  def step(carry, t):
    last_logits, cache = carry
    step_keys = jax.vmap(jax.random.fold_in, (0, None))(keys, t)
    token = sample_token(last_logits, step_keys, temperature, top_k, top_p, banned)
    logits, cache = model.decode_step(token[:, None].astype(dtype), cache)
    return (logits[:, -1], cache), token

  _, tokens = jax.lax.scan(step, (first_logits, cache), jnp.arange(max_new_tokens))
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
                eos_id: int, length_penalty: float, banned: tuple[int, ...] = ()):
  """The best hypothesis [B, max_new_tokens] by log-probability / GNMT length penalty.

  The standard search (fairseq, Hugging Face, T5X): beam_size live hypotheses
  and a separate set of beam_size finished ones. Each step takes the top
  2 * beam_size continuations of the live ones; those that end in eos join
  the finished set, scored with the length penalty of their length, and the
  best beam_size others stay live. The search stops when no live hypothesis
  can beat the worst finished one of any example, or at max_new_tokens, where
  the live ones end unfinished (scored at that length). Positions after an
  eos hold eos. `cache` and `first_logits` [B * beam_size, V] hold each
  example's state repeated beam_size times (row b * beam_size + k). The
  `banned` ids are masked before the log-softmax: scores are log-probabilities
  over the other ids, and a banned id never extends a hypothesis.
  """
  rows, vocab = first_logits.shape
  batch, k, length = rows // beam_size, beam_size, max_new_tokens
  step = functools.partial(_beam_step, eos_id=eos_id, alpha=length_penalty)
  base = (jnp.arange(batch) * k)[:, None]

  def log_probs(logits):
    return jax.nn.log_softmax(ban(logits.astype(jnp.float32), banned)).reshape(batch, k, vocab)

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


def continue_rows(model, prompt, pad, *, max_new_tokens: int, keys=None,
                  temperature: float = 0.0, top_k: int = 0, top_p: float = 1.0,
                  beam_size: int = 1, length_penalty: float = 0.6, eos_id: int = -1,
                  banned: tuple[int, ...] = ()):
  """A decoder's new tokens [B, max_new_tokens] after left-padded prompts [B, P] (traceable).

  Row b's prompt is prompt[b, pad[b]:]: the padding is a segment of its own
  that no real token attends to, its positions start at the first real
  token, and recurrent states and conv buffers stay zero through it, so a row
  decodes as it would alone. Greedy or sampled (`keys` [B, 2], one per row:
  see `sample_loop`), or the best of `beam_size` beams. Rows run on past eos.
  """
  if beam_size > 1:
    prompt, pad = jnp.repeat(prompt, beam_size, axis=0), jnp.repeat(pad, beam_size, axis=0)
  cache = model.init_cache(prompt.shape[0], prompt.shape[1] + max_new_tokens, pad=pad)
  logits, cache = model.decode_step(prompt, cache)
  if beam_size > 1:
    return beam_search(model, cache, logits[:, -1], beam_size=beam_size,
                       max_new_tokens=max_new_tokens, eos_id=eos_id,
                       length_penalty=length_penalty, banned=banned)
  if keys is None:
    keys = row_keys(jax.random.PRNGKey(0), prompt.shape[0])
  return sample_loop(model, cache, logits[:, -1], keys, max_new_tokens, temperature, top_k,
                     top_p, prompt.dtype, banned)


@functools.partial(jax.jit, static_argnames=("merge", "max_new_tokens", "temperature",
                                             "top_k", "top_p", "beam_size", "length_penalty",
                                             "eos_id", "banned"))
def _generate(params, prompt, pad, keys, *, merge, **options):
  return continue_rows(merge(params), prompt, pad, keys=keys, **options)


def left_pad(prompt_ids: list[list[int]], width: int | None = None,
             pad_id: int = 0) -> tuple[np.ndarray, np.ndarray]:
  """(prompts right-aligned in one int32 array [B, width], each row's padding count [B]).

  `width` defaults to the longest prompt's length.
  """
  width = max((len(ids) for ids in prompt_ids), default=0) if width is None else width
  rows = np.full((len(prompt_ids), width), pad_id, np.int32)
  pad = np.asarray([width - len(ids) for ids in prompt_ids], np.int32).reshape(-1)
  for row, ids, n in zip(rows, prompt_ids, pad):
    row[n:] = ids
  return rows, pad


def translate_rows(model, source, source_segments, *, max_new_tokens: int, bos_id: int,
                   eos_id: int, beam_size: int = 1, length_penalty: float = 0.6,
                   banned: tuple[int, ...] | None = None, keys=None, temperature: float = 0.0,
                   top_k: int = 0, top_p: float = 1.0):
  """Output tokens [B, max_new_tokens] of an encoder-decoder for source rows [B, S] (traceable).

  Greedy with beam_size 1 (or sampled, with a temperature and row `keys`
  [B, 2]: see `sample_loop`), else beam search with the GNMT length penalty;
  segment_ids 0 mark padding. Rows run on past eos: `cut_at_eos` ends them.
  No output holds an id of `banned` (None: TRELLIS_BANNED; eos_id never is).
  """
  banned = _banned(banned, eos_id)
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
                       length_penalty=length_penalty, banned=banned)
  keys = row_keys(jax.random.PRNGKey(0), rows) if keys is None else keys
  return sample_loop(model, cache, logits[:, -1], keys, max_new_tokens, temperature, top_k,
                     top_p, banned=banned)


@functools.partial(jax.jit, static_argnames=("merge", "max_new_tokens", "beam_size",
                                             "length_penalty", "bos_id", "eos_id", "banned"))
def _translate(params, source, source_segments, *, merge, max_new_tokens, beam_size,
               length_penalty, bos_id, eos_id, banned):
  return translate_rows(merge(params), source, source_segments, max_new_tokens=max_new_tokens,
                        bos_id=bos_id, eos_id=eos_id, beam_size=beam_size,
                        length_penalty=length_penalty, banned=banned)


def translate(merge, params, source, source_segments, *, max_new_tokens: int, bos_id: int,
              eos_id: int, beam_size: int = 1, length_penalty: float = 0.6,
              banned: tuple[int, ...] | None = None) -> list[list[int]]:
  """`translate_rows` of source rows [B, S] in one jitted call, each output cut before eos.

  Evaluation decodes through the Trainer's sharded, batched predict instead
  (tasks/seq2seq.py).
  """
  tokens = _translate(params, jnp.asarray(source), jnp.asarray(source_segments), merge=merge,
                      max_new_tokens=max_new_tokens, beam_size=beam_size,
                      length_penalty=length_penalty, bos_id=bos_id, eos_id=eos_id,
                      banned=_banned(banned, eos_id))
  return cut_at_eos(jax.device_get(tokens), eos_id)


def cut_at_eos(tokens, eos_id: int | None) -> list[list[int]]:
  """Each row of tokens [B, T] up to (not including) its first eos: where every output ends."""
  rows = np.asarray(tokens).tolist()
  return [row[:row.index(eos_id)] if eos_id is not None and eos_id in row else row
          for row in rows]


def generate(merge, params, prompt_ids: list[list[int]], *, max_new_tokens: int, rng,
             temperature: float = 0.0, top_k: int = 0, top_p: float = 1.0,
             eos_id: int | None = None, banned: tuple[int, ...] | None = None,
             beam_size: int = 1, length_penalty: float = 0.6) -> list[list[int]]:
  """New token ids for each prompt (of any lengths: see `continue_rows`), cut before eos_id.

  `merge(params)` must return the backbone (a hashable callable, e.g. a bound
  method of a frozen dataclass, so the jitted loop is cached). `rng` is one
  key (row i samples with fold_in(rng, i)) or one per prompt [B, 2]. No new
  token is one of `banned` (None: TRELLIS_BANNED; `banned_ids(tokenizer)`;
  eos_id never is). beam_size > 1 searches beams (GNMT length penalty).
  """
  prompt, pad = left_pad(prompt_ids)
  tokens = _generate(params, jnp.asarray(prompt), jnp.asarray(pad),
                     row_keys(rng, len(prompt_ids)), merge=merge,
                     max_new_tokens=max_new_tokens, temperature=temperature, top_k=top_k,
                     top_p=top_p, beam_size=beam_size, length_penalty=length_penalty,
                     eos_id=-1 if eos_id is None else eos_id, banned=_banned(banned, eos_id))
  return cut_at_eos(jax.device_get(tokens), eos_id)


def _room(cfg, prompts: list[str], encoded: list[list[int]],
          max_new_tokens: int | None) -> list[int]:
  """New tokens to generate per prompt: max_new_tokens, or (None) what model.max_len leaves."""
  max_len = cfg.model.max_len
  lengths = [len(ids) for ids in encoded]
  longest = max(range(len(prompts)), key=lengths.__getitem__)
  n, text = lengths[longest], prompts[longest]
  if n >= max_len:
    text = text if len(text) <= 40 else text[:37] + "..."
    raise ConfigError(f"the prompt {text!r} is {n} tokens with <s>, which leaves no room "
                      f"in model.max_len={max_len}: shorten it below {max_len} tokens")
  if max_new_tokens is None:
    rooms = [max_len - length for length in lengths]
    after = (f"the prompt's {n}" if len(prompts) == 1
             else "the prompts' " + ", ".join(map(str, lengths)))
    print(f"trellis: max_new_tokens not set: generating up to {', '.join(map(str, rooms))} "
          f"tokens, the room model.max_len={max_len} leaves after {after} tokens (with <s>)",
          file=sys.stderr, flush=True)
    return rooms
  if n + max_new_tokens > max_len:
    raise ConfigError(f"prompt + max_new_tokens = {n} + {max_new_tokens} = {n + max_new_tokens} "
                      f"tokens is above model.max_len={max_len}: max_new_tokens={max_len - n} "
                      "or less fits (unset, it fills the room left)")
  return [max_new_tokens] * len(prompts)


def generate_text(workdir: str, prompts: list[str], **options) -> tuple[int, list[str]]:
  """(checkpoint step, continuations) of each prompt from a run's latest checkpoint.

  `options` are `continue_texts`'.
  """
  cfg, netdef, params, step = restore_params(workdir)
  return step, continue_texts(cfg, netdef, params, load_tokenizer(workdir), prompts, **options)


def continue_texts(cfg, netdef, params, tokenizer, prompts: list[str], *,
                   max_new_tokens: int | None = None, temperature: float = 0.0, top_k: int = 0,
                   top_p: float = 1.0, seed: int = 0, beam_size: int = 1) -> list[str]:
  """The continuation of each prompt (after the tokenizer's bos) by a decoder's params.

  max_new_tokens None: each prompt continues up to model.max_len (said in one
  line on stderr); a given value must fit beside every prompt. Raises
  ConfigError for a bad value, a model that is not a decoder, or a prompt that
  leaves no room.
  """
  if (temperature < 0 or not 0 < top_p <= 1 or top_k < 0 or beam_size < 1
      or (max_new_tokens is not None and max_new_tokens < 1)):
    raise ConfigError("need temperature >= 0, 0 < top_p <= 1, top_k >= 0, beam_size >= 1, "
                      "max_new_tokens >= 1")
  if beam_size > 1 and temperature > 0:
    raise ConfigError("beam search is deterministic: set temperature=0 with beam_size > 1")
  if cfg.model.kind != "decoder":
    raise ConfigError(f"model.arch={cfg.model.arch} model.kind={cfg.model.kind} cannot "
                      "generate text: it is not a decoder")
  merge = lambda p: netdef.merge(p).backbone
  if not prompts:
    return []
  encoded = [[tokenizer.bos_id] + tokenizer.encode(text) for text in prompts]
  rooms = _room(cfg, prompts, encoded, max_new_tokens)
  keys = row_keys(jax.random.PRNGKey(seed), len(prompts))  # prompt i's, however batched
  texts = [""] * len(prompts)
  for room in dict.fromkeys(rooms):  # one batch per length to generate, in prompt order
    rows = [i for i, r in enumerate(rooms) if r == room]
    new = generate(merge, params, [encoded[i] for i in rows], max_new_tokens=room,
                   rng=keys[np.asarray(rows)], temperature=temperature, top_k=top_k,
                   top_p=top_p, eos_id=tokenizer.eos_id, banned=banned_ids(tokenizer),
                   beam_size=beam_size)
    for i, ids in zip(rows, new):
      texts[i] = tokenizer.decode(ids)
  return texts
