"""The code task's examples, splits and doctest flags, and the python_code_train corpus.

The examples come from the running Python's standard library, so sizes are
checked as shares and bounds rather than pinned. The first run on a machine
also runs the held-out reference doctests once (a few seconds; then cached
under cache_root()/code_task/).
"""

import ast
import hashlib
import json

import pytest

from research import config, execution
from research.data import code, sources, tasks, text
from research.errors import DataError


@pytest.fixture(scope="module")
def splits():
  return code.code_splits()


def _digest(name: str) -> bytes:
  return hashlib.sha256(name.encode()).digest()


def test_examples_are_whole_functions_within_the_limits(splits):
  for example in (e for split in splits.values() for e in split):
    function = ast.parse(example["source"] + "\n" + example["target"]).body[0]
    assert isinstance(function, (ast.FunctionDef, ast.AsyncFunctionDef))
    assert example["qualname"].rpartition(".")[2] == function.name
    assert example["name"] == f"{example['module']}:{example['qualname']}"
    assert ast.get_docstring(function) is not None
    assert example["source"].startswith(("def ", "async def ", "@"))
    assert example["target"].strip() and not example["target"].endswith("\n")
    assert 1 <= example["target"].count("\n") + 1 <= code.BODY_MAX_LINES
    assert len(example["target"]) <= code.BODY_MAX_CHARS
    assert len(example["source"]) <= code.SOURCE_MAX_CHARS


def test_module_and_qualified_names(splits):
  assert code.module_name("json/decoder.py") == "json.decoder"
  assert code.module_name("json/__init__.py") == "json"
  examples = {e["name"]: e for split in splits.values() for e in split}
  fill = examples["textwrap:TextWrapper.fill"]  # a method, dedented to column 0
  assert (fill["module"], fill["qualname"]) == ("textwrap", "TextWrapper.fill")
  assert fill["source"].startswith('def fill(self, text):\n    """fill(text : string)')
  assert fill["source"].endswith('paragraph.\n    """')
  assert fill["target"] == '    return "\\n".join(self.wrap(text))'
  assert "textwrap:dedent" not in examples  # a 49-line body


def test_splits_are_fixed_disjoint_and_ranked_by_name(splits):
  names = {split: {e["name"] for e in examples} for split, examples in splits.items()}
  assert not names["train"] & names["validation"]
  assert not names["train"] & names["test"] and not names["validation"] & names["test"]
  # First 10% of the sha256 ranking is test, the next 10% validation.
  assert max(map(_digest, names["test"])) < min(map(_digest, names["validation"]))
  assert max(map(_digest, names["validation"])) < min(map(_digest, names["train"]))
  total = sum(len(s) for s in splits.values())
  assert total > 3000
  for split in ("validation", "test"):
    assert abs(len(splits[split]) - round(sources.TASK_HELD_OUT_FRACTION * total)) <= 3
  again = code.code_splits()
  assert again == splits and again["test"][0] is not splits["test"][0]  # copies
  assert code.held_out_names() == names["validation"] | names["test"]


def test_held_out_doctest_flags_are_the_sandbox_results(splits):
  for split in ("validation", "test"):
    assert sum(e["doctest"] for e in splits[split]) >= 10
  assert sum(e["doctest"] for e in splits["train"]) > 100
  version = ".".join(map(str, __import__("sys").version_info[:3]))
  cached = list((sources.cache_root() / "code_task").glob(f"doctests-py{version}-*.json"))
  assert cached and all("passed" in json.loads(p.read_text()) for p in cached)
  # A few references pass their doctests again; a wrong body fails them.
  checked = [e for split in ("validation", "test") for e in splits[split] if e["doctest"]][:4]
  jobs = [{"module": e["module"], "qualname": e["qualname"],
           "code": e["source"] + "\n" + e["target"]} for e in checked]
  wrong = dict(jobs[0], code=checked[0]["source"] + "\n    return None")
  assert execution.run_doctests(jobs + [wrong]) == ["passed"] * len(jobs) + ["failed"]


def test_load_task_data_serves_the_code_task(splits):
  d = config.default_config().data
  d.source = "python_code_fns"
  assert tasks.load_task_data("code", d) == tasks.TaskData(splits, None)
  with pytest.raises(DataError, match="is a code dataset, not translation"):
    tasks.load_task_data("translation", d)


def test_code_task_from_files_reads_source_and_target(tmp_path):
  rows = [{"source": f"def f{i}():\n    \"\"\"Return {i}.\"\"\"", "target": f"    return {i}"}
          for i in range(12)]
  path = tmp_path / "train.jsonl"
  path.write_text("".join(json.dumps(r) + "\n" for r in rows))
  d = config.default_config().data
  d.update(dict(source="files", train_files=str(path), cache_dir=str(tmp_path / "cache")))
  data = tasks.load_task_data("code", d)
  examples = [e for s in tasks.SPLITS[:2] for e in data.splits[s]]
  assert sorted(examples, key=str) == sorted(rows, key=str)  # indentation kept
  ast.parse(examples[0]["source"] + "\n" + examples[0]["target"])


def test_python_code_train_leaves_out_every_held_out_function(splits):
  original = sources.corpus_documents("python_code")
  train = code.python_code_train_documents()
  assert len(train) == len(original)
  held_out = code.held_out_names()
  removed = 0
  for (document, definitions), kept in zip(code._stdlib_definitions(), train):  # pylint: disable=protected-access
    for d in definitions:
      if d.example is not None and d.name in held_out:
        assert "\n".join(document.split("\n")[d.start:d.end]) not in kept, d.name
        removed += 1
  assert removed >= len(held_out)
  # Copies elsewhere go too: no held-out module-level function's text is left anywhere.
  corpus = "\n".join(train)
  for e in [e for e in splits["test"] if "." not in e["qualname"]][:100]:
    assert e["source"] + "\n" + e["target"] not in corpus, e["name"]
  share = sum(map(len, train)) / sum(map(len, original))
  assert 0.85 < share < 0.99


def test_python_code_train_is_a_pretraining_source():
  d = config.default_config().data
  d.update(source="python_code_train", eval_fraction=0.05)
  train_docs, eval_docs = text.read_documents(d)
  assert len(train_docs) + len(eval_docs) == len(code.python_code_train_documents())
