"""The optimizer: optax AdamW with warmup, decay, clipping, decay mask and lr multipliers."""

import re

import jax
import jax.numpy as jnp
import optax


def make_schedule(t) -> optax.Schedule:
  """Linear warmup to `t.lr`, then cosine, linear or constant to the end."""
  decay_steps = max(t.steps - t.warmup_steps, 1)
  end = t.lr * t.min_lr_ratio
  if t.schedule == "cosine":
    decay = optax.cosine_decay_schedule(t.lr, decay_steps, alpha=t.min_lr_ratio)
  elif t.schedule == "linear":
    decay = optax.linear_schedule(t.lr, end, decay_steps)
  else:
    decay = optax.constant_schedule(t.lr)
  if t.warmup_steps == 0:
    return decay
  return optax.join_schedules([optax.linear_schedule(0.0, t.lr, t.warmup_steps), decay],
                              [t.warmup_steps])


def decay_mask(params):
  """Weight decay on matrices only: never on biases, norm scales or other vectors."""
  return jax.tree.map(lambda p: p.ndim >= 2, params)


def layer_index(name: str) -> int | None:
  """The block number of a backbone param ("backbone/blocks/3/..." -> 3).

  Embeddings come before every block (-1); other backbone params (final
  norms) come after (None: the top). Heads are not backbone params.
  """
  match = re.search(r"/(\d+)/", name)
  if match:
    return int(match.group(1))
  return -1 if "embed" in name else None


def lr_multipliers(t, names, num_layers: int) -> dict[str, float]:
  """Per-parameter lr factors for transfer: freezing, layer-wise decay, head lr.

  0 freezes a parameter (its AdamW update, weight decay included, is zeroed).
  """
  out = {}
  for name in names:
    if not name.startswith("backbone/"):
      out[name] = t.head_lr_multiplier
      continue
    index = layer_index(name)
    depth = num_layers if index is None else index  # distance from the bottom
    frozen = t.freeze_backbone or (t.freeze_layers and depth < t.freeze_layers)
    out[name] = 0.0 if frozen else t.layer_lr_decay ** (num_layers - depth)
  return out


def scale_per_param(factors: dict[str, float]) -> optax.GradientTransformation:
  """Multiplies each param's update by its factor (a flat dict name -> float)."""

  def update(updates, state, params=None):
    del params
    return {k: u * jnp.asarray(factors[k], u.dtype) for k, u in updates.items()}, state

  return optax.GradientTransformation(lambda params: optax.EmptyState(), update)


def make_optimizer(t, names=(), num_layers: int = 0) -> optax.GradientTransformation:
  """AdamW from the `train` config block, with clipping first and lr factors last."""
  parts = [optax.clip_by_global_norm(t.clip_norm)] if t.clip_norm > 0 else []
  parts.append(optax.adamw(make_schedule(t), b1=t.b1, b2=t.b2, eps=t.eps,
                           weight_decay=t.weight_decay, mask=decay_mask))
  factors = lr_multipliers(t, names, num_layers)
  if any(f != 1.0 for f in factors.values()):
    parts.append(scale_per_param(factors))
  return optax.chain(*parts)
