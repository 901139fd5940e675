"""A run's folder: the config it was resolved to, and the params of its checkpoints.

`resolve` checks a config and fills its derived fields before anything
compiles; `check_workdir` checks that the run a workdir holds can continue as
the config says (and that no other run holds it), and `prepare_workdir` then
writes the config; `load_config` and `restore_params` read a run back
(generation, fine-tuning from it, export).
One run per workdir: research/lock.py.
"""

import json
import os

import jax

from research import config as config_lib
from research import objectives, sharding
from research.checkpoint import Checkpoints
from research.errors import CheckpointError
from research.lock import busy_message, lock_holder
from research.network import NetworkDef, state_layout


def resolve(cfg, num_devices: int):
  """Validates `cfg` and fills the fields derived from others (a new, locked copy).

  Raises ConfigError for a bad value, or for objectives that cannot train
  `model.kind` or need different example layouts.
  """
  config_lib.validate(cfg, num_devices)
  cfg = cfg.copy_and_resolve_references()
  with cfg.unlocked():
    if cfg.model.vocab_size == 0:
      cfg.model.vocab_size = cfg.data.vocab_size
  objectives.check_model(cfg.objectives, cfg.model.arch, cfg.model.kind)
  objectives.examples(cfg.objectives)
  cfg.lock()
  return cfg


def check_workdir(cfg, workdir: str) -> None:
  """ConfigError unless the run `workdir` holds, if any, can continue as `cfg`, and
  CheckpointError if another run holds the workdir now (writes nothing)."""
  # Process 0 holds a multi-process run's lock: the others would see their own run.
  holder = lock_holder(workdir) if jax.process_index() == 0 else None
  if holder:
    raise CheckpointError(busy_message(workdir, holder))
  path = os.path.join(workdir, "config.json")
  if os.path.exists(path):
    with open(path) as f:
      config_lib.check_compatible(json.load(f), cfg)


def prepare_workdir(cfg, workdir: str) -> None:
  """Checks the workdir (check_workdir), then creates it and writes config.json.

  Call it once the run is known to start (its data loaded): a run that fails
  before leaves nothing behind, so the same command with a mended config works.
  """
  check_workdir(cfg, workdir)
  if jax.process_index() == 0:
    os.makedirs(workdir, exist_ok=True)
    write_atomically(os.path.join(workdir, "config.json"), config_lib.to_json(cfg))


def write_atomically(path: str, text: str) -> None:
  """Writes `path` whole or not at all: a kill mid-write leaves the old file (or none)."""
  temporary = f"{path}.tmp-{os.getpid()}"
  with open(temporary, "w") as f:
    f.write(text)
  os.replace(temporary, path)


def load_config(workdir: str):
  """The resolved config a workdir was trained with."""
  path = os.path.join(workdir, "config.json")
  if not os.path.exists(path):
    raise CheckpointError(f"{workdir} holds no run (no config.json)")
  with open(path) as f:
    saved = json.load(f)
  # A run saved before a field existed gets its default, which keeps the old behaviour.
  return config_lib.with_preset({"saved": saved}, "saved")


def restore_params(workdir: str, step: int | None = None,
                   devices=None) -> tuple[object, NetworkDef, dict, int]:
  """(cfg, netdef, params, step) from a workdir's latest (or given) checkpoint.

  Restores onto `devices` (default: the first device alone) whatever mesh
  the run was trained on. Pretraining and fine-tuning workdirs alike: the
  network has the objectives' heads, a task's labels head sized as saved.
  """
  cfg = load_config(workdir)
  with cfg.unlocked():
    cfg.mesh.data, cfg.mesh.fsdp, cfg.mesh.tensor = -1, 1, 1
  devices = jax.devices()[:1] if devices is None else devices
  ckpts = Checkpoints(os.path.join(workdir, "checkpoints"), async_save=False)
  step = ckpts.latest_step() if step is None else step
  if step is None:
    raise CheckpointError(f"{workdir} has no checkpoint yet")
  heads = objectives.heads(cfg.objectives, _saved_labels(cfg, ckpts.saved_shapes(step)))
  layout = state_layout(cfg, heads, sharding.make_mesh(cfg, devices))
  state, _, _ = ckpts.restore(step, layout.abstract)
  ckpts.close()
  return cfg, layout.netdef, state["params"], step


def _saved_labels(cfg, shapes: dict) -> int:
  """How many labels the saved heads a task sizes by its labels have (0: no such head)."""
  for head, (_, outputs) in objectives.heads(cfg.objectives, num_labels=-1).items():
    kernel = shapes.get(f"heads/{head}/out/kernel")
    if outputs == -1 and kernel:
      return kernel[-1]
  return 0

