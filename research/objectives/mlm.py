"""Masked language modelling as in BERT (Devlin et al. 2019), masked inside jit.

`objective_options.mask_rate` of the maskable tokens are chosen (never
padding or special tokens); of those 80% become <mask>, 10% a random token
and 10% stay as they are. The loss is the cross-entropy of the original
token at the chosen positions. With `whole_word_mask`, a word's pieces are
chosen together.
"""

import jax
import jax.numpy as jnp

from research import objectives


def choose_positions(tokens, segment_ids, rng, vocab, rate: float, whole_word: bool):
  """Bool [B, T]: the positions to predict."""
  maskable = (segment_ids > 0) & ~jnp.isin(tokens, jnp.asarray(vocab.special_ids))
  draw = jax.random.uniform(rng, tokens.shape)
  if whole_word and vocab.word_start is not None:
    # Each piece takes the draw of the piece that starts its word.
    starts = jnp.asarray(vocab.word_start)[tokens] | ~maskable
    starts = starts.at[:, 0].set(True)
    index = jnp.broadcast_to(jnp.arange(tokens.shape[1]), tokens.shape)
    word_start = jax.lax.cummax(jnp.where(starts, index, 0), axis=1)
    draw = jnp.take_along_axis(draw, word_start, axis=1)
  return maskable & (draw < rate)


def mask_tokens(tokens, segment_ids, rng, vocab, rate: float = 0.15, whole_word: bool = False):
  """(inputs, chosen): BERT's 80/10/10 corruption of `tokens` and the chosen positions."""
  choose_key, how_key, random_key = jax.random.split(rng, 3)
  chosen = choose_positions(tokens, segment_ids, choose_key, vocab, rate, whole_word)
  how = jax.random.uniform(how_key, tokens.shape)
  # Random replacements come from the ordinary (non-special) vocabulary.
  ordinary = jnp.asarray(vocab.ordinary_ids())
  random_tokens = ordinary[jax.random.randint(random_key, tokens.shape, 0, len(ordinary))]
  inputs = jnp.where(chosen & (how < 0.8), vocab.mask_id, tokens)
  inputs = jnp.where(chosen & (how >= 0.8) & (how < 0.9), random_tokens, inputs)
  return inputs.astype(tokens.dtype), chosen


def mlm_loss(network, batch, rng, ctx):
  """Cross-entropy of the original tokens at the masked positions.

  At evaluation (rng None) the masking is still random but fixed: it uses a
  constant key, so every evaluation scores the same masked positions.
  """
  options = ctx.options
  key = jax.random.PRNGKey(0) if rng is None else rng
  inputs, chosen = mask_tokens(batch["tokens"], batch["segment_ids"], key, ctx.vocab,
                               options["mask_rate"], options["whole_word_mask"])
  hidden = network.backbone(inputs, deterministic=rng is None, rng=rng,
                            **objectives.encoder_inputs(batch, network.backbone))
  return objectives.vocab_cross_entropy(network.backbone.logits, hidden, batch["tokens"], chosen,
                                        options["chunked_loss"])


OBJECTIVE = objectives.Objective(fields=("tokens", "segment_ids", "positions"),
                                 examples="any", heads={}, needs="bidirectional", loss=mlm_loss)
