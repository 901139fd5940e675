"""The device mesh and the mapping from logical axis names to shardings.

Parameters and activations are annotated with logical names ("embed", "mlp",
"batch", ...); `cfg.mesh.rules` maps each name to mesh axes. Changing how a
model is parallelised is a config change, never a model change. A name with
no rule (a typo) is a ConfigError, never a silently replicated dimension.
"""

import jax
import numpy as np
from jax.sharding import AxisType, Mesh, NamedSharding, PartitionSpec

from research.config import mesh_shape
from research.errors import ConfigError

MESH_AXES = ("data", "fsdp", "tensor")


def make_mesh(cfg, devices=None) -> Mesh:
  """A (data, fsdp, tensor) mesh over `devices` (default: all devices)."""
  devices = jax.devices() if devices is None else devices
  shape = mesh_shape(cfg, len(devices))
  # Auto axes: the step is written once and XLA propagates the shardings.
  return Mesh(np.asarray(devices).reshape(shape), MESH_AXES,
              axis_types=(AxisType.Auto,) * len(MESH_AXES))


def _check_axes(logical_axes, rules, what: str) -> None:
  """ConfigError unless every logical axis name (None: replicated) has a rule in `rules`.

  A name without a rule would be replicated silently: a mistyped axis in a
  model's annotations, or a mesh.rules that lacks one.
  """
  for name in logical_axes or ():
    if name is not None and name not in rules:
      raise ConfigError(f"{what}: logical axis {name!r} has no rule in mesh.rules "
                        f"(known: {', '.join(sorted(rules))})")


def logical_spec(logical_axes, shape, mesh: Mesh, rules, what: str = "an array") -> PartitionSpec:
  """PartitionSpec for an array whose dimensions carry `logical_axes` names.

  Every name must have a rule (`_check_axes`; `what` names the array in the error).
  A dimension that the mesh axes do not divide, or a mesh axis already used by
  an earlier dimension, stays replicated rather than failing.
  """
  _check_axes(logical_axes, rules, what)
  used, spec = set(), []
  for name, size in zip(logical_axes or (), shape):
    mesh_axes = tuple(a for a in (rules[name] if name else "").split(",")
                      if a and a not in used and mesh.shape[a] > 1)
    if mesh_axes and size % int(np.prod([mesh.shape[a] for a in mesh_axes])) == 0:
      used.update(mesh_axes)
      spec.append(mesh_axes if len(mesh_axes) > 1 else mesh_axes[0])
    else:
      spec.append(None)
  return PartitionSpec(*spec)


def tree_shardings(axes_tree: dict, shapes_tree: dict, mesh: Mesh, rules) -> dict:
  """NamedShardings for a flat dict of arrays given their logical axes."""
  return {name: NamedSharding(mesh, logical_spec(axes_tree.get(name), shapes_tree[name].shape,
                                                 mesh, rules, f"param {name}"))
          for name in shapes_tree}


def array_layout(mesh: Mesh, rules):
  """(logical axes, shape) -> NamedSharding: what models.layers.constrain places by."""
  return lambda axes, shape: NamedSharding(mesh, logical_spec(axes, shape, mesh, rules,
                                                              "an activation"))


def batch_sharding(mesh: Mesh, rules) -> NamedSharding:
  """Rows of a batch split over the batch axes; the rest replicated."""
  return NamedSharding(mesh, logical_spec(("batch",), (mesh.size,), mesh, rules))


def replicated(mesh: Mesh) -> NamedSharding:
  return NamedSharding(mesh, PartitionSpec())


def global_batch(local_batch: dict, sharding: NamedSharding) -> dict:
  """Global jax.Arrays from this process's rows (the same call on every host)."""
  return {k: jax.make_array_from_process_local_data(sharding, v)
          for k, v in local_batch.items()}
