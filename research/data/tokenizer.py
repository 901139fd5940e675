"""SentencePiece tokenizers: trained on the train documents, cached, or loaded.

Every tokenizer Trellis trains has the same fixed special ids (RESERVED_PIECES), so objectives
can rely on them without looking anything up:

  0 <pad>   1 <unk>   2 <s> (bos)   3 </s> (eos)
  4 <mask>  5 <cls>   6 <sep>   7..38 <extra_id_0>..<extra_id_31> (T5 sentinels)
  39 "\\n"  40 "\\t"   then 256 byte pieces <0x00>..<0xFF>, then learned pieces.

Newline and tab are whole pieces and whitespace is kept as is (no
normalisation, no dummy prefix, whitespace-only pieces allowed), so
`decode(encode(text)) == text` holds for source code; byte fallback means no
text is ever unknown.
"""

import hashlib
import io
import json
import os
import pathlib
import re
import shutil
import tempfile

import numpy as np
import sentencepiece as spm

from research.data import sources
from research.errors import DataError

NUM_SENTINELS = 32
# The one table of Trellis's fixed ids: the piece at each id, in id order. Every
# tokenizer Trellis trains holds them there (Tokenizer checks it on load), and
# objectives.base.Vocab takes its defaults from the names below.
RESERVED_PIECES = ("<pad>", "<unk>", "<s>", "</s>", "<mask>", "<cls>", "<sep>") + tuple(
    f"<extra_id_{i}>" for i in range(NUM_SENTINELS))
PAD_ID, UNK_ID, BOS_ID, EOS_ID, MASK_ID, CLS_ID, SEP_ID = range(7)
SENTINEL_IDS = tuple(range(SEP_ID + 1, SEP_ID + 1 + NUM_SENTINELS))
# Never masked, drawn as noise or sampled (end of sequence aside).
SPECIAL_IDS = tuple(range(len(RESERVED_PIECES)))
# Text symbols, not specials: masking may replace them like any other token.
WHITESPACE_PIECES = ("\n", "\t")
# The reserved pieces, whitespace pieces and 256 bytes.
NUM_RESERVED_PIECES = len(RESERVED_PIECES) + len(WHITESPACE_PIECES) + 256

# Tokenizer training reads a deterministic, evenly strided sample of lines of
# about max(MIN_TRAINING_CHARS, TRAINING_CHARS_PER_PIECE * vocab_size)
# characters: more text barely changes the vocabulary but training time grows
# with it (1M characters of code take ~6 s on 2 cores).
MIN_TRAINING_CHARS = 1_000_000
TRAINING_CHARS_PER_PIECE = 250
_TRAINER_THREADS = 2
_TRAINER_OPTIONS = dict(
    pad_id=PAD_ID, unk_id=UNK_ID, bos_id=BOS_ID, eos_id=EOS_ID,  # SentencePiece's own four
    user_defined_symbols=list(RESERVED_PIECES[MASK_ID:] + WHITESPACE_PIECES),
    byte_fallback=True, character_coverage=0.9995,
    normalization_rule_name="identity", remove_extra_whitespaces=False,
    add_dummy_prefix=False, allow_whitespace_only_pieces=True, split_digits=True,
    shuffle_input_sentence=False, minloglevel=2,
)


def sp_offsets(sp, text: str) -> tuple[list[int], list[tuple[int, int]]]:
  """Ids and each piece's (start, end) character span of `text` under SentencePiece
  processor `sp` (which reports UTF-8 byte spans); byte-fallback pieces of one
  character share that character's span."""
  char_of_byte = np.zeros(len(text.encode("utf-8")) + 1, np.int64)
  position = 0
  for index, char in enumerate(text):
    width = len(char.encode("utf-8"))
    char_of_byte[position:position + width] = index
    position += width
  char_of_byte[position] = len(text)
  ids, offsets = [], []
  for piece in sp.encode(text, return_type="proto").pieces:
    start, end = int(char_of_byte[piece.begin]), int(char_of_byte[piece.end])
    if end == start and piece.end < position:  # a leading byte piece of a character
      end = start + 1
    ids.append(piece.id)
    offsets.append((start, end))
  return ids, offsets


class Tokenizer:
  """A SentencePiece model with Trellis's fixed special ids."""

  def __init__(self, path: str | os.PathLike):
    """Loads the SentencePiece model at `path`.

    Raises:
      DataError: the file is missing, not a SentencePiece model, or its
        special pieces are not at Trellis's fixed ids.
    """
    self.path = pathlib.Path(path)
    try:
      model_bytes = self.path.read_bytes()
    except OSError as e:
      raise DataError(f"cannot read tokenizer {path}: {e.strerror}") from None
    self._sp = spm.SentencePieceProcessor()
    try:
      self._sp.LoadFromSerializedProto(model_bytes)
    except (RuntimeError, OSError):
      raise DataError(f"{path} is not a SentencePiece model") from None
    self.fingerprint = hashlib.sha256(model_bytes).hexdigest()[:16]
    for token_id, piece in enumerate(RESERVED_PIECES):
      if token_id >= self.vocab_size or self._sp.id_to_piece(token_id) != piece:
        raise DataError(f"{path}: id {token_id} must be {piece!r}; train the tokenizer "
                        "with Trellis (set data.tokenizer='')")

  @property
  def vocab_size(self) -> int:
    """Number of pieces, specials and bytes included."""
    return self._sp.get_piece_size()

  @property
  def pad_id(self) -> int:
    """Id of <pad>: padding, never a target."""
    return PAD_ID

  @property
  def unk_id(self) -> int:
    """Id of <unk> (unused: byte fallback covers all text)."""
    return UNK_ID

  @property
  def bos_id(self) -> int:
    """Id of <s>, begin of sequence."""
    return BOS_ID

  @property
  def eos_id(self) -> int:
    """Id of </s>, appended to every packed document."""
    return EOS_ID

  @property
  def mask_id(self) -> int:
    """Id of <mask> (MLM)."""
    return MASK_ID

  @property
  def cls_id(self) -> int:
    """Id of <cls> (classification / NSP)."""
    return CLS_ID

  @property
  def sep_id(self) -> int:
    """Id of <sep> (between sentence pairs)."""
    return SEP_ID

  @property
  def sentinel_ids(self) -> tuple[int, ...]:
    """Ids of <extra_id_0>, <extra_id_1>, ... (T5 span corruption)."""
    return SENTINEL_IDS

  @property
  def special_ids(self) -> tuple[int, ...]:
    """Every id that masking must never pick or produce."""
    return SPECIAL_IDS

  def encode(self, text: str) -> list[int]:
    """Token ids of `text`, without bos/eos."""
    return self._sp.encode(text)

  def encode_batch(self, texts: list[str]) -> list[list[int]]:
    """Token ids of each text, encoded on several threads."""
    return self._sp.encode(texts, num_threads=os.cpu_count() or 1)

  def encode_with_offsets(self, text: str) -> tuple[list[int], list[tuple[int, int]]]:
    """Token ids and each token's (start, end) character span in `text` (`sp_offsets`)."""
    return sp_offsets(self._sp, text)

  def decode(self, ids) -> str:
    """The text of `ids` (a list or array), skipping padding."""
    return self._sp.decode([int(i) for i in np.asarray(ids).reshape(-1) if i != self.pad_id])

  def id_to_piece(self, token_id: int) -> str:
    """The vocabulary piece of one id (for debugging and tests)."""
    return self._sp.id_to_piece(token_id)

  def save(self, folder: str | os.PathLike) -> None:
    """Copies the model into `folder` as tokenizer.model (what load_tokenizer reads back)."""
    shutil.copyfile(self.path, pathlib.Path(folder) / "tokenizer.model")


def training_lines(train_docs: list[str], vocab_size: int) -> list[str]:
  """Non-empty lines of the documents, evenly strided down to the training budget."""
  budget = max(MIN_TRAINING_CHARS, TRAINING_CHARS_PER_PIECE * vocab_size)
  lines = [line for doc in train_docs for line in doc.split("\n") if line.strip()]
  total = sum(len(line) for line in lines)
  stride = max(1, -(-total // budget))
  return lines[::stride]


def _cache_key(lines: list[str], data_cfg) -> str:
  digest = hashlib.sha256()
  settings = dict(_TRAINER_OPTIONS, vocab_size=data_cfg.vocab_size,
                  model_type=data_cfg.tokenizer_type,
                  sentencepiece=spm.__version__)
  digest.update(json.dumps(settings, sort_keys=True).encode())
  for line in lines:
    digest.update(line.encode("utf-8"))
    digest.update(b"\0")  # keeps ["ab", "c"] apart from ["a", "bc"]
  return digest.hexdigest()[:32]


def _train(lines: list[str], data_cfg, path: pathlib.Path) -> None:
  """Trains a model on `lines` and writes it atomically to `path`."""
  if data_cfg.vocab_size <= NUM_RESERVED_PIECES:
    raise DataError(f"data.vocab_size={data_cfg.vocab_size} is too small: the tokenizer "
                    f"reserves {NUM_RESERVED_PIECES} ids for special pieces and bytes; use at "
                    f"least {NUM_RESERVED_PIECES + 1}")
  model, failure = _try_training(lines, data_cfg, data_cfg.vocab_size)
  if failure:
    high, low = _limits(failure)
    if high is None and low is None:
      raise DataError(f"SentencePiece training failed: {failure.splitlines()[0]}")
    # One error gives one limit: probe the other, so the first message gives the range.
    if high is None:
      high = _limits(_try_training(lines, data_cfg, _PROBE_LARGE)[1])[0]
    if low is None:
      low = _limits(_try_training(lines, data_cfg, NUM_RESERVED_PIECES + 1)[1])[1]
    low = max(low or 0, NUM_RESERVED_PIECES + 1)
    size = f"data.vocab_size={data_cfg.vocab_size}"
    if high is not None and low > high:
      raise DataError(f"{size}: no vocabulary fits this corpus (its characters need at least "
                      f"{low} pieces, its text supports at most {high}); add text")
    fits = f"{low} to {high}" if high is not None else f"at least {low}"
    too = "large" if data_cfg.vocab_size > low else "small"
    raise DataError(f"{size} is too {too} for this corpus, which supports {fits}; "
                    "set data.vocab_size in that range")
  path.parent.mkdir(parents=True, exist_ok=True)
  handle, temp = tempfile.mkstemp(prefix=f".{path.name}-", dir=path.parent)
  with os.fdopen(handle, "wb") as f:
    f.write(model.getvalue())
  os.replace(temp, path)


# A vocabulary size no corpus reaches: training fails at once, naming the largest that fits.
_PROBE_LARGE = 1 << 20


def _try_training(lines: list[str], data_cfg, vocab_size: int) -> tuple[io.BytesIO, str]:
  """(the model, "") or (None, SentencePiece's error text)."""
  model = io.BytesIO()
  try:
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(lines), model_writer=model, vocab_size=vocab_size,
        model_type=data_cfg.tokenizer_type, num_threads=_TRAINER_THREADS, **_TRAINER_OPTIONS)
  except RuntimeError as e:
    return None, str(e).strip()
  return model, ""


def _limits(failure: str) -> tuple[int | None, int | None]:
  """(largest, smallest) vocabulary size a SentencePiece training error names, else None."""
  high = re.search(r"Vocabulary size too high.*<= (\d+)", failure)
  low = re.search(r"smaller than required_chars\. \d+ vs (\d+)", failure)
  return (int(high.group(1)) if high else None), (int(low.group(1)) if low else None)


def load_or_train_tokenizer(train_docs: list[str], data_cfg) -> Tokenizer:
  """The tokenizer at `data_cfg.tokenizer`, or one trained on `train_docs`.

  A trained model is cached under `cache_root(data.cache_dir)/tokenizers/`,
  keyed by the training text and every setting, so the same corpus and
  settings train only once.

  Raises:
    DataError: a given tokenizer is missing or invalid or its size is not
      data.vocab_size, the corpus has no text, or the vocabulary does not fit.
  """
  if data_cfg.tokenizer:
    tokenizer = Tokenizer(os.path.expanduser(data_cfg.tokenizer))
  else:
    lines = training_lines(train_docs, data_cfg.vocab_size)
    if not lines:
      raise DataError("no text to train a tokenizer on")
    path = (sources.cache_root(data_cfg.cache_dir) / "tokenizers"
            / f"{_cache_key(lines, data_cfg)}.model")
    if not path.exists():
      with sources.stage(f"training a {data_cfg.tokenizer_type} tokenizer, "
                         f"vocab {data_cfg.vocab_size}, on {len(lines):,} lines"):
        _train(lines, data_cfg, path)
    tokenizer = Tokenizer(path)
  if tokenizer.vocab_size != data_cfg.vocab_size:
    raise DataError(f"tokenizer {tokenizer.path} has {tokenizer.vocab_size} pieces but "
                    f"data.vocab_size={data_cfg.vocab_size}")
  return tokenizer
