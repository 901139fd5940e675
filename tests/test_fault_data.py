"""Faults that lose nothing and say what to do: bad data rows and fetched archives.

A bad row of a task file is named by its own row number in that file,
whichever split it lands in. A fetched archive is extracted only after its
sha256 matched the pin, and only when no member would land outside its
folder; otherwise one DataError line, and nothing is written.
"""

import io
import json
import pathlib
import shutil
import stat
import subprocess
import tarfile
import zipfile

import pytest

from research import config
from research.data import archives, sources, tasks
from research.errors import DataError


# A bad row keeps its file row number.

def files_config(tmp_path, train, eval_="", test="", **overrides):
  d = config.default_config().data
  d.update(source="files", train_files=train, eval_files=eval_, test_files=test,
           cache_dir=str(tmp_path / "cache"), **overrides)
  return d


def place_row_7(make_rows, held_out):
  """`make_rows(salt)` for a salt that puts row 7 in the held-out validation part (or in
  train, after a held-out row, so that a count of the train rows alone would be off)."""
  for salt in range(1000):
    rows = make_rows(salt)
    size = round(sources.TASK_HELD_OUT_FRACTION * len(rows))
    validation, _ = sources.hash_split(rows, lambda r: json.dumps(r, sort_keys=True), (size,))
    before = [i for i, row in enumerate(rows) if row in validation and i < 6]
    if (rows[6] in validation) == held_out and (held_out or before):
      return rows
  raise AssertionError("no salt puts row 7 where asked")


def sentiment_rows(salt):
  rows = [{"text": f"review {salt} number {i}", "label": "pos" if i % 2 else "neg"}
          for i in range(1, 21)]
  rows[6]["label"] = "meh"
  return rows


def write_csv(path, rows):
  path.write_text("text,label\n" + "".join(f"{r['text']},{r['label']}\n" for r in rows))
  return str(path)


def load_error(kind, cfg) -> str:
  with pytest.raises(DataError) as error:
    tasks.load_task_data(kind, cfg)
  message = str(error.value)
  assert "\n" not in message
  return message


@pytest.mark.parametrize("held_out", [False, True], ids=["train", "held_out_validation"])
def test_bad_label_names_its_file_row_in_train_and_held_out_part(tmp_path, held_out):
  train = write_csv(tmp_path / "train.csv", place_row_7(sentiment_rows, held_out))
  message = load_error("classification", files_config(tmp_path, train, labels="neg,pos"))
  split = "validation split (held out of" if held_out else "train split ("
  assert message.startswith(split) and " row 7: label 'meh' is not in the label set" in message


def test_bad_label_names_its_file_row_in_eval_and_test_files(tmp_path):
  good = [{"text": f"review {i}", "label": "pos" if i % 2 else "neg"} for i in range(10)]
  bad = [dict(row) for row in good]
  bad[6]["label"] = "meh"
  train, bad_file = write_csv(tmp_path / "train.csv", good), write_csv(tmp_path / "bad.csv", bad)
  assert " row 7: label 'meh'" in load_error("classification",
                                             files_config(tmp_path, train, bad_file))
  message = load_error("classification", files_config(tmp_path, train, train, bad_file))
  assert message.startswith("test split (") and " row 7: label 'meh'" in message


def qa_rows(salt):
  rows = [{"id": f"q{i}", "context": f"The cat {salt}.{i} sat on the mat.", "question": "Where?",
           "answers": {"text": ["the mat"], "answer_start": [len(f"The cat {salt}.{i} sat on ")]}}
          for i in range(1, 21)]
  rows[6]["answers"] = {"text": ["the dog"], "answer_start": [0]}
  return rows


@pytest.mark.parametrize("held_out", [False, True], ids=["train", "held_out_validation"])
def test_bad_qa_row_names_its_file_row_in_train_and_held_out_part(tmp_path, held_out):
  path = tmp_path / "train.jsonl"
  path.write_text("".join(json.dumps(r) + "\n" for r in place_row_7(qa_rows, held_out)))
  message = load_error("qa", files_config(tmp_path, str(path)))
  split = "validation split (held out of" if held_out else "train split ("
  assert message.startswith(split) and " row 7 (id q7): answer 'the dog' is not at" in message


# Archives: every member checked before anything is extracted.

def tar_with(path, *members):
  """A .tar.gz of (TarInfo, bytes or None) members."""
  with tarfile.open(path, "w:gz") as tar:
    for info, data in members:
      if data is not None:
        info.size = len(data)
      tar.addfile(info, io.BytesIO(data) if data is not None else None)
  return path


def entry(name, kind=tarfile.REGTYPE, linkname=""):
  info = tarfile.TarInfo(name)
  info.type, info.linkname = kind, linkname
  return info


def zip_with(path, *members):
  """A .zip of (ZipInfo or name, text) members."""
  with zipfile.ZipFile(path, "w") as zf:
    for info, text in members:
      zf.writestr(info, text)
  return path


def zip_symlink(name):
  info = zipfile.ZipInfo(name)
  info.create_system = 3  # unix, so external_attr carries the mode
  info.external_attr = (stat.S_IFLNK | 0o777) << 16
  return info


def snapshot(root: pathlib.Path) -> list[str]:
  return sorted(str(p.relative_to(root)) for p in root.rglob("*"))


UNSAFE_TARS = {
    "dotdot": lambda o: [(entry("ok.txt"), b"fine"), (entry("../evil.txt"), b"boo")],
    "absolute": lambda o: [(entry(f"{o}/abs.txt"), b"boo")],
    "symlink_absolute": lambda o: [(entry("passwd", tarfile.SYMTYPE, "/etc/passwd"), None)],
    "symlink_up": lambda o: [(entry("up", tarfile.SYMTYPE, "../.."), None)],
    "symlink_then_write": lambda o: [(entry("d", tarfile.SYMTYPE, "../../outside"), None),
                                     (entry("d/evil.txt"), b"boo")],
    "symlink_chain": lambda o: [(entry("here", tarfile.SYMTYPE, "."), None),
                                (entry("up", tarfile.SYMTYPE, "here/.."), None)],
    "through_inner_link": lambda o: [(entry("sub", tarfile.DIRTYPE), None),
                                     (entry("sub/in", tarfile.SYMTYPE, "."), None),
                                     (entry("sub/in/../../evil.txt"), b"boo")],
    "link_replacing_a_folder": lambda o: [(entry("d", tarfile.DIRTYPE), None),
                                          (entry("up", tarfile.SYMTYPE, "d/../.."), None),
                                          (entry("d", tarfile.SYMTYPE, "sub/x"), None)],
    "hardlink_out": lambda o: [(entry("h", tarfile.LNKTYPE, "../../outside/secret"), None)],
    "device": lambda o: [(entry("dev", tarfile.CHRTYPE), None)],
    "fifo": lambda o: [(entry("pipe", tarfile.FIFOTYPE), None)],
}


@pytest.mark.parametrize("case", sorted(UNSAFE_TARS))
def test_unsafe_tar_is_refused_in_one_line_and_nothing_is_written(tmp_path, case):
  outside = tmp_path / "outside"
  outside.mkdir()
  (outside / "secret").write_text("keep")
  archive = tar_with(tmp_path / "bad.tar.gz", *UNSAFE_TARS[case](outside))
  assert_refused(tmp_path, archive)
  assert (outside / "secret").read_text() == "keep"


def assert_refused(tmp_path, archive):
  """Extracting `archive` is one DataError line, and nothing is written anywhere."""
  target = tmp_path / "t" / "target"
  target.mkdir(parents=True)
  before = snapshot(tmp_path)
  with pytest.raises(DataError) as error:
    archives.extract(archive, target)
  message = str(error.value)
  assert "\n" not in message and message.startswith(f"{archive.name}: member ")
  assert "not safe to extract" in message
  assert snapshot(tmp_path) == before and list(target.iterdir()) == []


@pytest.mark.parametrize("case", ["dotdot", "absolute", "symlink"])
def test_unsafe_zip_is_refused_in_one_line_and_nothing_is_written(tmp_path, case):
  member = {"dotdot": ("../evil.txt", "boo"), "absolute": (f"{tmp_path}/abs.txt", "boo"),
            "symlink": (zip_symlink("passwd"), "/etc/passwd")}[case]
  assert_refused(tmp_path, zip_with(tmp_path / "bad.whl", ("ok.txt", "fine"), member))


def build_deb(root, path):
  subprocess.run(["dpkg-deb", "--root-owner-group", "--build", str(root), str(path)],
                 check=True, capture_output=True)


@pytest.mark.skipif(not shutil.which("dpkg-deb"), reason="needs dpkg-deb")
def test_deb_with_a_link_outside_is_refused(tmp_path):
  root = tmp_path / "pkg"
  (root / "DEBIAN").mkdir(parents=True)
  (root / "DEBIAN" / "control").write_text(
      "Package: fake\nVersion: 1\nArchitecture: all\nMaintainer: x <x@example.com>\n"
      "Description: fake\n")
  (root / "usr").mkdir()
  (root / "usr" / "passwd").symlink_to("/etc/passwd")
  build_deb(root, tmp_path / "bad.deb")
  target = tmp_path / "target"
  target.mkdir()
  with pytest.raises(DataError, match=r"^bad.deb: member './usr/passwd' is a link to the "
                                      "absolute path '/etc/passwd'; the archive is not safe"):
    archives.extract(tmp_path / "bad.deb", target)
  assert list(target.iterdir()) == []
  (root / "usr" / "passwd").unlink()
  (root / "usr" / "data.txt").write_text("rows")
  build_deb(root, tmp_path / "good.deb")
  archives.extract(tmp_path / "good.deb", target)
  assert (target / "usr" / "data.txt").read_text() == "rows"


def test_safe_archives_extract(tmp_path):
  archive = tar_with(tmp_path / "good.tar.gz", (entry("pkg", tarfile.DIRTYPE), None),
                     (entry("pkg/a.txt"), b"alpha"), (entry("./pkg/b/c.txt"), b"gamma"),
                     (entry("pkg/link", tarfile.SYMTYPE, "b/c.txt"), None),
                     (entry("pkg/hard", tarfile.LNKTYPE, "pkg/a.txt"), None))
  archives.extract(archive, tmp_path / "tar")
  assert (tmp_path / "tar" / "pkg" / "link").read_text() == "gamma"
  assert (tmp_path / "tar" / "pkg" / "hard").read_text() == "alpha"
  archive = zip_with(tmp_path / "good.whl", ("pkg/a.txt", "alpha"), ("pkg/b/c.txt", "b"))
  archives.extract(archive, tmp_path / "zip")
  assert (tmp_path / "zip" / "pkg" / "a.txt").read_text() == "alpha"
  assert (tmp_path / "zip" / "pkg" / "b" / "c.txt").read_text() == "b"


# fetch_package: the sha256 is checked before extraction; nothing half-done is cached.

def serve(monkeypatch, archive):
  """Makes the download step hand over the local `archive` (no network in tests)."""
  def download(spec, into):  # pylint: disable=unused-argument
    (into / "archive").mkdir()
    return pathlib.Path(shutil.copy(archive, into / "archive"))
  monkeypatch.setattr(sources, "_download", download)


def test_fetch_checks_sha256_before_extracting(tmp_path, monkeypatch):
  archive = tar_with(tmp_path / "fake-1.tar.gz", (entry("../evil.txt"), b"boo"))
  serve(monkeypatch, archive)
  spec = sources.PackageSpec("fake", "1", "sdist", "0" * 64)
  with pytest.raises(DataError, match=r"fake-1.tar.gz has sha256 [0-9a-f]{64}, but 0{64} "
                                      "is pinned; refusing") as error:
    sources.fetch_package(spec, str(tmp_path / "cache"))
  assert "\n" not in str(error.value)
  assert list((tmp_path / "cache" / "packages").iterdir()) == []
  spec = spec._replace(sha256=sources.sha256_file(archive))  # pinned, but unsafe
  with pytest.raises(DataError, match=r"member '../evil.txt' would be written outside"):
    sources.fetch_package(spec, str(tmp_path / "cache"))
  assert list((tmp_path / "cache" / "packages").iterdir()) == []
  assert not (tmp_path / "cache" / "evil.txt").exists()


def test_fetch_extracts_a_pinned_archive_once_and_atomically(tmp_path, monkeypatch):
  archive = tar_with(tmp_path / "fake-1.tar.gz", (entry("fake-1/data.txt"), b"rows"))
  serve(monkeypatch, archive)
  spec = sources.PackageSpec("fake", "1", "sdist", sources.sha256_file(archive))
  extract = archives.extract

  def interrupted(archive, target):  # a crash after half the files
    (target / "fake-1").mkdir()
    (target / "fake-1" / "half.txt").write_text("half")
    raise KeyboardInterrupt
  monkeypatch.setattr(archives, "extract", interrupted)
  with pytest.raises(KeyboardInterrupt):
    sources.fetch_package(spec, str(tmp_path / "cache"))
  assert list((tmp_path / "cache" / "packages").iterdir()) == []
  monkeypatch.setattr(archives, "extract", extract)
  folder = sources.fetch_package(spec, str(tmp_path / "cache"))
  assert (folder / "fake-1" / "data.txt").read_text() == "rows"
  assert json.loads((folder / ".trellis-source.json").read_text())["sha256"] == spec.sha256
  assert [p.name for p in (tmp_path / "cache" / "packages").iterdir()] == [folder.name]
  serve(monkeypatch, tmp_path / "no-such-archive")  # a cached package is not fetched again
  assert sources.fetch_package(spec, str(tmp_path / "cache")) == folder
