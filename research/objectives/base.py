"""The objective contract, the pass the objectives of a step share, and the one cross-entropy.

An objective's loss reads a `Pass` and returns `((loss_sum, count), metrics)`:
the sum of the quantity it optimises over the batch and how many
positions/rows it covers, plus metrics as `(sum, count)` pairs. Nothing
divides inside an objective: `objectives.combine` divides once, by the count
over the whole batch, so a gradient accumulated over microbatches is exactly
the full-batch gradient whatever each microbatch's share of the targets.
"""

from typing import Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from research.data import tokenizer as fixed  # the table of fixed special ids
from research.errors import DataError


class Vocab(NamedTuple):
  """The token ids objectives need; the defaults are Trellis tokenizers' fixed ids."""
  size: int
  pad_id: int = fixed.PAD_ID
  bos_id: int = fixed.BOS_ID
  eos_id: int = fixed.EOS_ID
  mask_id: int = fixed.MASK_ID
  cls_id: int = fixed.CLS_ID
  sep_id: int = fixed.SEP_ID
  sentinel_ids: tuple[int, ...] = fixed.SENTINEL_IDS
  special_ids: tuple[int, ...] = fixed.SPECIAL_IDS  # never masked or sampled as noise
  word_start: np.ndarray | None = None  # [size] bool: piece starts a word (whole-word MLM)
  # (id field, the tokenizer's one-line reason) of each id the tokenizer lacks (GPT-2 has
  # no mask token): the field holds -1, and `need` raises the reason where one is used.
  missing: tuple[tuple[str, str], ...] = ()

  def need(self, name: str) -> int:
    """The id field `name` (e.g. "mask_id"); DataError saying why if the tokenizer lacks it."""
    for field, why in self.missing:
      if field == name:
        raise DataError(why)
    return getattr(self, name)

  def ordinary_ids(self) -> np.ndarray:
    """Every id that is not special: what random replacement and noise draw from."""
    return np.setdiff1d(np.arange(self.size), np.asarray(self.special_ids)).astype(np.int32)

  @classmethod
  def from_tokenizer(cls, tokenizer, size: int | None = None) -> "Vocab":
    if hasattr(tokenizer, "word_starts"):  # WordPiece knows its own ("##" continues)
      starts = np.asarray(tokenizer.word_starts(), bool)
    else:
      starts = np.array([_starts_word(tokenizer.id_to_piece(i))
                         for i in range(tokenizer.vocab_size)], bool)
    ids, missing = {}, []
    for name in ("pad_id", "bos_id", "eos_id", "mask_id", "cls_id", "sep_id"):
      try:
        ids[name] = getattr(tokenizer, name)
      except DataError as e:  # an imported tokenizer without this special token
        ids[name] = -1
        missing.append((name, str(e)))
    return cls(size or tokenizer.vocab_size, **ids, sentinel_ids=tuple(tokenizer.sentinel_ids),
               special_ids=tuple(tokenizer.special_ids), word_start=starts,
               missing=tuple(missing))


def _starts_word(piece: str) -> bool:
  # SentencePiece marks a leading space with U+2581; newlines and specials
  # also begin a new word.
  return piece[:1] in ("\u2581", "\n", "\t", "<") or not piece[:1].isalnum()


class Context(NamedTuple):
  """What a loss needs besides the network and batch (static within a run)."""
  vocab: Vocab
  options: dict  # cfg.objective_options as a plain dict


# What each model.kind is, as a user reads it in an error.
KINDS = {
    "decoder": "a causal (decoder) model",
    "encoder": "a bidirectional (encoder) model",
    "encoder_decoder": "an encoder-decoder model",
}
# The kinds that read text both ways: an encoder-decoder's __call__ is its encoder.
BIDIRECTIONAL = ("encoder", "encoder_decoder")


class Objective(NamedTuple):
  """A training objective (see the module docstring for the loss contract)."""
  fields: tuple[str, ...]  # batch fields the loss reads
  examples: str  # "packed" documents, "pairs" of segments, "task" examples, or "any"
  heads: dict[str, tuple]  # heads beside the backbone: name -> (kind, outputs or "labels")
  # The model.kind values it trains (keys of KINDS), checked against the config before
  # anything is built; an error names the first as what the objective needs.
  kinds: tuple[str, ...]
  loss: Callable  # (Pass, Context) -> ((loss_sum, count), {name: (sum, count)})
  # (Pass, Context) -> batch: a corruption of the input that every objective of the step
  # then reads (MLM's masking: BERT's NSP head reads the masked pair too); None: none.
  corrupt: Callable | None = None
  # What the loss runs besides the backbone's pass over `tokens` (for the FLOP count,
  # research/throughput.step_flops): the batch field whose length an encoder-decoder's
  # decoder runs at (None: no decoder pass), and whether it computes vocabulary logits
  # (at every decoder position if the decoder runs, else at every backbone position).
  decoder_field: str | None = None
  vocab_logits: bool = False


# Each use of randomness in a step draws from its own stream of the step key.
_PURPOSES = ("backbone", "mask", "noise", "encoder", "decoder")


class Pass:
  """One step's input to its objectives: network, batch, keys and the shared backbone pass.

  `rng` is None at evaluation (no dropout). `microbatch` numbers the
  accumulation step, so dropout differs between microbatches, while
  corruption is drawn per row from the row's index in the whole batch
  (`batch["row_index"]`, added by the train step): masking does not change
  with train.microbatches.
  """

  def __init__(self, network, batch: dict, rng, microbatch=0):
    self.network, self.batch, self.rng, self.microbatch = network, batch, rng, microbatch
    self._hidden = None

  @property
  def deterministic(self) -> bool:
    return self.rng is None

  def key(self, purpose: str):
    """The step's key for `purpose`; a fixed one at evaluation, so evals corrupt alike."""
    base = jax.random.PRNGKey(0) if self.rng is None else self.rng
    return jax.random.fold_in(base, _PURPOSES.index(purpose))

  def dropout_key(self, purpose: str):
    """This microbatch's dropout key for `purpose` (None at evaluation)."""
    if self.rng is None:
      return None
    return jax.random.fold_in(self.key(purpose), self.microbatch)

  def row_keys(self, purpose: str):
    """One key per row [B], by the row's index in the whole batch."""
    rows = self.batch.get("row_index")
    if rows is None:
      rows = jnp.arange(self.batch["tokens"].shape[0])
    return jax.vmap(jax.random.fold_in, (None, 0))(self.key(purpose), rows)

  def with_batch(self, batch: dict) -> "Pass":
    return Pass(self.network, batch, self.rng, self.microbatch)

  def hidden(self):
    """The backbone's states [B, T, D] of the batch's tokens: computed once per step."""
    if self._hidden is None:
      backbone = self.network.backbone
      self._hidden = backbone(self.batch["tokens"], deterministic=self.deterministic,
                              rng=self.dropout_key("backbone"),
                              **encoder_inputs(self.batch, backbone))
    return self._hidden


def encoder_inputs(batch, backbone) -> dict:
  """Keyword arguments for a backbone call from a batch.

  Token types go only to backbones with a token-type table; others (decoders,
  RNNs) read the pair from the separator token instead.
  """
  kwargs = {"segment_ids": batch["segment_ids"], "positions": batch["positions"]}
  if "token_type_ids" in batch and hasattr(backbone, "type_embed"):
    kwargs["token_type_ids"] = batch["token_type_ids"]
  return kwargs


def _cross_entropy_sums(logits, labels, weights, smoothing, candidates):
  """(smoothed loss sum, cross-entropy sum, correct sum) over weighted positions."""
  logits = logits.astype(jnp.float32)
  log_probs = jax.nn.log_softmax(logits, -1)
  nll = -jnp.take_along_axis(log_probs, labels[..., None], -1)[..., 0]
  objective = nll
  if smoothing:
    # The smoothing mass goes to the classes that exist at this position only.
    if candidates is None:
      uniform = jnp.mean(log_probs, -1)
    else:
      uniform = (jnp.sum(jnp.where(candidates, log_probs, 0.0), -1)
                 / jnp.maximum(jnp.sum(candidates, -1), 1))
    objective = (1.0 - smoothing) * nll - smoothing * uniform
  correct = jnp.argmax(logits, -1) == labels
  return jnp.sum(objective * weights), jnp.sum(nll * weights), jnp.sum(correct * weights)


def _cross_entropy_result(objective_sum, nll_sum, correct, count):
  return (objective_sum, count), {"loss": (nll_sum, count), "accuracy": (correct, count)}


def cross_entropy(logits, labels, weights, smoothing: float = 0.0, candidates=None):
  """The cross-entropy of every Trellis loss, as `((objective sum, count), metrics)`.

  logits [..., V]; labels and weights [...] (weights 0 on padding rows and
  positions); `candidates` [..., V] bool marks the classes that exist at a
  position (QA: the row's real tokens; default all). With `smoothing` the
  optimised target puts 1 - smoothing on the label and the rest uniformly
  on the candidates; the `loss` metric stays the plain cross-entropy.
  """
  weights = weights.astype(jnp.float32)
  sums = _cross_entropy_sums(logits, labels, weights, smoothing, candidates)
  return _cross_entropy_result(*sums, jnp.sum(weights))


def vocab_cross_entropy(logits_fn, hidden, targets, weights, chunk: int = 0,
                        smoothing: float = 0.0):
  """`cross_entropy(logits_fn(hidden), targets, weights, smoothing)`, `chunk` positions at a time.

  hidden [B, T, D]; targets, weights [B, T]. With `chunk` > 0
  (objective_options.chunked_loss), positions are taken `chunk` per row at a time
  (every row together, so the batch keeps its sharding) and only one chunk's
  [B, chunk, V] logits exist at once: the chunk is under `jax.checkpoint`, so the
  backward recomputes its logits instead of keeping all of them. Equal to the
  unchunked loss up to float summation order; costs one more logits matmul.
  """
  if chunk <= 0:
    return cross_entropy(logits_fn(hidden), targets, weights, smoothing)
  batch, length = targets.shape
  pad = -length % chunk  # padded positions have weight 0
  weights = weights.astype(jnp.float32)

  def chunks(x):  # [B, T, ...] -> [T / chunk, B, chunk, ...]
    x = jnp.pad(x, [(0, 0), (0, pad)] + [(0, 0)] * (x.ndim - 2))
    return jnp.swapaxes(x.reshape(batch, -1, chunk, *x.shape[2:]), 0, 1)

  @jax.checkpoint
  def sums(args):
    h, t, w = args
    return _cross_entropy_sums(logits_fn(h), t, w, smoothing, None)

  per_chunk = jax.lax.map(sums, (chunks(hidden), chunks(targets), chunks(weights)))
  return _cross_entropy_result(*(jnp.sum(s) for s in per_chunk), jnp.sum(weights))


def encoder_decoder_loss(p: Pass, ctx: Context, source: dict, decoder_tokens, targets,
                         target_segments, target_positions, smoothing: float = 0.0):
  """Teacher-forced decoder cross-entropy of an encoder-decoder (span corruption, seq2seq).

  `source` holds the encoder's tokens, segment_ids and positions [B, S]; the
  decoder reads `decoder_tokens` [B, T] and predicts `targets` where
  `target_segments` > 0. Encoder and decoder draw independent dropout keys.
  """
  model = p.network.backbone
  encoded = model.encode(source["tokens"], segment_ids=source["segment_ids"],
                         positions=source["positions"], deterministic=p.deterministic,
                         rng=p.dropout_key("encoder"))
  hidden = model.decode(decoder_tokens, encoded, segment_ids=target_segments,
                        positions=target_positions, source_segment_ids=source["segment_ids"],
                        deterministic=p.deterministic, rng=p.dropout_key("decoder"))
  return vocab_cross_entropy(model.logits, hidden, targets, target_segments > 0,
                             ctx.options["chunked_loss"], smoothing)
