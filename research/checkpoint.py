"""Orbax checkpoints: train state, data-iterator state and lineage metadata.

A checkpoint directory `workdir/checkpoints/<step>/` holds three items:
`state` (params, optimizer state, step, rng as sharded arrays), `data` (the
data iterator's position, JSON) and `meta` (config hash, lineage, JSON).
Orbax writes each step to a temporary folder and renames it when complete,
so a crash never leaves a half checkpoint that looks finished.

The data state is process-independent (every process holds the same global
position), so a checkpoint written by N processes restores in M processes.

Checkpoints of the per-layer Transformer layout restore stacked. Before issue
13 (one Transformer layout) a run without model.scan_layers saved "backbone/blocks/<i>/<rest>" for
every layer i where today's hold one array "backbone/blocks/<rest>" with layer i
at [i] (encoder_blocks and decoder_blocks alike, optimizer moments keyed alike):
`restore` reads such a checkpoint layer by layer and stacks the layers. A
checkpoint lacking a param the network has (saved by an older Trellis, or by
another model) is refused in one line naming it.

Faults. Orbax's atomic rename guards against a crash during a write, not
against damage after it: `restore_newest` tries the checkpoints newest first,
moves each that fails to restore aside (to `<directory>-unreadable/`, never
deleted) and resumes from the newest that restores. A save that fails (a full
disk, a quota, a permission) raises one CheckpointError line naming the step,
the cause and the intact checkpoints; the writer of a workdir removes the
half-written temporary folders of a killed run when it starts (`cleanup`).
"""

import errno
import logging
import os
import re
import shutil
import sys

import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp
from jax.experimental import multihost_utils
from jax.sharding import NamedSharding, PartitionSpec

from research.errors import CheckpointError, few, first_line

# A param saved per layer: "<stack>/<i>/<rest>", today "<stack>/<rest>" with layer i at [i].
_PER_LAYER = re.compile(r"^(.+)/(\d+)/(.+)$")
# TensorStore reports the OS error of a failed write inside its message.
_OS_ERROR_CODE = re.compile(r"os_error_code='?(\d+)")


class SaveFailed(CheckpointError):
  """A write did not complete: what, the cause, and which checkpoints are intact, in one line.

  `line(intact)` rewords it with another checkpoint folder's steps (a failed
  save of the best params, or of metrics.jsonl, names the run's checkpoints).
  """

  def __init__(self, what: str, cause: str, os_error: bool, intact: list[int]):
    self.what, self.cause, self.os_error = what, cause, os_error
    super().__init__(self.line(intact))

  def line(self, intact: list[int]) -> str:
    fix = "free space (or fix the cause), then " if self.os_error else ""
    if intact:
      many = len(intact) > 1
      after = (f"checkpoint{'s' * many} {', '.join(map(str, intact))} {'are' if many else 'is'} "
               f"intact; {fix}run the same command to resume from step {intact[-1]}")
    else:
      after = f"no checkpoint is complete yet; {fix}run the same command to start again"
    return f"{self.what} failed: {self.cause}; {after}"


def write_failure(what: str, e: BaseException, intact: list[int]) -> SaveFailed:
  """The SaveFailed of `what` ("saving ...", "writing ...") that failed with `e`."""
  os_error = _os_error(e)
  cause = f"{os_error[1]} (errno {os_error[0]})" if os_error else _cause(e)
  return SaveFailed(what, cause, bool(os_error), intact)


def committed_steps(directory: str) -> list[int]:
  """The steps whose checkpoint folders in `directory` are complete (Orbax renames a save
  into `<step>` when it is done; a partial one is `<step>.orbax-checkpoint-tmp...`)."""
  try:
    names = os.listdir(directory)
  except OSError:
    return []
  return sorted(int(n) for n in names if n.isdigit() and os.path.isdir(os.path.join(directory, n)))


class _OrbaxFailures(logging.Filter):
  """Drops Orbax's ERROR log records, and asyncio's about the futures of its failed reads and
  writes: the failure they describe reaches the user as one line."""

  def filter(self, record: logging.LogRecord) -> bool:
    if record.levelno < logging.ERROR:
      return True
    if record.name == "asyncio":
      return "exception was never retrieved" not in record.getMessage()
    return "orbax" not in record.pathname


def _quiet_background_failures() -> None:
  """Once per process: no tracebacks from Orbax's and TensorStore's helper threads.

  A failed read or write leaves TensorStore callbacks aimed at a closed event
  loop and Orbax coroutines that never finish, which Python prints as
  "Exception ignored ..."; Orbax logs each failure at ERROR from its threads. The failure itself is
  raised to the caller, who reports it in one line.
  """
  if getattr(sys.unraisablehook, "_trellis", False):
    return
  previous = sys.unraisablehook

  def hook(unraisable):
    closed = (isinstance(unraisable.exc_value, RuntimeError)
              and "Event loop is closed" in str(unraisable.exc_value))
    code = getattr(unraisable.object, "cr_code", None)  # a coroutine of a failed read
    if not (closed or (code is not None and "orbax" in code.co_filename)):
      previous(unraisable)

  hook._trellis = True
  sys.unraisablehook = hook
  logging.getLogger("absl").addFilter(_OrbaxFailures())
  logging.getLogger("asyncio").addFilter(_OrbaxFailures())


def _cause(e: BaseException) -> str:
  """The innermost cause of `e` in one short line (TensorStore's outer ones run to pages)."""
  while e.__cause__ is not None or (e.__context__ is not None and not e.__suppress_context__):
    e = e.__cause__ or e.__context__
  line = first_line(e)
  return line if len(line) <= 240 else line[:237] + "..."


def _os_error(e: BaseException) -> tuple[int, str] | None:
  """(errno, its name for a user) of the OS error somewhere in `e`'s chain, if any."""
  while e is not None:
    code = e.errno if isinstance(e, OSError) and e.errno else None
    match = code is None and _OS_ERROR_CODE.search(str(e))
    code = int(match.group(1)) if match else code
    if code:
      names = {errno.ENOSPC: "no space left on device", errno.EDQUOT: "disk quota exceeded",
               errno.EACCES: "permission denied", errno.EROFS: "read-only file system"}
      return code, names.get(code, os.strerror(code).lower())
    e = e.__cause__ or e.__context__
  return None


class Checkpoints:
  """The checkpoints of one workdir: save every N steps, keep the last K.

  `cleanup`: remove the temporary folders of saves a killed process left
  (only the workdir's one writer may: another run's save may be in flight).
  """

  def __init__(self, directory: str, keep: int = 3, async_save: bool = True,
               cleanup: bool = False):
    _quiet_background_failures()
    self.directory = os.path.abspath(directory)
    options = ocp.CheckpointManagerOptions(max_to_keep=keep,
                                           enable_async_checkpointing=async_save,
                                           create=True, cleanup_tmp_directories=cleanup)
    # Handlers named up front, so item_metadata reads a checkpoint's tree without a warning.
    handlers = {"state": ocp.StandardCheckpointHandler(), "data": ocp.JsonCheckpointHandler(),
                "meta": ocp.JsonCheckpointHandler()}
    self.manager = ocp.CheckpointManager(self.directory, options=options, item_handlers=handlers)
    self._saving, self._failed = None, None  # the step of the save in flight; a failure's line

  def latest_step(self) -> int | None:
    return self.manager.latest_step()

  def save(self, step: int, state, data_state: dict, meta: dict) -> None:
    """Starts an (asynchronous) save; the previous one is finished first.

    Raises CheckpointError (one line) if this save or the previous one failed.
    """
    try:
      self.manager.save(step, args=ocp.args.Composite(
          state=ocp.args.StandardSave(state), data=ocp.args.JsonSave(data_state),
          meta=ocp.args.JsonSave(meta)), force=True)
    except Exception as e:  # noqa: BLE001 -- Orbax raises what its writers raised
      self._fail(step, e)
    self._saving = step

  def wait(self) -> None:
    """Waits for the save in flight; CheckpointError (one line) if it failed."""
    try:
      self.manager.wait_until_finished()
    except Exception as e:  # noqa: BLE001
      self._fail(None, e)
    self._saving = None

  def _fail(self, step: int | None, e: Exception):
    """Raises the SaveFailed of a failed save (of `step`, or of the one in flight)."""
    committed = committed_steps(self.directory)
    failed = self._saving if self._saving is not None and self._saving not in committed else step
    self._saving = None
    error = write_failure(f"saving checkpoint step {failed} in {self.directory}", e, committed)
    self._failed = str(error)
    raise error from e

  def restore_newest(self, abstract_state, say=print):
    """(step, state, data_state, meta) of the newest checkpoint that restores; None if none.

    A newer one that fails (a read error, wrong shapes, a missing item) is
    moved aside to `<directory>-unreadable/<step>`, named in one line by `say`;
    if none restores, a CheckpointError names them all and nothing is moved.
    """
    failures = []
    for step in sorted(self.manager.all_steps(), reverse=True):
      try:
        restored = self.restore(step, abstract_state)
      except CheckpointError as e:
        failures.append((step, str(e)))
        continue
      for bad, why in failures:
        where = self._move_aside(bad)
        say(f"trellis: checkpoint step {bad} does not restore ({why}); moved it to {where}; "
            f"resuming from step {step}")
      if failures:
        self.manager.reload()
      return (step, *restored)
    if failures:
      raise CheckpointError(
          f"no checkpoint in {self.directory} restores: " + "; ".join(w for _, w in failures)
          + ". They are left as they are: if the config changed, run with the one the workdir "
          "was trained with (config.json); else restore a copy or use a fresh workdir")
    return None

  def _move_aside(self, step: int) -> str:
    """Moves checkpoint `step` to `<directory>-unreadable/` (process 0); returns where."""
    target = os.path.join(f"{self.directory}-unreadable", str(step))
    suffix = 1
    while os.path.exists(target):
      target, suffix = os.path.join(f"{self.directory}-unreadable", f"{step}.{suffix}"), suffix + 1
    if jax.process_index() == 0:
      os.makedirs(os.path.dirname(target), exist_ok=True)
      shutil.move(os.path.join(self.directory, str(step)), target)
    if jax.process_count() > 1:
      multihost_utils.sync_global_devices(f"trellis moved checkpoint {step} aside")
    return target

  def restore(self, step: int, abstract_state):
    """(state, data_state, meta) at `step`, placed by `abstract_state`'s shardings.

    `abstract_state` is a tree of `jax.ShapeDtypeStruct` with `sharding` set,
    so a checkpoint written on one mesh restores onto any other. Params saved
    per layer are stacked (see the module docstring).
    """
    try:
      saved = self._saved_params(step, abstract_state)
      layers = per_layer_names(saved, abstract_state["params"]) if saved else {}
      missing = sorted(set(abstract_state["params"]) - saved - set(layers)) if saved else []
      if missing:
        raise CheckpointError(
            f"{self.directory}/{step} lacks the network's param {few(missing, 3)}: it was "
            "saved by an older Trellis or by another model; train it again in a fresh workdir")
      target = split_layers(abstract_state, layers)
      restored = self.manager.restore(step, args=ocp.args.Composite(
          state=ocp.args.StandardRestore(target),
          data=ocp.args.JsonRestore(), meta=ocp.args.JsonRestore()))
    except CheckpointError:
      raise
    except Exception as e:  # noqa: BLE001 -- any read error: TensorStore raises bare Exceptions
      raise CheckpointError(f"cannot restore {self.directory}/{step}: {_cause(e)}") from e
    return stack_layers(restored.state, abstract_state, layers), restored.data, restored.meta

  def saved_shapes(self, step: int) -> dict[str, tuple[int, ...]]:
    """{param name: shape} of the checkpoint at `step` (read from its metadata, no arrays)."""
    return {name: tuple(meta.shape)
            for name, meta in self.manager.item_metadata(step)["state"]["params"].items()}

  def _saved_params(self, step: int, abstract_state) -> set[str]:
    """The param names the checkpoint at `step` holds (read from its metadata, no arrays)."""
    if not (isinstance(abstract_state, dict) and abstract_state.get("params")):
      return set()
    return set(self.saved_shapes(step))

  def close(self) -> None:
    """Finishes the save in flight (CheckpointError if it failed, unless one was raised)."""
    try:
      if self._failed is None:
        self.wait()
    finally:
      try:
        self.manager.close()
      except Exception:  # noqa: BLE001 -- a failed save was reported already
        if self._failed is None:
          raise


def per_layer_names(saved: set, params: dict) -> dict[str, list[str]]:
  """{param of `params`: its layers' names in `saved`, in order} for the params a
  checkpoint holds per layer ("<stack>/<i>/<rest>", today "<stack>/<rest>")."""
  groups = {}
  for name in saved:
    match = _PER_LAYER.match(name)
    stacked = match and f"{match[1]}/{match[3]}"
    if stacked and stacked in params and stacked not in saved:
      groups.setdefault(stacked, {})[int(match[2])] = name
  out = {}
  for stacked, layers in groups.items():
    count = params[stacked].shape[0]
    if sorted(layers) != list(range(count)):
      raise CheckpointError(f"the checkpoint holds layers {sorted(layers)} of {stacked}, "
                            f"but the network has {count}; the checkpoint and the config "
                            "describe different models")
    out[stacked] = [layers[i] for i in range(count)]
  return out


def _layer_struct(stacked):
  """The ShapeDtypeStruct of one layer of a stacked param (placed as its layers are)."""
  sharding = stacked.sharding
  if isinstance(sharding, NamedSharding):
    sharding = NamedSharding(sharding.mesh, PartitionSpec(*tuple(sharding.spec)[1:]))
  return jax.ShapeDtypeStruct(stacked.shape[1:], stacked.dtype, sharding=sharding)


def split_layers(tree, layers: dict):
  """The restore target `tree` with each stacked key of `layers` split into its layers' keys."""
  if not layers:
    return tree
  if isinstance(tree, dict):
    out = {}
    for key, value in tree.items():
      if key in layers:
        out.update({name: _layer_struct(value) for name in layers[key]})
      else:
        out[key] = split_layers(value, layers)
    return out
  return _map_children(tree, lambda child: split_layers(child, layers))


def stack_layers(tree, abstract, layers: dict):
  """Restored `tree` with each param of `layers` stacked from its layers again, placed
  as `abstract` (the restore target before `split_layers`) places it."""
  if not layers:
    return tree
  if isinstance(tree, dict):
    out = {}
    for key, value in abstract.items():
      if key in layers:
        stack = jax.jit(lambda *xs: jnp.stack(xs), out_shardings=value.sharding)
        out[key] = stack(*[tree[name] for name in layers[key]])
      else:
        out[key] = stack_layers(tree[key], value, layers)
    return out
  if not isinstance(tree, (tuple, list)):
    return tree
  return _map_children(tree, lambda pair: stack_layers(*pair, layers), zip(tree, abstract))


def _map_children(tree, fn, children=None):
  """A tuple, NamedTuple or list like `tree` of fn(child) (`children`: default its own)."""
  if not isinstance(tree, (tuple, list)):
    return tree
  mapped = [fn(child) for child in (tree if children is None else children)]
  if isinstance(tree, tuple) and hasattr(tree, "_fields"):  # optax states are NamedTuples
    return type(tree)(*mapped)
  return type(tree)(mapped)


def check_params(params: dict, abstract: dict, source: str) -> None:
  """CheckpointError (one line) unless each of `params` is a param of `abstract`, of its shape.

  Every path that seeds a run with given params (a Trellis workdir, a Hugging
  Face folder) is checked here, before anything compiles.
  """
  unknown = sorted(set(params) - set(abstract))
  if unknown:
    raise CheckpointError(f"{source}: the network has no param {few(unknown, 3)}; "
                          "the source and the config describe different models")
  for name, value in params.items():
    if tuple(np.shape(value)) != tuple(abstract[name].shape):
      raise CheckpointError(f"{source}: {name} has shape {list(np.shape(value))} but the "
                            f"network's is {list(abstract[name].shape)}; the source and the "
                            "config describe different models")


def abstract_with_shardings(tree, shardings):
  """ShapeDtypeStructs carrying the target shardings: the restore target."""
  return jax.tree.map(lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s),
                      tree, shardings)


class BestParams:
  """Model selection: the params of the best evaluation so far, in their own folder.

  Its small state (best value and step, evals since, stopped) travels in the
  main checkpoint's metadata, so a resumed run selects and stops exactly as
  an uninterrupted one. Without a metric it does nothing.
  """

  def __init__(self, directory: str, metric: str, mode: str = "max", patience: int = 0,
               cleanup: bool = False):
    self.metric, self.mode, self.patience = metric, mode, patience
    self.value, self.step, self.since, self.stopped = None, None, 0, False
    self.checkpoints = (Checkpoints(directory, keep=1, async_save=False, cleanup=cleanup)
                        if metric else None)

  def load(self, state: dict) -> None:
    self.value, self.step = state.get("value"), state.get("step")
    self.since, self.stopped = state.get("since", 0), state.get("stopped", False)

  def state(self) -> dict:
    return {"value": self.value, "step": self.step, "since": self.since, "stopped": self.stopped}

  def update(self, step: int, results: dict, params) -> bool:
    """Records an evaluation; saves params if best. Returns True when patience runs out."""
    if not self.metric:
      return False
    if self.metric not in results:
      raise CheckpointError(f"train.best_metric={self.metric!r} is not an eval metric; "
                            f"have {', '.join(sorted(results))}")
    value = float(results[self.metric])
    better = self.value is None or (value > self.value if self.mode == "max" else value < self.value)
    if better:
      self.value, self.step, self.since = value, step, 0
      # A resumed run may re-reach a best it had saved before dying: same params.
      if step not in self.checkpoints.manager.all_steps():
        self.checkpoints.save(step, {"params": params}, {}, {"metric": self.metric,
                                                             "value": value})
    else:
      self.since += 1
    self.stopped = bool(self.patience) and self.since >= self.patience
    return self.stopped

  def restore(self, abstract_params):
    """The best params (placed like `abstract_params`), or None if none were saved."""
    step = self.checkpoints.latest_step() if self.checkpoints else None
    if step is None:
      return None
    return self.checkpoints.restore(step, {"params": abstract_params})[0]["params"]

  def summary(self) -> dict:
    if not self.metric:
      return {}
    return {"best_metric": self.metric, "best_value": self.value, "best_step": self.step,
            "stopped_early": self.stopped}

  def close(self) -> None:
    if self.checkpoints:
      self.checkpoints.close()
