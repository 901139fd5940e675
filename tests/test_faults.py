"""Faults a misbehaving cluster causes, done for real: each loses nothing and says what to do.

Damaged checkpoints, a disk that fills during a save, two runs on one
workdir, kill -9 inside asynchronous saves, a SIGTERM mid log window. Each
test checks the line the user reads, that no checkpoint is lost, and that
the resumed run's numbers equal the uninterrupted run's (the `reference`).
Data faults (row numbers, unsafe archives) are in tests/test_fault_data.py.
"""

import contextlib
import glob
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import time

import jax
import orbax.checkpoint as ocp
import pytest

from conftest import REPO, SignalAt, synthetic_examples, tiny_config
from research import train
from research.data import pipeline
from research.data.pipeline import TrainData
from research.errors import CheckpointError, Interrupted
from research.lock import LOCK_FILE, WorkdirLock, lock_holder
from research.workdir import check_workdir, prepare_workdir, resolve

TIMING = ("tokens_per_s", "step_time_s", "mfu")
# Per-step train rows, so a resumed run compares with the reference step by step.
BASE = {"train.log_every": 1}


def _data():
  return TrainData(train=synthetic_examples(128, 32, 128, 0),
                   eval=synthetic_examples(32, 32, 128, 1), unigram_perplexity=128.0)


def _train(workdir, **overrides):
  cfg = resolve(tiny_config(**{**BASE, **overrides}), jax.device_count())
  prepare_workdir(cfg, str(workdir))
  return train.train_and_evaluate(train.Trainer(cfg), str(workdir), _data())


def _rows(workdir):
  with open(os.path.join(workdir, "metrics.jsonl")) as f:
    return [{k: v for k, v in json.loads(line).items() if k not in TIMING} for line in f]


def _same_run(workdir, reference):
  """The run in `workdir` logged and reported what the uninterrupted reference did."""
  assert _rows(workdir) == _rows(reference)
  got, want = (json.loads((p / "results.json").read_text()) for p in (workdir, reference))
  assert got["loss"] == want["loss"] and got["step"] == want["step"]


def _steps(workdir):
  return sorted(int(n) for n in os.listdir(workdir / "checkpoints") if n.isdigit())


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
  """The uninterrupted run: 12 steps, checkpoints at 6 and 12, a row per step."""
  workdir = tmp_path_factory.mktemp("reference")
  _train(workdir)
  return workdir


def _damage(checkpoint, how):
  if how == "truncated arrays":  # bit rot, a bad copy, a half-synced bucket
    for path in glob.glob(f"{checkpoint}/state/ocdbt.process_0/d/*"):
      with open(path, "r+b") as f:
        f.truncate(os.path.getsize(path) // 2)
  elif how == "missing item":
    shutil.rmtree(checkpoint / "data")
  elif how == "garbled metadata":
    (checkpoint / "state" / "_METADATA").write_text("{not json")


@pytest.mark.parametrize("how", ["truncated arrays", "missing item", "garbled metadata"])
def test_a_damaged_latest_checkpoint_is_moved_aside_and_the_run_resumes(
    how, reference, tmp_path, capfd):
  workdir = tmp_path / "run"
  shutil.copytree(reference, workdir)
  os.remove(workdir / "results.json")
  _damage(workdir / "checkpoints" / "12", how)
  _train(workdir)
  out, err = capfd.readouterr()
  moved = workdir / "checkpoints-unreadable" / "12"
  line = next(line for line in out.splitlines() if "does not restore" in line)
  assert line.startswith("trellis: checkpoint step 12 does not restore (") and str(moved) in line
  assert line.endswith("resuming from step 6")
  assert "Traceback" not in err and "Exception ignored" not in err, err[-2000:]
  assert moved.is_dir()  # moved aside, never deleted
  assert _steps(workdir) == [6, 12]
  _same_run(workdir, reference)


def test_when_no_checkpoint_restores_one_line_names_them_and_nothing_moves(reference, tmp_path):
  workdir = tmp_path / "run"
  shutil.copytree(reference, workdir)
  for step in ("6", "12"):
    _damage(workdir / "checkpoints" / step, "truncated arrays")
  with pytest.raises(CheckpointError) as error:
    _train(workdir)
  message = str(error.value)
  assert "\n" not in message and message.startswith(f"no checkpoint in {workdir}/checkpoints")
  assert "/12: " in message and "/6: " in message
  assert _steps(workdir) == [6, 12] and not (workdir / "checkpoints-unreadable").exists()


@contextlib.contextmanager
def _small_disk(path, kib: int):
  """A tmpfs of `kib` KiB at `path` (root); elsewhere the test injects ENOSPC itself."""
  path.mkdir()
  mounted = os.geteuid() == 0 and subprocess.run(
      ["mount", "-t", "tmpfs", "-o", f"size={kib}k", "tmpfs", str(path)],
      capture_output=True).returncode == 0
  try:
    yield mounted
  finally:
    if mounted:
      subprocess.run(["umount", "-l", str(path)], check=True)


def test_a_full_disk_during_a_save_is_one_line_and_the_rerun_resumes(
    reference, tmp_path, monkeypatch, capfd):
  disk = tmp_path / "disk"
  with _small_disk(disk, 2200) as mounted:  # room for the step-6 checkpoint, not step 12's
    if not mounted:  # no tmpfs: Orbax's writer fails at step 12 as TensorStore does
      real_save = ocp.CheckpointManager.save

      def save(self, step, *args, **kwargs):
        if step == 12 and str(self.directory).endswith("checkpoints"):
          os.makedirs(f"{self.directory}/12.orbax-checkpoint-tmp")
          raise ValueError('RESOURCE_EXHAUSTED: Error writing "params" in OCDBT database: '
                           "No space left on device [os_error_code='28']")
        return real_save(self, step, *args, **kwargs)

      monkeypatch.setattr(ocp.CheckpointManager, "save", save)
    workdir = disk / "run"
    with pytest.raises(CheckpointError) as error:
      _train(workdir)
    message = str(error.value)
    assert "\n" not in message, message
    assert message.startswith(f"saving checkpoint step 12 in {workdir}/checkpoints failed: "
                              "no space left on device (errno 28); ")
    assert message.endswith("checkpoint 6 is intact; free space (or fix the cause), then run "
                            "the same command to resume from step 6")
    err = capfd.readouterr().err
    assert "Traceback" not in err and "ERROR:" not in err, err[-3000:]
    assert _steps(workdir) == [6]
    assert glob.glob(f"{workdir}/checkpoints/12.orbax-checkpoint-tmp*")  # left half-written
    if mounted:
      subprocess.run(["mount", "-o", "remount,size=20m", str(disk)], check=True)
    monkeypatch.undo()
    _train(workdir)  # space freed: the same command
    assert not glob.glob(f"{workdir}/checkpoints/*tmp*")  # the half-written folder is gone
    assert _steps(workdir) == [6, 12]
    _same_run(workdir, reference)


_HOLD = ("import sys, time\n"
         "from research.lock import WorkdirLock\n"
         "WorkdirLock(sys.argv[1]).__enter__()\n"
         "print('held', flush=True)\n"
         "time.sleep(120)\n")


def _holder(workdir):
  """Another process holding `workdir`'s lock (as a second run would)."""
  proc = subprocess.Popen([sys.executable, "-c", _HOLD, str(workdir)], cwd=REPO,
                          stdout=subprocess.PIPE, text=True)
  assert proc.stdout.readline().strip() == "held"
  return proc


def test_a_second_run_on_a_workdir_refuses_and_a_dead_holders_lock_is_taken_over(
    reference, tmp_path, capfd):
  workdir = tmp_path / "run"
  holder = _holder(workdir)
  try:
    cfg = resolve(tiny_config(**BASE), jax.device_count())
    with pytest.raises(CheckpointError) as early:  # before any data loads
      check_workdir(cfg, str(workdir))
    with pytest.raises(CheckpointError) as late:  # two starts racing past the check
      train.train_and_evaluate(train.Trainer(cfg), str(workdir), _data())
    for error in (early, late):
      message = str(error.value)
      assert "\n" not in message
      assert message.startswith(f"{workdir} is in use by another run (process {holder.pid} on ")
      assert message.endswith("wait for it or stop it, or use another --workdir")
    assert not (workdir / "checkpoints").exists() and not (workdir / "metrics.jsonl").exists()
    # A sweep does not start a run whose workdir is held (its own process: absl flags).
    sweep = subprocess.run(
        [sys.executable, "-c", "import json, sys\nfrom experiments import sweep\n"
         "print(json.dumps(sweep.run_all(sys.argv[1], {'run': ['--config=x']}, 'pretrain', 1, "
         "1, 'commit')[0]))", str(tmp_path)], cwd=REPO, capture_output=True, text=True)
    outcome = json.loads(sweep.stdout.strip().splitlines()[-1])
    assert outcome["run"][0] == "locked" and f"process {holder.pid}" in outcome["run"][1]
    assert not (workdir / "stdout.log").exists()
  finally:
    holder.kill()
    holder.wait()
  assert lock_holder(str(workdir)) is None  # the kernel dropped its lock with the process
  capfd.readouterr()
  _train(workdir)
  out = capfd.readouterr().out
  assert (f"trellis: {workdir} was locked by process {holder.pid} on " in out
          and "which is gone: taking the lock over" in out), out
  assert (workdir / LOCK_FILE).read_text() == ""  # released when the run ended
  _same_run(workdir, reference)


def test_the_lock_is_reentrant_in_one_process_and_released_on_exit(tmp_path):
  with WorkdirLock(str(tmp_path)):
    with WorkdirLock(str(tmp_path)):
      assert lock_holder(str(tmp_path)) is None  # our own lock does not refuse us
    assert json.loads((tmp_path / LOCK_FILE).read_text())["pid"] == os.getpid()
  assert (tmp_path / LOCK_FILE).read_text() == ""


# The run the kill test starts again and again: the reference's config, a checkpoint per step.
_RUN = ("import sys\n"
        f"sys.path.insert(0, {os.path.join(REPO, 'tests')!r})\n"
        "import conftest  # the 8 fake devices, before jax is imported\n"
        "import test_faults\n"
        "test_faults._train(sys.argv[1], **{'train.checkpoint_every': 1})\n")


def test_kill_9_inside_asynchronous_saves_then_the_same_command_resumes_exactly(
    reference, tmp_path):
  seed = int(os.environ.get("TRELLIS_FAULT_SEED", random.randrange(10**6)))
  print(f"kill seed {seed} (rerun with TRELLIS_FAULT_SEED={seed})")
  rng = random.Random(seed)
  workdir = tmp_path / "run"
  command = [sys.executable, "-c", _RUN, str(workdir)]
  inside, kills = 0, 0
  for attempt in range(3):
    with open(tmp_path / f"stderr-{attempt}.log", "w") as log:
      proc = subprocess.Popen(command, cwd=REPO, stdout=subprocess.DEVNULL, stderr=log)
    wanted, seen, deadline = rng.randint(1, 3), set(), time.time() + 120
    while proc.poll() is None and len(seen) < wanted and time.time() < deadline:
      seen.update(glob.glob(f"{workdir}/checkpoints/*.orbax-checkpoint-tmp*"))
      time.sleep(0.001)
    time.sleep(rng.uniform(0, 0.02))
    if proc.poll() is not None:  # the run finished first: nothing left to kill
      assert proc.returncode == 0, (tmp_path / f"stderr-{attempt}.log").read_text()[-3000:]
      break
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    kills += 1
    inside += bool(glob.glob(f"{workdir}/checkpoints/*.orbax-checkpoint-tmp*"))
  assert kills >= 2 and inside >= 1, (kills, inside)  # some kills landed inside a save
  done = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=300)
  assert done.returncode == 0, done.stderr[-3000:]
  assert "Traceback" not in done.stderr, done.stderr[-3000:]
  assert not glob.glob(f"{workdir}/checkpoints/*tmp*")
  _same_run(workdir, reference)


def test_train_rows_say_how_many_steps_they_average(reference, tmp_path, monkeypatch):
  """SIGTERM at step 5 with log_every 4: rows at 4 (4 steps), 5 (1), then 8 (3), 12 (4)."""
  original = pipeline.train_iterator
  monkeypatch.setattr(pipeline, "train_iterator",
                      lambda *a, **k: SignalAt(original(*a, **k), at=5))
  with pytest.raises(Interrupted):
    _train(tmp_path, **{"train.log_every": 4})
  monkeypatch.setattr(pipeline, "train_iterator", original)
  _train(tmp_path, **{"train.log_every": 4})
  rows = [r for r in _rows(tmp_path) if r["split"] == "train"]
  assert [(r["step"], r["steps"]) for r in rows] == [(4, 4), (5, 1), (8, 3), (12, 4)]
  per_step = {r["step"]: r["loss"] for r in _rows(reference) if r["split"] == "train"}
  assert all(r["steps"] == 1 for r in _rows(reference) if r["split"] == "train")
  first = 0
  for row in rows:  # each row is the mean of its own steps: no means of means needed
    window = [per_step[s] for s in range(first + 1, row["step"] + 1)]
    assert row["loss"] == pytest.approx(sum(window) / len(window), rel=1e-5)
    first = row["step"]
