"""The optimizer: optax AdamW with warmup, decay, clipping and a decay mask."""

import jax
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


def make_optimizer(t) -> optax.GradientTransformation:
  """AdamW from the `train` config block, with global-norm clipping first."""
  adamw = optax.adamw(make_schedule(t), b1=t.b1, b2=t.b2, eps=t.eps,
                      weight_decay=t.weight_decay, mask=decay_mask)
  if t.clip_norm > 0:
    return optax.chain(optax.clip_by_global_norm(t.clip_norm), adamw)
  return adamw
