"""Masked language modelling as in BERT (Devlin et al. 2019), masked inside jit.

`objective_options.mask_rate` of the maskable tokens are chosen (never
padding or special tokens); of those 80% become <mask>, 10% a random token
and 10% stay as they are. The loss is the cross-entropy of the original
token at the chosen positions. With `whole_word_mask`, a word's pieces are
chosen together. The masking is the step's input corruption: every other
objective of the step (NSP) reads the same masked batch.
"""

import jax
import jax.numpy as jnp

from research.objectives import base


def _row_uniform(row_keys, shape):
  """Uniform draws [B, T] with row b drawn from row_keys[b] alone."""
  return jax.vmap(lambda k: jax.random.uniform(k, shape[1:]))(row_keys)


def choose_positions(tokens, segment_ids, row_keys, vocab, rate: float, whole_word: bool):
  """Bool [B, T]: the positions to predict."""
  maskable = (segment_ids > 0) & ~jnp.isin(tokens, jnp.asarray(vocab.special_ids))
  draw = _row_uniform(row_keys, tokens.shape)
  if whole_word and vocab.word_start is not None:
    # Each piece takes the draw of the piece that starts its word.
    starts = jnp.asarray(vocab.word_start)[tokens] | ~maskable
    starts = starts.at[:, 0].set(True)
    index = jnp.broadcast_to(jnp.arange(tokens.shape[1]), tokens.shape)
    word_start = jax.lax.cummax(jnp.where(starts, index, 0), axis=1)
    draw = jnp.take_along_axis(draw, word_start, axis=1)
  return maskable & (draw < rate)


def mask_tokens(tokens, segment_ids, rng, vocab, rate: float = 0.15, whole_word: bool = False,
                row_keys=None):
  """(inputs, chosen): BERT's 80/10/10 corruption of `tokens` and the chosen positions.

  Row b is drawn from `row_keys[b]` (default: `rng` split per row), so a row
  masks alike whichever microbatch it lands in.
  """
  if row_keys is None:
    row_keys = jax.random.split(rng, tokens.shape[0])
  keys = jax.vmap(lambda k: jax.random.split(k, 3))(row_keys)
  chosen = choose_positions(tokens, segment_ids, keys[:, 0], vocab, rate, whole_word)
  how = _row_uniform(keys[:, 1], tokens.shape)
  # Random replacements come from the ordinary (non-special) vocabulary.
  ordinary = jnp.asarray(vocab.ordinary_ids())
  picks = jax.vmap(lambda k: jax.random.randint(k, tokens.shape[1:], 0, len(ordinary)))(
      keys[:, 2])
  inputs = jnp.where(chosen & (how < 0.8), vocab.need("mask_id"), tokens)
  inputs = jnp.where(chosen & (how >= 0.8) & (how < 0.9), ordinary[picks], inputs)
  return inputs.astype(tokens.dtype), chosen


def mlm_corrupt(p: base.Pass, ctx: base.Context) -> dict:
  """The batch with masked `tokens`, the originals in `mlm_targets`, `mlm_chosen` positions.

  At evaluation (rng None) the masking is still random but fixed: it uses a
  constant key, so every evaluation scores the same masked positions.
  """
  batch, options = p.batch, ctx.options
  inputs, chosen = mask_tokens(batch["tokens"], batch["segment_ids"], None, ctx.vocab,
                               options["mask_rate"], options["whole_word_mask"],
                               row_keys=p.row_keys("mask"))
  return dict(batch, tokens=inputs, mlm_targets=batch["tokens"], mlm_chosen=chosen)


def mlm_loss(p: base.Pass, ctx: base.Context):
  """Cross-entropy of the original tokens at the masked positions."""
  return base.vocab_cross_entropy(p.network.backbone.logits, p.hidden(), p.batch["mlm_targets"],
                                  p.batch["mlm_chosen"], ctx.options["chunked_loss"])


OBJECTIVE = base.Objective(fields=("tokens", "segment_ids", "positions"), examples="any",
                           heads={}, kinds=base.BIDIRECTIONAL, loss=mlm_loss, corrupt=mlm_corrupt,
                           vocab_logits=True)
