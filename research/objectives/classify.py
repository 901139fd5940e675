"""Sequence classification: a pooled head over the backbone, cross-entropy with smoothing.

With `objective_options.pooling=auto`, bidirectional backbones pool the first
(<cls>) position and causal ones the last real token, the only one that has
seen the whole text; `mean` averages the features of every real token.
"""

import functools

import jax.numpy as jnp

from research.objectives import base


POOLINGS = ("auto", "mean")


def pool(hidden, segment_ids, causal: bool, pooling: str = "auto"):
  """The features [B, D] a classification head reads from hidden states [B, T, D]."""
  if pooling == "mean":
    real = (segment_ids > 0)[..., None].astype(hidden.dtype)
    return jnp.sum(hidden * real, axis=1) / jnp.maximum(jnp.sum(real, axis=1), 1)
  if causal:
    last = jnp.sum(segment_ids > 0, axis=1) - 1
    return jnp.take_along_axis(hidden, jnp.maximum(last, 0)[:, None, None], axis=1)[:, 0]
  return hidden[:, 0]


def class_logits(network, batch, pooling: str = "auto", hidden=None):
  """Class logits [B, num_labels] in float32 (`hidden`: the backbone's pass, if computed)."""
  if hidden is None:
    hidden = network.backbone(batch["tokens"], **base.encoder_inputs(batch, network.backbone))
  features = pool(hidden, batch["segment_ids"], network.backbone.causal, pooling)
  return network.heads["classify"](features).astype(jnp.float32)


# One function per pooling, so Trainer.predict compiles each once.
PREDICT = {p: functools.partial(class_logits, pooling=p) for p in POOLINGS}


def classify_loss(p: base.Pass, ctx: base.Context):
  """(Smoothed) cross-entropy over real rows; metrics: loss, accuracy."""
  logits = class_logits(p.network, p.batch, ctx.options["pooling"], p.hidden())
  return base.cross_entropy(logits, p.batch["label"], p.batch["segment_ids"][:, 0] > 0,
                            ctx.options["label_smoothing"])


OBJECTIVE = base.Objective(
    fields=("tokens", "segment_ids", "positions", "label"), examples="task",
    heads={"classify": ("pooled", "labels")}, kinds=tuple(base.KINDS), loss=classify_loss)
