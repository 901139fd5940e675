"""Reading documents: built-in corpora, local files and Hugging Face hub names.

Every source ends as two lists of strings, train and eval documents. Files
and hub datasets are read with HF `datasets`; its cache lives under
`cache_root(data.cache_dir)/hf_datasets` so a run writes nowhere else.
"""

import glob
import os

import datasets
import huggingface_hub
from huggingface_hub import errors as hub_errors

from research.data import code, sources
from research.errors import DataError

# File extension -> HF `datasets` packaged builder.
_BUILDERS = {".txt": "text", ".jsonl": "json", ".json": "json", ".csv": "csv",
             ".parquet": "parquet"}


def _quiet_datasets() -> None:
  datasets.disable_progress_bars()
  datasets.logging.set_verbosity_error()
  huggingface_hub.utils.logging.set_verbosity_error()  # its retry warnings, two lines each


def split_held_out(documents: list[str], eval_fraction: float) -> tuple[list[str], list[str]]:
  """Splits whole documents into (train, eval), deterministically.

  The eval set is the round(eval_fraction * n) documents (at least one) whose
  text has the smallest sha256 (`sources.hash_split`), so the split does not depend on
  Python's hash seed or on document order, and duplicate documents land on the
  same side. Both lists keep the original order.

  Raises:
    DataError: fewer than two distinct documents, so nothing is left to train on.
  """
  if len(documents) < 2:
    raise DataError(f"only {len(documents)} document(s): cannot hold out an eval split; "
                    "add documents or set data.eval_files")
  num_eval = min(len(documents) - 1, max(1, round(eval_fraction * len(documents))))
  evaluation, train = sources.hash_split(documents, lambda doc: doc, (num_eval,))
  if not train:
    raise DataError(f"the {len(documents)} documents are all the same text: cannot hold out "
                    "an eval split; add documents or set data.eval_files")
  return train, evaluation


def expand_globs(patterns: str) -> list[str]:
  """Files matching comma-separated globs, each glob's matches sorted, no repeats.

  Raises:
    DataError: a glob matches no file.
  """
  files: dict[str, None] = {}  # ordered set
  for pattern in filter(None, (p.strip() for p in patterns.split(","))):
    matches = sorted(m for m in glob.glob(os.path.expanduser(pattern), recursive=True)
                     if os.path.isfile(m))
    if not matches:
      raise DataError(f"no file matches {pattern!r}")
    files.update(dict.fromkeys(matches))
  if not files:
    raise DataError(f"no file pattern given in {patterns!r}")
  return list(files)


def _check_files(files: list[str]) -> str:
  """Checks the files are non-empty, of one supported type, UTF-8; returns the builder."""
  builders = set()
  for path in files:
    extension = os.path.splitext(path)[1].lower()
    if extension not in _BUILDERS:
      raise DataError(f"{path}: unsupported file type {extension or '(none)'!r}; "
                      f"use one of {', '.join(sorted(_BUILDERS))}")
    builders.add(_BUILDERS[extension])
    if os.path.getsize(path) == 0:
      raise DataError(f"{path} is empty")
    if extension != ".parquet":
      # HF `datasets` reports bad bytes deep inside Arrow without the file name.
      with open(path, "rb") as f:
        try:
          f.read().decode("utf-8")
        except UnicodeDecodeError as e:
          raise DataError(f"{path} is not valid UTF-8 (byte {e.start})") from None
  if len(builders) > 1:
    raise DataError(f"files mix types ({', '.join(sorted(builders))}); give one type per split")
  return builders.pop()


def _column_texts(dataset, column: str, where: str) -> list[str]:
  """Non-empty strings of `column`, in row order."""
  if column not in dataset.column_names:
    raise DataError(f"{where} has no column {column!r} (data.text_column); "
                    f"columns: {', '.join(dataset.column_names)}")
  texts = [t for t in dataset[column] if isinstance(t, str) and t.strip()]
  if not texts:
    raise DataError(f"{where}: column {column!r} holds no non-empty text")
  return texts


def read_files(patterns: str, text_column: str, cache_dir: str = "") -> list[str]:
  """Documents from local files: one per .txt file, one per row otherwise.

  Raises:
    DataError: a glob matching nothing, an empty, non-UTF-8 or unsupported
      file, a missing text column, or no non-empty document.
  """
  files = expand_globs(patterns)
  builder = _check_files(files)
  _quiet_datasets()
  options = {"sample_by": "document"} if builder == "text" else {}
  try:
    dataset = datasets.load_dataset(
        builder, data_files=files, split="train",
        cache_dir=str(sources.cache_root(cache_dir) / "hf_datasets"), **options)
  except Exception as e:  # datasets raises many types for malformed files
    raise DataError(f"cannot read {patterns!r}: {_one_line(e)}") from None
  return _column_texts(dataset, "text" if builder == "text" else text_column, patterns)


def _one_line(error: Exception) -> str:
  lines = [l.strip() for l in str(error).splitlines() if l.strip()]
  return f"{type(error).__name__}: {lines[0] if lines else ''}"


def read_hub(name: str, hub_config: str, text_column: str,
             cache_dir: str = "") -> tuple[list[str], list[str] | None]:
  """Train and eval documents of a HF hub dataset; eval is None without one.

  The eval split is "validation", else "test".

  Raises:
    DataError: the dataset cannot be loaded (offline, unknown name, ...),
      has no "train" split, or lacks the text column.
  """
  _quiet_datasets()
  check_on_hub(name)
  try:
    splits = datasets.load_dataset(name, hub_config or None,
                                   cache_dir=str(sources.cache_root(cache_dir) / "hf_datasets"))
  except Exception as e:  # network, auth and format errors all end here
    raise DataError(f"cannot load hub dataset {name!r}: {_one_line(e)}") from None
  if "train" not in splits:
    raise DataError(f"hub dataset {name!r} has no train split; splits: {', '.join(splits)}")
  train = _column_texts(splits["train"], text_column, f"{name}[train]")
  for split in ("validation", "test"):
    if split in splits:
      return train, _column_texts(splits[split], text_column, f"{name}[{split}]")
  return train, None


def check_on_hub(name: str) -> None:
  """Asks the hub once whether dataset `name` exists, so that offline, or for a name
  the hub lacks, the run fails in one line at once and not after datasets' retries.

  In offline mode (HF_HUB_OFFLINE=1) nothing is asked: datasets reads its cache.

  Raises:
    DataError: the hub cannot be reached, or has no such dataset.
  """
  if huggingface_hub.constants.HF_HUB_OFFLINE:
    return
  try:
    huggingface_hub.HfApi().dataset_info(name, timeout=20)
  except hub_errors.RepositoryNotFoundError:
    raise DataError(f"data.source={name!r}: the Hugging Face hub has no such dataset "
                    "(or it is private)") from None
  except hub_errors.HfHubHTTPError as e:
    raise DataError(f"data.source={name!r}: the Hugging Face hub answered {_one_line(e)}") \
        from None
  except Exception as e:  # the HTTP client's connection errors, whichever client it is
    raise DataError(f"data.source={name!r}: cannot reach the Hugging Face hub ({_one_line(e)}); "
                    "connect, or set HF_HUB_OFFLINE=1 to read a copy cached before") from None


def corpus_documents(name: str, cache_dir: str = "") -> list[str]:
  """The documents of a built-in corpus: sources.BUILTIN_CORPORA, or a DERIVED_CORPORA one
  (`python_code_train`: python_code without the code task's held-out functions)."""
  if name == "python_code_train":
    return code.python_code_train_documents()
  return sources.corpus_documents(name, cache_dir)


def read_documents(data_cfg) -> tuple[list[str], list[str]]:
  """(train_docs, eval_docs) for `data_cfg.source`.

  `source` is a built-in corpus name, "files" (data.train_files and, if set,
  data.eval_files), or a HF hub dataset name (sources.source_kind). Without a
  given eval set, whole documents are held out by `split_held_out`;
  `max_documents` (0 = all) truncates the document list before that split.

  Raises:
    DataError: with a one-line message naming the culprit.
  """
  d = data_cfg
  eval_docs = None
  kind = sources.source_kind(d.source, d.hub_config)
  if kind == "builtin":
    train_docs = [doc for doc in corpus_documents(d.source, d.cache_dir) if doc.strip()]
  elif kind == "files":
    train_docs = read_files(d.train_files, d.text_column, d.cache_dir)
    if d.eval_files:
      eval_docs = read_files(d.eval_files, d.text_column, d.cache_dir)
  else:
    train_docs, eval_docs = read_hub(d.source, d.hub_config, d.text_column, d.cache_dir)
  if not train_docs:
    raise DataError(f"data.source={d.source!r} has no non-empty document")
  if d.max_documents:
    train_docs = train_docs[:d.max_documents]
  if eval_docs is None:
    return split_held_out(train_docs, d.eval_fraction)
  return train_docs, eval_docs
