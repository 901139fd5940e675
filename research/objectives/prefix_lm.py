"""Sequence-to-sequence on a decoder (prefix LM): `<s> source <sep> target </s>` rows.

A decoder reads the source and target as one causal sequence and is trained
on the target alone: `target_mask` marks the tokens predicted (the target and
its </s>), so the source is context, never a target. Attention stays causal
over the whole row, the prompt included, so the model decodes incrementally
as it trains (GPT-style fine-tuning; T5's prefix LM attends over the prefix
bidirectionally, which an imported GPT was never trained to do). Rows pack
several examples, kept apart by segment_ids; every loss is a token sum, so a
row's share of target tokens weighs exactly as many tokens.
"""

from research.objectives import base


def prefix_lm_loss(p: base.Pass, ctx: base.Context):
  """Next-token cross-entropy at the target tokens (label smoothing as seq2seq's)."""
  tokens, segments, targets = (p.batch["tokens"], p.batch["segment_ids"],
                               p.batch["target_mask"])
  weights = (targets[:, 1:] > 0) & (segments[:, 1:] == segments[:, :-1]) & (segments[:, 1:] > 0)
  return base.vocab_cross_entropy(p.network.backbone.logits, p.hidden()[:, :-1], tokens[:, 1:],
                                  weights, ctx.options["chunked_loss"],
                                  ctx.options["label_smoothing"])


OBJECTIVE = base.Objective(fields=("tokens", "segment_ids", "positions", "target_mask"),
                           examples="task", heads={}, kinds=("decoder",), loss=prefix_lm_loss,
                           vocab_logits=True)
