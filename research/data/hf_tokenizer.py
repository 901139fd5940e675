"""WordPiece tokenizers of imported Hugging Face BERT models, via `tokenizers`.

`WordPieceTokenizer` has the interface of Trellis' SentencePiece `Tokenizer`
(research/data/tokenizer.py), so the data pipeline and objectives take
either. BERT has no <s> and </s>: `bos_id` is [CLS] and `eos_id` is [SEP],
which is where BERT puts them. It has no T5 sentinels (`sentinel_ids` is
empty). `encode` adds no [CLS]/[SEP]: the callers add them, as they do for
SentencePiece.

`load_tokenizer` picks the right class for a path.
"""

import hashlib
import json
import os
import pathlib
import shutil

import numpy as np
import tokenizers
from tokenizers import decoders, models, normalizers, pre_tokenizers

from research.data.tokenizer import Tokenizer
from research.errors import DataError, first_line

SPECIAL_TOKENS = ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]")
# Written beside tokenizer.json so transformers' AutoTokenizer knows the class.
_HF_SIDE_FILES = ("tokenizer_config.json", "special_tokens_map.json", "vocab.txt")


def _from_vocab(vocab: pathlib.Path, folder: pathlib.Path) -> tokenizers.Tokenizer:
  """BERT's tokenizer from a vocab.txt, cased or not as tokenizer_config.json says."""
  lowercase, strip_accents = True, None
  config = folder / "tokenizer_config.json"
  if config.is_file():
    settings = json.loads(config.read_text(encoding="utf-8"))
    lowercase = settings.get("do_lower_case", True)
    strip_accents = settings.get("strip_accents")
  tok = tokenizers.Tokenizer(models.WordPiece.from_file(str(vocab), unk_token="[UNK]"))
  tok.normalizer = normalizers.BertNormalizer(clean_text=True, handle_chinese_chars=True,
                                              strip_accents=strip_accents, lowercase=lowercase)
  tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
  tok.decoder = decoders.WordPiece(prefix="##")
  # As tokenizer.json does: "[MASK]" in text is one token, not "[", "mask", "]".
  tok.add_special_tokens([t for t in SPECIAL_TOKENS if tok.token_to_id(t) is not None])
  return tok


class WordPieceTokenizer:
  """A BERT WordPiece tokenizer from a model folder's tokenizer.json (or vocab.txt)."""

  def __init__(self, path: str | os.PathLike):
    """Loads `path`: a tokenizer.json, a vocab.txt, or a folder holding either.

    Raises:
      DataError: nothing to load, or the vocabulary lacks BERT's special tokens.
    """
    path = pathlib.Path(path).expanduser()
    folder = path if path.is_dir() else path.parent
    if path.is_dir():
      path = next((folder / f for f in ("tokenizer.json", "vocab.txt")
                   if (folder / f).is_file()), None)
      if path is None:
        raise DataError(f"{folder} has neither tokenizer.json nor vocab.txt")
    self.path = path
    try:
      if path.name.endswith(".json"):
        self._tok = tokenizers.Tokenizer.from_file(str(path))
      else:
        self._tok = _from_vocab(path, folder)
    except Exception as e:  # tokenizers raises plain Exception on malformed files
      raise DataError(f"cannot load tokenizer {path}: {first_line(e)}") from None
    # tokenizer.json may carry fixed-length padding and truncation (MiniLM's
    # pads to 128); Trellis pads and truncates itself.
    self._tok.no_padding()
    self._tok.no_truncation()
    self.fingerprint = hashlib.sha256(path.read_bytes()).hexdigest()[:16]
    ids = {t: self._tok.token_to_id(t) for t in SPECIAL_TOKENS}
    absent = [t for t, i in ids.items() if i is None]
    if absent:
      raise DataError(f"{path}: the vocabulary has no {', '.join(absent)}; "
                      "not a BERT WordPiece tokenizer")
    self.pad_id, self.unk_id, self.cls_id, self.sep_id, self.mask_id = (
        ids[t] for t in SPECIAL_TOKENS)
    added = [t.content for t in self._tok.get_added_tokens_decoder().values() if t.special]
    self.special_ids = tuple(sorted(set(ids.values()) | {self._tok.token_to_id(t)
                                                         for t in added}))
    self.files = [path] + [folder / f for f in _HF_SIDE_FILES
                           if (folder / f).is_file() and folder / f != path]

  @property
  def vocab_size(self) -> int:
    """Number of ids, added tokens included."""
    return self._tok.get_vocab_size(with_added_tokens=True)

  @property
  def bos_id(self) -> int:
    """[CLS]: BERT begins every sequence with it."""
    return self.cls_id

  @property
  def eos_id(self) -> int:
    """[SEP]: BERT ends every sequence (and segment) with it."""
    return self.sep_id

  @property
  def sentinel_ids(self) -> tuple[int, ...]:
    """None: BERT vocabularies have no T5 span sentinels."""
    return ()

  def encode(self, text: str) -> list[int]:
    """Token ids of `text`, without [CLS]/[SEP]."""
    return self._tok.encode(text, add_special_tokens=False).ids

  def encode_batch(self, texts: list[str]) -> list[list[int]]:
    """Token ids of each text (the Rust side runs them in parallel)."""
    return [e.ids for e in self._tok.encode_batch(list(texts), add_special_tokens=False)]

  def encode_with_offsets(self, text: str) -> tuple[list[int], list[tuple[int, int]]]:
    """Token ids and each token's (start, end) character span in `text` (for QA)."""
    encoding = self._tok.encode(text, add_special_tokens=False)
    return encoding.ids, [tuple(o) for o in encoding.offsets]

  def decode(self, ids) -> str:
    """The text of `ids` (a list or array), skipping padding."""
    ids = [int(i) for i in np.asarray(ids).reshape(-1) if i != self.pad_id]
    return self._tok.decode(ids, skip_special_tokens=False)

  def id_to_piece(self, token_id: int) -> str:
    """The vocabulary piece of one id ("##" marks a word continuation)."""
    return self._tok.id_to_token(token_id)

  def save(self, folder: str | os.PathLike) -> None:
    """Copies tokenizer.json (or vocab.txt) and its side files into `folder`, for transformers."""
    for path in self.files:
      shutil.copyfile(path, pathlib.Path(folder) / pathlib.Path(path).name)

  def word_starts(self) -> np.ndarray:
    """[vocab_size] bool: the piece begins a word (not a "##" continuation)."""
    return np.array([not (self._tok.id_to_token(i) or "").startswith("##")
                     for i in range(self.vocab_size)], bool)


def load_tokenizer(path: str | os.PathLike):
  """The tokenizer at `path`, whatever its kind.

  A `.model` file, or a folder (a workdir, an exported model) holding
  `tokenizer.model`, is a Trellis SentencePiece `Tokenizer`; a
  `tokenizer.json` or `vocab.txt`, or a folder holding one, is a
  `WordPieceTokenizer`.

  Raises:
    DataError: `path` holds no tokenizer, or an invalid one.
  """
  path = pathlib.Path(path).expanduser()
  if path.is_dir():
    if (path / "tokenizer.json").is_file() or (path / "vocab.txt").is_file():
      return WordPieceTokenizer(path)
    if (path / "tokenizer.model").is_file():
      return Tokenizer(path / "tokenizer.model")
    raise DataError(f"{path} holds no tokenizer (tokenizer.model, tokenizer.json or vocab.txt)")
  if path.suffix == ".model":
    return Tokenizer(path)
  if path.name.endswith(".json") or path.suffix == ".txt":
    return WordPieceTokenizer(path)
  if not path.exists():
    raise DataError(f"tokenizer {path} does not exist")
  raise DataError(f"{path}: unknown tokenizer file (expected .model, tokenizer.json or vocab.txt)")
