"""Tests of research/data/hf_tokenizer.py on tiny tokenizers built here (no network).

Each family's folder holds what its hub folder holds: a tokenizer.json built
with `tokenizers` trainers the way the family's is laid out (or a
SentencePiece model trained with `sentencepiece`), and a
tokenizer_config.json naming its special tokens as the hub's does. Where
transformers is installed, its AutoTokenizer must read our saved copy of
each folder and give the same ids as we do.
"""

import contextlib
import io
import json
import random

import pytest
import sentencepiece as spm
import tokenizers
from tokenizers import decoders, models, normalizers, pre_tokenizers, processors, trainers

from research import generate
from research.data import hf_tokenizer, rows
from research.data import tokenizer as trellis
from research.errors import DataError
from research.objectives.base import Vocab

TRICKY = ["The quick brown fox jumps over the lazy dog.", "Hello world, hello there!",
          "Café naïve résumé über straße", "東京は日本の首都です。", "emoji 🙂 and 👍 here",
          "line one\nline two\n\n  indented", "Numbers 12345 and 67890 UPPER lower",
          "tabs\tand  double  spaces"]
TEXTS = ["Hello world", "  two leading spaces", " one leading space", "Café naïve résumé",
         "東京は日本の首都です", "emoji 🙂👍🏽 ok", "line one\nline two\n\n  indented",
         "tabs\tand  double  spaces", "trailing space ", "UPPER lower 12345", "unseen ℵ ∂ ƒ"]
LLAMA_SPECIALS = ["<unk>", "<s>", "</s>"]
BYTES = [f"<0x{i:02X}>" for i in range(256)]
SENTINELS = [f"<extra_id_{i}>" for i in range(4)]


def corpus() -> list[str]:
  """Some 300 lines: made-up words, so the trainers find merges, and the tricky text."""
  rng = random.Random(0)
  syllables = ["ka", "lo", "mi", "ne", "ru", "sa", "to", "vi", "the", "ing", "and", "er", "st"]
  words = ["".join(rng.choices(syllables, k=rng.randint(1, 3))) for _ in range(300)]
  return [" ".join(rng.choices(words, k=12)) for _ in range(200)] + TRICKY * 10


CORPUS = corpus()


def added(content: str) -> dict:
  """A special token as transformers writes it into tokenizer_config.json."""
  return {"__type": "AddedToken", "content": content, "lstrip": False, "normalized": False,
          "rstrip": False, "single_word": False, "special": True}


# One builder per family: (tokenizers.Tokenizer, tokenizer_config.json).


def gpt2():
  tok = tokenizers.Tokenizer(models.BPE())
  tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
  tok.decoder = decoders.ByteLevel()
  tok.post_processor = processors.ByteLevel(trim_offsets=False)
  tok.train_from_iterator(CORPUS, trainers.BpeTrainer(
      vocab_size=400, special_tokens=["<|endoftext|>"], show_progress=False,
      initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
  return tok, {"tokenizer_class": "GPT2Tokenizer", "bos_token": "<|endoftext|>",
               "eos_token": "<|endoftext|>", "unk_token": "<|endoftext|>",
               "add_prefix_space": False, "model_max_length": 1024}


def llama():
  """Llama-2 / Mistral: Metaspace BPE whose bytes <0x00>..<0xFF> follow <unk>, <s>, </s>."""
  tok = tokenizers.Tokenizer(models.BPE(unk_token="<unk>", byte_fallback=True, fuse_unk=True))
  tok.pre_tokenizer = pre_tokenizers.Metaspace(prepend_scheme="first", split=True)
  tok.train_from_iterator(CORPUS, trainers.BpeTrainer(
      vocab_size=500, special_tokens=LLAMA_SPECIALS + BYTES, show_progress=False))
  spec = json.loads(tok.to_str())  # the bytes are ordinary pieces, not added tokens
  spec["added_tokens"] = [t for t in spec["added_tokens"] if t["content"] in LLAMA_SPECIALS]
  tok = tokenizers.Tokenizer.from_str(json.dumps(spec))
  tok.pre_tokenizer = pre_tokenizers.Metaspace(prepend_scheme="first", split=False)
  tok.decoder = decoders.Sequence([decoders.Replace("\u2581", " "), decoders.ByteFallback(),
                                   decoders.Fuse(), decoders.Strip(" ", 1, 0)])
  return tok, {"tokenizer_class": "LlamaTokenizer", "bos_token": added("<s>"),
               "eos_token": added("</s>"), "unk_token": added("<unk>"), "pad_token": None,
               "add_bos_token": True, "add_eos_token": False, "legacy": False}


def t5():
  """T5: Unigram, <pad> </s> <unk> first, the sentinels last with <extra_id_0> the highest."""
  tok = tokenizers.Tokenizer(models.Unigram())
  metaspace = dict(replacement="\u2581", prepend_scheme="always", split=True)
  tok.pre_tokenizer = pre_tokenizers.Sequence([pre_tokenizers.WhitespaceSplit(),
                                               pre_tokenizers.Metaspace(**metaspace)])
  tok.decoder = decoders.Metaspace(**metaspace)
  tok.train_from_iterator(CORPUS, trainers.UnigramTrainer(
      vocab_size=300, special_tokens=["<pad>", "</s>", "<unk>"], unk_token="<unk>",
      show_progress=False))
  spec = json.loads(tok.to_str())
  spec["model"]["vocab"] += [[s, 0.0] for s in reversed(SENTINELS)]
  tok = tokenizers.Tokenizer.from_str(json.dumps(spec))
  tok.add_special_tokens(list(reversed(SENTINELS)))
  return tok, {"tokenizer_class": "T5Tokenizer", "eos_token": "</s>", "pad_token": "<pad>",
               "unk_token": "<unk>", "extra_ids": 4, "additional_special_tokens": SENTINELS}


def bert():
  tok = tokenizers.Tokenizer(models.WordPiece(unk_token="[UNK]"))
  tok.normalizer = normalizers.BertNormalizer(lowercase=True)
  tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
  tok.decoder = decoders.WordPiece()
  tok.train_from_iterator(CORPUS, trainers.WordPieceTrainer(
      vocab_size=300, special_tokens=["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"],
      show_progress=False))
  return tok, {"tokenizer_class": "BertTokenizer", "do_lower_case": True, "unk_token": "[UNK]",
               "sep_token": "[SEP]", "pad_token": "[PAD]", "cls_token": "[CLS]",
               "mask_token": "[MASK]", "model_max_length": 512}


def sentencepiece_model(**options) -> bytes:
  model = io.BytesIO()
  spm.SentencePieceTrainer.train(sentence_iterator=iter(CORPUS), model_writer=model,
                                 **{"minloglevel": 2, **options})
  return model.getvalue()


def llama_sp():
  """A Llama-2 folder with only tokenizer.model: BPE, byte fallback, no normalisation."""
  model = sentencepiece_model(
      vocab_size=400, model_type="bpe", byte_fallback=True, unk_id=0, bos_id=1, eos_id=2,
      pad_id=-1, normalization_rule_name="identity", remove_extra_whitespaces=False,
      add_dummy_prefix=True, split_digits=True, allow_whitespace_only_pieces=True,
      character_coverage=0.99)
  return ("tokenizer.model", model), {
      "tokenizer_class": "LlamaTokenizer", "bos_token": "<s>", "eos_token": "</s>",
      "unk_token": "<unk>", "pad_token": None, "legacy": False}


def t5_sp():
  """A T5 folder with only spiece.model: the 4 sentinels come after its pieces."""
  model = sentencepiece_model(vocab_size=200, model_type="unigram", pad_id=0, eos_id=1,
                              unk_id=2, bos_id=-1, character_coverage=0.99)
  return ("spiece.model", model), {
      "tokenizer_class": "T5Tokenizer", "eos_token": "</s>", "pad_token": "<pad>",
      "unk_token": "<unk>", "extra_ids": 4, "additional_special_tokens": SENTINELS}


BUILDERS = {"gpt2": gpt2, "llama": llama, "t5": t5, "bert": bert, "llama_sp": llama_sp,
            "t5_sp": t5_sp}
# The token each attribute names, per family (None: DataError when read).
ROLES = {
    "gpt2": dict(pad="<|endoftext|>", unk="<|endoftext|>", bos="<|endoftext|>",
                 eos="<|endoftext|>", cls="<|endoftext|>", sep="<|endoftext|>", mask=None),
    "llama": dict(pad="</s>", unk="<unk>", bos="<s>", eos="</s>", cls="<s>", sep="</s>",
                  mask=None),
    "t5": dict(pad="<pad>", unk="<unk>", bos="<pad>", eos="</s>", cls="<pad>", sep="</s>",
               mask=None),
    "bert": dict(pad="[PAD]", unk="[UNK]", bos="[CLS]", eos="[SEP]", cls="[CLS]", sep="[SEP]",
                 mask="[MASK]"),
}
ROLES["llama_sp"], ROLES["t5_sp"] = ROLES["llama"], ROLES["t5"]
KINDS = {"gpt2": "bytelevel", "bert": "wordpiece"}
# decode(encode(text)) == text for every text (llama: but a leading space, as in transformers).
LOSSLESS = ("gpt2", "llama_sp")


def write_folder(folder, built, config):
  folder.mkdir(parents=True, exist_ok=True)
  if isinstance(built, tokenizers.Tokenizer):
    built.save(str(folder / "tokenizer.json"))
  else:
    name, model = built
    (folder / name).write_bytes(model)
  (folder / "tokenizer_config.json").write_text(json.dumps(config), encoding="utf-8")
  return folder


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
  root = tmp_path_factory.mktemp("hf")
  return {name: write_folder(root / name, *build()) for name, build in BUILDERS.items()}


@pytest.fixture(scope="module")
def toks(folders):
  return {name: hf_tokenizer.load_tokenizer(folder) for name, folder in folders.items()}


@contextlib.contextmanager
def one_line_error(match):
  """Expects a DataError matching `match`, in one line."""
  with pytest.raises(DataError, match=match) as e:
    yield
  assert "\n" not in str(e.value)


# Special ids


@pytest.mark.parametrize("name", BUILDERS)
def test_special_ids(toks, name):
  tok = toks[name]
  assert isinstance(tok, hf_tokenizer.HFTokenizer)
  assert tok.kind == KINDS.get(name, "sentencepiece")
  for role, token in ROLES[name].items():
    if token is None:
      with one_line_error(f"^{tok.path} has no {role} token: .*; "):
        getattr(tok, f"{role}_id")
    else:
      assert tok.id_to_piece(getattr(tok, f"{role}_id")) == token, role
  expected = {ROLES[name][r] for r in ("pad", "unk", "bos", "eos", "cls", "sep", "mask")}
  assert {tok.id_to_piece(i) for i in tok.special_ids} == (expected - {None}) | (
      set(SENTINELS) if name.startswith("t5") else set())


def test_fixed_ids_of_the_hub_layouts(toks):
  assert (toks["llama_sp"].unk_id, toks["llama_sp"].bos_id, toks["llama_sp"].eos_id) == (0, 1, 2)
  assert (toks["llama"].unk_id, toks["llama"].bos_id, toks["llama"].eos_id) == (0, 1, 2)
  for name in ("t5", "t5_sp"):
    assert (toks[name].pad_id, toks[name].eos_id, toks[name].unk_id, toks[name].bos_id) == (
        0, 1, 2, 0)
  bert = toks["bert"]
  assert (bert.pad_id, bert.unk_id, bert.cls_id, bert.sep_id, bert.mask_id) == (0, 1, 2, 3, 4)


def test_borrowed_roles(toks):
  assert toks["gpt2"].borrowed == {"pad": "eos", "cls": "bos", "sep": "eos"}
  assert toks["llama"].borrowed == toks["llama_sp"].borrowed == {
      "pad": "eos", "cls": "bos", "sep": "eos"}
  assert toks["t5"].borrowed == toks["t5_sp"].borrowed == {"bos": "pad", "cls": "pad", "sep": "eos"}
  assert toks["bert"].borrowed == {"bos": "cls", "eos": "sep"}


@pytest.mark.parametrize("name", ["t5", "t5_sp"])
def test_t5_sentinels_in_order(toks, name):
  tok = toks[name]
  assert [tok.id_to_piece(i) for i in tok.sentinel_ids] == SENTINELS
  # <extra_id_0> has the highest id: the sentinels count down from the end.
  assert tok.sentinel_ids == tuple(range(tok.vocab_size - 1, tok.vocab_size - 5, -1))
  ids, offsets = tok.encode_with_offsets("fill <extra_id_0> in")
  assert tok.sentinel_ids[0] in ids
  start, end = offsets[ids.index(tok.sentinel_ids[0])]
  assert "fill <extra_id_0> in"[start:end] == "<extra_id_0>"


def test_no_sentinels_elsewhere(toks):
  assert all(toks[n].sentinel_ids == () for n in ("gpt2", "llama", "bert", "llama_sp"))


# Encoding


@pytest.mark.parametrize("name", BUILDERS)
def test_encode_decode(toks, name):
  tok = toks[name]
  encoded = [tok.encode(text) for text in TEXTS]
  assert tok.encode_batch(TEXTS) == encoded
  assert all(0 <= i < tok.vocab_size for ids in encoded for i in ids)
  if name in LOSSLESS:
    assert [tok.decode(ids) for ids in encoded] == TEXTS
  if name == "llama":  # Metaspace "first" drops one leading space, as transformers' does
    assert all(tok.decode(ids) == t for t, ids in zip(TEXTS, encoded) if not t.startswith(" "))
  plain = "hello world"
  assert tok.decode(tok.encode(plain)) == plain
  # Padding is dropped by decode, but eos is not where it pads (GPT-2, Llama).
  ids = tok.encode(plain) + [tok.eos_id] + [tok.pad_id] * 2
  pieces = tok.decode(ids)
  assert pieces.startswith(plain) and pieces.count(tok.id_to_piece(tok.eos_id)) == (
      3 if tok.pad_id == tok.eos_id else 1)


@pytest.mark.parametrize("name", BUILDERS)
def test_offsets(toks, name):
  tok = toks[name]
  for text in TEXTS:
    ids, offsets = tok.encode_with_offsets(text)
    assert ids == tok.encode(text) and len(offsets) == len(ids)
    assert all(0 <= s <= e <= len(text) for s, e in offsets), text
    assert [s for s, _ in offsets] == sorted(s for s, _ in offsets), text
    if name in LOSSLESS:  # the spans cover the text (a character's byte pieces share its span)
      covered = {i for s, e in offsets for i in range(s, e)}
      assert covered == set(range(len(text))), text


def test_special_tokens_in_text_are_one_id(toks):
  gpt2 = toks["gpt2"]
  assert gpt2.eos_id in gpt2.encode("one<|endoftext|>two")
  assert toks["bert"].mask_id in toks["bert"].encode("a [MASK] b")


@pytest.mark.parametrize("name", BUILDERS)
def test_word_starts(toks, name):
  tok = toks[name]
  starts = tok.word_starts()
  assert starts.shape == (tok.vocab_size,) and starts.dtype == bool
  pieces = [tok.id_to_piece(i) for i in range(tok.vocab_size)]
  rule = {"wordpiece": lambda p: not p.startswith("##"),
          "bytelevel": lambda p: p.startswith("\u0120"),
          "sentencepiece": lambda p: p.startswith("\u2581")}[tok.kind]
  assert starts.tolist() == [rule(p) for p in pieces]
  assert starts.any() and not starts.all()


# Save, load, and transformers


@pytest.mark.parametrize("name", BUILDERS)
def test_save_round_trip(toks, name, tmp_path):
  tok = toks[name]
  tok.save(tmp_path)
  assert sorted(p.name for p in tmp_path.iterdir()) == sorted(f.name for f in tok.files)
  again = hf_tokenizer.load_tokenizer(tmp_path)
  assert type(again) is type(tok) and again.kind == tok.kind
  assert again.fingerprint == tok.fingerprint and again.special_ids == tok.special_ids
  assert again.encode_batch(TEXTS) == tok.encode_batch(TEXTS)
  assert again.sentinel_ids == tok.sentinel_ids and again.vocab_size == tok.vocab_size


@pytest.mark.parametrize("name", BUILDERS)
def test_transformers_reads_the_copy_alike(toks, name, tmp_path):
  transformers = pytest.importorskip("transformers", reason="needs transformers (the parity extra)")
  tok = toks[name]
  tok.save(tmp_path)
  theirs = transformers.AutoTokenizer.from_pretrained(str(tmp_path))
  texts = TEXTS
  if name == "llama_sp":
    # transformers 5 converts tokenizer.model to a Metaspace pre-tokenizer that puts
    # no dummy prefix before a leading space; SentencePiece (what Llama-2 was trained
    # with, and its hub tokenizer.json) does.
    texts = [t for t in TEXTS if not t[:1].isspace()]
  for text in texts:
    assert tok.encode(text) == theirs.encode(text, add_special_tokens=False), text
  for role in ("pad", "unk", "bos", "eos", "mask", "cls", "sep"):
    their_id = getattr(theirs, f"{role}_token_id")
    if their_id is not None:  # transformers has no pad for GPT-2 or Llama, no bos for T5
      assert getattr(tok, f"{role}_id") == their_id, role
  assert list(tok.sentinel_ids) == [theirs.convert_tokens_to_ids(s) for s in SENTINELS
                                    if name.startswith("t5")]
  if name in LOSSLESS:
    assert [tok.decode(tok.encode(t)) for t in texts] == [
        theirs.decode(theirs.encode(t, add_special_tokens=False)) for t in texts]


def trellis_model(folder):
  """A tokenizer.model with Trellis' reserved pieces (what a Trellis workdir holds)."""
  folder.mkdir(parents=True, exist_ok=True)
  options = dict(trellis._TRAINER_OPTIONS, vocab_size=trellis.NUM_RESERVED_PIECES + 60,
                 character_coverage=0.99)
  (folder / "tokenizer.model").write_bytes(sentencepiece_model(**options))
  return folder / "tokenizer.model"


def test_load_tokenizer_picks_the_class(folders, toks, tmp_path):
  model = trellis_model(tmp_path / "workdir")
  assert isinstance(hf_tokenizer.load_tokenizer(model), trellis.Tokenizer)
  assert isinstance(hf_tokenizer.load_tokenizer(model.parent), trellis.Tokenizer)
  llama_model = folders["llama_sp"] / "tokenizer.model"
  assert isinstance(hf_tokenizer.load_tokenizer(llama_model), hf_tokenizer.HFTokenizer)
  # A hub Llama folder holds tokenizer.json and tokenizer.model: tokenizer.json wins.
  both = write_folder(tmp_path / "both", *llama())
  (both / "tokenizer.model").write_bytes(llama_model.read_bytes())
  assert hf_tokenizer.load_tokenizer(both).path == both / "tokenizer.json"
  assert hf_tokenizer.load_tokenizer(folders["gpt2"] / "tokenizer.json").kind == "bytelevel"


def test_gpt2_vocab_and_merges_files(folders, toks, tmp_path):
  gpt2 = toks["gpt2"]
  tokenizers.Tokenizer.from_file(str(gpt2.path)).model.save(str(tmp_path))  # vocab.json, merges.txt
  (tmp_path / "tokenizer_config.json").write_bytes(
      (folders["gpt2"] / "tokenizer_config.json").read_bytes())
  for path in (tmp_path, tmp_path / "vocab.json", tmp_path / "merges.txt"):
    tok = hf_tokenizer.load_tokenizer(path)
    assert tok.kind == "bytelevel" and tok.encode_batch(TEXTS) == gpt2.encode_batch(TEXTS)
    assert (tok.eos_id, tok.special_ids) == (gpt2.eos_id, gpt2.special_ids)
    assert tok.encode("a<|endoftext|>b") == gpt2.encode("a<|endoftext|>b")
  (tmp_path / "merges.txt").unlink()
  with one_line_error("has no merges.txt"):
    hf_tokenizer.load_tokenizer(tmp_path / "vocab.json")


def test_bert_vocab_txt(folders, toks, tmp_path):
  bert = toks["bert"]
  vocab = [bert.id_to_piece(i) for i in range(bert.vocab_size)]
  (tmp_path / "vocab.txt").write_text("\n".join(vocab) + "\n", encoding="utf-8")
  (tmp_path / "tokenizer_config.json").write_bytes(
      (folders["bert"] / "tokenizer_config.json").read_bytes())
  tok = hf_tokenizer.load_tokenizer(tmp_path / "vocab.txt")
  assert tok.kind == "wordpiece" and tok.special_ids == bert.special_ids
  assert tok.encode_batch(TEXTS + ["a [MASK] b"]) == bert.encode_batch(TEXTS + ["a [MASK] b"])
  (tmp_path / "vocab.txt").write_text("\n".join(v for v in vocab if v != "[MASK]") + "\n")
  (tmp_path / "tokenizer_config.json").unlink()
  tok = hf_tokenizer.load_tokenizer(tmp_path)
  assert tok.pad_id == 0 and tok.cls_id == 2
  with one_line_error(r"vocab.txt has no mask token: masked LM needs one; use a tokenizer"):
    _ = tok.mask_id


# Missing special ids fail where they are read, in one line


def bare_bytelevel(folder):
  """A byte-level BPE with no special token at all, and no tokenizer_config.json."""
  tok = tokenizers.Tokenizer(models.BPE())
  tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
  tok.decoder = decoders.ByteLevel()
  tok.train_from_iterator(CORPUS, trainers.BpeTrainer(
      vocab_size=300, show_progress=False, initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
  folder.mkdir()
  tok.save(str(folder / "tokenizer.json"))
  return folder


def test_every_missing_id_is_one_line_when_read(tmp_path):
  tok = hf_tokenizer.load_tokenizer(bare_bytelevel(tmp_path / "bare"))  # loading is fine
  assert tok.sentinel_ids == () and tok.special_ids == ()
  assert tok.decode(tok.encode("Hello world")) == "Hello world"
  for role, fix in [("pad", "set pad_token"), ("unk", "set unk_token"), ("bos", "set bos_token"),
                    ("eos", "set eos_token"), ("mask", "masked LM needs one"),
                    ("cls", r"set cls_token \(or bos_token\)"),
                    ("sep", r"set sep_token \(or eos_token\)")]:
    with one_line_error(f"^{tok.path} has no {role} token: .*{fix}"):
      getattr(tok, f"{role}_id")


def test_a_named_token_the_vocabulary_lacks(folders, tmp_path):
  folder = tmp_path / "gpt2"
  folder.mkdir()
  (folder / "tokenizer.json").write_bytes((folders["gpt2"] / "tokenizer.json").read_bytes())
  config = dict(gpt2()[1], mask_token="<mask>")
  (folder / "tokenizer_config.json").write_text(json.dumps(config))
  tok = hf_tokenizer.load_tokenizer(folder)
  assert tok.eos_id == tok.pad_id
  with one_line_error(r"tokenizer_config.json names mask_token '<mask>', which .*tokenizer.json "
                      "does not hold; fix the name"):
    _ = tok.mask_id


def test_special_tokens_map_fills_what_the_config_leaves_out(folders, tmp_path):
  folder = tmp_path / "llama"
  folder.mkdir()
  (folder / "tokenizer.json").write_bytes((folders["llama"] / "tokenizer.json").read_bytes())
  (folder / "tokenizer_config.json").write_text(json.dumps({"eos_token": "<s>"}))
  (folder / "special_tokens_map.json").write_text(json.dumps(
      {"eos_token": added("</s>"), "pad_token": {"content": "<unk>"}}))
  tok = hf_tokenizer.load_tokenizer(folder)
  assert (tok.eos_id, tok.pad_id, tok.bos_id) == (1, 0, 1)


def test_bad_files_are_one_line(folders, tmp_path):
  with one_line_error("holds no tokenizer"):
    hf_tokenizer.load_tokenizer(tmp_path)
  with one_line_error("does not exist"):
    hf_tokenizer.load_tokenizer(tmp_path / "nothing.json")
  (tmp_path / "tokenizer.json").write_text("{not json")
  with one_line_error("cannot load tokenizer .*tokenizer.json: "):
    hf_tokenizer.load_tokenizer(tmp_path)
  (tmp_path / "tokenizer.json").write_bytes((folders["gpt2"] / "tokenizer.json").read_bytes())
  (tmp_path / "tokenizer_config.json").write_text("{oops")
  with one_line_error("tokenizer_config.json is not valid JSON"):
    hf_tokenizer.load_tokenizer(tmp_path)
  (tmp_path / "spiece.model").write_bytes(b"not a model")
  with one_line_error("spiece.model is not a SentencePiece model"):
    hf_tokenizer.load_tokenizer(tmp_path / "spiece.model")


# What Trellis does with a GPT-2 tokenizer: rows, generation, objectives


def test_gpt2_tokenizer_in_rows_and_generation(toks):
  gpt2 = toks["gpt2"]
  arrays = rows.cls_sep_rows([(gpt2.encode("Hello world"), None)], 16, gpt2)
  length = int(arrays["segment_ids"].sum())
  assert arrays["tokens"][0, 0] == arrays["tokens"][0, length - 1] == gpt2.eos_id
  assert generate.banned_ids(gpt2) == ()  # eos ends outputs; nothing else is special
  vocab = Vocab.from_tokenizer(gpt2)  # no mask token: only masked LM needs one
  assert vocab.eos_id == vocab.pad_id == gpt2.eos_id and vocab.mask_id == -1
  with pytest.raises(DataError, match="has no mask token: masked LM needs one"):
    vocab.need("mask_id")


def test_save_names_the_main_file_as_a_folder_is_read(folders, toks, tmp_path):
  source = tmp_path / "source"
  source.mkdir()
  (source / "llama2.model").write_bytes((folders["llama_sp"] / "tokenizer.model").read_bytes())
  tok = hf_tokenizer.load_tokenizer(source / "llama2.model")
  tok.save(tmp_path)
  again = hf_tokenizer.load_tokenizer(tmp_path)
  assert again.path == tmp_path / "tokenizer.model"
  assert again.fingerprint == tok.fingerprint and again.encode(TEXTS[0]) == tok.encode(TEXTS[0])
  toks["gpt2"].save(folders["gpt2"])  # into its own folder: no file is copied onto itself
  assert hf_tokenizer.load_tokenizer(folders["gpt2"]).fingerprint == toks["gpt2"].fingerprint
