"""Sequence classification: a pooled head over the backbone, cross-entropy with smoothing.

Bidirectional backbones pool the first (<cls>) position; causal ones pool
the last real token, the only one that has seen the whole text.
"""

import jax
import jax.numpy as jnp

from research import objectives


def pooled(network, batch, rng):
  """The features [B, D] a classification head reads."""
  hidden = network.backbone(batch["tokens"], deterministic=rng is None, rng=rng,
                            **objectives.encoder_inputs(batch, network.backbone))
  if network.backbone.causal:
    last = jnp.sum(batch["segment_ids"] > 0, axis=1) - 1
    return jnp.take_along_axis(hidden, jnp.maximum(last, 0)[:, None, None], axis=1)[:, 0]
  return hidden[:, 0]


def class_logits(network, batch, rng=None):
  """Class logits [B, num_labels] in float32."""
  return network.heads["classify"](pooled(network, batch, rng)).astype(jnp.float32)


def smoothed_cross_entropy(logits, labels, smoothing: float):
  """Per-example cross-entropy against labels smoothed toward uniform."""
  log_probs = jax.nn.log_softmax(logits, -1)
  nll = -jnp.take_along_axis(log_probs, labels[:, None], -1)[:, 0]
  return (1.0 - smoothing) * nll - smoothing * jnp.mean(log_probs, -1)


def classify_loss(network, batch, rng, ctx):
  """Mean cross-entropy over real rows; metrics: loss, accuracy."""
  logits = class_logits(network, batch, rng)
  labels = batch["label"]
  valid = (batch["segment_ids"][:, 0] > 0).astype(jnp.float32)
  loss_each = smoothed_cross_entropy(logits, labels, ctx.options["label_smoothing"])
  count, loss_sum = jnp.sum(valid), jnp.sum(loss_each * valid)
  correct = jnp.sum((jnp.argmax(logits, -1) == labels) * valid)
  return loss_sum / jnp.maximum(count, 1.0), {"loss": (loss_sum, count),
                                               "accuracy": (correct, count)}


OBJECTIVE = objectives.Objective(
    fields=("tokens", "segment_ids", "positions", "label"), examples="task",
    heads={"classify": ("pooled", "labels")}, needs="any", loss=classify_loss)
