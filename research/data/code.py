"""The code task: write a standard-library function's body from its signature and docstring.

Examples come from the files of the `python_code` corpus (sources.stdlib_files:
the running Python's standard library, no test suites). Each module-level
function, and each method of a module-level class (nested classes included),
that has a docstring is one example; functions defined inside functions are
not. An example is a dict:

  source    the decorators, the `def` line(s) and the docstring statement,
            dedented so the `def` starts at column 0 (the prompt);
  target    the body after the docstring, same dedent (4 spaces, typically),
            leading blank lines dropped, no trailing newline;
  name      "module:qualname", e.g. "json.decoder:JSONDecoder.decode";
  module    "json.decoder" (`pkg/__init__.py` is `pkg`);
  qualname  "JSONDecoder.decode";
  doctest   whether the docstring's `>>>` examples score a completion: in
            validation and test, true only where the reference body passes
            them in the sandbox (research/execution.py); in train, whether
            the docstring has `>>>` at all (not run).

`source + "\\n" + target` is the whole function and always parses. Kept are
bodies of 1 to BODY_MAX_LINES lines and at most BODY_MAX_CHARS characters,
with a description (source) of at most SOURCE_MAX_CHARS characters; bodies
that are only `pass`, `...` or `raise NotImplementedError` are dropped, and
so is a function whose whole text repeats an earlier example's (a copy in a
second module would otherwise leak across splits).

Splits are fixed as for the other built-in tasks (data/tasks.py): ranked by
the sha256 of `name`, first 10% test, next 10% validation, the rest train;
all definitions of one name (a property's getter and setter) share a split.
The reference doctests are run once per machine and Python version, their
results cached under `cache_root()/code_task/`.

`python_code_train_documents()` is the `python_code` corpus without the lines
of every validation and test function (decorators to last line; every
definition of a held-out name, and any copy of a held-out function's text),
so a model pretrained on it has never seen a function it is scored on: on
Python 3.11.7, 1,155 definitions and 565,168 of 12,117,233 characters (4.7%)
go, from 731 documents.
"""

import ast
import functools
import hashlib
import json
import os
import sys
import textwrap
from typing import NamedTuple

from research import execution
from research.data import sources

BODY_MAX_LINES = 30
BODY_MAX_CHARS = 1200
SOURCE_MAX_CHARS = 1500
DOCTEST_TIMEOUT_S = 10.0  # per reference function, in the sandbox


class _Definition(NamedTuple):
  """One function definition of a file: its qualified name and line span."""
  name: str  # "module:qualname"
  start: int  # 0-based index of its first line (first decorator)
  end: int  # 0-based index one past its last line
  example: dict | None  # the example it makes, None when filtered out


def module_name(relative: str) -> str:
  """The import name of a stdlib file: `json/decoder.py` -> `json.decoder`."""
  parts = relative.removesuffix(".py").split("/")
  if parts[-1] == "__init__" and len(parts) > 1:
    parts = parts[:-1]
  return ".".join(parts)


def _is_trivial(body: list[ast.stmt]) -> bool:
  """Whether the statements are only `pass`, `...` or `raise NotImplementedError`."""
  def trivial(statement):
    if isinstance(statement, ast.Pass):
      return True
    if isinstance(statement, ast.Expr) and isinstance(statement.value, ast.Constant):
      return statement.value.value is Ellipsis
    if isinstance(statement, ast.Raise) and statement.exc is not None:
      exc = statement.exc.func if isinstance(statement.exc, ast.Call) else statement.exc
      return isinstance(exc, ast.Name) and exc.id == "NotImplementedError"
    return False
  return all(map(trivial, body))


def _example(node: ast.FunctionDef | ast.AsyncFunctionDef, lines: list[str], start: int,
             module: str, qualname: str) -> dict | None:
  """The example of one definition, or None when it fails a filter."""
  body = node.body
  docstring = body[0] if isinstance(body[0], ast.Expr) else None
  if (docstring is None or not isinstance(docstring.value, ast.Constant)
      or not isinstance(docstring.value.value, str) or len(body) < 2
      or body[1].lineno <= docstring.end_lineno or _is_trivial(body[1:])):
    return None
  dedented = textwrap.dedent("\n".join(lines[start:node.end_lineno])).split("\n")
  cut = docstring.end_lineno - start
  source = "\n".join(dedented[:cut])
  target_lines = dedented[cut:]
  while target_lines and not target_lines[0].strip():
    target_lines.pop(0)
  target = "\n".join(target_lines)
  if (not 1 <= len(target_lines) <= BODY_MAX_LINES or len(target) > BODY_MAX_CHARS
      or len(source) > SOURCE_MAX_CHARS):
    return None
  try:
    ast.parse(source + "\n" + target)
  except (SyntaxError, ValueError):  # a docstring line at column 0 defeats the dedent
    return None
  return {"source": source, "target": target, "name": f"{module}:{qualname}",
          "module": module, "qualname": qualname, "doctest": ">>>" in docstring.value.value}


def _definitions(document: str, module: str) -> list[_Definition]:
  """The functions of a module and of its (nested) classes, in source order."""
  try:
    tree = ast.parse(document)
  except (SyntaxError, ValueError):
    return []
  lines = document.split("\n")  # the lines ast counts (read_text made every newline \n)
  found = []

  def visit(statements: list[ast.stmt], prefix: str) -> None:
    for node in statements:
      if isinstance(node, ast.ClassDef):
        visit(node.body, f"{prefix}{node.name}.")
      elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
        start = min([node.lineno] + [d.lineno for d in node.decorator_list]) - 1
        qualname = prefix + node.name
        found.append(_Definition(f"{module}:{qualname}", start, node.end_lineno,
                                 _example(node, lines, start, module, qualname)))

  visit(tree.body, "")
  return found


@functools.lru_cache(maxsize=1)
def _stdlib_definitions() -> tuple[tuple[str, tuple[_Definition, ...]], ...]:
  """(file text, its definitions) of every document of the python_code corpus."""
  files = []
  for relative, path in sources.stdlib_files():
    try:
      document = path.read_text(encoding="utf-8")
    except (UnicodeDecodeError, OSError):  # as sources._python_code_documents
      continue
    if document.strip():
      files.append((document, tuple(_definitions(document, module_name(relative)))))
  return tuple(files)


def _full_text(example: dict) -> str:
  return example["source"] + "\n" + example["target"]


@functools.lru_cache(maxsize=1)
def _static_splits() -> dict[str, tuple[dict, ...]]:
  """The splits with `doctest` as written (has `>>>`), before any doctest ran."""
  examples, seen = [], set()
  for _, definitions in _stdlib_definitions():
    for definition in definitions:
      if definition.example and _full_text(definition.example) not in seen:
        seen.add(_full_text(definition.example))
        examples.append(definition.example)
  splits = sources.fixed_splits(examples, lambda e: e["name"])
  train, validation, test = splits["train"], splits["validation"], splits["test"]
  return {"train": tuple(train), "validation": tuple(validation), "test": tuple(test)}


def held_out_names() -> frozenset[str]:
  """The `name`s of the validation and test functions."""
  splits = _static_splits()
  return frozenset(e["name"] for split in ("validation", "test") for e in splits[split])


def code_splits(cache_dir: str = "") -> dict[str, list[dict]]:
  """The "train", "validation" and "test" examples of the code task.

  Each call returns fresh dicts. The first call on a machine runs the
  validation and test reference doctests in the sandbox (a few seconds) and
  caches which pass, under cache_root(cache_dir)/code_task/.
  """
  splits = {split: [dict(e) for e in examples] for split, examples in _static_splits().items()}
  checked = [e for split in ("validation", "test") for e in splits[split] if e["doctest"]]
  for example, passed in zip(checked, _reference_doctests(checked, cache_dir)):
    example["doctest"] = passed
  return splits


def _reference_doctests(examples: list[dict], cache_dir: str) -> list[bool]:
  """Whether each example's reference body passes its doctests, cached on disk."""
  jobs = [{"module": e["module"], "qualname": e["qualname"], "code": _full_text(e)}
          for e in examples]
  digest = hashlib.sha256(json.dumps([jobs, DOCTEST_TIMEOUT_S]).encode()).hexdigest()[:16]
  version = ".".join(map(str, sys.version_info[:3]))
  path = sources.cache_root(cache_dir) / "code_task" / f"doctests-py{version}-{digest}.json"
  if path.is_file():
    return json.loads(path.read_text())["passed"]
  with sources.stage(f"checking {len(jobs)} reference doctests (once; cached)"):
    statuses = execution.run_doctests(jobs, timeout_s=DOCTEST_TIMEOUT_S)
  passed = [status == "passed" for status in statuses]
  path.parent.mkdir(parents=True, exist_ok=True)
  partial = path.with_suffix(f".{os.getpid()}.tmp")
  partial.write_text(json.dumps({"names": [e["name"] for e in examples], "statuses": statuses,
                                 "passed": passed}))
  partial.replace(path)
  return passed


def python_code_train_documents() -> list[str]:
  """The python_code documents, in order, without the validation and test functions."""
  names = held_out_names()
  held_out = {_full_text(e) for split in ("validation", "test") for e in _static_splits()[split]}
  documents = []
  for document, definitions in _stdlib_definitions():
    drop = {i for d in definitions
            if d.name in names or (d.example is not None and _full_text(d.example) in held_out)
            for i in range(d.start, d.end)}
    if drop:
      document = "\n".join(line for i, line in enumerate(document.split("\n")) if i not in drop)
    documents.append(document)
  return documents
