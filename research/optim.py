"""The optimizer: optax AdamW with warmup, decay, clipping, decay mask and lr multipliers."""

import re

import jax.numpy as jnp
import numpy as np
import optax

from research.models.transformer import is_stacked



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


def decay_mask(params: dict) -> dict:
  """Weight decay on matrices only: never on biases, norm scales or other vectors.

  A stacked param's leading layer axis does not count: a stack of scales is
  [L, D], still a vector per layer.
  """
  return {name: p.ndim - is_stacked(name) >= 2 for name, p in params.items()}


def layer_index(name: str) -> int | None:
  """The block number of a backbone param ("backbone/blocks/3/..." -> 3).

  Embeddings come before every block (-1); other backbone params (final
  norms) come after (None: the top). Heads are not backbone params.
  """
  match = re.search(r"/(\d+)/", name)
  if match:
    return int(match.group(1))
  return -1 if "embed" in name else None


def lr_multipliers(t, names, num_layers: int) -> dict[str, float | np.ndarray]:
  """Per-parameter lr factors for transfer: freezing, layer-wise decay, head lr.

  0 freezes a parameter (its AdamW update, weight decay included, is zeroed).
  A layer-stacked param gets one factor per layer (an [L] array).
  """
  out = {}
  for name in names:
    if not name.startswith("backbone/"):
      out[name] = t.head_lr_multiplier
      continue
    index = layer_index(name)
    if is_stacked(name):
      depth = np.arange(num_layers)
    else:
      depth = np.asarray(num_layers if index is None else index)  # distance from the bottom
    frozen = t.freeze_backbone | ((t.freeze_layers > 0) & (depth < t.freeze_layers))
    factor = np.where(frozen, 0.0, t.layer_lr_decay ** (num_layers - depth))
    out[name] = factor if factor.ndim else float(factor)
  return out


def scale_per_param(factors: dict) -> optax.GradientTransformation:
  """Multiplies each param's update by its factor (a flat dict name -> float or [L] array)."""

  def scale(u, factor):
    factor = jnp.asarray(factor, u.dtype)
    return u * factor.reshape(factor.shape + (1,) * (u.ndim - factor.ndim))

  def update(updates, state, params=None):
    del params
    return {k: scale(u, factors[k]) for k, u in updates.items()}, state

  return optax.GradientTransformation(lambda params: optax.EmptyState(), update)


def make_optimizer(t, names=(), num_layers: int = 0) -> optax.GradientTransformation:
  """AdamW from the `train` config block, with clipping first and lr factors last."""
  parts = [optax.clip_by_global_norm(t.clip_norm)] if t.clip_norm > 0 else []
  parts.append(optax.adamw(make_schedule(t), b1=t.b1, b2=t.b2, eps=t.eps,
                           weight_decay=t.weight_decay, mask=decay_mask))
  factors = lr_multipliers(t, names, num_layers)
  if any(np.any(np.asarray(f) != 1.0) for f in factors.values()):
    parts.append(scale_per_param(factors))
  return optax.chain(*parts)
