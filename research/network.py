"""The network as functional NNX: its definition, its params, and where its state lives.

Params are a flat dict `"backbone/blocks/attn/query/kernel" -> array`. The
abstract network is split once (`define_network`); `NetworkDef.merge`
rebuilds the module from the flat dict inside jit. The state of a run is a
pytree `{params, opt_state, step, rng}`; `state_layout` fixes its optimizer,
shapes and shardings before anything is allocated, for the Trainer and for
restoring a checkpoint alike.
"""

import dataclasses
from typing import Callable, NamedTuple

import jax
import jax.numpy as jnp
import optax
from flax import nnx

from research import optim, sharding
from research.checkpoint import abstract_with_shardings
from research.models import Network


def _name(path) -> str:
  return "/".join(str(getattr(k, "key", k)) for k in path)


@dataclasses.dataclass(frozen=True)
class NetworkDef:
  """How to rebuild the network from a flat params dict (static under jit)."""
  graphdef: nnx.GraphDef
  paths: tuple  # one nnx path tuple per param, in `names` order
  names: tuple[str, ...]
  axes: dict  # name -> logical axis names (or None)

  def merge(self, params: dict) -> nnx.Module:
    nested = {}
    for path, name in zip(self.paths, self.names):
      node = nested
      for key in path[:-1]:
        node = node.setdefault(key, {})
      node[path[-1]] = params[name]
    return nnx.merge(self.graphdef, nested)


def define_network(cfg, head_sizes: dict) -> tuple[NetworkDef, dict]:
  """The network's definition and abstract params (name -> ShapeDtypeStruct), unallocated."""
  abstract = nnx.eval_shape(lambda: Network(cfg.model, head_sizes, rngs=nnx.Rngs(0)))
  graphdef, state = nnx.split(abstract)
  flat = list(nnx.to_flat_state(state))
  names = tuple(_name(path) for path, _ in flat)
  axes = {n: v.get_metadata().get("axes") for n, (_, v) in zip(names, flat)}
  shapes = {n: jax.ShapeDtypeStruct(v.shape, v.dtype) for n, (_, v) in zip(names, flat)}
  return NetworkDef(graphdef, tuple(p for p, _ in flat), names, axes), shapes


def init_params(cfg, head_sizes: dict, rng) -> dict:
  """Freshly initialised params as a flat dict (call under jit)."""
  network = Network(cfg.model, head_sizes, rngs=nnx.Rngs(params=rng))
  return {_name(p): v[...] for p, v in nnx.to_flat_state(nnx.state(network))}


def state_shardings(abstract_state: dict, param_shardings: dict, mesh) -> dict:
  """Shardings for the whole state: optimizer moments follow their params."""
  replicated = sharding.replicated(mesh)

  def place(path, leaf):
    for key in reversed(path):
      name = getattr(key, "key", None)
      if name in param_shardings and abstract_state["params"][name].shape == leaf.shape:
        return param_shardings[name]
    return replicated

  out = jax.tree_util.tree_map_with_path(place, abstract_state)
  out["params"] = param_shardings
  return out


class StateLayout(NamedTuple):
  """A run's state before it exists: network, optimizer, shapes and shardings."""
  netdef: NetworkDef
  shapes: dict  # param name -> ShapeDtypeStruct
  tx: optax.GradientTransformation
  param_shardings: dict  # param name -> NamedSharding
  shardings: dict  # the whole state's, as the state
  abstract: dict  # ShapeDtypeStructs carrying `shardings`: the restore target
  init: Callable  # rng -> a fresh state (jit it with out_shardings=shardings)


def state_layout(cfg, head_sizes: dict, mesh) -> StateLayout:
  """The layout of the state of `cfg`'s network with `head_sizes` heads on `mesh`."""
  netdef, shapes = define_network(cfg, head_sizes)
  tx = optim.make_optimizer(cfg.train, shapes, cfg.model.num_layers, netdef.axes)
  param_shardings = sharding.tree_shardings(netdef.axes, shapes, mesh, dict(cfg.mesh.rules))

  def init(rng):
    params = init_params(cfg, head_sizes, rng)
    return {"params": params, "opt_state": tx.init(params),
            "step": jnp.zeros((), jnp.int32), "rng": rng}

  abstract = jax.eval_shape(init, jax.random.PRNGKey(cfg.seed))
  shardings = state_shardings(abstract, param_shardings, mesh)
  return StateLayout(netdef, shapes, tx, param_shardings, shardings,
                     abstract_with_shardings(abstract, shardings), init)
