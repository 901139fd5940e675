"""Next-sentence prediction (BERT): is segment B the text that follows segment A?

Trains on sentence-pair examples (`data.pairs.build_pairs`): `<cls> A
<sep> B <sep>`, token types 0 for A and 1 for B, and `nsp_label` 1 when B
truly follows A. A 2-way head reads the pooled first (<cls>) position of the
step's shared backbone pass: with MLM, the masked pair, as in BERT.
"""

from research.objectives import base


def nsp_loss(p: base.Pass, ctx: base.Context):
  """Cross-entropy of the 2-way is-next classifier; metrics: loss, accuracy."""
  del ctx
  logits = p.network.heads["nsp"](p.hidden()[:, 0])
  return base.cross_entropy(logits, p.batch["nsp_label"], p.batch["segment_ids"][:, 0] > 0)


OBJECTIVE = base.Objective(
    fields=("tokens", "segment_ids", "positions", "token_type_ids", "nsp_label"),
    examples="pairs", heads={"nsp": ("pooled", 2)}, kinds=base.BIDIRECTIONAL, loss=nsp_loss)
