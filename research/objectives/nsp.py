"""Next-sentence prediction (BERT): is segment B the text that follows segment A?

Trains on sentence-pair examples (`data.pipeline.build_pairs`): `<cls> A
<sep> B <sep>`, token types 0 for A and 1 for B, and `nsp_label` 1 when B
truly follows A. A 2-way head reads the pooled first (<cls>) position.
"""

import jax
import jax.numpy as jnp

from research import objectives


def nsp_loss(network, batch, rng, ctx):
  """Cross-entropy of the 2-way is-next classifier; metrics: loss, accuracy."""
  del ctx
  hidden = network.backbone(batch["tokens"], deterministic=rng is None, rng=rng,
                            **objectives.encoder_inputs(batch, network.backbone))
  logits = network.heads["nsp"](hidden[:, 0]).astype(jnp.float32)
  labels = batch["nsp_label"]
  valid = (batch["segment_ids"][:, 0] > 0).astype(jnp.float32)  # padding rows of eval
  loss_each = jax.nn.logsumexp(logits, -1) - jnp.take_along_axis(logits, labels[:, None], -1)[:, 0]
  count = jnp.sum(valid)
  correct = jnp.sum((jnp.argmax(logits, -1) == labels) * valid)
  loss_sum = jnp.sum(loss_each * valid)
  return loss_sum / jnp.maximum(count, 1.0), {"loss": (loss_sum, count),
                                               "accuracy": (correct, count)}


OBJECTIVE = objectives.Objective(
    fields=("tokens", "segment_ids", "positions", "token_type_ids", "nsp_label"),
    examples="pairs", heads={"nsp": ("pooled", 2)}, needs="bidirectional", loss=nsp_loss)
