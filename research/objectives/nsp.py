"""Next-sentence prediction (BERT): is segment B the text that follows segment A?

Trains on sentence-pair examples (`data.pipeline.build_pairs`): `<cls> A
<sep> B <sep>`, token types 0 for A and 1 for B, and `nsp_label` 1 when B
truly follows A. A 2-way head reads the pooled first (<cls>) position.
"""

from research import objectives


def nsp_loss(network, batch, rng, ctx):
  """Cross-entropy of the 2-way is-next classifier; metrics: loss, accuracy."""
  del ctx
  hidden = network.backbone(batch["tokens"], deterministic=rng is None, rng=rng,
                            **objectives.encoder_inputs(batch, network.backbone))
  logits = network.heads["nsp"](hidden[:, 0])
  return objectives.row_cross_entropy(logits, batch["nsp_label"], batch["segment_ids"][:, 0] > 0)


OBJECTIVE = objectives.Objective(
    fields=("tokens", "segment_ids", "positions", "token_type_ids", "nsp_label"),
    examples="pairs", heads={"nsp": ("pooled", 2)}, needs="bidirectional", loss=nsp_loss)
