"""Sequence classification: `<cls> text <sep>` rows, scored by accuracy and macro-F1."""

import numpy as np

from research import metrics
from research.data.rows import cls_sep_rows
from research.objectives.classify import PREDICT
from research.tasks.base import Encoded


def encode_texts(tokenizer, texts: list[str], seq_len: int) -> dict:
  """`<cls> text <sep>` rows of seq_len (texts truncated), with segment ids and positions."""
  return cls_sep_rows(((list(ids)[:seq_len - 2], None) for ids in tokenizer.encode_batch(texts)),
                      seq_len, tokenizer)


def encode(examples: list[dict], tokenizer, cfg) -> Encoded:
  """Encoded rows with their `label` (the objective pools by the backbone's causality)."""
  arrays = encode_texts(tokenizer, [e["text"] for e in examples], cfg.data.seq_len)
  arrays["label"] = np.asarray([e["label"] for e in examples], np.int32)
  return Encoded(arrays, examples, {})


def evaluate(predict, encoded, tokenizer, cfg) -> dict:
  """Accuracy and macro-F1 (in [0, 1]) over the split, over the head's classes."""
  del tokenizer
  labels = encoded.arrays["label"]
  # objective_options.pooling as in training; logits [N, num_labels].
  logits = predict(PREDICT[cfg.objective_options.pooling], encoded.arrays)
  predictions = np.argmax(logits, -1)
  return {"accuracy": metrics.accuracy(predictions, labels),
          "macro_f1": metrics.macro_f1(predictions, labels, logits.shape[-1]),
          "examples": float(len(labels))}
