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
"""

import os
import re

import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp
from jax.sharding import NamedSharding, PartitionSpec

from research.errors import CheckpointError, few, first_line

# A param saved per layer: "<stack>/<i>/<rest>", today "<stack>/<rest>" with layer i at [i].
_PER_LAYER = re.compile(r"^(.+)/(\d+)/(.+)$")


class Checkpoints:
  """The checkpoints of one workdir: save every N steps, keep the last K."""

  def __init__(self, directory: str, keep: int = 3, async_save: bool = True):
    self.directory = os.path.abspath(directory)
    options = ocp.CheckpointManagerOptions(max_to_keep=keep,
                                           enable_async_checkpointing=async_save,
                                           create=True)
    # Handlers named up front, so item_metadata reads a checkpoint's tree without a warning.
    handlers = {"state": ocp.StandardCheckpointHandler(), "data": ocp.JsonCheckpointHandler(),
                "meta": ocp.JsonCheckpointHandler()}
    self.manager = ocp.CheckpointManager(self.directory, options=options, item_handlers=handlers)

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
    except (ValueError, KeyError, TypeError, FileNotFoundError) as e:
      raise CheckpointError(f"cannot restore {self.directory}/{step}: {first_line(e)}") from e
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
    self.manager.wait_until_finished()
    self.manager.close()


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
