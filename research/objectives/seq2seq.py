"""Sequence-to-sequence (translation, summarization): teacher-forced decoder cross-entropy.

The encoder reads the source (`tokens`, `segment_ids`, `positions`); the
decoder reads `decoder_tokens` (<s> + target) and predicts `decoder_targets`
(target + </s>) where `decoder_segment_ids` > 0.
"""

import jax
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
  smoothing = ctx.options["label_smoothing"]
  if smoothing:
    # Smoothing changes the loss, not what is counted as correct.
    log_probs = jax.nn.log_softmax(logits.astype(jnp.float32), -1)
    targets = batch["decoder_targets"]
    nll = -jnp.take_along_axis(log_probs, targets[..., None], -1)[..., 0]
    loss_each = (1 - smoothing) * nll - smoothing * jnp.mean(log_probs, -1)
    weights = (segments > 0).astype(jnp.float32)
    count = jnp.sum(weights)
    _, m = objectives.token_cross_entropy(logits, targets, segments > 0)
    return jnp.sum(loss_each * weights) / jnp.maximum(count, 1.0), m
  return objectives.token_cross_entropy(logits, batch["decoder_targets"], segments > 0)


OBJECTIVE = objectives.Objective(
    fields=("tokens", "segment_ids", "positions", "decoder_tokens", "decoder_targets",
            "decoder_segment_ids"),
    examples="task", heads={}, needs="encoder_decoder", loss=seq2seq_loss)
