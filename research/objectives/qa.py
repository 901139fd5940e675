"""Extractive QA: start and end of the answer span, two logits per token.

Rows are `<cls> question <sep> context window <sep>`; a window that does not
hold the answer points both ends at <cls> (position 0), as in BERT's SQuAD
fine-tuning.
"""

import jax.numpy as jnp

from research import objectives


def span_logits(network, batch, rng=None):
  """(start, end) logits [B, T] each, float32, -inf on padding."""
  hidden = network.backbone(batch["tokens"], deterministic=rng is None, rng=rng,
                            **objectives.encoder_inputs(batch, network.backbone))
  logits = network.heads["qa"](hidden).astype(jnp.float32)
  valid = batch["segment_ids"] > 0
  logits = jnp.where(valid[..., None], logits, -1e9)
  return logits[..., 0], logits[..., 1]


def qa_loss(network, batch, rng, ctx):
  """Mean of the start and end cross-entropies; metrics: loss, exact span accuracy."""
  start, end = span_logits(network, batch, rng)
  smoothing = ctx.options["label_smoothing"]
  valid = (batch["segment_ids"][:, 0] > 0).astype(jnp.float32)
  loss_each = 0.5 * (objectives.smoothed_cross_entropy(start, batch["start_position"], smoothing)
                     + objectives.smoothed_cross_entropy(end, batch["end_position"], smoothing))
  hit = ((jnp.argmax(start, -1) == batch["start_position"])
         & (jnp.argmax(end, -1) == batch["end_position"]))
  count, loss_sum = jnp.sum(valid), jnp.sum(loss_each * valid)
  return loss_sum / jnp.maximum(count, 1.0), {"loss": (loss_sum, count),
                                               "span_accuracy": (jnp.sum(hit * valid), count)}


OBJECTIVE = objectives.Objective(
    fields=("tokens", "segment_ids", "positions", "token_type_ids", "start_position",
            "end_position"),
    examples="task", heads={"qa": ("token", 2)}, needs="any", loss=qa_loss)
