"""The objectives registry, and `combine()` to train on a weighted sum of them.

An `Objective` names the batch fields it reads, the examples it trains on
(packed documents or sentence pairs), the task heads it needs next to the
backbone and the backbones it can train; its loss returns `(loss, metrics)`:
`loss` is the mean to differentiate, `metrics` maps names to `(sum, count)`
pairs so they aggregate exactly over devices, microbatches and eval batches.
`rng` is None at evaluation (deterministic), a key in training; masking and
corruption happen inside jit from it, so a resumed run masks exactly as the
uninterrupted one would.
"""

import math
from typing import Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from research import metrics
from research.errors import ConfigError

# What an objective can demand of the backbone.
NEEDS = {
    "decoder": "a causal (decoder) model",
    "bidirectional": "a bidirectional (encoder) model",
    "encoder_decoder": "an encoder-decoder model",
    "any": "any model",
}


class Vocab(NamedTuple):
  """The token ids objectives need; Trellis tokenizers fix them (data/tokenizer.py)."""
  size: int
  pad_id: int = 0
  bos_id: int = 2
  eos_id: int = 3
  mask_id: int = 4
  cls_id: int = 5
  sep_id: int = 6
  sentinel_ids: tuple[int, ...] = tuple(range(7, 39))
  special_ids: tuple[int, ...] = tuple(range(39))  # never masked or sampled as noise
  word_start: np.ndarray | None = None  # [size] bool: piece starts a word (whole-word MLM)

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
    return cls(size or tokenizer.vocab_size, tokenizer.pad_id, tokenizer.bos_id,
               tokenizer.eos_id, tokenizer.mask_id, tokenizer.cls_id, tokenizer.sep_id,
               tuple(tokenizer.sentinel_ids), tuple(tokenizer.special_ids), starts)


def _starts_word(piece: str) -> bool:
  # SentencePiece marks a leading space with U+2581; newlines and specials
  # also begin a new word.
  return piece[:1] in ("\u2581", "\n", "\t", "<") or not piece[:1].isalnum()


class Context(NamedTuple):
  """What a loss needs besides the network and batch (static within a run)."""
  vocab: Vocab
  options: dict  # cfg.objective_options as a plain dict


class Objective(NamedTuple):
  """A pretraining objective (see the module docstring for the loss contract)."""
  fields: tuple[str, ...]  # batch fields the loss reads
  examples: str  # "packed" documents, "pairs" of segments, "task" examples, or "any"
  heads: dict[str, tuple]  # heads beside the backbone: name -> (kind, outputs or "labels")
  needs: str  # a key of NEEDS
  loss: Callable  # (network, batch, rng, ctx: Context) -> (loss, {name: (sum, count)})


from research.objectives import classify, clm, mlm, nsp, qa, seq2seq, span  # noqa: E402

OBJECTIVES = {
    "classify": classify.OBJECTIVE,
    "clm": clm.OBJECTIVE,
    "mlm": mlm.OBJECTIVE,
    "nsp": nsp.OBJECTIVE,
    "qa": qa.OBJECTIVE,
    "seq2seq": seq2seq.OBJECTIVE,
    "span": span.OBJECTIVE,
}


def active(weights) -> dict[str, float]:
  """The objectives with non-zero weight, in a stable order."""
  return {name: float(w) for name, w in sorted(weights.items()) if w > 0}


def backbone_kind(backbone) -> str:
  """Which NEEDS key a backbone satisfies best: encoder_decoder, decoder or bidirectional."""
  if hasattr(backbone, "decode") and hasattr(backbone, "encode"):
    return "encoder_decoder"
  return "decoder" if backbone.causal else "bidirectional"


def check_backbone(weights, backbone, arch: str, kind: str) -> None:
  """ConfigError if an active objective cannot train this backbone."""
  have = backbone_kind(backbone)
  for name in active(weights):
    need = OBJECTIVES[name].needs
    # An encoder-decoder's __call__ is its bidirectional encoder.
    ok = need in ("any", have) or (need == "bidirectional" and have == "encoder_decoder")
    if not ok:
      raise ConfigError(f"objective {name} needs {NEEDS[need]}, but model.arch={arch} "
                        f"model.kind={kind} is {NEEDS[have]}")


def examples(weights) -> str:
  """The example layout the active objectives train on: "packed" or "pairs"."""
  wanted = {OBJECTIVES[name].examples for name in active(weights)} - {"any"}
  if len(wanted) > 1:
    raise ConfigError(f"objectives {', '.join(active(weights))} need different examples "
                      f"({' and '.join(sorted(wanted))}); train them separately")
  return wanted.pop() if wanted else "packed"


def heads(weights, num_labels: int = 0) -> dict[str, tuple[str, int]]:
  """All heads the active objectives need: name -> (kind, outputs).

  An objective may size a head "labels": the task's number of labels.
  """
  out = {}
  for name in active(weights):
    for head, (kind, n) in OBJECTIVES[name].heads.items():
      out[head] = (kind, num_labels if n == "labels" else n)
  return out


def combine(weights, ctx: Context) -> Callable:
  """One loss function: the weighted sum of the active objectives' losses.

  Metrics are prefixed by the objective name ("clm/loss"); each objective
  gets its own RNG stream folded from the step key.
  """
  chosen = active(weights)

  def loss_fn(network, batch, rng):
    total, out = 0.0, {}
    for i, (name, weight) in enumerate(chosen.items()):
      key = None if rng is None else jax.random.fold_in(rng, i)
      loss, obj_metrics = OBJECTIVES[name].loss(network, batch, key, ctx)
      total = total + weight * loss
      out.update({f"{name}/{k}": v for k, v in obj_metrics.items()})
    return total, out

  return loss_fn


def encoder_inputs(batch, backbone) -> dict:
  """Keyword arguments for a backbone call from a batch.

  Token types go only to backbones with a token-type table; others (decoders,
  RNNs) read the pair from the separator token instead.
  """
  kwargs = {"segment_ids": batch["segment_ids"], "positions": batch["positions"]}
  if "token_type_ids" in batch and hasattr(backbone, "type_embed"):
    kwargs["token_type_ids"] = batch["token_type_ids"]
  return kwargs


def report(sums: dict, weights) -> dict[str, float]:
  """Plain floats from metric sums, plus the weighted total `loss`.

  `perplexity` is exp(loss) only for a single objective, where it means
  something; each objective's own `name/perplexity` is always there.
  """
  out = metrics.summarize(sums)
  chosen = active(weights)
  out["loss"] = sum(w * out[f"{name}/loss"] for name, w in chosen.items())
  if len(chosen) == 1:
    out["perplexity"] = math.exp(min(out["loss"], 700.0))
    name = next(iter(chosen))
    for key in ("accuracy",):
      if f"{name}/{key}" in out:
        out[key] = out[f"{name}/{key}"]
  return out


def _cross_entropy_sums(logits, targets, weights):
  """(loss sum, correct sum) of float32 logits [..., V] over weighted positions."""
  log_z = jax.nn.logsumexp(logits, axis=-1)
  target_logit = jnp.take_along_axis(logits, targets[..., None], axis=-1)[..., 0]
  loss_sum = jnp.sum((log_z - target_logit) * weights)
  return loss_sum, jnp.sum((jnp.argmax(logits, -1) == targets) * weights)


def _cross_entropy_metrics(loss_sum, correct, count):
  loss = loss_sum / jnp.maximum(count, 1.0)
  return loss, {"loss": (loss_sum, count), "accuracy": (correct, count)}


def smoothed_cross_entropy(logits, labels, smoothing: float = 0.0):
  """Cross-entropy per position [...] of logits [..., V] against labels [...].

  The target puts 1 - smoothing on the label and smoothing spread uniformly.
  """
  log_probs = jax.nn.log_softmax(logits.astype(jnp.float32), -1)
  nll = -jnp.take_along_axis(log_probs, labels[..., None], -1)[..., 0]
  return (1.0 - smoothing) * nll - smoothing * jnp.mean(log_probs, -1)


def row_cross_entropy(logits, labels, valid, smoothing: float = 0.0):
  """One label per row (classification, NSP): mean loss and (sum, count) metrics.

  `valid` [B] is False on the padding rows that fill an eval batch.
  """
  valid = valid.astype(jnp.float32)
  count = jnp.sum(valid)
  loss_sum = jnp.sum(smoothed_cross_entropy(logits, labels, smoothing) * valid)
  correct = jnp.sum((jnp.argmax(logits, -1) == labels) * valid)
  return loss_sum / jnp.maximum(count, 1.0), {"loss": (loss_sum, count),
                                               "accuracy": (correct, count)}


def token_cross_entropy(logits, targets, weights):
  """Cross-entropy and accuracy over weighted positions, as metric sums."""
  weights = weights.astype(jnp.float32)
  loss_sum, correct = _cross_entropy_sums(logits.astype(jnp.float32), targets, weights)
  return _cross_entropy_metrics(loss_sum, correct, jnp.sum(weights))


def vocab_cross_entropy(logits_fn, hidden, targets, weights, chunk: int = 0):
  """`token_cross_entropy(logits_fn(hidden), targets, weights)`, `chunk` positions at a time.

  hidden [B, T, D]; targets, weights [B, T]. With `chunk` > 0
  (objective_options.chunked_loss), positions are taken `chunk` per row at a time
  (every row together, so the batch keeps its sharding) and only one chunk's
  [B, chunk, V] logits exist at once: the chunk is under `jax.checkpoint`, so the
  backward recomputes its logits instead of keeping all of them. Equal to the
  unchunked loss up to float summation order; costs one more logits matmul.
  """
  if chunk <= 0:
    return token_cross_entropy(logits_fn(hidden), targets, weights)
  batch, length = targets.shape
  pad = -length % chunk  # padded positions have weight 0
  weights = weights.astype(jnp.float32)

  def chunks(x):  # [B, T, ...] -> [T / chunk, B, chunk, ...]
    x = jnp.pad(x, [(0, 0), (0, pad)] + [(0, 0)] * (x.ndim - 2))
    return jnp.swapaxes(x.reshape(batch, -1, chunk, *x.shape[2:]), 0, 1)

  @jax.checkpoint
  def sums(args):
    h, t, w = args
    return _cross_entropy_sums(logits_fn(h).astype(jnp.float32), t, w)

  loss_sums, correct = jax.lax.map(sums, (chunks(hidden), chunks(targets), chunks(weights)))
  return _cross_entropy_metrics(jnp.sum(loss_sums), jnp.sum(correct), jnp.sum(weights))
