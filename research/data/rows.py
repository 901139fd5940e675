"""The one row layout of classification, QA and sentence pairs: `<cls> A <sep> [B <sep>]`."""

import numpy as np


def cls_sep_rows(segments, seq_len: int, vocab) -> dict[str, np.ndarray]:
  """[N, seq_len] int32 rows `<cls> a <sep>` or `<cls> a <sep> b <sep>`, padded.

  `segments` holds (a, b) per row, token id lists, b None for a single
  segment; the caller has cut them to fit (a ValueError otherwise). Returns
  `tokens` (padded with vocab.pad_id), `segment_ids` (1 on the row's tokens),
  `positions` (0, 1, ... on them, 0 on padding) and, when some row has a b,
  `token_type_ids` (1 on b and its <sep>, BERT's segment B).
  """
  segments = list(segments)
  n = len(segments)
  out = {"tokens": np.full((n, seq_len), vocab.pad_id, np.int32),
         "segment_ids": np.zeros((n, seq_len), np.int32),
         "positions": np.zeros((n, seq_len), np.int32)}
  pairs = any(b is not None for _, b in segments)
  if pairs:
    out["token_type_ids"] = np.zeros((n, seq_len), np.int32)
  for r, (a, b) in enumerate(segments):
    ids = [vocab.cls_id, *a, vocab.sep_id] + ([] if b is None else [*b, vocab.sep_id])
    if len(ids) > seq_len:
      raise ValueError(f"row {r} has {len(ids)} tokens, above seq_len={seq_len}")
    out["tokens"][r, :len(ids)] = ids
    out["segment_ids"][r, :len(ids)] = 1
    out["positions"][r, :len(ids)] = np.arange(len(ids))
    if b is not None:
      out["token_type_ids"][r, len(a) + 2:len(ids)] = 1
  return out


def prefix_rows(pairs, length: int, pad_id: int = 0) -> dict[str, np.ndarray]:
  """Prompt + answer pairs packed into [N, length] int32 rows, in order (a decoder's seq2seq).

  `pairs` holds (prompt, answer) token id lists, each pair at most `length`
  tokens (a ValueError otherwise). A row takes pairs while the next fits
  whole; pair k of a row is segment k + 1 (`segment_ids`, 0 on padding), its
  `positions` count from 0, and `target_mask` is 1 on its answer tokens.
  """
  rows, row, used = [], [], 0
  for prompt, answer in pairs:
    size = len(prompt) + len(answer)
    if size > length:
      raise ValueError(f"a pair of {size} tokens is above the row length {length}")
    if used + size > length:
      rows.append(row)
      row, used = [], 0
    row.append((prompt, answer))
    used += size
  if row:
    rows.append(row)
  out = {name: np.zeros((len(rows), length), np.int32)
         for name in ("tokens", "segment_ids", "positions", "target_mask")}
  out["tokens"][:] = pad_id
  for r, row in enumerate(rows):
    start = 0
    for k, (prompt, answer) in enumerate(row):
      end = start + len(prompt) + len(answer)
      out["tokens"][r, start:end] = [*prompt, *answer]
      out["segment_ids"][r, start:end] = k + 1
      out["positions"][r, start:end] = np.arange(end - start)
      out["target_mask"][r, start + len(prompt):end] = 1
      start = end
  return out
