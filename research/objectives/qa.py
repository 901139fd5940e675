"""Extractive QA: start and end of the answer span, two logits per token.

Rows are `<cls> question <sep> context window <sep>`; a window that does not
hold the answer points both ends at <cls> (position 0), as in BERT's SQuAD
fine-tuning.
"""

import jax.numpy as jnp

from research.objectives import base


def span_logits(network, batch, hidden=None):
  """(start, end) logits [B, T] each, float32, -1e9 on padding.

  `hidden` is the backbone's pass over the batch when the caller has it.
  """
  if hidden is None:
    hidden = network.backbone(batch["tokens"], **base.encoder_inputs(batch, network.backbone))
  logits = network.heads["qa"](hidden).astype(jnp.float32)
  valid = batch["segment_ids"] > 0
  logits = jnp.where(valid[..., None], logits, -1e9)
  return logits[..., 0], logits[..., 1]


def qa_loss(p: base.Pass, ctx: base.Context):
  """Mean of the start and end cross-entropies; metrics: loss, exact span accuracy.

  Label smoothing spreads over the row's real tokens only, never the padding.
  """
  batch = p.batch
  start, end = span_logits(p.network, batch, p.hidden())
  smoothing = ctx.options["label_smoothing"]
  rows = batch["segment_ids"][:, 0] > 0
  candidates = (batch["segment_ids"] > 0)
  (start_sum, count), start_metrics = base.cross_entropy(
      start, batch["start_position"], rows, smoothing, candidates)
  (end_sum, _), end_metrics = base.cross_entropy(
      end, batch["end_position"], rows, smoothing, candidates)
  hit = ((jnp.argmax(start, -1) == batch["start_position"])
         & (jnp.argmax(end, -1) == batch["end_position"]))
  loss_sum = 0.5 * (start_metrics["loss"][0] + end_metrics["loss"][0])
  return (0.5 * (start_sum + end_sum), count), {
      "loss": (loss_sum, count), "span_accuracy": (jnp.sum(hit * rows), count)}


OBJECTIVE = base.Objective(
    fields=("tokens", "segment_ids", "positions", "token_type_ids", "start_position",
            "end_position"),
    examples="task", heads={"qa": ("token", 2)}, kinds=tuple(base.KINDS), loss=qa_loss)
