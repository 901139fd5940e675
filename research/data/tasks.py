"""Fine-tuning task data: built-in task datasets and local files, split and checked.

`load_task_data(kind, data_cfg)` returns a TaskData whose splits ("train",
"validation", "test") hold plain example dicts:

  classification  {"text": str, "label": int}  (index into label_names)
  qa              SQuAD v1.1: {"id", "context", "question",
                  "answers": {"text": [str, ...], "answer_start": [int, ...]}}
  translation,    {"source": str, "target": str}
  summarization
  code            {"source": str, "target": str, "name", "module", "qualname",
                  "doctest": bool} (data/code.py; from files: source and target)

Built-in datasets (`data.source`), fetched once and cached (data/sources.py):

  | source          | kind           | examples | train  | validation | test  |
  | --------------- | -------------- | -------- | ------ | ---------- | ----- |
  | mr              | classification |    4,000 |  3,200 |        400 |   400 |
  | bbc_topic       | classification |    2,225 |  1,781 |        222 |   222 |
  | bbc_headline    | summarization  |    2,225 |  1,781 |        222 |   222 |
  | kjv_en_es       | translation    |   30,795 | 24,635 |      3,080 | 3,080 |
  | squad_builtin   | qa             |    6,989 |  5,591 |        699 |   699 |
  | python_code_fns | code           |    5,687 |  4,549 |        569 |   569 |

- mr: Pang & Lee sentence polarity (movie review sentences), labels
  ("negative", "positive"), 2,000 each (train 1,588/1,612, validation
  203/197, test 209/191).
- bbc_topic: BBC News article (headline, blank line, body) -> topic, labels
  ("business", "entertainment", "politics", "sports", "tech"); 510, 386, 417,
  511 and 401 articles. 133 bodies occur twice (same topic both times);
  the copies stay in one split.
- bbc_headline: the article body -> its headline.
- kjv_en_es: King James Version verse (English) -> Reina-Valera 1909 verse
  (Spanish), paired by the shared KJV verse numbering and checked with the
  Strong's numbers both texts carry (data/sword.py: 31,102 verses, 18 empty
  in Spanish, 289 dropped as misaligned by versification differences).
- squad_builtin: cloze questions about names in the KJV. Each chapter is cut
  into passages of 3 consecutive verses (the last may be shorter); a passage
  is the context. A name is a run of capitalised words that the KJV never
  writes in lower case ("Moses", "Beer-sheba", "Jesus Christ"; a short list
  such as "Selah" and "Almighty" excluded). In each passage that has a name,
  one occurrence is chosen by the sha256 of the passage; the question is that
  occurrence's verse with the name replaced by a wh-word ("what" after of,
  in, into, from, at, toward, through; "whom" after unto, to, with, by, for,
  against, before, upon, after; otherwise "who") and its final punctuation
  replaced by "?"; the answer is the name at its character offset in the
  passage. Example: "And Judah took a wife for whom his firstborn, whose name
  was Tamar?" -> "Er". The question is thus a near copy of one context verse:
  the set tests span extraction, not paraphrase.
- python_code_fns: a standard-library function's signature and docstring ->
  its body (data/code.py); sizes are those of Python 3.11.7 and change with
  the Python version. Doctest-scored examples (the reference passes the
  docstring's examples in the sandbox): validation 17, test 19 (train: 207
  have `>>>`, not run).

The splits are fixed and independent of the run's seed: examples are ranked
by the sha256 of a key text (mr: the sentence; bbc_*: the article body, so
both BBC tasks share one split; kjv_en_es: the English verse; squad_builtin:
the passage; python_code_fns: the qualified name "module:Class.method"), the
first 10% form the test split, the next 10% validation, the rest train;
examples with the same key stay together, and each split keeps the source
order.

With `data.source = "files"`, `data.train_files`, `data.eval_files`
(validation) and `data.test_files` name jsonl, json, csv or parquet files,
read through HF `datasets`, with columns from `data.text_column`,
`data.label_column`, `data.source_column`, `data.target_column`,
`data.context_column`, `data.question_column`, `data.answers_column` (and an
optional "id"). Without test files the validation split is also the test
split; without validation files 10% of train is held out (same hash ranking)
as validation. QA files may be flat rows in the HF `squad` schema, or the
official nested SQuAD v1.1 JSON ({"data": [{"paragraphs": [...]}]}).
An error about a row names it by its number in the file (the data rows after
a CSV header, the objects of a JSON lines file; in nested SQuAD, the
questions), whichever split it landed in.
"""

import json
from typing import NamedTuple

import datasets

from research.data import code, sources, sword, text
from research.errors import DataError

TASK_KINDS = ("classification", "qa", "translation", "summarization", "code")
BUILTIN_TASKS = {"mr": "classification", "bbc_topic": "classification",
                 "bbc_headline": "summarization", "kjv_en_es": "translation",
                 "squad_builtin": "qa", "python_code_fns": "code"}
SPLITS = ("train", "validation", "test")


class TaskData(NamedTuple):
  """Examples of one fine-tuning task, by split, and its class names."""
  splits: dict[str, list[dict]]  # "train", "validation", "test" -> examples
  label_names: tuple[str, ...] | None  # classification only


def load_task_data(kind: str, data_cfg) -> TaskData:
  """The train/validation/test examples of task `kind` from `data_cfg.source`.

  Raises:
    DataError: an unknown kind or source, a built-in source of another kind,
      or data that fails the checks of its kind (one line naming the culprit).
  """
  if kind not in TASK_KINDS:
    raise DataError(f"unknown task kind {kind!r}; expected one of {', '.join(TASK_KINDS)}")
  source = data_cfg.source
  if source == "files":
    return _load_files(kind, data_cfg)
  if source not in BUILTIN_TASKS:
    raise DataError(f"data.source={source!r} is not a built-in task dataset "
                    f"({', '.join(BUILTIN_TASKS)}) or 'files'")
  if BUILTIN_TASKS[source] != kind:
    raise DataError(f"data.source={source!r} is a {BUILTIN_TASKS[source]} dataset, "
                    f"not {kind}")
  return _BUILTIN_LOADERS[source](data_cfg.cache_dir)


def _mr(cache_dir: str) -> TaskData:
  examples = [{"text": s, "label": label} for s, label in sources.mr_sentences(cache_dir)]
  return TaskData(sources.fixed_splits(examples, lambda e: e["text"]), ("negative", "positive"))


def _bbc(cache_dir: str) -> tuple[list[tuple[str, str, str]], dict[str, list[int]]]:
  """The articles and, per split, the indices of its articles."""
  articles = sources.bbc_articles(cache_dir)
  indexed = [{"i": i, "body": body} for i, (_, _, body) in enumerate(articles)]
  splits = sources.fixed_splits(indexed, lambda e: e["body"])
  return articles, {name: [e["i"] for e in split] for name, split in splits.items()}


def _bbc_topic(cache_dir: str) -> TaskData:
  articles, indices = _bbc(cache_dir)
  labels = sources.BBC_TOPICS
  splits = {name: [{"text": f"{articles[i][1]}\n\n{articles[i][2]}",
                    "label": labels.index(articles[i][0])} for i in split]
            for name, split in indices.items()}
  return TaskData(splits, labels)


def _bbc_headline(cache_dir: str) -> TaskData:
  articles, indices = _bbc(cache_dir)
  splits = {name: [{"source": articles[i][2], "target": articles[i][1]} for i in split]
            for name, split in indices.items()}
  return TaskData(splits, None)


def _kjv_en_es(cache_dir: str) -> TaskData:
  pairs = sword.aligned_verses(sources.sword_module(sources.SWORD_KJV, cache_dir),
                               sources.sword_module(sources.SWORD_SPARV, cache_dir))
  examples = [{"source": english, "target": spanish} for _, english, spanish in pairs]
  return TaskData(sources.fixed_splits(examples, lambda e: e["source"]), None)


def _squad_builtin(cache_dir: str) -> TaskData:
  markup = sword.read_verses(sources.sword_module(sources.SWORD_KJV, cache_dir))
  examples = sword.cloze_questions({i: sword.verse_text(m) for i, m in markup.items()})
  return TaskData(sources.fixed_splits(examples, lambda e: e["context"]), None)


def _python_code_fns(cache_dir: str) -> TaskData:
  return TaskData(code.code_splits(cache_dir), None)


_BUILTIN_LOADERS = {"mr": _mr, "bbc_topic": _bbc_topic, "bbc_headline": _bbc_headline,
                    "kjv_en_es": _kjv_en_es, "squad_builtin": _squad_builtin,
                    "python_code_fns": _python_code_fns}


def _load_files(kind: str, d) -> TaskData:
  """Reads, splits and checks the files of data.train/eval/test_files."""
  if not d.train_files:
    raise DataError("data.source=files needs data.train_files")
  given = {"train": d.train_files, "validation": d.eval_files, "test": d.test_files}
  raw = {split: _read_table(patterns, kind, d.cache_dir, split)
         for split, patterns in given.items() if patterns}
  # The file row number of each row, so that an error names the row as it is in its
  # file whichever split it lands in (1-based after a CSV header; with several files,
  # counted on through them in order).
  numbers = {split: list(range(1, len(rows) + 1)) for split, rows in raw.items()}
  where = {split: f"{split} split ({patterns})" for split, patterns in given.items()}
  if "validation" not in raw:
    rows = raw["train"]
    if len(rows) < 2:
      raise DataError(f"{where['train']} has {len(rows)} row(s): cannot hold out "
                      "a validation split; add rows or set data.eval_files")
    held_out = max(1, round(sources.TASK_HELD_OUT_FRACTION * len(rows)))
    parts = sources.hash_split(  # of row indices, ranked by the rows themselves
        list(range(len(rows))), lambda i: json.dumps(rows[i], sort_keys=True, default=str),
        (held_out,))
    for split, indices in zip(("validation", "train"), parts):
      raw[split], numbers[split] = [rows[i] for i in indices], [i + 1 for i in indices]
    where["validation"] = f"validation split (held out of {given['train']})"
  if "test" not in raw:
    raw["test"], numbers["test"], where["test"] = (raw["validation"], numbers["validation"],
                                                   where["validation"])
  label_names = None
  if kind == "classification":
    label_names = _label_names(raw["train"], d, where["train"])
  splits = {}
  for split in SPLITS:
    examples = _examples(kind, raw[split], numbers[split], d, where[split], label_names)
    if not examples:
      raise DataError(f"{where[split]} has no usable example"
                      + (" (empty source or target strings are dropped)"
                         if kind in ("translation", "summarization", "code") else ""))
    splits[split] = examples
  return TaskData(splits, label_names)


def _read_table(patterns: str, kind: str, cache_dir: str, split: str) -> list[dict]:
  """The rows of the files matching `patterns`, through HF `datasets`."""
  files = text.expand_globs(patterns)
  builder = text._check_files(files)  # pylint: disable=protected-access
  if builder == "text":
    raise DataError(f"{patterns}: task data needs .jsonl, .json, .csv or .parquet files")
  text._quiet_datasets()  # pylint: disable=protected-access
  options = {}
  if kind == "qa" and builder == "json" and all(_is_nested_squad(f) for f in files):
    options = {"field": "data"}
  try:
    dataset = datasets.load_dataset(builder, data_files=files, split="train",
                                    cache_dir=str(sources.cache_root(cache_dir) / "hf_datasets"),
                                    **options)
  except Exception as e:  # datasets raises many types for malformed files
    if "corresponds to no data" in str(e):  # e.g. a CSV with only its header
      raise DataError(f"{split} split ({patterns}) has no rows") from None
    raise DataError(f"cannot read {split} files {patterns!r}: "
                    f"{text._one_line(e)}") from None  # pylint: disable=protected-access
  rows = dataset.to_list()  # a CSV's data rows, a JSON lines file's objects, in file order
  if options:  # official SQuAD JSON: articles -> paragraphs -> questions; row n is question n
    rows = [{"id": qa.get("id"), "context": paragraph["context"],
             "question": qa.get("question"), "answers": qa.get("answers")}
            for article in rows for paragraph in article.get("paragraphs") or []
            for qa in paragraph.get("qas") or []]
  return rows


def _is_nested_squad(path: str) -> bool:
  """Whether a .json file is the official SQuAD layout {"data": [...]}."""
  with open(path, encoding="utf-8") as f:
    head = f.read(4096).lstrip()
  if not head.startswith("{"):
    return False
  try:
    with open(path, encoding="utf-8") as f:
      document = json.load(f)
  except json.JSONDecodeError:
    return False  # JSON lines in a .json file: one object per line
  return isinstance(document, dict) and isinstance(document.get("data"), list)


def _column(rows: list[dict], name: str, field: str, where: str) -> None:
  """Checks that the rows have column `name` (config field `field`)."""
  if rows and name not in rows[0]:
    raise DataError(f"{where} has no column {name!r} ({field}); "
                    f"columns: {', '.join(rows[0])}")


def _label_key(label) -> str | None:
  """A label's name as written in the files; None when missing."""
  if label is None or (isinstance(label, str) and not label.strip()):
    return None
  if isinstance(label, float) and label.is_integer():  # CSV readers may give 1.0
    label = int(label)
  return str(label).strip()


def _label_names(rows: list[dict], d, where: str) -> tuple[str, ...]:
  """data.labels, else the sorted distinct train labels (numerically if all ints)."""
  if d.labels:
    names = tuple(name.strip() for name in d.labels.split(",") if name.strip())
    if len(set(names)) != len(names):
      raise DataError(f"data.labels={d.labels!r} repeats a label")
    return names
  _column(rows, d.label_column, "data.label_column", where)
  found = {key for key in map(_label_key, (row[d.label_column] for row in rows)) if key}
  if len(found) < 2:
    raise DataError(f"{where}: column {d.label_column!r} has {len(found)} distinct "
                    "label(s); classification needs at least 2 (or set data.labels)")
  numeric = all(key.lstrip("-").isdigit() for key in found)
  return tuple(sorted(found, key=int if numeric else str))


def _examples(kind: str, rows: list[dict], numbers: list[int], d, where: str,
              label_names: tuple[str, ...] | None) -> list[dict]:
  """The examples of `rows`, whose file row numbers are `numbers` (named by errors)."""
  if kind == "classification":
    return _classification(rows, numbers, d, where, label_names)
  if kind == "qa":
    return _qa(rows, numbers, d, where)
  for column, field in ((d.source_column, "data.source_column"),
                        (d.target_column, "data.target_column")):
    _column(rows, column, field, where)
  clean = str.rstrip if kind == "code" else str.strip  # a body's indentation is code
  return [{"source": clean(row[d.source_column]), "target": clean(row[d.target_column])}
          for row in rows if _nonempty(row[d.source_column]) and _nonempty(row[d.target_column])]


def _nonempty(value) -> bool:
  return isinstance(value, str) and bool(value.strip())


def _classification(rows, numbers, d, where, label_names) -> list[dict]:
  _column(rows, d.text_column, "data.text_column", where)
  _column(rows, d.label_column, "data.label_column", where)
  index = {name: i for i, name in enumerate(label_names)}
  examples = []
  for number, row in zip(numbers, rows):
    if not _nonempty(row[d.text_column]):
      continue
    key = _label_key(row[d.label_column])
    if key is None:
      raise DataError(f"{where} row {number}: label is missing")
    if key not in index:
      raise DataError(f"{where} row {number}: label {key!r} is not in the label set "
                      f"({', '.join(label_names)}); set data.labels or fix the row")
    examples.append({"text": row[d.text_column], "label": index[key]})
  return examples


def _qa(rows, numbers, d, where) -> list[dict]:
  for column, field in ((d.context_column, "data.context_column"),
                        (d.question_column, "data.question_column"),
                        (d.answers_column, "data.answers_column")):
    _column(rows, column, field, where)
  examples = []
  for number, row in zip(numbers, rows):
    name = f"{where} row {number}" + (f" (id {row['id']})" if row.get("id") is not None else "")
    context, question = row[d.context_column], row[d.question_column]
    if not _nonempty(context) or not _nonempty(question):
      raise DataError(f"{name}: empty context or question")
    texts, starts = _answers(row[d.answers_column], name)
    for answer, start in zip(texts, starts):
      if context[start:start + len(answer)] != answer:
        raise DataError(f"{name}: answer {answer!r} is not at answer_start {start} of the "
                        f"context (found {context[start:start + len(answer)]!r})")
    examples.append({"id": str(row["id"]) if row.get("id") is not None else f"{number}",
                     "context": context, "question": question,
                     "answers": {"text": texts, "answer_start": starts}})
  return examples


def _answers(value, name: str) -> tuple[list[str], list[int]]:
  """(texts, starts) of an answers entry: a dict of lists, a list of dicts or JSON."""
  if isinstance(value, str):  # CSV cells hold the answers as JSON text
    try:
      value = json.loads(value)
    except json.JSONDecodeError:
      raise DataError(f"{name}: answers is not JSON: {value[:60]!r}") from None
  if isinstance(value, list):  # official SQuAD: [{"text": ..., "answer_start": ...}]
    value = {"text": [a.get("text") for a in value if isinstance(a, dict)],
             "answer_start": [a.get("answer_start") for a in value if isinstance(a, dict)]}
  if not isinstance(value, dict) or not value.get("text"):
    raise DataError(f"{name}: answers is missing or empty; expected "
                    '{"text": [...], "answer_start": [...]}')
  texts, starts = list(value["text"]), list(value.get("answer_start") or [])
  if len(texts) != len(starts):
    raise DataError(f"{name}: {len(texts)} answer text(s) but {len(starts)} answer_start(s)")
  for answer, start in zip(texts, starts):
    if not _nonempty(answer) or not isinstance(start, int) or isinstance(start, bool):
      raise DataError(f"{name}: answer {answer!r} at {start!r} needs a non-empty text "
                      "and an integer answer_start")
  return texts, starts
