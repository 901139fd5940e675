"""The objectives registry, and `combine()` to train on a weighted sum of them.

An `Objective` (objectives/base.py) names the batch fields it reads, the
examples it trains on (packed documents or sentence pairs), the task heads it
needs next to the backbone and the model kinds it trains. Its loss returns
sums and counts, never means: `combine` divides once, by the counts of the
whole batch, so accumulation over microbatches is exact. `rng` is None at
evaluation (deterministic), a key in training; masking and corruption happen
inside jit from it, so a resumed run masks exactly as the uninterrupted one
would.
"""

from typing import Callable

import jax.numpy as jnp

from research import metrics
from research.errors import ConfigError
from research.objectives import classify, clm, mlm, nsp, prefix_lm, qa, seq2seq, span
from research.objectives.base import KINDS, Context, Pass

OBJECTIVES = {
    "classify": classify.OBJECTIVE,
    "clm": clm.OBJECTIVE,
    "mlm": mlm.OBJECTIVE,
    "nsp": nsp.OBJECTIVE,
    "prefix_lm": prefix_lm.OBJECTIVE,
    "qa": qa.OBJECTIVE,
    "seq2seq": seq2seq.OBJECTIVE,
    "span": span.OBJECTIVE,
}


def active(weights) -> dict[str, float]:
  """The objectives with non-zero weight, in a stable order."""
  return {name: float(w) for name, w in sorted(weights.items()) if w > 0}


def check_model(weights, arch: str, kind: str) -> None:
  """ConfigError if an active objective does not train `model.kind` (its `kinds`)."""
  for name in active(weights):
    kinds = OBJECTIVES[name].kinds
    if kind not in kinds:
      raise ConfigError(f"objective {name} needs {KINDS[kinds[0]]}, but model.arch={arch} "
                        f"model.kind={kind} is {KINDS[kind]}")


def examples(weights) -> str:
  """The example layout the active objectives train on: "packed" or "pairs"."""
  wanted = {OBJECTIVES[name].examples for name in active(weights)} - {"any"}
  if len(wanted) > 1:
    raise ConfigError(f"objectives {', '.join(active(weights))} need different examples "
                      f"({' and '.join(sorted(wanted))}); train them separately")
  return wanted.pop() if wanted else "packed"


def heads(weights, num_labels: int = 0) -> dict[str, tuple[str, int]]:
  """All heads the active objectives need: name -> (kind, outputs).

  An objective may size a head "labels": the task's number of labels.
  """
  out = {}
  for name in active(weights):
    for head, (kind, n) in OBJECTIVES[name].heads.items():
      out[head] = (kind, num_labels if n == "labels" else n)
  return out


def combine(weights, ctx: Context) -> Callable:
  """One loss function: the weighted sum of the active objectives' mean losses.

  `loss_fn(network, batch, rng, microbatch=0, denominators=None) -> (loss,
  metrics)`. Each objective's loss sum is divided by `denominators[name]`
  (its count over the whole batch, when the batch is one microbatch of
  several) or else by its own count; summing the results over microbatches
  gives the full-batch loss exactly. Corruptions (MLM's masking) apply first
  and every objective then reads the same corrupted batch and one shared
  backbone pass. Metrics are prefixed by the objective name ("clm/loss");
  "<name>/objective" is the (sum, count) of what is optimised.
  """
  chosen = active(weights)

  def loss_fn(network, batch, rng, microbatch=0, denominators=None):
    p = Pass(network, batch, rng, microbatch)
    for name in chosen:
      if OBJECTIVES[name].corrupt is not None:
        p = p.with_batch(OBJECTIVES[name].corrupt(p, ctx))
    total, out = 0.0, {}
    for name, weight in chosen.items():
      (loss_sum, count), obj_metrics = OBJECTIVES[name].loss(p, ctx)
      denominator = count if denominators is None else denominators[name]
      total = total + weight * loss_sum / jnp.maximum(denominator, 1.0)
      out.update({f"{name}/{k}": v for k, v in obj_metrics.items()})
      out[f"{name}/objective"] = (loss_sum, count)
    return total, out

  return loss_fn


def objective_counts(metrics: dict) -> dict:
  """name -> count of what each objective optimises, from a `combine` loss's metrics."""
  suffix = "/objective"
  return {k[:-len(suffix)]: v[1] for k, v in metrics.items() if k.endswith(suffix)}


def report(sums: dict, weights) -> dict[str, float]:
  """Plain floats from metric sums, plus the weighted total `loss`.

  `loss` is what training minimises (the weighted sum of the objectives'
  cross-entropies). A perplexity is reported only where it means something:
  `name/perplexity` for an objective over the vocabulary (clm, mlm, span,
  seq2seq; not a 2-way NSP or a task head's choice), and `perplexity` for a
  single such objective: exp of its own loss, whatever its weight.
  """
  out = metrics.summarize({k: v for k, v in sums.items() if not k.endswith("/objective")})
  chosen = active(weights)
  for name in chosen:
    if not OBJECTIVES[name].vocab_logits:
      out.pop(f"{name}/perplexity", None)
  out["loss"] = sum(w * out[f"{name}/loss"] for name, w in chosen.items())
  if len(chosen) == 1:
    name = next(iter(chosen))
    if f"{name}/perplexity" in out:
      out["perplexity"] = out[f"{name}/perplexity"]
    for key in ("accuracy",):
      if f"{name}/{key}" in out:
        out[key] = out[f"{name}/{key}"]
  return out
