"""The optimizer: optax AdamW with warmup, decay, clipping, decay mask and lr multipliers."""

import re

import jax.numpy as jnp
import numpy as np
import optax

from research.models.transformer import LAYER_AXIS


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


# Every param's role, by its leaf name (the last part of its flat name); each
# architecture names its params after these. Only weight matrices, kernels and
# embedding tables are decayed: biases (a 2-D LSTM gate bias too) and norm
# scales/biases never are, whatever their shape (AdamW, Loshchilov & Hutter 2019;
# BERT's and GPT-2's exclusions).
ROLES = {
    "kernel": "kernel", "input_kernel": "kernel", "recurrent_kernel": "kernel",
    "embedding": "embedding", "pos_embed": "embedding", "type_embed": "embedding",
    "bias": "bias", "recurrent_bias": "bias",
    "scale": "scale",
}
DECAYED_ROLES = ("kernel", "embedding")


def param_role(name: str) -> str:
  """"kernel", "embedding", "bias" or "scale": what the param `name` is, by its leaf name.

  A norm's bias is a "bias". A leaf not in ROLES raises: a new param must say
  whether it is decayed rather than fall back on a guess.
  """
  leaf = name.rsplit("/", 1)[-1]
  if leaf not in ROLES:
    raise ValueError(f"param {name!r}: leaf name {leaf!r} has no optimizer role; name it "
                     f"after one of {sorted(ROLES)} or add it to research.optim.ROLES")
  return ROLES[leaf]


def decay_mask(params: dict) -> dict:
  """Weight decay on kernels and embedding tables only (by `param_role`, not by shape).

  Works for layer-stacked params alike: the leaf name is the same.
  """
  return {name: param_role(name) in DECAYED_ROLES for name in params}


def layer_index(name: str) -> int | None:
  """The block number of a per-layer backbone param ("backbone/blocks/3/..." -> 3).

  Embeddings come before every block (-1); other backbone params (final
  norms) come after (None: the top). Heads are not backbone params. A
  layer-stacked param (see `layer_axis`) holds every block instead.
  """
  match = re.search(r"/(\d+)/", name)
  if match:
    return int(match.group(1))
  return -1 if "embed" in name else None


def layer_axis(axes) -> int | None:
  """Which dimension of a param with logical `axes` indexes the layers (None: not stacked)."""
  axes = tuple(axes or ())
  return axes.index(LAYER_AXIS) if LAYER_AXIS in axes else None


def lr_multipliers(t, names, num_layers: int, axes=None) -> dict[str, float | np.ndarray]:
  """Per-parameter lr factors for transfer: freezing, layer-wise decay, head lr.

  0 freezes a parameter (its AdamW update, weight decay included, is zeroed).
  `axes` maps a name to its logical axes (network.NetworkDef.axes); a param stacked
  on the LAYER_AXIS gets one factor per layer, shaped to broadcast from the front
  ([L], or [1, L] when the layers are its second axis).
  """
  axes = axes or {}
  out = {}
  for name in names:
    if not name.startswith("backbone/"):
      out[name] = t.head_lr_multiplier
      continue
    stacked = layer_axis(axes.get(name))
    if stacked is not None:
      depth = np.arange(num_layers).reshape((1,) * stacked + (num_layers,))
    else:
      index = layer_index(name)
      depth = np.asarray(num_layers if index is None else index)  # distance from the bottom
    frozen = t.freeze_backbone | ((t.freeze_layers > 0) & (depth < t.freeze_layers))
    factor = np.where(frozen, 0.0, t.layer_lr_decay ** (num_layers - depth))
    out[name] = factor if factor.ndim else float(factor)
  return out


def scale_per_param(factors: dict) -> optax.GradientTransformation:
  """Multiplies each param's update by its factor (name -> float, or an array that
  broadcasts from the update's leading axes: `lr_multipliers`' per-layer factors)."""

  def scale(u, factor):
    factor = jnp.asarray(factor, u.dtype)
    return u * factor.reshape(factor.shape + (1,) * (u.ndim - factor.ndim))

  def update(updates, state, params=None):
    del params
    return {k: scale(u, factors[k]) for k, u in updates.items()}, state

  return optax.GradientTransformation(lambda params: optax.EmptyState(), update)


def mask_frozen(grads: dict, factors: dict) -> dict:
  """`grads` with those of frozen params (factor 0; per layer for [L] factors) set to 0.

  These are the gradients that are applied: the ones to clip and to report.
  `where`, not a product: an inf or nan gradient of a frozen param does not leak.
  """

  def zero(g, factor):
    keep = jnp.asarray(factor) != 0
    keep = keep.reshape(keep.shape + (1,) * (g.ndim - keep.ndim))
    return jnp.where(keep, g, jnp.zeros((), g.dtype))

  return {k: zero(g, factors[k]) for k, g in grads.items()}


def any_frozen(factors: dict) -> bool:
  """Whether any param (or layer of a stacked one) has lr factor 0 in `factors`."""
  return any(np.any(np.asarray(f) == 0) for f in factors.values())


def zero_frozen(factors: dict) -> optax.GradientTransformation:
  """`mask_frozen` as the first link of the chain: the clip's global norm is that of
  the applied gradients only, and Adam's moments of a frozen param stay 0."""

  def update(updates, state, params=None):
    del params
    return mask_frozen(updates, factors), state

  return optax.GradientTransformation(lambda params: optax.EmptyState(), update)


def make_optimizer(t, names=(), num_layers: int = 0, axes=None) -> optax.GradientTransformation:
  """AdamW from the `train` config block: frozen grads zeroed, clipped, lr factors last.

  The lr factors (`lr_multipliers` of `names` and their `axes`) scale the final
  update, so a frozen param's weight decay is zeroed too and the param stays
  exactly as it was.
  """
  factors = lr_multipliers(t, names, num_layers, axes)
  parts = []
  if any_frozen(factors):
    parts.append(zero_frozen(factors))
  if t.clip_norm > 0:
    parts.append(optax.clip_by_global_norm(t.clip_norm))
  parts.append(optax.adamw(make_schedule(t), b1=t.b1, b2=t.b2, eps=t.eps,
                           weight_decay=t.weight_decay, mask=decay_mask))
  if any(np.any(np.asarray(f) != 1.0) for f in factors.values()):
    parts.append(scale_per_param(factors))
  return optax.chain(*parts)
