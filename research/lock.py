"""One run per workdir: `WorkdirLock`, a lock file the training process holds.

workdir/trellis.lock is held through an OS file lock (`fcntl.flock`), which
the kernel drops when its process dies, however it dies (kill -9 included).
The file records host, process id and start time: a second run refuses in
one line naming the holder; a lock a process that is gone left (same host)
is taken over with a line saying so; a holder on another host cannot be
checked, so the line says to delete the file if that run is gone. In a
multi-process run process 0 holds it for all. A sweep reads `lock_holder`
and does not start a run whose workdir is held (no jax needed for that).
"""

import datetime
import fcntl
import json
import os
import socket

from research.errors import CheckpointError

LOCK_FILE = "trellis.lock"
_HELD = {}  # lock path -> [open file, times entered], for this process's own locks


def _process_started(pid: int) -> str | None:
  """An id of when process `pid` of this host started (None: no such process, or unknown)."""
  try:
    with open(f"/proc/{pid}/stat") as f:
      return f.read().rsplit(")", 1)[1].split()[19]  # field 22: start time in clock ticks
  except (OSError, IndexError):
    try:
      os.kill(pid, 0)
    except ProcessLookupError:
      return None
    except PermissionError:
      pass
    return "alive"


def _read_holder(path: str) -> dict:
  try:
    with open(path) as f:
      text = f.read()
  except FileNotFoundError:
    return {}
  try:
    holder = json.loads(text) if text.strip() else {}
  except json.JSONDecodeError:
    holder = {"pid": None, "host": "?", "started": "?", "note": "unreadable lock file"}
  return holder if isinstance(holder, dict) else {}


def _alive(holder: dict) -> bool:
  """Whether the process a lock file names still runs (unknowable on another host: True)."""
  if holder.get("host") != socket.gethostname() or not isinstance(holder.get("pid"), int):
    return True
  started = _process_started(holder["pid"])
  return started is not None and started in ("alive", holder.get("proc_start"))


def lock_holder(workdir: str) -> dict | None:
  """Who holds `workdir` now ({host, pid, started}), or None if nobody does (or we do)."""
  path = os.path.join(workdir, LOCK_FILE)
  if os.path.abspath(path) in _HELD or not os.path.exists(path):
    return None
  try:
    with open(path) as f:
      try:
        fcntl.flock(f, fcntl.LOCK_SH | fcntl.LOCK_NB)
      except BlockingIOError:
        return _read_holder(path) or {"host": "?", "pid": "?", "started": "?"}
      fcntl.flock(f, fcntl.LOCK_UN)
  except OSError:
    return None
  holder = _read_holder(path)
  # Not flock-held: free, or left by a dead process, or held from another host.
  return holder if holder and _alive(holder) else None


def busy_message(workdir: str, holder: dict) -> str:
  where = f"process {holder.get('pid')} on {holder.get('host')}, started {holder.get('started')}"
  same_host = holder.get("host") == socket.gethostname()
  advice = ("wait for it or stop it, or use another --workdir" if same_host else
            f"wait for it or stop it, or use another --workdir (if that run is gone, delete "
            f"{os.path.join(workdir, LOCK_FILE)})")
  return f"{workdir} is in use by another run ({where}): {advice}"


class WorkdirLock:
  """`with WorkdirLock(workdir):` the one run of `workdir` (see the module docstring).

  Re-entrant within a process (finetune holds it around train_and_evaluate,
  which takes it too). Raises CheckpointError (one line) if another live run
  holds it. Process 0 locks; every process learns the outcome.
  """

  def __init__(self, workdir: str):
    self.workdir = workdir
    self.path = os.path.abspath(os.path.join(workdir, LOCK_FILE))

  def __enter__(self):
    import jax  # why: a sweep reads lock_holder without importing jax
    import numpy as np
    from jax.experimental import multihost_utils
    error = ""
    if jax.process_index() == 0:
      try:
        self._acquire()
      except CheckpointError as e:
        error = str(e)
    if jax.process_count() > 1:
      failed = multihost_utils.broadcast_one_to_all(np.int32(bool(error)))
      if failed and not error:
        error = f"{self.workdir} is in use by another run (see process 0's error)"
    if error:
      raise CheckpointError(error)
    return self

  def _acquire(self) -> None:
    if self.path in _HELD:
      _HELD[self.path][1] += 1
      return
    os.makedirs(self.workdir, exist_ok=True)
    f = open(self.path, "a+")
    try:
      fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
      f.close()
      raise CheckpointError(busy_message(self.workdir, _read_holder(self.path) or {})) from None
    previous = _read_holder(self.path)
    if previous and _alive(previous):  # a live holder on another host (or this pid reused)
      fcntl.flock(f, fcntl.LOCK_UN)
      f.close()
      raise CheckpointError(busy_message(self.workdir, previous))
    if previous:
      print(f"trellis: {self.workdir} was locked by process {previous.get('pid')} on "
            f"{previous.get('host')} (started {previous.get('started')}), which is gone: "
            "taking the lock over", flush=True)
    pid = os.getpid()
    f.seek(0)
    f.truncate()
    f.write(json.dumps({"host": socket.gethostname(), "pid": pid,
                        "started": datetime.datetime.now().isoformat(timespec="seconds"),
                        "proc_start": _process_started(pid)}))
    f.flush()
    _HELD[self.path] = [f, 1]

  def __exit__(self, *exc):
    held = _HELD.get(self.path)  # only process 0 enters it
    if held:
      held[1] -= 1
      if not held[1]:
        del _HELD[self.path]
        f = held[0]
        f.seek(0)
        f.truncate()  # an empty lock file: free
        fcntl.flock(f, fcntl.LOCK_UN)
        f.close()
    return False
