"""The objectives registry, and `combine()` to train on a weighted sum of them.

An `Objective` names the batch fields it reads, the task heads it needs next
to the backbone, which backbones it can train, and its loss. A loss returns
`(loss, metrics)`: `loss` is the mean to differentiate, `metrics` maps names
to `(sum, count)` pairs so they aggregate exactly over devices, microbatches
and eval batches. `rng` is None at evaluation (deterministic), a key in
training; any masking or sampling happens inside jit from it.
"""

import math
from typing import Callable, NamedTuple

import jax
import jax.numpy as jnp

from research import metrics
from research.errors import ConfigError


class Objective(NamedTuple):
  """A pretraining objective (see the module docstring for the loss contract)."""
  fields: tuple[str, ...]  # batch fields the loss reads
  heads: dict[str, int]  # extra heads built beside the backbone: name -> outputs
  causal: bool | None  # True: needs a causal backbone; False: a bidirectional one
  loss: Callable  # (network, batch, rng) -> (loss, {name: (sum, count)})


from research.objectives import clm  # noqa: E402  (the registry needs Objective)

OBJECTIVES = {
    "clm": clm.OBJECTIVE,
}


def active(weights) -> dict[str, float]:
  """The objectives with non-zero weight, in a stable order."""
  return {name: float(w) for name, w in sorted(weights.items()) if w > 0}


def check_backbone(weights, causal: bool, arch: str, kind: str) -> None:
  """ConfigError if an active objective cannot train this backbone."""
  for name in active(weights):
    need = OBJECTIVES[name].causal
    if need is not None and need != causal:
      what = "a causal (decoder)" if need else "a bidirectional (encoder)"
      raise ConfigError(f"objective {name} needs {what} model, but model.arch={arch} "
                        f"model.kind={kind} is {'causal' if causal else 'bidirectional'}")


def heads(weights) -> dict[str, int]:
  """All task heads the active objectives need."""
  out = {}
  for name in active(weights):
    out.update(OBJECTIVES[name].heads)
  return out


def combine(weights) -> Callable:
  """One loss function: the weighted sum of the active objectives' losses.

  Metrics are prefixed by the objective name ("clm/loss"); each objective
  gets its own RNG stream folded from the step key.
  """
  chosen = active(weights)

  def loss_fn(network, batch, rng):
    total, out = 0.0, {}
    for i, (name, weight) in enumerate(chosen.items()):
      key = None if rng is None else jax.random.fold_in(rng, i)
      loss, obj_metrics = OBJECTIVES[name].loss(network, batch, key)
      total = total + weight * loss
      out.update({f"{name}/{k}": v for k, v in obj_metrics.items()})
    return total, out

  return loss_fn


def report(sums: dict, weights) -> dict[str, float]:
  """Plain floats from metric sums, plus the weighted total `loss`.

  `perplexity` is exp(loss) only for a single objective, where it means
  something; each objective's own `name/perplexity` is always there.
  """
  out = metrics.summarize(sums)
  chosen = active(weights)
  out["loss"] = sum(w * out[f"{name}/loss"] for name, w in chosen.items())
  if len(chosen) == 1:
    out["perplexity"] = math.exp(min(out["loss"], 700.0))
    name = next(iter(chosen))
    for key in ("accuracy",):
      if f"{name}/{key}" in out:
        out[key] = out[f"{name}/{key}"]
  return out


def token_cross_entropy(logits, targets, weights):
  """Cross-entropy and accuracy over weighted positions, as metric sums."""
  logits = logits.astype(jnp.float32)
  log_z = jax.nn.logsumexp(logits, axis=-1)
  target_logit = jnp.take_along_axis(logits, targets[..., None], axis=-1)[..., 0]
  weights = weights.astype(jnp.float32)
  loss_sum = jnp.sum((log_z - target_logit) * weights)
  correct = jnp.sum((jnp.argmax(logits, -1) == targets) * weights)
  count = jnp.sum(weights)
  loss = loss_sum / jnp.maximum(count, 1.0)
  return loss, {"loss": (loss_sum, count), "accuracy": (correct, count)}
