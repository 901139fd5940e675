"""Extractive QA in the SQuAD v1.1 setting: sliding windows, span decoding, EM/F1.

Each example becomes one row per context window: `<cls> question <sep>
window <sep>`, windows of the context tokens starting every `data.doc_stride`
tokens so long contexts are covered with overlap. The answer's character
span is mapped to token positions in each window that holds it; the rest
point at <cls>. At evaluation the best span over all windows of an example
(start <= end, at most `data.max_answer_tokens`, inside the context) is cut
from the original context by character offsets and scored with the official
SQuAD normalisation.
"""

import collections

import numpy as np

from research import metrics
from research.data.rows import cls_sep_rows
from research.errors import DataError
from research.objectives.qa import span_logits
from research.tasks.base import Encoded


def _windows(num_tokens: int, size: int, stride: int) -> list[int]:
  """Start offsets of windows of `size` tokens, `stride` apart, covering num_tokens."""
  starts = list(range(0, max(num_tokens - size, 0) + 1, stride))
  if starts[-1] + size < num_tokens:
    starts.append(num_tokens - size)
  return starts


def _answer_tokens(offsets, start_char: int, end_char: int):
  """First and last token index overlapping [start_char, end_char)."""
  inside = [i for i, (s, e) in enumerate(offsets) if s < end_char and e > start_char]
  return (inside[0], inside[-1]) if inside else (None, None)


def encode(examples: list[dict], tokenizer, cfg) -> Encoded:
  """One row per (example, window); extra["row_example"] maps rows back to examples."""
  if not hasattr(tokenizer, "encode_with_offsets"):
    raise DataError(f"{type(tokenizer).__name__} cannot report character offsets for QA")
  seq_len, stride = cfg.data.seq_len, cfg.data.doc_stride
  rows, row_examples, row_offsets = [], [], []
  for index, example in enumerate(examples):
    question = tokenizer.encode(example["question"])[:seq_len // 3]
    context, offsets = tokenizer.encode_with_offsets(example["context"])
    size = seq_len - len(question) - 3
    answer_text = example["answers"]["text"][0]
    answer_start = example["answers"]["answer_start"][0]
    first, last = _answer_tokens(offsets, answer_start, answer_start + len(answer_text))
    for start in _windows(len(context), size, min(stride, size)):
      prefix = 2 + len(question)  # <cls> question <sep>
      inside = first is not None and start <= first and last < start + size
      span = (prefix + first - start, prefix + last - start) if inside else (0, 0)
      rows.append((question, context[start:start + size], span))
      row_examples.append(index)
      row_offsets.append([None] * prefix + offsets[start:start + size] + [None])
  arrays = cls_sep_rows(((q, window) for q, window, _ in rows), seq_len, tokenizer)
  arrays["start_position"] = np.asarray([s for _, _, (s, _) in rows], np.int32)
  arrays["end_position"] = np.asarray([e for _, _, (_, e) in rows], np.int32)
  return Encoded(arrays, examples, {"row_example": np.asarray(row_examples),
                                    "row_offsets": row_offsets})


def best_span(start_logits, end_logits, offsets, max_tokens: int):
  """(score, start_char, end_char) of the best valid span in one window, or None."""
  valid = np.array([o is not None for o in offsets[:len(start_logits)]]
                   + [False] * max(0, len(start_logits) - len(offsets)))
  starts = np.where(valid, start_logits, -np.inf)
  ends = np.where(valid, end_logits, -np.inf)
  scores = starts[:, None] + ends[None, :]
  length = np.arange(len(ends))[None, :] - np.arange(len(starts))[:, None]
  scores = np.where((length >= 0) & (length < max_tokens), scores, -np.inf)
  i, j = np.unravel_index(np.argmax(scores), scores.shape)
  if not np.isfinite(scores[i, j]):
    return None
  return float(scores[i, j]), offsets[i][0], offsets[j][1]


def predict_answers(predict, encoded, max_answer_tokens: int) -> dict[str, str]:
  """Predicted answer text per example id."""
  start, end = predict(span_logits, encoded.arrays)
  best = collections.defaultdict(lambda: (-np.inf, 0, 0))
  for row, example in enumerate(encoded.extra["row_example"]):
    found = best_span(start[row], end[row], encoded.extra["row_offsets"][row], max_answer_tokens)
    if found and found[0] > best[example][0]:
      best[example] = found
  out = {}
  for index, example in enumerate(encoded.examples):
    _, s, e = best[index]
    out[example["id"]] = example["context"][s:e]
  return out


def evaluate(predict, encoded, tokenizer, cfg) -> dict:
  """SQuAD v1.1 exact match and F1 (percent) over the split."""
  del tokenizer
  predictions = predict_answers(predict, encoded, cfg.data.max_answer_tokens)
  references = {e["id"]: list(e["answers"]["text"]) for e in encoded.examples}
  scores = metrics.squad_scores(predictions, references)
  return {"exact_match": float(scores["exact_match"]), "f1": float(scores["f1"]),
          "examples": float(len(references))}
