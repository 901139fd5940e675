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
    so a checkpoint written on one mesh restores onto any other.
    """
    try:
      restored = self.manager.restore(step, args=ocp.args.Composite(
          state=ocp.args.StandardRestore(abstract_state), data=ocp.args.JsonRestore(),
          meta=ocp.args.JsonRestore()))
    except (ValueError, KeyError, TypeError, FileNotFoundError) as e:
      first_line = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
      raise CheckpointError(f"cannot restore {self.directory}/{step}: {first_line}") from e
    return restored.state, restored.data, restored.meta

  def read_meta(self, step: int) -> dict:
    """The metadata item alone (lineage, config) without touching the arrays."""
    return self.manager.restore(step, args=ocp.args.Composite(meta=ocp.args.JsonRestore())).meta

  def wait(self) -> None:
    self.manager.wait_until_finished()

  def close(self) -> None:
    self.manager.wait_until_finished()
    self.manager.close()


def abstract_with_shardings(tree, shardings):
  """ShapeDtypeStructs carrying the target shardings: the restore target."""
  return jax.tree.map(lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s),
                      tree, shardings)
