"""Sequence classification: a pooled head over the backbone, cross-entropy with smoothing.

With `objective_options.pooling=auto`, bidirectional backbones pool the first
(<cls>) position and causal ones the last real token, the only one that has
seen the whole text; `mean` averages the features of every real token.
"""

import functools

import jax.numpy as jnp

from research import objectives


POOLINGS = ("auto", "mean")


def pooled(network, batch, rng, pooling: str = "auto"):
  """The features [B, D] a classification head reads."""
  hidden = network.backbone(batch["tokens"], deterministic=rng is None, rng=rng,
                            **objectives.encoder_inputs(batch, network.backbone))
  if pooling == "mean":
    real = (batch["segment_ids"] > 0)[..., None].astype(hidden.dtype)
    return jnp.sum(hidden * real, axis=1) / jnp.maximum(jnp.sum(real, axis=1), 1)
  if network.backbone.causal:
    last = jnp.sum(batch["segment_ids"] > 0, axis=1) - 1
    return jnp.take_along_axis(hidden, jnp.maximum(last, 0)[:, None, None], axis=1)[:, 0]
  return hidden[:, 0]


def class_logits(network, batch, rng=None, pooling: str = "auto"):
  """Class logits [B, num_labels] in float32."""
  return network.heads["classify"](pooled(network, batch, rng, pooling)).astype(jnp.float32)


# One function per pooling, so Trainer.predict compiles each once.
PREDICT = {p: functools.partial(class_logits, pooling=p) for p in POOLINGS}


def classify_loss(network, batch, rng, ctx):
  """Mean (smoothed) cross-entropy over real rows; metrics: loss, accuracy."""
  logits = class_logits(network, batch, rng, ctx.options["pooling"])
  return objectives.row_cross_entropy(logits, batch["label"],
                                      batch["segment_ids"][:, 0] > 0,
                                      ctx.options["label_smoothing"])


OBJECTIVE = objectives.Objective(
    fields=("tokens", "segment_ids", "positions", "label"), examples="task",
    heads={"classify": ("pooled", "labels")}, needs="any", loss=classify_loss)
