"""Sentence-pair examples for next-sentence prediction (BERT's NSP).

Documents are split into sentences (their non-empty lines: verse lines for
Shakespeare, verses for the KJV, source lines for code). A pair takes
consecutive sentences of one document as segment A, and as segment B either
the sentences that really follow (label 1) or sentences from another
document (label 0), then is laid out as `<cls> A <sep> B <sep>` padded to
seq_len. Building is deterministic from the seed, so the examples are the
same in every run and the usual iterator state is all a checkpoint needs.
"""

import numpy as np

from research.data.rows import cls_sep_rows
from research.errors import DataError


def split_sentences(doc: str) -> list[str]:
  """The non-empty lines of a document, in order."""
  return [line for line in doc.split("\n") if line.strip()]


def encode_sentences(tokenizer, docs: list[str]) -> list[list[np.ndarray]]:
  """Token ids of every sentence, grouped by document (documents without any dropped)."""
  sentences = [split_sentences(doc) for doc in docs]
  flat = tokenizer.encode_batch([s for doc in sentences for s in doc])
  out, start = [], 0
  for doc in sentences:
    ids = [np.asarray(x, np.int32) for x in flat[start:start + len(doc)] if x]
    start += len(doc)
    if ids:
      out.append(ids)
  return out


def _take(sentences: list[np.ndarray], start: int, budget: int,
          stop: int | None = None) -> tuple[np.ndarray, int]:
  """Sentences from `start` until `budget` tokens are reached or index `stop`; (ids, next)."""
  stop = len(sentences) if stop is None else stop
  taken, size, i = [], 0, start
  while i < stop and (size < budget or not taken):
    taken.append(sentences[i])
    size += len(sentences[i])
    i += 1
  return np.concatenate(taken), i


def build_pairs(doc_sentences: list[list[np.ndarray]], seq_len: int, vocab, seed: int,
                random_rate: float = 0.5) -> dict[str, np.ndarray]:
  """NSP examples: tokens, segment_ids, positions, token_type_ids, nsp_label [N, ...].

  `vocab` supplies cls_id and sep_id. segment_ids is 1 on real tokens and 0
  on padding (one pair per row, nothing packed). A share `random_rate` of
  the pairs has a random B, whatever the document lengths: a pair starts
  only where a true B is possible (two sentences left), segment A always
  leaves one sentence for it, and the coin alone decides the label. A
  document's last lone sentence (all of a one-sentence document) starts no
  pair, as it could only ever be a random one; it still serves as a random B.
  """
  if len(doc_sentences) < 2 and random_rate > 0:
    raise DataError("next-sentence prediction needs at least 2 documents")
  rng = np.random.default_rng(seed)
  budget = seq_len - 3
  rows = []
  for d, sentences in enumerate(doc_sentences):
    i = 0
    # With random_rate 1 every B is random, so a lone last sentence biases nothing.
    while i < len(sentences) - 1 or (i < len(sentences) and random_rate == 1):
      # A is chosen before the coin, so its length says nothing about the label.
      a, after_a = _take(sentences, i, budget // 2, stop=max(len(sentences) - 1, i + 1))
      if rng.random() < random_rate:
        other = (d + 1 + rng.integers(len(doc_sentences) - 1)) % len(doc_sentences)
        pool = doc_sentences[other]
        b, _ = _take(pool, int(rng.integers(len(pool))), budget - min(len(a), budget // 2))
        label, i = 0, after_a  # the sentences after A start the next pair
      else:
        b, i = _take(sentences, after_a, budget - min(len(a), budget // 2))
        label = 1
      a, b = _truncate_pair(a, b, budget)
      rows.append((a, b, label))
  out = cls_sep_rows(((a, b) for a, b, _ in rows), seq_len, vocab)
  out["nsp_label"] = np.asarray([label for _, _, label in rows], np.int32)
  return out


def _truncate_pair(a: np.ndarray, b: np.ndarray, budget: int):
  """Trims the longer segment until both fit (as BERT's truncate_seq_pair).

  A loses tokens at its start and B at its end, so a true pair stays
  contiguous across the A|B boundary.
  """
  while len(a) + len(b) > budget:
    if len(a) > len(b):
      a = a[1:]
    else:
      b = b[:-1]
  return a, b
