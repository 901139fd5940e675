"""Unpacking a fetched archive (tar, zip, wheel, deb) only inside its target folder.

`extract` checks every member before anything is written: an absolute path,
a ".." that climbs out, a link leading outside (or a member written through
one of the archive's own links), a device file or pipe, a symbolic link in a
zip. One unsafe member refuses the whole archive in one DataError line
naming it, and the target stays untouched. data/sources.py calls it after
the archive's sha256 matched its pin, into a temporary folder it renames
into place when complete.
"""

import io
import pathlib
import stat
import subprocess
import tarfile
import zipfile

from research.errors import DataError, first_line

_UNSAFE = ("the archive is not safe to extract, so nothing was extracted; "
           "delete it and get a trusted copy")


def extract(archive: pathlib.Path, target: pathlib.Path) -> None:
  """Unpacks `archive` into `target`, refusing members that would escape it.

  Every member of a tar, zip or deb (the tar of its files) is checked before
  anything is written: an absolute path, a ".." that climbs out, a link
  leading outside (or a member under one of the archive's links), a device
  file or pipe, a symbolic link in a zip: one DataError naming the member,
  and `target` stays untouched. The tar "data" filter then guards the
  extraction of a tar a second time.
  """
  name = archive.name
  try:
    if name.endswith((".tar.gz", ".tgz", ".tar.bz2", ".tar.xz", ".tar")):
      with tarfile.open(archive) as tar:
        _refuse(name, _tar_problem(tar.getmembers()))
        tar.extractall(target, filter="data")
    elif name.endswith((".zip", ".whl")):
      with zipfile.ZipFile(archive) as zf:
        _refuse(name, next(((info.filename, why) for info in zf.infolist()
                            if (why := _zip_problem(info))), None))
        zf.extractall(target)
    elif name.endswith(".deb"):
      _refuse(name, _tar_problem(_deb_members(archive)))
      result = subprocess.run(["dpkg-deb", "-x", str(archive), str(target)],
                              capture_output=True, text=True)
      if result.returncode != 0:
        lines = result.stderr.strip().splitlines() or ["no output"]
        raise DataError(f"cannot extract {name} (exit {result.returncode}): {lines[-1]}")
    else:
      raise DataError(f"{name}: unknown archive format")
  except tarfile.FilterError as e:  # the second guard; _tar_problem should have refused it
    _refuse(name, (e.tarinfo.name, f"is refused by the tar data filter ({first_line(e)})"))
  except (tarfile.TarError, zipfile.BadZipFile, EOFError) as e:
    raise DataError(f"cannot read the archive {name}: {first_line(e)}; "
                    "delete it and fetch it again") from None


def _deb_members(archive: pathlib.Path) -> list[tarfile.TarInfo]:
  """The members of a .deb's file tree, read from `dpkg-deb --fsys-tarfile`."""
  try:
    result = subprocess.run(["dpkg-deb", "--fsys-tarfile", str(archive)], capture_output=True)
  except FileNotFoundError as e:
    raise DataError(f"cannot extract {archive.name}: {e.filename} is not installed") from None
  if result.returncode != 0:
    lines = result.stderr.decode(errors="replace").strip().splitlines() or ["no output"]
    raise DataError(f"cannot extract {archive.name} (exit {result.returncode}): {lines[-1]}")
  with tarfile.open(fileobj=io.BytesIO(result.stdout)) as tar:
    return tar.getmembers()


def _refuse(name: str, problem: tuple[str, str] | None) -> None:
  """Raises the DataError of an archive's unsafe (member, why), if there is one."""
  if problem:
    raise DataError(f"{name}: member {problem[0]!r} {problem[1]}; {_UNSAFE}")


def _walk(path: str) -> list[tuple[str, ...]] | None:
  """The places an archive member's path passes through, its own place last.

  A place is a tuple of names under the target folder, "." and ".." applied;
  None when a ".." climbs out of the target folder.
  """
  parts: list[str] = []
  walk: list[tuple[str, ...]] = [()]
  for part in path.split("/"):
    if part == "..":
      if not parts:
        return None
      parts.pop()
    elif part in ("", "."):
      continue
    else:
      parts.append(part)
    walk.append(tuple(parts))
  return walk


def _stays_inside(path: list[str], links: dict[tuple[str, ...], str]) -> bool:
  """Whether `path` (names under the target) stays under it, through the archive's links.

  `links` maps the place of each of the archive's symbolic links to its
  target; a link to an absolute path or a loop of links does not stay.
  """
  here: list[str] = []
  pending, hops = list(path), 0
  while pending:
    part = pending.pop(0)
    if part == "..":
      if not here:
        return False
      here.pop()
    elif part not in ("", "."):
      here.append(part)
      target = links.get(tuple(here))
      if target is not None:
        hops += 1
        if target.startswith("/") or hops > 40:  # absolute, or a loop
          return False
        here.pop()
        pending[:0] = target.split("/")
  return True


def _tar_problem(members: list[tarfile.TarInfo]) -> tuple[str, str] | None:
  """The first tar member that could write outside the target, and why; None if none.

  A member lands where its name says ("." and ".." applied) as long as no
  member lies at or under one of the archive's symbolic links, so such a
  member is refused; a link's target is then followed through the others.
  """
  links: dict[tuple[str, ...], str] = {}  # place of each symbolic link -> its target
  walks = []
  for member in members:
    walk = _walk(member.name)
    if member.name.startswith("/"):
      return member.name, "has an absolute path"
    if walk is None or (not walk[-1] and (member.issym() or member.islnk())):
      return member.name, "would be written outside the target folder"
    if member.isdev():
      return member.name, "is a device file or a pipe"
    if member.issym():
      links[walk[-1]] = member.linkname
    walks.append((member, walk))
  places = [walk[-1] for _, walk in walks]
  for member, walk in walks:
    through = next((place for place in walk[:-1] if place in links), None)
    if through is not None:
      return member.name, f"lies under the archive's link {'/'.join(through)!r}"
    if walk[-1] in links and places.count(walk[-1]) > 1:
      return member.name, f"shares its place with the archive's link {'/'.join(walk[-1])!r}"
    if member.issym() or member.islnk():
      if member.linkname.startswith("/"):
        return member.name, f"is a link to the absolute path {member.linkname!r}"
      start = list(walk[-1][:-1]) if member.issym() else []  # a hard link's is the archive root
      if not _stays_inside(start + member.linkname.split("/"), links):
        return member.name, f"is a link to {member.linkname!r}, outside the target folder"
  return None


def _zip_problem(info: zipfile.ZipInfo) -> str | None:
  """Why a zip member could write outside the target folder; None if it cannot."""
  if info.filename.startswith("/"):
    return "has an absolute path"
  if _walk(info.filename) is None:
    return "would be written outside the target folder"
  if stat.S_ISLNK(info.external_attr >> 16):
    return "is a symbolic link"
  return None
