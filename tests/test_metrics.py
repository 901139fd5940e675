"""Tests for research/metrics.py against hand-computed values and sacrebleu."""

import json
import math

import numpy as np
import pytest
import sacrebleu

from research import metrics

# A small confusion matrix worked out by hand:
#   true 0 -> predicted 0, 1;  true 1 -> 1, 1;  true 2 -> 2, 0.
_PREDICTIONS = [0, 1, 1, 1, 2, 0]
_LABELS = [0, 0, 1, 1, 2, 2]
# Per class F1 = 2TP / (#predicted + #true): 2/4, 4/5, 2/3.
_HAND_MACRO_F1 = (0.5 + 0.8 + 2 / 3) / 3

_HYPOTHESES = ["the cat sat on the mat",
               "a quick brown fox jumps over the dog"]
_REFERENCES = ["the cat is sitting on the mat",
               "the quick brown fox jumped over the lazy dog"]


def _direct_macro_f1(predictions, labels):
  """Per-class precision/recall F1, written independently of the module."""
  scores = []
  for c in set(predictions) | set(labels):
    tp = sum(p == c and t == c for p, t in zip(predictions, labels))
    predicted = sum(p == c for p in predictions)
    true = sum(t == c for t in labels)
    precision = tp / predicted if predicted else 0.0
    recall = tp / true if true else 0.0
    scores.append(2 * precision * recall / (precision + recall)
                  if tp else 0.0)
  return sum(scores) / len(scores)


def test_accuracy_hand_computed():
  assert metrics.accuracy(_PREDICTIONS, _LABELS) == pytest.approx(4 / 6)


def test_accuracy_rejects_mismatched_shapes():
  with pytest.raises(ValueError):
    metrics.accuracy([0, 1], [0, 1, 1])


def test_confusion_matrix_hand_computed():
  cm = metrics.confusion_matrix(_PREDICTIONS, _LABELS, num_classes=3)
  np.testing.assert_array_equal(cm, [[1, 1, 0], [0, 2, 0], [1, 0, 1]])


def test_confusion_matrix_rejects_out_of_range_ids():
  with pytest.raises(ValueError):
    metrics.confusion_matrix([0, 3], [0, 1], num_classes=3)
  with pytest.raises(ValueError):
    metrics.confusion_matrix([0, 1], [-100, 1], num_classes=3)


def test_macro_f1_hand_computed():
  assert metrics.macro_f1(_PREDICTIONS, _LABELS) == pytest.approx(
      _HAND_MACRO_F1)


def test_macro_f1_ignores_classes_that_never_occur():
  assert metrics.macro_f1(_PREDICTIONS, _LABELS, num_classes=7) == (
      pytest.approx(_HAND_MACRO_F1))


def test_macro_f1_counts_a_class_only_predicted():
  # Class 1 is predicted but never true: its F1 is 0 and it is averaged in.
  assert metrics.macro_f1([0, 1], [0, 0]) == pytest.approx((2 / 3 + 0) / 2)


def test_f1_from_confusion_of_empty_matrix_is_nan():
  assert math.isnan(metrics.f1_from_confusion(np.zeros((3, 3))))


def test_confusion_f1_matches_direct_f1_on_random_data():
  rng = np.random.default_rng(0)
  for _ in range(5):
    predictions = rng.integers(0, 6, size=200)
    labels = rng.integers(0, 5, size=200)
    cm = metrics.confusion_matrix(predictions, labels, num_classes=8)
    assert metrics.f1_from_confusion(cm) == pytest.approx(
        _direct_macro_f1(predictions.tolist(), labels.tolist()))


def test_confusion_matrices_aggregate_exactly_over_batches():
  rng = np.random.default_rng(1)
  predictions = rng.integers(0, 4, size=(4, 25))
  labels = rng.integers(0, 4, size=(4, 25))
  per_batch = sum(metrics.confusion_matrix(p, t, 4)
                  for p, t in zip(predictions, labels))
  np.testing.assert_array_equal(
      per_batch, metrics.confusion_matrix(predictions, labels, 4))


@pytest.mark.parametrize("raw, normalized", [
    ("The  Cat!", "cat"),
    ("an apple, a pear and the plum.", "apple pear and plum"),
    ("Theatre", "theatre"),  # articles only as whole words
    ("  Hello,\tworld's  end ", "hello worlds end"),
])
def test_normalize_answer(raw, normalized):
  assert metrics.normalize_answer(raw) == normalized


def test_squad_exact_match():
  assert metrics.squad_exact_match("The Eiffel Tower.", ["eiffel tower"]) == 1
  assert metrics.squad_exact_match("Eiffel", ["eiffel tower"]) == 0


def test_squad_f1_partial_overlap():
  # "cat sat" vs "cat sat down": precision 2/2, recall 2/3.
  expected = 2 * (1 * 2 / 3) / (1 + 2 / 3)
  assert metrics.squad_f1("the cat sat", ["a cat sat down"]) == pytest.approx(
      expected)
  assert expected == pytest.approx(0.8)


def test_squad_f1_counts_repeated_tokens_once_each():
  # Counter overlap: "cat cat" vs "cat" shares one token; P 1/2, R 1.
  assert metrics.squad_f1("cat cat", ["cat"]) == pytest.approx(2 / 3)


def test_squad_f1_of_article_only_answer_is_zero():
  assert metrics.squad_f1("the", ["the"]) == 0.0


def test_squad_takes_max_over_ground_truths():
  truths = ["a dog", "the cat sat down", "cat sat"]
  assert metrics.squad_f1("the cat sat", truths) == 1.0
  assert metrics.squad_exact_match("the cat sat", truths) == 1.0
  assert metrics.squad_f1("cat", ["dog", "cat sat"]) == pytest.approx(2 / 3)


def test_squad_scores_in_percent_and_missing_ids_score_zero():
  references = {"q1": ["Paris"], "q2": ["a cat sat down"], "q3": ["blue"]}
  predictions = {"q1": "paris", "q2": "the cat sat"}
  scores = metrics.squad_scores(predictions, references)
  assert scores["exact_match"] == pytest.approx(100 / 3)
  assert scores["f1"] == pytest.approx(100 * (1 + 0.8 + 0) / 3)


def test_bleu_identical_is_100():
  assert metrics.bleu(_REFERENCES, _REFERENCES) == pytest.approx(100.0)


def test_bleu_matches_sacrebleu_and_hand_value():
  score = metrics.bleu(_HYPOTHESES, _REFERENCES)
  assert score == pytest.approx(
      sacrebleu.corpus_bleu(_HYPOTHESES, [_REFERENCES]).score)
  # 13a tokens: hyp 14, ref 16; matches 11/14, 6/12, 2/10, 0/8 (exp smoothing
  # turns the zero into 0.5/8). Once run: sacrebleu printed 22.947960721746767.
  by_hand = 100 * math.exp(1 - 16 / 14) * (
      11 / 14 * 6 / 12 * 2 / 10 * 0.5 / 8) ** 0.25
  assert score == pytest.approx(by_hand)
  assert score == pytest.approx(22.947960721746767)


def test_bleu_rejects_mismatched_lengths():
  with pytest.raises(ValueError):
    metrics.bleu(_HYPOTHESES, _REFERENCES[:1])


def test_chrf_identical_is_100():
  assert metrics.chrf(_REFERENCES, _REFERENCES) == pytest.approx(100.0)


def test_chrf_matches_sacrebleu_and_known_value():
  score = metrics.chrf(_HYPOTHESES, _REFERENCES)
  assert score == pytest.approx(
      sacrebleu.corpus_chrf(_HYPOTHESES, [_REFERENCES]).score)
  assert score == pytest.approx(57.15837743926927)  # sacrebleu 2.6.0, once.


def test_rouge_identical_is_100():
  scores = metrics.rouge(_REFERENCES, _REFERENCES)
  assert scores == pytest.approx({"rouge1": 100, "rouge2": 100, "rougeL": 100})


def test_rouge_hand_computed():
  # Unigrams 2 of 3 each way; bigrams 1 of 2 ("the cat"); LCS "the cat".
  scores = metrics.rouge(["the cat sat"], ["the cat ran"])
  assert scores == pytest.approx(
      {"rouge1": 200 / 3, "rouge2": 50.0, "rougeL": 200 / 3})


def test_rouge_uses_stemmer_and_averages():
  # Porter stems make "cats running" match "cat runs" exactly.
  scores = metrics.rouge(["the cats running", "the cat sat"],
                         ["the cat runs", "the cat ran"])
  assert scores["rouge1"] == pytest.approx((100 + 200 / 3) / 2)


def test_perplexity():
  assert metrics.perplexity(2 * math.log(5.0), 2) == pytest.approx(5.0)


def test_perplexity_overflow_is_inf():
  assert metrics.perplexity(1e6, 1) == math.inf
  assert metrics.perplexity(np.float32(1e6), np.int32(10)) == math.inf


def test_perplexity_without_tokens_is_nan():
  assert math.isnan(metrics.perplexity(0.0, 0))


def test_summarize_names_and_counts():
  summary = metrics.summarize({
      "clm/loss": (np.float32(6.0), np.int32(3)),
      "clm/accuracy": (3.0, 4.0),
      "loss": (1e5, 10),
      "nsp/accuracy": (0.0, 0),
  })
  assert set(summary) == {"clm/loss", "clm/perplexity", "clm/accuracy",
                          "loss", "perplexity", "nsp/accuracy"}
  assert summary["clm/loss"] == pytest.approx(2.0)
  assert summary["clm/perplexity"] == pytest.approx(math.exp(2.0))
  assert summary["clm/accuracy"] == pytest.approx(0.75)
  assert summary["loss"] == pytest.approx(1e4)
  assert summary["perplexity"] == math.inf
  assert math.isnan(summary["nsp/accuracy"])
  assert all(type(v) is float for v in summary.values())
  json.dumps(summary)  # plain floats serialise (as NaN/Infinity)
