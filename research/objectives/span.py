"""T5 span corruption (Raffel et al. 2020), done inside jit on packed rows.

A share `noise_density` of each row's tokens, in spans of mean length
`mean_span_length` (T5's random segmentation), is removed from the encoder
input; each span is replaced by a sentinel, and the decoder predicts
"<sentinel> span tokens" for every span. Spans never cross a packed
document boundary and sentinels are numbered per document, so packed
documents stay independent; both sides keep fixed shapes [B, T].
"""

import jax
import jax.numpy as jnp

from research.errors import ConfigError
from research.objectives import base


def _span_lengths(rng, total: int, num_spans: int):
  """`total` items split into `num_spans` random non-empty spans (their lengths)."""
  cuts = jax.random.permutation(rng, jnp.arange(total - 1) < num_spans - 1)
  first = jnp.concatenate([jnp.zeros((1,), bool), cuts])
  return jnp.bincount(jnp.cumsum(first), length=num_spans)


def span_counts(length: int, density: float, mean_span: float) -> tuple[int, int]:
  """(noise tokens, noise spans) that `noise_mask` draws in a row of `length` tokens."""
  num_noise = min(max(round(length * density), 1), length - 1)
  return num_noise, max(round(num_noise / mean_span), 1)


def check_fits(length: int, density: float, mean_span: float, num_sentinels: int) -> None:
  """ConfigError unless every span has its own sentinel and the targets fit the row.

  A document meets each of its row's spans at most once, so it has at most
  num_spans spans. The targets hold every noise token and a sentinel per
  span, and a document boundary cuts a span in two: in rows of short
  documents every noise token can be a span, so 2 * num_noise must fit.
  The encoder inputs (kept tokens plus a sentinel per span) always fit.
  """
  num_noise, num_spans = span_counts(length, density, mean_span)
  if num_sentinels == 0:
    raise ConfigError("span corruption needs sentinel ids, which this tokenizer lacks; "
                      "use a Trellis tokenizer (data.tokenizer='')")
  if num_spans > num_sentinels:
    raise ConfigError(
        f"span corruption of {length}-token rows at noise_density={density} makes {num_spans} "
        f"spans, more than the {num_sentinels} sentinel ids; raise "
        f"objective_options.mean_span_length to >= {num_noise / num_sentinels:.2f} "
        f"(now {mean_span}) or lower data.seq_len")
  if 2 * num_noise > length:
    raise ConfigError(
        f"objective_options.noise_density={density} corrupts {num_noise} of {length} tokens: "
        f"with a sentinel per span the targets can need {2 * num_noise} positions, more than "
        "the row; use noise_density <= 0.5")


def noise_mask(rng, length: int, density: float, mean_span: float):
  """Bool [length]: T5's random_spans_noise_mask (exact noise count, random spans)."""
  num_noise, num_spans = span_counts(length, density, mean_span)
  noise_key, keep_key = jax.random.split(rng)
  noise = _span_lengths(noise_key, num_noise, num_spans)
  keep = _span_lengths(keep_key, length - num_noise, num_spans)
  # Alternate kept and noise spans, starting with a kept one.
  starts = jnp.cumsum(jnp.stack([keep, noise], 1).reshape(-1))[:-1]
  indicator = jnp.zeros((length,), jnp.int32).at[starts].set(1)
  return jnp.cumsum(indicator) % 2 == 1


def _compact(values, keep, fill=0):
  """Moves values[keep] to the front of each row (order kept); the rest is `fill`."""
  index = jnp.where(keep, jnp.cumsum(keep, axis=1) - 1, values.shape[1])
  out = jnp.full((values.shape[0], values.shape[1] + 1), fill, values.dtype)
  return jax.vmap(lambda o, i, v: o.at[i].set(v))(out, index, values)[:, :values.shape[1]]


def _positions(segment_ids):
  """Position within each segment of a compacted row."""
  index = jnp.broadcast_to(jnp.arange(segment_ids.shape[1]), segment_ids.shape)
  new = jnp.concatenate([jnp.ones_like(segment_ids[:, :1], bool),
                         segment_ids[:, 1:] != segment_ids[:, :-1]], axis=1)
  return index - jax.lax.cummax(jnp.where(new, index, 0), axis=1)


def corrupt(tokens, segment_ids, rng, vocab, density: float = 0.15, mean_span: float = 3.0,
            row_keys=None):
  """Encoder inputs and decoder targets, each {tokens, segment_ids, positions} [B, T].

  Row b's spans come from `row_keys[b]` (default: `rng` split per row), so a
  row is corrupted alike whichever microbatch it lands in.

  Raises ConfigError (while tracing) where spans would outnumber the sentinels
  or the targets could outgrow the row (`check_fits`).
  """
  batch, length = tokens.shape
  check_fits(length, density, mean_span, len(vocab.sentinel_ids))
  if row_keys is None:
    row_keys = jax.random.split(rng, batch)
  noise = jax.vmap(lambda k: noise_mask(k, length, density, mean_span))(
      row_keys) & (segment_ids > 0)
  prev_noise = jnp.pad(noise[:, :-1], ((0, 0), (1, 0)))
  prev_segment = jnp.pad(segment_ids[:, :-1], ((0, 0), (1, 0)))
  span_start = noise & ~(prev_noise & (prev_segment == segment_ids))
  # Sentinels count spans within each document (segment) of the row.
  doc_start = segment_ids != prev_segment
  spans_before = jnp.cumsum(span_start, axis=1) - span_start
  at_doc_start = jax.lax.cummax(jnp.where(doc_start, spans_before, 0), axis=1)
  sentinels = jnp.asarray(vocab.sentinel_ids)
  sentinel = sentinels[spans_before - at_doc_start]  # < len(sentinels): check_fits

  keep = ~noise | span_start
  source = jnp.where(span_start, sentinel, tokens)
  inputs = {"tokens": _compact(source, keep), "segment_ids": _compact(segment_ids, keep)}
  # Targets: two slots per position, "sentinel" (at span starts) then "token" (if noise).
  slot_tokens = jnp.stack([sentinel, tokens], 2).reshape(batch, 2 * length)
  slot_keep = jnp.stack([span_start, noise], 2).reshape(batch, 2 * length)
  slot_segments = jnp.repeat(segment_ids, 2, axis=1)
  targets = {"tokens": _compact(slot_tokens, slot_keep)[:, :length],
             "segment_ids": _compact(slot_segments, slot_keep)[:, :length]}
  for part in (inputs, targets):
    part["positions"] = _positions(part["segment_ids"])
  return inputs, targets


def span_loss(p: base.Pass, ctx: base.Context):
  """Cross-entropy of the decoder's predictions of the corrupted spans."""
  options, vocab = ctx.options, ctx.vocab
  inputs, targets = corrupt(p.batch["tokens"], p.batch["segment_ids"], None, vocab,
                            options["noise_density"], options["mean_span_length"],
                            row_keys=p.row_keys("noise"))
  # Teacher forcing: the decoder reads the targets shifted right, bos first per document.
  shifted = jnp.pad(targets["tokens"][:, :-1], ((0, 0), (1, 0)))
  decoder_in = jnp.where(targets["positions"] == 0, vocab.need("bos_id"), shifted)
  return base.encoder_decoder_loss(p, ctx, inputs, decoder_in, targets["tokens"],
                                   targets["segment_ids"], targets["positions"])


# The decoder's targets fill a row as long as the source (`tokens`).
OBJECTIVE = base.Objective(fields=("tokens", "segment_ids", "positions"), examples="packed",
                           heads={}, kinds=("encoder_decoder",), loss=span_loss,
                           decoder_field="tokens", vocab_logits=True)
