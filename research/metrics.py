"""Evaluation metrics, computed on the host from predictions and references.

Everything here is plain numpy/Python and returns plain Python floats, so
results go straight into `metrics.jsonl`. Where a reference implementation
exists (sacrebleu for BLEU/chrF, rouge-score for ROUGE) we call it rather than
reimplement it, so our numbers are comparable with published ones.

Classification metrics can be computed from a confusion matrix: counts add
exactly across batches, devices and hosts, where per-batch F1 scores do not.
"""

import collections
import math
import re
import string
from typing import Mapping, Sequence

import numpy as np
import sacrebleu
from rouge_score import rouge_scorer

ROUGE_TYPES = ("rouge1", "rouge2", "rougeL")


def _check_same_length(predictions, references, what: str) -> None:
  if len(predictions) != len(references):
    raise ValueError(
        f"{what}: got {len(predictions)} predictions but "
        f"{len(references)} references")
  if not len(predictions):
    raise ValueError(f"{what}: no predictions to score")


def accuracy(predictions, labels) -> float:
  """Fraction of predictions equal to their label.

  Args:
    predictions: predicted class ids, any shape.
    labels: true class ids, same shape as `predictions`.

  Returns:
    The accuracy in [0, 1].
  """
  predictions, labels = np.asarray(predictions), np.asarray(labels)
  if predictions.shape != labels.shape:
    raise ValueError(f"accuracy: predictions have shape {predictions.shape} "
                     f"but labels have shape {labels.shape}")
  _check_same_length(predictions.ravel(), labels.ravel(), "accuracy")
  return float(np.mean(predictions == labels))


def confusion_matrix(predictions, labels, num_classes: int) -> np.ndarray:
  """Counts of (true class, predicted class) pairs.

  Args:
    predictions: predicted class ids in [0, num_classes), any shape.
    labels: true class ids, same shape as `predictions`.
    num_classes: number of classes.

  Returns:
    An int64 array `cm` of shape [num_classes, num_classes] where `cm[t, p]`
    counts examples of true class t predicted as p. Sum matrices from several
    batches, then call `f1_from_confusion` once.
  """
  predictions = np.asarray(predictions, dtype=np.int64).ravel()
  labels = np.asarray(labels, dtype=np.int64).ravel()
  if predictions.shape != labels.shape:
    raise ValueError(f"confusion_matrix: {predictions.size} predictions but "
                     f"{labels.size} labels")
  for name, ids in (("predictions", predictions), ("labels", labels)):
    # bincount would silently file an out-of-range id under another class.
    if ids.size and (ids.min() < 0 or ids.max() >= num_classes):
      raise ValueError(f"confusion_matrix: {name} must lie in "
                       f"[0, {num_classes}), got [{ids.min()}, {ids.max()}]")
  flat = np.bincount(labels * num_classes + predictions,
                     minlength=num_classes * num_classes)
  return flat.reshape(num_classes, num_classes)


def f1_from_confusion(cm) -> float:
  """Macro-averaged F1 from a confusion matrix (rows true, columns predicted).

  A class with no true and no predicted examples has an undefined F1 and is
  left out of the average, so declaring spare classes changes nothing.

  Args:
    cm: a [C, C] array of counts, as returned by `confusion_matrix`.

  Returns:
    The macro F1 in [0, 1], or nan if `cm` holds no examples.
  """
  cm = np.asarray(cm, dtype=np.float64)
  true_positives = np.diag(cm)
  # F1 = 2TP / (2TP + FP + FN) = 2TP / (#predicted + #true).
  denominators = cm.sum(axis=0) + cm.sum(axis=1)
  present = denominators > 0
  if not present.any():
    return float("nan")
  return float(np.mean(2 * true_positives[present] / denominators[present]))


def macro_f1(predictions, labels, num_classes: int | None = None) -> float:
  """Macro-averaged F1 over the classes that occur in predictions or labels.

  Args:
    predictions: predicted class ids, any shape.
    labels: true class ids, same shape as `predictions`.
    num_classes: number of classes; defaults to the largest id seen plus one.
      Classes that never occur do not affect the result either way.

  Returns:
    The macro F1 in [0, 1].
  """
  predictions, labels = np.asarray(predictions), np.asarray(labels)
  _check_same_length(predictions.ravel(), labels.ravel(), "macro_f1")
  if num_classes is None:
    num_classes = int(max(predictions.max(), labels.max())) + 1
  return f1_from_confusion(confusion_matrix(predictions, labels, num_classes))


# SQuAD v1.1: these follow the official evaluate-v1.1.py line for line, since
# published EM/F1 numbers are only comparable under exactly this definition.


def normalize_answer(s: str) -> str:
  """Lower-cases, drops punctuation and articles, and collapses whitespace.

  Args:
    s: an answer string.

  Returns:
    The answer as the official SQuAD v1.1 script normalises it.
  """
  s = s.lower()
  s = "".join(ch for ch in s if ch not in set(string.punctuation))
  s = re.sub(r"\b(a|an|the)\b", " ", s)
  return " ".join(s.split())


def _exact_match(prediction: str, ground_truth: str) -> float:
  return float(normalize_answer(prediction) == normalize_answer(ground_truth))


def _token_f1(prediction: str, ground_truth: str) -> float:
  prediction_tokens = normalize_answer(prediction).split()
  truth_tokens = normalize_answer(ground_truth).split()
  common = collections.Counter(prediction_tokens) & collections.Counter(
      truth_tokens)
  num_same = sum(common.values())
  # Also covers empty token lists, which would otherwise divide by zero.
  if num_same == 0:
    return 0.0
  precision = num_same / len(prediction_tokens)
  recall = num_same / len(truth_tokens)
  return 2 * precision * recall / (precision + recall)


def squad_exact_match(prediction: str, ground_truths: Sequence[str]) -> float:
  """1.0 if the prediction matches any ground truth after normalisation.

  Args:
    prediction: the predicted answer text.
    ground_truths: the acceptable answers (at least one).

  Returns:
    1.0 or 0.0.
  """
  return max(_exact_match(prediction, truth) for truth in ground_truths)


def squad_f1(prediction: str, ground_truths: Sequence[str]) -> float:
  """Best token-level F1 of the prediction against any ground truth.

  Args:
    prediction: the predicted answer text.
    ground_truths: the acceptable answers (at least one).

  Returns:
    The F1 in [0, 1] on normalised tokens, counting repeated tokens.
  """
  return max(_token_f1(prediction, truth) for truth in ground_truths)


def squad_scores(predictions: Mapping[str, str],
                 references: Mapping[str, Sequence[str]]) -> dict[str, float]:
  """Corpus SQuAD v1.1 exact match and F1, in percent, as the official script.

  Args:
    predictions: question id -> predicted answer text.
    references: question id -> acceptable answers. Every id here is scored;
      an id missing from `predictions` scores 0, as in the official script.

  Returns:
    {"exact_match": ..., "f1": ...}, each in [0, 100].
  """
  if not references:
    raise ValueError("squad_scores: no references to score")
  exact_match = f1 = 0.0
  for qid, ground_truths in references.items():
    if qid in predictions:
      exact_match += squad_exact_match(predictions[qid], ground_truths)
      f1 += squad_f1(predictions[qid], ground_truths)
  return {"exact_match": 100.0 * exact_match / len(references),
          "f1": 100.0 * f1 / len(references)}


def bleu(hypotheses: Sequence[str], references: Sequence[str]) -> float:
  """Corpus BLEU from sacrebleu's defaults (13a tokenisation), one reference.

  Args:
    hypotheses: detokenised system outputs.
    references: one detokenised reference per hypothesis.

  Returns:
    sacrebleu's BLEU score in [0, 100].
  """
  _check_same_length(hypotheses, references, "bleu")
  result = sacrebleu.corpus_bleu(list(hypotheses), [list(references)])
  return float(result.score)


def chrf(hypotheses: Sequence[str], references: Sequence[str]) -> float:
  """Corpus chrF from sacrebleu's defaults (chrF2), one reference.

  Args:
    hypotheses: detokenised system outputs.
    references: one detokenised reference per hypothesis.

  Returns:
    sacrebleu's chrF score in [0, 100].
  """
  _check_same_length(hypotheses, references, "chrf")
  result = sacrebleu.corpus_chrf(list(hypotheses), [list(references)])
  return float(result.score)


def rouge(predictions: Sequence[str],
          references: Sequence[str]) -> dict[str, float]:
  """Mean ROUGE-1/2/L F-measure with Porter stemming, in percent.

  Args:
    predictions: generated summaries.
    references: one reference summary per prediction.

  Returns:
    {"rouge1": ..., "rouge2": ..., "rougeL": ...}, each in [0, 100].
  """
  _check_same_length(predictions, references, "rouge")
  scorer = rouge_scorer.RougeScorer(list(ROUGE_TYPES), use_stemmer=True)
  totals = dict.fromkeys(ROUGE_TYPES, 0.0)
  for prediction, reference in zip(predictions, references):
    # score() takes the reference first; swapping would swap P and R.
    scores = scorer.score(reference, prediction)
    for name in ROUGE_TYPES:
      totals[name] += scores[name].fmeasure
  return {name: 100.0 * total / len(predictions)
          for name, total in totals.items()}


def perplexity(loss_sum: float, token_count: float) -> float:
  """exp(mean token loss), inf when that overflows, nan when no tokens.

  Args:
    loss_sum: summed natural-log cross-entropy over tokens.
    token_count: number of tokens in that sum.

  Returns:
    The perplexity as a Python float.
  """
  if float(token_count) == 0:
    return float("nan")
  try:
    return math.exp(float(loss_sum) / float(token_count))
  except OverflowError:
    # An early or diverged run must still log a row, not crash the loop.
    return float("inf")


def summarize(sums: Mapping[str, tuple[float, float]]) -> dict[str, float]:
  """Turns (sum, count) metric pairs into means, adding perplexities.

  Args:
    sums: metric name -> (sum, count), as accumulated by the training loop.
      Values may be numpy or JAX scalars.

  Returns:
    Metric name -> sum / count (nan when count is 0) as Python floats. Each
    name ending in "loss" also gets the perplexity of that loss under the same
    prefix: "clm/loss" -> "clm/perplexity", "loss" -> "perplexity".
  """
  summary = {}
  for name, (total, count) in sums.items():
    total, count = float(total), float(count)
    summary[name] = total / count if count else float("nan")
    if name.endswith("loss"):
      summary[name[:-len("loss")] + "perplexity"] = perplexity(total, count)
  return summary
