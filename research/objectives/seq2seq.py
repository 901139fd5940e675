"""Sequence-to-sequence (translation, summarization): teacher-forced decoder cross-entropy.

The encoder reads the source (`tokens`, `segment_ids`, `positions`); the
decoder reads `decoder_tokens` (<s> + target) and predicts `decoder_targets`
(target + </s>) where `decoder_segment_ids` > 0.
"""

import jax.numpy as jnp

from research.objectives import base


def seq2seq_loss(p: base.Pass, ctx: base.Context):
  """Token cross-entropy of the target (optimised with label smoothing); metrics: loss, accuracy."""
  batch = p.batch
  segments = batch["decoder_segment_ids"]
  positions = jnp.broadcast_to(jnp.arange(segments.shape[1]), segments.shape)
  return base.encoder_decoder_loss(p, ctx, batch, batch["decoder_tokens"],
                                   batch["decoder_targets"], segments, positions,
                                   ctx.options["label_smoothing"])


OBJECTIVE = base.Objective(
    fields=("tokens", "segment_ids", "positions", "decoder_tokens", "decoder_targets",
            "decoder_segment_ids"),
    examples="task", heads={}, kinds=("encoder_decoder",), loss=seq2seq_loss,
    decoder_field="decoder_tokens", vocab_logits=True)
