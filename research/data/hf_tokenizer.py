"""Tokenizers of imported Hugging Face checkpoints, via `tokenizers` or `sentencepiece`.

`HFTokenizer` loads what a model folder holds, in this order:

  tokenizer.json           any `tokenizers` model: WordPiece (BERT), byte-level
                           BPE (GPT-2, GPT-Neo, BLOOM, GPT-NeoX, RoBERTa,
                           Llama-3, Qwen2), SentencePiece-style BPE with byte
                           fallback (Llama-2, Mistral), Unigram (T5)
  vocab.txt                BERT's WordPiece vocabulary
  vocab.json + merges.txt  GPT-2's byte-level BPE files
  tokenizer.model          a SentencePiece model that is not Trellis' (Llama-2),
  spiece.model             read with `sentencepiece` (T5)

It has the interface of Trellis' SentencePiece `Tokenizer`
(research/data/tokenizer.py), so the data pipeline, tasks and objectives
take either. `encode` adds no special tokens: the callers add them, as they
do for SentencePiece.

Special ids come from tokenizer_config.json (special_tokens_map.json fills
what it leaves out), else from the well-known tokens of the vocabulary
(`WELL_KNOWN`). Then: bos falls back to cls (BERT begins with [CLS]) and
else to pad (T5 has no bos: its decoder starts from the pad id); eos falls
back to sep; cls to bos; sep to eos; a tokenizer with no pad token (GPT-2,
Llama) pads with eos. Trellis tells padding by segment ids, never by token
value, so pad = eos is safe; only `decode` drops pad ids, and it keeps them
when pad is eos. T5's `<extra_id_0>`, `<extra_id_1>`, ... are
`sentinel_ids`, in that order. An id the vocabulary lacks (a mask token in
GPT-2) is no error at load: reading it raises a one-line DataError naming
the tokenizer and what needs it. `sentinel_ids` is empty where there are
none (span corruption then says so).

`load_tokenizer` picks `HFTokenizer` or Trellis' `Tokenizer` for a path: a
`tokenizer.model` with Trellis' reserved pieces at their fixed ids is
Trellis'.

Why ~600 lines: two backends (`tokenizers`, `sentencepiece`) behind one
interface, the hub's special-token conventions (config files, well-known
tokens, fallbacks) and the legacy vocab.txt / vocab.json + merges.txt layouts
are one concept, each read in one place.
"""

import hashlib
import json
import os
import pathlib
import re
import shutil

import numpy as np
import sentencepiece as spm
import tokenizers
from tokenizers import decoders, models, normalizers, pre_tokenizers

from research.data.tokenizer import RESERVED_PIECES, Tokenizer, sp_offsets
from research.errors import DataError, first_line

# The files a folder's tokenizer is read from, in order of preference.
MAIN_FILES = ("tokenizer.json", "vocab.txt", "vocab.json", "tokenizer.model", "spiece.model")
# Copied beside the main file by `save`, so transformers' AutoTokenizer reads the copy too.
SIDE_FILES = ("tokenizer_config.json", "special_tokens_map.json", "added_tokens.json",
              "vocab.txt", "merges.txt", "vocab.json")
# The side files that decide special tokens: part of the fingerprint.
_SPECIAL_FILES = ("tokenizer_config.json", "special_tokens_map.json", "added_tokens.json")
ROLES = ("pad", "unk", "bos", "eos", "mask", "cls", "sep")
# Each role's usual tokens, tried in order where the config names none.
WELL_KNOWN = {
    "pad": ("[PAD]", "<pad>"),
    "unk": ("[UNK]", "<unk>", "<|endoftext|>"),
    "bos": ("<s>", "<|begin_of_text|>", "<|endoftext|>"),
    "eos": ("</s>", "<|end_of_text|>", "<|endoftext|>"),
    "mask": ("[MASK]", "<mask>"),
    "cls": ("[CLS]",),
    "sep": ("[SEP]",),
}
# Where each role fails when absent: (what needs it, what to do).
_NEEDS = {
    "pad": ("rows are padded with it", "set pad_token in its tokenizer_config.json"),
    "unk": ("text it cannot encode maps to it", "set unk_token in its tokenizer_config.json"),
    "bos": ("documents, prompts and decoder inputs begin with it",
            "set bos_token in its tokenizer_config.json"),
    "eos": ("documents and outputs end with it", "set eos_token in its tokenizer_config.json"),
    "mask": ("masked LM needs one",
             "use a tokenizer that has one (BERT's [MASK], RoBERTa's <mask>) or another objective"),
    "cls": ("classification and QA rows begin with it",
            "set cls_token (or bos_token) in its tokenizer_config.json"),
    "sep": ("classification and QA rows end segments with it",
            "set sep_token (or eos_token) in its tokenizer_config.json"),
}
_SENTINEL = "<extra_id_{}>"
_T5_EXTRA_IDS = 100  # what T5Tokenizer appends to spiece.model unless told otherwise


def _read_json(path: pathlib.Path) -> dict:
  """A JSON object file's contents ({} where there is no file)."""
  if not path.is_file():
    return {}
  try:
    value = json.loads(path.read_text(encoding="utf-8"))
  except (ValueError, UnicodeDecodeError) as e:
    raise DataError(f"{path} is not valid JSON ({first_line(e)}); restore it from the "
                    "model's hub folder") from None
  if not isinstance(value, dict):
    raise DataError(f"{path} holds no JSON object; restore it from the model's hub folder")
  return value


def _content(value) -> str | None:
  """A special token's text: config values are strings or {"content": ...} dicts."""
  if isinstance(value, dict):
    value = value.get("content")
  return value if isinstance(value, str) and value else None


def _extra_tokens(settings: dict) -> list[str]:
  """additional_special_tokens / extra_special_tokens (v5), a list or a {name: token} dict."""
  found = []
  for key in ("additional_special_tokens", "extra_special_tokens"):
    value = settings.get(key) or []
    values = value.values() if isinstance(value, dict) else value
    found += [t for t in map(_content, values) if t is not None and t not in found]
  return found


class SpecialNames:
  """The special tokens a folder's tokenizer_config.json / special_tokens_map.json name."""

  def __init__(self, folder: pathlib.Path):
    self.config = _read_json(folder / "tokenizer_config.json")
    special_map = _read_json(folder / "special_tokens_map.json")
    self.named = {}  # role -> (token, the file naming it)
    for name, settings in (("special_tokens_map.json", special_map),
                           ("tokenizer_config.json", self.config)):
      for role in ROLES:
        token = _content(settings.get(f"{role}_token"))
        if token is not None:
          self.named[role] = (token, folder / name)
    self.extras = list(dict.fromkeys(_extra_tokens(special_map) + _extra_tokens(self.config)))
    self.added = {int(i): _content(t) for i, t in
                  (self.config.get("added_tokens_decoder") or {}).items()
                  if str(i).isdigit() and _content(t)}
    self.added.update({i: t for t, i in _read_json(folder / "added_tokens.json").items()
                       if isinstance(i, int)})

  def tokens(self) -> list[str]:
    """Every named special token, roles first."""
    return list(dict.fromkeys([t for t, _ in self.named.values()] + self.extras))


# Backends: the same small interface over `tokenizers` and `sentencepiece`.


class _Fast:
  """A `tokenizers.Tokenizer` (tokenizer.json, vocab.txt or vocab.json + merges.txt).

  Each backend has `kind`, size, token_to_id and id_to_token (None: no such
  token / id), special_ids, encode (ids and character spans), encode_batch
  and decode.
  """

  def __init__(self, tok: tokenizers.Tokenizer):
    self._tok = tok
    # tokenizer.json may carry fixed-length padding and truncation (MiniLM's
    # pads to 128); Trellis pads and truncates itself.
    tok.no_padding()
    tok.no_truncation()
    layout = f"{tok.pre_tokenizer} {tok.decoder}"
    if isinstance(tok.model, models.WordPiece):
      self.kind, self.continuation = "wordpiece", tok.model.continuing_subword_prefix
    elif "ByteLevel" in layout:
      self.kind = "bytelevel"
    else:
      self.kind = "sentencepiece"

  def size(self) -> int:
    return self._tok.get_vocab_size(with_added_tokens=True)

  def token_to_id(self, token: str) -> int | None:
    return self._tok.token_to_id(token)

  def id_to_token(self, token_id: int) -> str | None:
    return self._tok.id_to_token(token_id)

  def special_ids(self) -> set[int]:
    return {i for i, t in self._tok.get_added_tokens_decoder().items() if t.special}

  def encode(self, text: str) -> tuple[list[int], list[tuple[int, int]]]:
    encoding = self._tok.encode(text, add_special_tokens=False)
    return encoding.ids, [tuple(o) for o in encoding.offsets]

  def encode_batch(self, texts: list[str]) -> list[list[int]]:
    return [e.ids for e in self._tok.encode_batch(list(texts), add_special_tokens=False)]

  def decode(self, ids: list[int]) -> str:
    return self._tok.decode(ids, skip_special_tokens=False)


class _SentencePiece:
  """A Hugging Face SentencePiece model (Llama-2's tokenizer.model, T5's spiece.model).

  Special tokens in text are split out first and become their ids, as
  transformers does; the text between them is encoded by SentencePiece,
  dummy prefix included (transformers' "legacy" behaviour). Ids past the
  model (T5's sentinels) are the folder's added tokens. Text that starts
  with whitespace keeps its dummy prefix, as in SentencePiece (which
  Llama-2 was trained with) and Llama-2's hub tokenizer.json; transformers
  5 converts tokenizer.model to a Metaspace pre-tokenizer that drops it.
  """
  kind = "sentencepiece"

  def __init__(self, path: pathlib.Path, names: SpecialNames):
    self._sp = _load_sp(path)
    base = self._sp.get_piece_size()
    self._literal = {i: self._sp.id_to_piece(i) for i in range(base)
                     if self._sp.is_control(i) or self._sp.is_unknown(i)}
    self._literal.update({i: t for i, t in names.added.items() if i >= base})
    self._literal.update(_t5_sentinels(names, base, self._literal))
    self._added = {t: i for i, t in self._literal.items()}
    for token in names.tokens():
      if token not in self._added and self._piece_id(token) is not None:
        self._added[token] = self._piece_id(token)
    self._size = max([base - 1, *self._literal]) + 1
    self._dummy_prefix = self._sp.encode("a", out_type=str)[0].startswith("\u2581")
    tokens = sorted(self._added, key=len, reverse=True)
    self._split = re.compile("(" + "|".join(map(re.escape, tokens)) + ")") if tokens else None

  def _piece_id(self, piece: str) -> int | None:
    token_id = self._sp.piece_to_id(piece)
    return token_id if self._sp.id_to_piece(token_id) == piece else None

  def size(self) -> int:
    return self._size

  def token_to_id(self, token: str) -> int | None:
    return self._added.get(token, self._piece_id(token))

  def id_to_token(self, token_id: int) -> str | None:
    if token_id < self._sp.get_piece_size():
      return self._sp.id_to_piece(token_id)
    return self._literal.get(token_id)

  def special_ids(self) -> set[int]:
    return set(self._literal)

  def encode(self, text: str) -> tuple[list[int], list[tuple[int, int]]]:
    ids, offsets, start = [], [], 0
    for chunk in (self._split.split(text) if self._split else [text]):
      if chunk in self._added:
        chunk_ids, chunk_offsets = [self._added[chunk]], [(0, len(chunk))]
      else:
        chunk_ids, chunk_offsets = sp_offsets(self._sp, chunk) if chunk else ([], [])
      ids += chunk_ids
      offsets += [(start + s, start + e) for s, e in chunk_offsets]
      start += len(chunk)
    return ids, offsets

  def encode_batch(self, texts: list[str]) -> list[list[int]]:
    return [self.encode(text)[0] for text in texts]

  def decode(self, ids: list[int]) -> str:
    """The text of `ids`; special pieces appear as their text, as transformers shows them."""
    parts, run = [], []
    for token_id in ids + [None]:
      if token_id is not None and token_id not in self._literal:
        run.append(token_id)
        continue
      if run:
        parts.append(self._decode_run(run, first=not parts))
      if token_id is not None:
        parts.append(self._literal[token_id])
      run = []
    return "".join(parts)

  def _decode_run(self, run: list[int], first: bool) -> str:
    """SentencePiece's text of ordinary ids, keeping the space of a later run's "▁".

    SentencePiece drops a leading "▁" as the dummy prefix, which only the
    text's first run has.
    """
    text = self._sp.decode(run)
    if not first and self._dummy_prefix and self._sp.id_to_piece(run[0]).startswith("\u2581"):
      text = " " + text
    return text


def _load_sp(path: pathlib.Path):
  """The SentencePiece model at `path`."""
  sp = spm.SentencePieceProcessor()
  try:
    sp.LoadFromSerializedProto(path.read_bytes())
  except (RuntimeError, OSError):
    raise DataError(f"{path} is not a SentencePiece model; restore it from the model's "
                    "hub folder") from None
  return sp


def _t5_sentinels(names: SpecialNames, base: int, taken: dict) -> dict[int, str]:
  """T5's sentinel ids past spiece.model: <extra_id_0> last, as T5Tokenizer appends them."""
  count = names.config.get("extra_ids")
  if not isinstance(count, int):
    listed = sum(bool(re.fullmatch(r"<extra_id_\d+>", t)) for t in names.extras)
    t5 = str(names.config.get("tokenizer_class", "")).startswith("T5")
    count = listed or (_T5_EXTRA_IDS if t5 else 0)
  known = set(taken.values())
  return {base + count - 1 - i: _SENTINEL.format(i) for i in range(count)
          if _SENTINEL.format(i) not in known}


def _wordpiece_from_vocab(vocab: pathlib.Path, names: SpecialNames) -> tokenizers.Tokenizer:
  """BERT's tokenizer from a vocab.txt, cased or not as tokenizer_config.json says."""
  settings = names.config
  tok = tokenizers.Tokenizer(models.WordPiece.from_file(
      str(vocab), unk_token=names.named.get("unk", ("[UNK]",))[0]))
  tok.normalizer = normalizers.BertNormalizer(
      clean_text=True, handle_chinese_chars=settings.get("tokenize_chinese_chars", True),
      strip_accents=settings.get("strip_accents"), lowercase=settings.get("do_lower_case", True))
  tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
  tok.decoder = decoders.WordPiece(prefix="##")
  return tok


def _bytelevel_from_files(folder: pathlib.Path, names: SpecialNames) -> tokenizers.Tokenizer:
  """GPT-2's tokenizer from vocab.json and merges.txt."""
  vocab, merges = folder / "vocab.json", folder / "merges.txt"
  for path in (vocab, merges):
    if not path.is_file():
      raise DataError(f"{folder} has no {path.name} (GPT-2's BPE needs vocab.json and "
                      "merges.txt); copy it from the model's hub folder")
  tok = tokenizers.Tokenizer(models.BPE.from_file(str(vocab), str(merges)))
  tok.pre_tokenizer = pre_tokenizers.ByteLevel(
      add_prefix_space=bool(names.config.get("add_prefix_space", False)))
  tok.decoder = decoders.ByteLevel()
  return tok


def _fast_backend(path: pathlib.Path, names: SpecialNames) -> _Fast:
  """tokenizer.json, or a tokenizer built from vocab.txt / vocab.json, its specials marked."""
  try:
    if path.name in ("vocab.json", "merges.txt"):
      tok = _bytelevel_from_files(path.parent, names)
    elif path.suffix == ".json":
      return _Fast(tokenizers.Tokenizer.from_file(str(path)))
    else:
      tok = _wordpiece_from_vocab(path, names)
  except DataError:
    raise
  except Exception as e:  # tokenizers raises plain Exception on malformed files
    raise DataError(f"cannot load tokenizer {path}: {first_line(e)}") from None
  # As tokenizer.json does: "[MASK]" in text is one token, not "[", "mask", "]".
  wanted = names.tokens() + [t for known in WELL_KNOWN.values() for t in known]
  tok.add_special_tokens([t for t in dict.fromkeys(wanted) if tok.token_to_id(t) is not None])
  return _Fast(tok)


def _fingerprint(files: list[pathlib.Path]) -> str:
  """16 hex digits of the files that decide the ids: the main file(s) and the special tokens."""
  decisive = set(_SPECIAL_FILES)
  if files[0].name in ("vocab.json", "merges.txt"):
    decisive |= {"vocab.json", "merges.txt"}
  digest = hashlib.sha256(files[0].read_bytes())
  for file in sorted((f for f in files[1:] if f.name in decisive), key=lambda f: f.name):
    digest.update(b"\0" + file.name.encode() + b"\0" + file.read_bytes())
  return digest.hexdigest()[:16]


def _saved_name(path: pathlib.Path) -> str:
  """The name `save` gives the main file: one that a folder is read from."""
  if path.name in MAIN_FILES + SIDE_FILES:
    return path.name
  return {".model": "tokenizer.model", ".txt": "vocab.txt"}.get(path.suffix, "tokenizer.json")


def _main_file(path: pathlib.Path) -> pathlib.Path:
  """The file to load: `path`, or the first of MAIN_FILES in the folder `path`."""
  if not path.is_dir():
    if not path.is_file():
      raise DataError(f"tokenizer {path} does not exist")
    return path
  found = next((path / f for f in MAIN_FILES if (path / f).is_file()), None)
  if found is None:
    raise DataError(f"{path} holds no tokenizer ({', '.join(MAIN_FILES)})")
  return found


class HFTokenizer:
  """A Hugging Face checkpoint's tokenizer, with the interface of Trellis' `Tokenizer`.

  Attributes:
    path: the file it was loaded from (tokenizer.json, vocab.txt, vocab.json,
      tokenizer.model or spiece.model).
    kind: "wordpiece", "bytelevel" or "sentencepiece" (how pieces mark words).
    files: `path` and the side files `save` copies.
    fingerprint: 16 hex digits of the files that decide the ids.
    sentinel_ids: <extra_id_0>, <extra_id_1>, ... (empty: none).
    borrowed: role -> the role whose token it falls back to, for the roles
      the tokenizer has no token of its own for ({"pad": "eos"} for GPT-2).
    special_ids: every special id (never masked, drawn as noise or sampled).
  """

  def __init__(self, path: str | os.PathLike):
    """Loads `path`: one of MAIN_FILES, or a folder holding one.

    Raises:
      DataError: nothing to load, or a malformed file.
    """
    path = pathlib.Path(path).expanduser()
    folder = path if path.is_dir() else path.parent
    self.path = _main_file(path)
    names = SpecialNames(folder)
    if self.path.suffix == ".model":
      self._backend = _SentencePiece(self.path, names)
    else:
      self._backend = _fast_backend(self.path, names)
    self.kind = self._backend.kind
    self.files = [self.path] + [folder / f for f in SIDE_FILES
                                if (folder / f).is_file() and folder / f != self.path]
    self.fingerprint = _fingerprint(self.files)
    self._ids, self._missing, self.borrowed = {}, {}, {}
    self._resolve(names)
    self.sentinel_ids = self._sentinels()
    self.special_ids = tuple(sorted(
        self._backend.special_ids() | set(self._ids.values()) | set(self.sentinel_ids)
        | {i for i in map(self._backend.token_to_id, names.tokens()) if i is not None}))

  def _resolve(self, names: SpecialNames) -> None:
    """Fills self._ids (role -> id) and self._missing (role -> why it has none)."""
    for role in ROLES:
      if role in names.named:
        token, source = names.named[role]
        token_id = self._backend.token_to_id(token)
        if token_id is None:
          self._missing[role] = (f"{source} names {role}_token {token!r}, which {self.path} "
                                 "does not hold; fix the name or use the model's own files")
      else:
        token_id = next((i for i in map(self._backend.token_to_id, WELL_KNOWN[role])
                         if i is not None), None)
      if token_id is not None:
        self._ids[role] = token_id
    for role, other in (("bos", "cls"), ("bos", "pad"), ("cls", "bos"), ("eos", "sep"),
                        ("sep", "eos"), ("pad", "eos")):
      if role not in self._ids and other in self._ids and role not in self._missing:
        self._ids[role] = self._ids[other]
        self.borrowed[role] = self.borrowed.get(other, other)

  def _sentinels(self) -> tuple[int, ...]:
    ids = []
    while (token_id := self._backend.token_to_id(_SENTINEL.format(len(ids)))) is not None:
      ids.append(token_id)
    return tuple(ids)

  def _id(self, role: str) -> int:
    """The id of `role`, or a one-line DataError saying why there is none and what to do."""
    if role in self._ids:
      return self._ids[role]
    if role in self._missing:
      raise DataError(self._missing[role])
    needs, fix = _NEEDS[role]
    raise DataError(f"{self.path} has no {role} token: {needs}; {fix}")

  @property
  def vocab_size(self) -> int:
    """Number of ids, added tokens included."""
    return self._backend.size()

  @property
  def pad_id(self) -> int:
    """Padding (eos where the vocabulary has no pad token): never read, segment ids mask it."""
    return self._id("pad")

  @property
  def unk_id(self) -> int:
    """The unknown token."""
    return self._id("unk")

  @property
  def bos_id(self) -> int:
    """Begin of sequence ([CLS] for BERT, the pad id for T5)."""
    return self._id("bos")

  @property
  def eos_id(self) -> int:
    """End of sequence ([SEP] for BERT)."""
    return self._id("eos")

  @property
  def mask_id(self) -> int:
    """The mask token (masked LM); DataError where the vocabulary has none."""
    return self._id("mask")

  @property
  def cls_id(self) -> int:
    """Begins classification rows (bos where there is no cls token)."""
    return self._id("cls")

  @property
  def sep_id(self) -> int:
    """Ends segments of classification rows (eos where there is no sep token)."""
    return self._id("sep")

  def encode(self, text: str) -> list[int]:
    """Token ids of `text`, without bos/eos or [CLS]/[SEP]."""
    return self._backend.encode(text)[0]

  def encode_batch(self, texts: list[str]) -> list[list[int]]:
    """Token ids of each text (tokenizer.json's run in parallel)."""
    return self._backend.encode_batch(texts)

  def encode_with_offsets(self, text: str) -> tuple[list[int], list[tuple[int, int]]]:
    """Token ids and each token's (start, end) character span in `text` (for QA)."""
    return self._backend.encode(text)

  def decode(self, ids) -> str:
    """The text of `ids` (a list or array), skipping padding (unless pad is eos)."""
    pad = self._ids.get("pad")
    skip = {pad} - {self._ids.get("eos")}
    return self._backend.decode([int(i) for i in np.asarray(ids).reshape(-1) if i not in skip])

  def id_to_piece(self, token_id: int) -> str:
    """The vocabulary piece of one id ("##", "Ġ" and "▁" mark word boundaries)."""
    return self._backend.id_to_token(token_id) or ""

  def save(self, folder: str | os.PathLike) -> None:
    """Copies the tokenizer's files into `folder`: load_tokenizer and AutoTokenizer read them."""
    for path in self.files:
      target = pathlib.Path(folder) / (_saved_name(path) if path == self.path else path.name)
      if not (target.exists() and target.samefile(path)):
        shutil.copyfile(path, target)

  def word_starts(self) -> np.ndarray:
    """[vocab_size] bool: the piece begins a word.

    WordPiece: not a "##" continuation; byte-level BPE: starts with "Ġ" (a
    space); SentencePiece-style: starts with "▁".
    """
    pieces = [self.id_to_piece(i) for i in range(self.vocab_size)]
    if self.kind == "wordpiece":
      prefix = self._backend.continuation
      return np.array([not p.startswith(prefix) for p in pieces], bool)
    mark = "\u0120" if self.kind == "bytelevel" else "\u2581"
    return np.array([p.startswith(mark) for p in pieces], bool)


# BERT code and tests know the class by its first name.
WordPieceTokenizer = HFTokenizer


def is_trellis_model(path: pathlib.Path) -> bool:
  """Whether a SentencePiece file holds Trellis' RESERVED_PIECES at their fixed ids.

  An unreadable file counts as Trellis': its `Tokenizer` says what is wrong.
  """
  sp = spm.SentencePieceProcessor()
  try:
    sp.LoadFromSerializedProto(path.read_bytes())
  except (RuntimeError, OSError):
    return True
  return sp.get_piece_size() > len(RESERVED_PIECES) and all(
      sp.id_to_piece(i) == piece for i, piece in enumerate(RESERVED_PIECES))


def load_tokenizer(path: str | os.PathLike):
  """The tokenizer at `path`, whatever its kind.

  A SentencePiece `.model` with Trellis' reserved pieces (a workdir's
  `tokenizer.model`) is Trellis' `Tokenizer`; anything else `HFTokenizer`
  loads (see MAIN_FILES; a folder's first one wins) is an `HFTokenizer`.

  Raises:
    DataError: `path` holds no tokenizer, or an invalid one.
  """
  path = _main_file(pathlib.Path(path).expanduser())
  if path.suffix == ".model":
    return Tokenizer(path) if is_trellis_model(path) else HFTokenizer(path)
  if path.name.endswith(".json") or path.suffix == ".txt":
    return HFTokenizer(path)
  raise DataError(f"{path}: unknown tokenizer file (expected one of {', '.join(MAIN_FILES)})")
