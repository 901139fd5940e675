"""Causal language modelling: predict token t+1 from tokens <= t."""

from research import objectives


def clm_loss(network, batch, rng, ctx):
  """Next-token cross-entropy within each packed document."""
  tokens, segments = batch["tokens"], batch["segment_ids"]
  hidden = network.backbone(tokens, segment_ids=segments, positions=batch["positions"],
                            deterministic=rng is None, rng=rng)
  # A token is a target only inside the document of its predecessor.
  weights = (segments[:, 1:] == segments[:, :-1]) & (segments[:, 1:] > 0)
  return objectives.vocab_cross_entropy(network.backbone.logits, hidden[:, :-1], tokens[:, 1:],
                                        weights, ctx.options["chunked_loss"])


OBJECTIVE = objectives.Objective(fields=("tokens", "segment_ids", "positions"),
                                 examples="packed", heads={}, needs="decoder", loss=clm_loss)
