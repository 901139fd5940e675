"""From documents to batches: encoding, packing, checkpointable iterators.

Packed examples are a dict of int32 arrays of shape [rows, seq_len]:
  tokens       document tokens, each document followed by eos; 0 (pad) at the end
               (load_pretraining_data also starts each document with bos)
  segment_ids  1, 2, 3 ... numbering the document pieces within a row; 0 is padding
  positions    position within the document piece, restarting at each segment
               and at each row start
The model must not let tokens with different segment ids attend to each other.
"""

import hashlib
import pathlib
import shutil
import tempfile
from typing import NamedTuple

import grain
import numpy as np

from research import objectives
from research.data import pairs, sources
from research.data.text import read_documents
from research.data.tokenizer import Tokenizer, load_or_train_tokenizer
from research.errors import DataError

# Corpora smaller than this encode in about a second: not worth a cache entry.
_MIN_CHARS_TO_CACHE = 1_000_000
_ENCODE_CHUNK_DOCS = 256


def corpus_fingerprint(docs: list[str]) -> str:
  """A short sha256 of the documents, their order and their boundaries."""
  digest = hashlib.sha256()
  for doc in docs:
    digest.update(doc.encode("utf-8"))
    digest.update(b"\0")
  return digest.hexdigest()[:32]


def _encode(tokenizer: Tokenizer, docs: list[str]) -> list[np.ndarray]:
  token_docs = []
  for start in range(0, len(docs), _ENCODE_CHUNK_DOCS):
    batch = tokenizer.encode_batch(docs[start:start + _ENCODE_CHUNK_DOCS])
    token_docs.extend(np.asarray(ids, dtype=np.int32) for ids in batch)
  return token_docs


def _save_arrays(folder: pathlib.Path, arrays: dict[str, np.ndarray]) -> None:
  """Writes arrays as <name>.npy files into `folder`, all or nothing."""
  folder.parent.mkdir(parents=True, exist_ok=True)
  work = pathlib.Path(tempfile.mkdtemp(prefix=f".{folder.name}-", dir=folder.parent))
  try:
    for name, array in arrays.items():
      np.save(work / f"{name}.npy", array, allow_pickle=False)
    work.rename(folder)
  except OSError:
    if not folder.is_dir():  # a concurrent writer may have won the race
      raise
  finally:
    shutil.rmtree(work, ignore_errors=True)


def encode_documents(tokenizer: Tokenizer, docs: list[str], *,
                     cache_dir: str = "") -> list[np.ndarray]:
  """Token ids of each document (int32 arrays, no bos/eos).

  Large corpora are cached under `cache_root(cache_dir)/encoded/<key>/` as
  flat ids plus document offsets, keyed by the tokenizer and the corpus, so a
  second run does not tokenise again.
  """
  num_chars = sum(len(doc) for doc in docs)
  if num_chars < _MIN_CHARS_TO_CACHE:
    return _encode(tokenizer, docs)
  encoded = sources.cache_root(cache_dir) / "encoded"
  final = encoded / f"{tokenizer.fingerprint}-{corpus_fingerprint(docs)}"
  if not final.is_dir():
    with sources.stage(f"encoding {len(docs):,} documents ({num_chars:,} characters)"):
      token_docs = _encode(tokenizer, docs)
    offsets = np.cumsum([0] + [len(ids) for ids in token_docs], dtype=np.int64)
    flat = np.concatenate(token_docs) if token_docs else np.zeros([0], np.int32)
    _save_arrays(final, {"ids": flat, "offsets": offsets})
  flat = np.load(final / "ids.npy", allow_pickle=False)
  offsets = np.load(final / "offsets.npy", allow_pickle=False)
  if len(offsets) != len(docs) + 1:
    raise DataError(f"{final} does not match the corpus; delete it and retry")
  return [flat[offsets[i]:offsets[i + 1]] for i in range(len(docs))]


def pack_documents(token_docs: list[np.ndarray], seq_len: int,
                   eos_id: int) -> dict[str, np.ndarray]:
  """Concatenates documents (each followed by eos) into rows of seq_len tokens.

  A document that does not fit continues in the next row as a new segment.
  Only the final row is padded (tokens 0, segment_ids 0, positions 0).

  Returns:
    {"tokens", "segment_ids", "positions"}: int32 arrays of shape [rows, seq_len].
  """
  lengths = np.array([len(ids) + 1 for ids in token_docs], dtype=np.int64)
  total = int(lengths.sum())
  num_rows = -(-total // seq_len)
  size = num_rows * seq_len
  tokens = np.zeros(size, np.int32)
  if total:
    tokens[:total] = np.concatenate(
        [np.append(np.asarray(ids, np.int32), np.int32(eos_id)) for ids in token_docs])
  doc_index = np.repeat(np.arange(len(token_docs)), lengths)
  index = np.arange(total)
  starts = index % seq_len == 0
  starts[1:] |= doc_index[1:] != doc_index[:-1]
  positions = np.zeros(size, np.int32)
  # Every row start is a segment start, so the running last start never
  # crosses a row boundary.
  positions[:total] = index - np.maximum.accumulate(np.where(starts, index, 0))
  segment_starts = np.zeros(size, np.int32)
  segment_starts[:total] = starts
  segment_ids = np.cumsum(segment_starts.reshape(num_rows, seq_len), axis=1, dtype=np.int32)
  segment_ids.reshape(-1)[total:] = 0
  return {"tokens": tokens.reshape(num_rows, seq_len),
          "segment_ids": segment_ids,
          "positions": positions.reshape(num_rows, seq_len)}


def _process_rows(batch_size: int, process_index: int, process_count: int) -> slice:
  if batch_size % process_count:
    raise DataError(f"batch size {batch_size} is not divisible by {process_count} processes")
  per_process = batch_size // process_count
  return slice(process_index * per_process, (process_index + 1) * per_process)


def train_iterator(examples: dict[str, np.ndarray], batch_size: int, seed: int,
                   process_index: int = 0, process_count: int = 1) -> grain.DatasetIterator:
  """An endless, checkpointable iterator of this process's share of each batch.

  Global batches are drawn from a shuffle that is different in every epoch
  and fixed by `seed`; batches cross epoch boundaries. Process p receives
  rows [p*B/P, (p+1)*B/P) of each global batch of B rows, so the global batch
  sequence does not depend on the number of processes. Use `get_state()` /
  `set_state()` or grain.checkpoint.CheckpointSave/Restore to resume exactly.

  Raises:
    DataError: fewer rows than one global batch.
  """
  num_rows = len(examples["tokens"])
  if num_rows < batch_size:
    raise DataError(f"only {num_rows} training rows, fewer than one batch of {batch_size}")
  rows = _process_rows(batch_size, process_index, process_count)

  def gather(indices: np.ndarray) -> dict[str, np.ndarray]:
    # Batching row indices and gathering once is far cheaper than stacking
    # batch_size single-row dicts.
    return {name: array[indices[rows]] for name, array in examples.items()}

  dataset = (grain.MapDataset.range(num_rows)
             .shuffle(seed=seed % 2**32)  # grain takes unsigned 32-bit seeds
             .repeat()  # the shuffle reseeds itself for every epoch
             .batch(batch_size, drop_remainder=True)
             .map(gather))
  # Gathering rows is cheap; grain's default of 500 prefetched batches would
  # hold gigabytes for large batches.
  read_options = grain.ReadOptions(num_threads=2, prefetch_buffer_size=4)
  return iter(dataset.to_iter_dataset(read_options))


def eval_batches(examples: dict[str, np.ndarray], batch_size: int, max_batches: int = 0,
                 process_index: int = 0, process_count: int = 1) -> list[dict[str, np.ndarray]]:
  """The eval rows in order, as this process's share of fixed global batches.

  The last batch is filled with all-zero rows (segment_ids 0: no loss).
  `max_batches` > 0 keeps only the first batches.
  """
  rows = _process_rows(batch_size, process_index, process_count)
  num_rows = len(examples["tokens"])
  num_batches = -(-num_rows // batch_size)
  if max_batches:
    num_batches = min(num_batches, max_batches)
  batches = []
  for b in range(num_batches):
    batch = {}
    for name, array in examples.items():
      chunk = array[b * batch_size:(b + 1) * batch_size]
      padding = np.zeros((batch_size - len(chunk),) + array.shape[1:], array.dtype)
      batch[name] = np.concatenate([chunk, padding])[rows]
    batches.append(batch)
  return batches


def unigram_perplexity(train_ids: np.ndarray, eval_ids: np.ndarray, vocab_size: int) -> float:
  """Perplexity on eval_ids of an add-one smoothed unigram model of train_ids."""
  counts = np.bincount(np.asarray(train_ids).reshape(-1), minlength=vocab_size) + 1.0
  log_probs = np.log(counts) - np.log(counts.sum())
  return float(np.exp(-log_probs[np.asarray(eval_ids).reshape(-1)].mean()))


class TrainData(NamedTuple):
  """What the training loop trains on: example arrays, pretraining and fine-tuning alike."""
  train: dict[str, np.ndarray]  # [rows, ...] each: the batch fields
  eval: dict[str, np.ndarray]  # the rows of the default, loss-based evaluation
  unigram_perplexity: float | None = None  # a baseline reported beside the eval perplexity


class PretrainingData(NamedTuple):
  """Everything pretraining needs from the data side."""
  tokenizer: Tokenizer
  examples: TrainData  # packed examples [rows, seq_len], and the unigram baseline
  stats: dict[str, int]  # {train,eval}_{documents,tokens,rows}


def load_pretraining_data(cfg, process_index: int = 0,
                          process_count: int = 1) -> PretrainingData:
  """Reads, tokenises and packs `cfg.data` into train and eval examples.

  Every process loads the whole corpus (it is small next to the model); the
  iterators take each process's share. The process arguments are accepted
  so callers need not special-case multi-host runs.

  Raises:
    DataError: unreadable data, or too little of it for one train batch or
      one eval row.
  """
  del process_index, process_count  # each process builds the same arrays
  d = cfg.data
  train_docs, eval_docs = read_documents(d)
  tokenizer = load_or_train_tokenizer(train_docs, d)
  layout = objectives.examples(cfg.objectives)
  packed = {}
  stats = {}
  for split, docs in (("train", train_docs), ("eval", eval_docs)):
    if layout == "pairs":
      packed[split] = pairs.build_pairs(
          pairs.encode_sentences(tokenizer, docs), d.seq_len, tokenizer,
          seed=cfg.seed + (split == "eval"),
          random_rate=cfg.objective_options.nsp_random_rate)
    else:
      # bos starts every document, so the first real token is predicted too
      # and generation can start from bos alone.
      token_docs = [np.concatenate([[tokenizer.bos_id], ids]).astype(np.int32)
                    for ids in encode_documents(tokenizer, docs, cache_dir=d.cache_dir)]
      packed[split] = pack_documents(token_docs, d.seq_len, tokenizer.eos_id)
    stats[f"{split}_documents"] = len(docs)
    stats[f"{split}_tokens"] = int((packed[split]["segment_ids"] > 0).sum())
    stats[f"{split}_rows"] = len(packed[split]["tokens"])
  if stats["eval_rows"] == 0:
    raise DataError(f"the eval split of data.source={d.source!r} is empty")
  if stats["train_rows"] < cfg.train.batch_size:
    raise DataError(f"data.source={d.source!r} packs into {stats['train_rows']} train rows of "
                    f"{d.seq_len} tokens, fewer than train.batch_size={cfg.train.batch_size}")
  baseline = unigram_perplexity(
      packed["train"]["tokens"][packed["train"]["segment_ids"] > 0],
      packed["eval"]["tokens"][packed["eval"]["segment_ids"] > 0], tokenizer.vocab_size)
  return PretrainingData(tokenizer, TrainData(packed["train"], packed["eval"], baseline), stats)
