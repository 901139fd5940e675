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

from research import objectives


def _span_lengths(rng, total: int, num_spans: int):
  """`total` items split into `num_spans` random non-empty spans (their lengths)."""
  cuts = jax.random.permutation(rng, jnp.arange(total - 1) < num_spans - 1)
  first = jnp.concatenate([jnp.zeros((1,), bool), cuts])
  return jnp.bincount(jnp.cumsum(first), length=num_spans)


def noise_mask(rng, length: int, density: float, mean_span: float):
  """Bool [length]: T5's random_spans_noise_mask (exact noise count, random spans)."""
  num_noise = min(max(round(length * density), 1), length - 1)
  num_spans = max(round(num_noise / mean_span), 1)
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


def corrupt(tokens, segment_ids, rng, vocab, density: float = 0.15, mean_span: float = 3.0):
  """Encoder inputs and decoder targets, each {tokens, segment_ids, positions} [B, T]."""
  batch, length = tokens.shape
  noise = jax.vmap(lambda k: noise_mask(k, length, density, mean_span))(
      jax.random.split(rng, batch)) & (segment_ids > 0)
  prev_noise = jnp.pad(noise[:, :-1], ((0, 0), (1, 0)))
  prev_segment = jnp.pad(segment_ids[:, :-1], ((0, 0), (1, 0)))
  span_start = noise & ~(prev_noise & (prev_segment == segment_ids))
  # Sentinels count spans within each document (segment) of the row.
  doc_start = segment_ids != prev_segment
  spans_before = jnp.cumsum(span_start, axis=1) - span_start
  at_doc_start = jax.lax.cummax(jnp.where(doc_start, spans_before, 0), axis=1)
  sentinels = jnp.asarray(vocab.sentinel_ids)
  sentinel = sentinels[(spans_before - at_doc_start) % len(vocab.sentinel_ids)]

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


def span_loss(network, batch, rng, ctx):
  """Cross-entropy of the decoder's predictions of the corrupted spans."""
  options, vocab = ctx.options, ctx.vocab
  key = jax.random.PRNGKey(0) if rng is None else rng
  corrupt_key, encode_key, decode_key = jax.random.split(key, 3)
  inputs, targets = corrupt(batch["tokens"], batch["segment_ids"], corrupt_key, vocab,
                            options["noise_density"], options["mean_span_length"])
  model = network.backbone
  deterministic = rng is None
  encoded = model.encode(inputs["tokens"], segment_ids=inputs["segment_ids"],
                         positions=inputs["positions"], deterministic=deterministic,
                         rng=None if deterministic else encode_key)
  # Teacher forcing: the decoder reads the targets shifted right, bos first per document.
  seg = targets["segment_ids"]
  shifted = jnp.pad(targets["tokens"][:, :-1], ((0, 0), (1, 0)))
  first = targets["positions"] == 0
  decoder_in = jnp.where(first, vocab.bos_id, shifted)
  hidden = model.decode(decoder_in, encoded, segment_ids=seg, positions=targets["positions"],
                        source_segment_ids=inputs["segment_ids"], deterministic=deterministic,
                        rng=None if deterministic else decode_key)
  return objectives.vocab_cross_entropy(model.logits, hidden, targets["tokens"], seg > 0,
                                        options["chunked_loss"])


OBJECTIVE = objectives.Objective(fields=("tokens", "segment_ids", "positions"),
                                 examples="packed", heads={}, needs="encoder_decoder",
                                 loss=span_loss)
