"""Orbax checkpoints: train state, data-iterator state and lineage metadata.

A checkpoint directory `workdir/checkpoints/<step>/` holds three items:
`state` (params, optimizer state, step, rng as sharded arrays), `data` (the
data iterator's position, JSON) and `meta` (config hash, lineage, JSON).
Orbax writes each step to a temporary folder and renames it when complete,
so a crash never leaves a half checkpoint that looks finished.

The data state is process-independent (every process holds the same global
position), so a checkpoint written by N processes restores in M processes.
"""

import os

import jax
import numpy as np
import orbax.checkpoint as ocp

from research.errors import CheckpointError


class Checkpoints:
  """The checkpoints of one workdir: save every N steps, keep the last K."""

  def __init__(self, directory: str, keep: int = 3, async_save: bool = True):
    self.directory = os.path.abspath(directory)
    options = ocp.CheckpointManagerOptions(max_to_keep=keep,
                                           enable_async_checkpointing=async_save,
                                           create=True)
    self.manager = ocp.CheckpointManager(self.directory, options=options,
                                         item_names=("state", "data", "meta"))

  def latest_step(self) -> int | None:
    return self.manager.latest_step()

  def save(self, step: int, state, data_state: dict, meta: dict) -> None:
    """Starts an (asynchronous) save; the previous one is finished first."""
    self.manager.save(step, args=ocp.args.Composite(
        state=ocp.args.StandardSave(state), data=ocp.args.JsonSave(data_state),
        meta=ocp.args.JsonSave(meta)), force=True)

  def restore(self, step: int, abstract_state):
    """(state, data_state, meta) at `step`, placed by `abstract_state`'s shardings.

    `abstract_state` is a tree of `jax.ShapeDtypeStruct` with `sharding` set,
    so a checkpoint written on one mesh restores onto any other. Params saved
    under an older name (models.transformer.legacy_names) restore under today's.
    """
    try:
      renamed = self._legacy_names(step, abstract_state)
      restored = self.manager.restore(step, args=ocp.args.Composite(
          state=ocp.args.StandardRestore(rename_keys(abstract_state, renamed)),
          data=ocp.args.JsonRestore(), meta=ocp.args.JsonRestore()))
    except (ValueError, KeyError, TypeError, FileNotFoundError) as e:
      first_line = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
      raise CheckpointError(f"cannot restore {self.directory}/{step}: {first_line}") from e
    state = rename_keys(restored.state, {old: new for new, old in renamed.items()})
    return state, restored.data, restored.meta

  def _legacy_names(self, step: int, abstract_state) -> dict[str, str]:
    """{param name: the older name the checkpoint at `step` holds it under}."""
    from research.models import transformer  # late: the models import jax
    params = abstract_state.get("params") if isinstance(abstract_state, dict) else None
    renames = transformer.legacy_names(params or {})
    if not renames:
      return {}
    with ocp.StandardCheckpointer() as reader:  # the saved tree, without reading arrays
      metadata = reader.metadata(os.path.join(self.directory, str(step), "state"))
    saved = set(metadata.item_metadata["params"].keys())
    return {new: old for new, old in renames.items() if new not in saved and old in saved}

  def read_meta(self, step: int) -> dict:
    """The metadata item alone (lineage, config) without touching the arrays."""
    return self.manager.restore(step, args=ocp.args.Composite(meta=ocp.args.JsonRestore())).meta

  def wait(self) -> None:
    self.manager.wait_until_finished()

  def close(self) -> None:
    self.manager.wait_until_finished()
    self.manager.close()


def rename_keys(tree, rename: dict):
  """`tree` with every dict key k (params, and the optimizer moments keyed alike) renamed."""
  if not rename:
    return tree
  if isinstance(tree, dict):
    return {rename.get(k, k): rename_keys(v, rename) for k, v in tree.items()}
  if isinstance(tree, tuple) and hasattr(tree, "_fields"):  # optax states are NamedTuples
    return type(tree)(*(rename_keys(v, rename) for v in tree))
  if isinstance(tree, (tuple, list)):
    return type(tree)(rename_keys(v, rename) for v in tree)
  return tree


def check_params(params: dict, abstract: dict, source: str) -> None:
  """CheckpointError (one line) unless each of `params` is a param of `abstract`, of its shape.

  Every path that seeds a run with given params (a Trellis workdir, a Hugging
  Face folder) is checked here, before anything compiles.
  """
  unknown = sorted(set(params) - set(abstract))
  if unknown:
    more = f" (+{len(unknown) - 3} more)" if len(unknown) > 3 else ""
    raise CheckpointError(f"{source}: the network has no param {', '.join(unknown[:3])}{more}; "
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

  def __init__(self, directory: str, metric: str, mode: str = "max", patience: int = 0):
    self.metric, self.mode, self.patience = metric, mode, patience
    self.value, self.step, self.since, self.stopped = None, None, 0, False
    self.checkpoints = Checkpoints(directory, keep=1, async_save=False) if metric else None

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
