"""Sequence-to-sequence (translation, summarization): teacher-forced decoder cross-entropy.

The encoder reads the source (`tokens`, `segment_ids`, `positions`); the
decoder reads `decoder_tokens` (<s> + target) and predicts `decoder_targets`
(target + </s>) where `decoder_segment_ids` > 0.
"""

import jax.numpy as jnp

from research import objectives


def seq2seq_loss(network, batch, rng, ctx):
  """Token cross-entropy of the target (with label smoothing); metrics: loss, accuracy."""
  model = network.backbone
  deterministic = rng is None
  encoded = model.encode(batch["tokens"], segment_ids=batch["segment_ids"],
                         positions=batch["positions"], deterministic=deterministic, rng=rng)
  segments = batch["decoder_segment_ids"]
  positions = jnp.broadcast_to(jnp.arange(segments.shape[1]), segments.shape)
  hidden = model.decode(batch["decoder_tokens"], encoded, segment_ids=segments,
                        positions=positions, source_segment_ids=batch["segment_ids"],
                        deterministic=deterministic, rng=rng)
  logits = model.logits(hidden)
  targets, weights = batch["decoder_targets"], segments > 0
  loss, metrics = objectives.token_cross_entropy(logits, targets, weights)
  smoothing = ctx.options["label_smoothing"]
  if smoothing:  # smoothing changes the loss, not what is counted as correct
    per_token = objectives.smoothed_cross_entropy(logits, targets, smoothing)
    loss = jnp.sum(per_token * weights) / jnp.maximum(jnp.sum(weights), 1.0)
  return loss, metrics


OBJECTIVE = objectives.Objective(
    fields=("tokens", "segment_ids", "positions", "decoder_tokens", "decoder_targets",
            "decoder_segment_ids"),
    examples="task", heads={}, needs="encoder_decoder", loss=seq2seq_loss)
