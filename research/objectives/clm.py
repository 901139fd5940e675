"""Causal language modelling: predict token t+1 from tokens <= t."""

from research.objectives import base


def clm_loss(p: base.Pass, ctx: base.Context):
  """Next-token cross-entropy within each packed document."""
  tokens, segments = p.batch["tokens"], p.batch["segment_ids"]
  # A token is a target only inside the document of its predecessor.
  weights = (segments[:, 1:] == segments[:, :-1]) & (segments[:, 1:] > 0)
  return base.vocab_cross_entropy(p.network.backbone.logits, p.hidden()[:, :-1], tokens[:, 1:],
                                  weights, ctx.options["chunked_loss"])


OBJECTIVE = base.Objective(fields=("tokens", "segment_ids", "positions"), examples="packed",
                           heads={}, kinds=("decoder",), loss=clm_loss, vocab_logits=True)
