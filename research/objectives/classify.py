"""Sequence classification: a pooled head over the backbone, cross-entropy with smoothing.

Bidirectional backbones pool the first (<cls>) position; causal ones pool
the last real token, the only one that has seen the whole text.
"""

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


def classify_loss(network, batch, rng, ctx):
  """Mean (smoothed) cross-entropy over real rows; metrics: loss, accuracy."""
  return objectives.row_cross_entropy(class_logits(network, batch, rng), batch["label"],
                                      batch["segment_ids"][:, 0] > 0,
                                      ctx.options["label_smoothing"])


OBJECTIVE = objectives.Objective(
    fields=("tokens", "segment_ids", "positions", "label"), examples="task",
    heads={"classify": ("pooled", "labels")}, needs="any", loss=classify_loss)
