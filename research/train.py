"""Training: the step, the Trainer that compiles it once, and the loop.

The state is a pytree `{params, opt_state, step, rng}` (research/network.py:
flat params, the network rebuilt inside jit with `nnx.merge`). `train_step`
is the one training step of Trellis; the Trainer is the one place that jits
it, with shardings and donation. `train_and_evaluate` is the loop: log,
evaluate, checkpoint, resume; `pretrain` is a whole pretraining run.
"""

import functools
import json
import math
import os
import signal
import time
from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.experimental import multihost_utils
from jax.experimental.compilation_cache import compilation_cache
from tqdm import tqdm

from research import config as config_lib
from research import network, objectives, optim, sharding, throughput
from research.checkpoint import (BestParams, Checkpoints, SaveFailed, check_params,
                                 committed_steps, write_failure)
from research.data import pipeline
from research.errors import CheckpointError, Interrupted, TrainingError
from research.metric_log import MetricLog
from research.models import layers
from research.objectives.base import Context, Vocab
from research.lock import WorkdirLock
from research.workdir import check_workdir, prepare_workdir, resolve, write_atomically


def train_step(state, batch, *, netdef: network.NetworkDef, loss_fn: Callable,
               tx: optax.GradientTransformation, microbatches: int, lr_factors=None):
  """(state, batch) -> (state, metrics): one optimizer step, pure.

  The batch is split into `microbatches` accumulated inside the step, and the
  result is the full-batch step exactly: each objective's loss sum is divided
  by its count over the whole batch (counted first, in a pass XLA prunes to
  the counting alone), never by a microbatch's own count. Returns metric sums
  for the whole batch plus `total_loss` and `grad_norm`, the norm of the
  gradients that are applied (frozen params, lr factor 0 in `lr_factors`, left out).
  """
  rng = jax.random.fold_in(state["rng"], state["step"])
  # Corruption is drawn per row from its index in the whole batch (objectives.base.Pass).
  batch = dict(batch, row_index=jnp.arange(next(iter(batch.values())).shape[0]))

  def loss_of(params, batch, microbatch, denominators):
    return loss_fn(netdef.merge(params), batch, rng, microbatch, denominators)

  grad_fn = jax.value_and_grad(loss_of, has_aux=True)
  if microbatches == 1:
    (loss, metrics), grads = grad_fn(state["params"], batch, 0, None)
  else:
    # Interleave rows so each microbatch spans every data shard.
    split = jax.tree.map(lambda x: x.reshape(x.shape[0] // microbatches, microbatches,
                                             *x.shape[1:]).swapaxes(0, 1), batch)
    part = lambda i: jax.tree.map(lambda x: x[i], split)
    counts = [objectives.objective_counts(loss_of(state["params"], part(i), i, None)[1])
              for i in range(microbatches)]
    denominators = jax.tree.map(lambda *c: sum(c), *counts)

    def accumulate(carry, i):
      out = grad_fn(state["params"], part(i), i, denominators)
      return jax.tree.map(jnp.add, carry, out), None

    first = jax.eval_shape(grad_fn, state["params"], part(0), 0, denominators)
    zeros = jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), first)
    ((loss, metrics), grads), _ = jax.lax.scan(accumulate, zeros, jnp.arange(microbatches))
  updates, opt_state = tx.update(grads, state["opt_state"], state["params"])
  params = optax.apply_updates(state["params"], updates)
  applied = grads if lr_factors is None else optim.mask_frozen(grads, lr_factors)
  grad_norm = optax.tree.norm(applied)
  metrics = dict(metrics, total_loss=(loss, 1.0), grad_norm=(grad_norm, 1.0))
  new_state = {"params": params, "opt_state": opt_state, "step": state["step"] + 1,
               "rng": state["rng"]}
  return new_state, metrics


def eval_step(params, batch, *, netdef: network.NetworkDef, loss_fn: Callable):
  """Metric sums of one eval batch (deterministic: no dropout, rng=None)."""
  return loss_fn(netdef.merge(params), batch, None)[1]


def enable_compilation_cache(directory: str) -> None:
  """Keeps compiled programs in `directory` across processes ("" leaves JAX's setting).

  Every program is cached, however fast it compiled: a CPU step compiles in seconds,
  and a run resumed, re-evaluated or fine-tuned in the same shape compiles it again.
  """
  if not directory or jax.config.jax_compilation_cache_dir == directory:
    return
  jax.config.update("jax_compilation_cache_dir", directory)
  jax.config.update("jax_persistent_cache_min_compile_time_secs", 0)
  compilation_cache.reset_cache()  # JAX opens its cache once: reopen it at the new path


class Trainer:
  """What a run compiles, built once: mesh, state layout, the jitted step, eval and predict.

  `vocab`: the token ids the objectives use (default: Trellis' fixed ids, for
  a run without its tokenizer at hand). `heads`: the network's heads, name ->
  (kind, outputs) (default: the objectives', task heads without labels).
  `devices`: the mesh's (default: all).
  """

  def __init__(self, cfg, vocab: Vocab | None = None, heads: dict | None = None, devices=None):
    enable_compilation_cache(cfg.train.compilation_cache)  # before anything compiles
    self.cfg, self.weights = cfg, dict(cfg.objectives)
    self.heads = objectives.heads(self.weights) if heads is None else dict(heads)
    vocab = Vocab(cfg.model.vocab_size) if vocab is None else vocab
    self.loss_fn = objectives.combine(self.weights,
                                      Context(vocab, cfg.objective_options.to_dict()))
    self.mesh = sharding.make_mesh(cfg, devices)
    layout = network.state_layout(cfg, self.heads, self.mesh)
    self.netdef, self.abstract_state = layout.netdef, layout.abstract
    self.param_shardings, self.state_shardings = layout.param_shardings, layout.shardings
    self.batch_sharding = sharding.batch_sharding(self.mesh, dict(cfg.mesh.rules))
    self.num_params = int(sum(np.prod(s.shape) for s in layout.shapes.values()))
    self._seed_key = jax.random.PRNGKey(cfg.seed)
    self._init = jax.jit(layout.init, out_shardings=self.state_shardings)
    factors = optim.lr_multipliers(cfg.train, layout.shapes, cfg.model.num_layers,
                                   self.netdef.axes)
    step = jax.tree_util.Partial(train_step, netdef=self.netdef, loss_fn=self.loss_fn,
                                 tx=layout.tx, microbatches=cfg.train.microbatches,
                                 lr_factors=factors if optim.any_frozen(factors) else None)
    self._layout = sharding.array_layout(self.mesh, dict(cfg.mesh.rules))
    self._step = jax.jit(self._laid_out(step), donate_argnums=0,
                         in_shardings=(self.state_shardings, self.batch_sharding),
                         out_shardings=(self.state_shardings, None))
    self._eval = jax.jit(self._laid_out(functools.partial(eval_step, netdef=self.netdef,
                                                          loss_fn=self.loss_fn)),
                         in_shardings=(self.param_shardings, self.batch_sharding))
    self.compiled_step = None
    self._predictors = {}

  def _laid_out(self, fn: Callable) -> Callable:
    """fn traced with the mesh's layout, so layers.constrain places arrays on it."""

    def traced(*args):
      with layers.laid_out(self._layout):
        return fn(*args)

    return traced

  def init(self, initial_params: dict | None = None):
    """A fresh state; `initial_params` (name -> array, a subset) replaces those params.

    Adam's moments start at zero whatever the params, so only params change.
    Raises CheckpointError if a param is not the network's or has another shape.
    """
    check_params(initial_params or {}, self.abstract_state["params"],
                 f"init_from={self.cfg.init_from}" if self.cfg.init_from else "initial params")
    state = self._init(self._seed_key)
    for name, value in (initial_params or {}).items():
      state["params"][name] = jax.device_put(np.asarray(value, np.float32),
                                             self.param_shardings[name])
    return state

  def compile(self, state, batch) -> float:
    """Compiles the train step ahead of time; returns the seconds it took."""
    start = time.perf_counter()
    self.compiled_step = self._step.lower(state, self.to_device(batch)).compile()
    return time.perf_counter() - start

  def lower(self, global_batch_shapes: dict):
    """The train step lowered from shapes alone: no arrays, no devices of ours.

    The mesh may be made of devices this host does not have (a TPU topology
    from `jax.experimental.topologies`): `.compile()` on the result is the
    ahead-of-time check of experiments/compile_check.py.
    """
    batch = {name: jax.ShapeDtypeStruct(s.shape, s.dtype, sharding=self.batch_sharding)
             for name, s in global_batch_shapes.items()}
    return self._step.lower(self.abstract_state, batch)

  def to_device(self, local_batch: dict) -> dict:
    return sharding.global_batch(local_batch, self.batch_sharding)

  def step(self, state, local_batch):
    return (self.compiled_step or self._step)(state, self.to_device(local_batch))

  def predict(self, params, fn: Callable, arrays: dict):
    """fn(network, batch) over every row of `arrays` (global, all processes), as numpy.

    Rows go through in batches of train.batch_size (the last one padded) with
    the training shardings; pass a module-level `fn` so it compiles once.
    `functools.partial(trainer.predict, params)` is what tasks evaluate with.
    """
    if fn not in self._predictors:
      self._predictors[fn] = jax.jit(self._laid_out(lambda p, b: fn(self.netdef.merge(p), b)),
                                     in_shardings=(self.param_shardings, self.batch_sharding))
    batches = pipeline.eval_batches(arrays, self.cfg.train.batch_size, 0, jax.process_index(),
                                    jax.process_count())
    # Decoding a split batch by batch can take a minute: a bar, beside the train bar.
    bar = tqdm(batches, desc="predict", unit="batch", leave=False,
               disable=jax.process_index() != 0 or len(batches) < 2)
    outs = [multihost_utils.process_allgather(
        self._predictors[fn](params, self.to_device(b)), tiled=True) for b in bar]
    return jax.tree.map(lambda *xs: np.concatenate(xs)[:len(next(iter(arrays.values())))],
                        *outs)

  def evaluate(self, params, batches) -> dict:
    """Summed eval metrics over `batches`, reported as floats."""
    sums = None
    for batch in batches:
      m = jax.device_get(self._eval(params, self.to_device(batch)))
      m = jax.tree.map(lambda x: np.asarray(x, np.float64), m)
      sums = m if sums is None else jax.tree.map(np.add, sums, m)
    return objectives.report(sums, self.weights)


def _train_row(pending: list, seconds: float, tokens_per_step: int, weights, flops_per_step,
               peak_flops) -> dict:
  """One train row of metrics.jsonl from the steps since the last row.

  steps: how many steps the row averages (fewer than log_every when a run
  resumed, or stopped on a signal, mid-window). mfu: `flops_per_step`
  (throughput.step_flops) per second over `peak_flops`.
  """
  sums = jax.tree.map(lambda *xs: np.sum(np.asarray(xs, np.float64)), *[m for _, m in pending])
  row = objectives.report({k: v for k, v in sums.items() if k != "total_loss"}, weights)
  tokens_per_s = tokens_per_step * len(pending) / max(seconds, 1e-9)
  row.update(steps=len(pending), tokens_per_s=tokens_per_s, step_time_s=seconds / len(pending),
             mfu=flops_per_step * len(pending) / max(seconds, 1e-9) / peak_flops)
  return row


def _check_finite(pending: list, last_saved: int | None) -> None:
  """TrainingError naming the first step whose loss or gradient is NaN or Inf.

  A non-finite gradient poisons the params of that very step, so the state
  after it must never be saved; callers check before every save.
  """
  for step, metrics in pending:
    for name in ("total_loss", "grad_norm"):
      value = float(metrics[name][0])
      if not math.isfinite(value):
        kept = (f"the last good checkpoint (step {last_saved}) is kept"
                if last_saved is not None else "no checkpoint was written")
        what = "loss" if name == "total_loss" else "gradient norm"
        raise TrainingError(f"{what} is {value} at step {step}; stopping, {kept}")


class _StopSignal:
  """Turns SIGTERM/SIGINT into a flag the loop checks between steps."""

  def __init__(self):
    self.received = None
    self._old = {s: signal.signal(s, self._handle) for s in (signal.SIGTERM, signal.SIGINT)}

  def _handle(self, signum, frame):
    self.received = signum
    signal.signal(signum, self._old[signum])  # a second signal acts as usual

  def restore(self):
    for s, handler in self._old.items():
      if self.received != s:
        signal.signal(s, handler)


def _resume(trainer: Trainer, ckpts: Checkpoints, train_iter, best: BestParams,
            initial_params: dict | None):
  """(state, step) of the newest checkpoint that restores, with the data position and model
  selection saved with it (one checkpoint, so always of the same step), or of a fresh
  state at step 0. Newer checkpoints that fail to restore are moved aside, each in a line."""
  say = print if jax.process_index() == 0 else (lambda line: None)
  restored = ckpts.restore_newest(trainer.abstract_state, say)
  if restored is None:
    return trainer.init(initial_params), 0
  start, state, data_state, saved_meta = restored
  train_iter.set_state(data_state)
  best.load(saved_meta.get("best", {}))
  return state, start


def train_and_evaluate(trainer: Trainer, workdir: str, data: pipeline.TrainData, *,
                       evaluate: Callable | None = None, initial_params: dict | None = None,
                       lineage: dict | None = None) -> dict:
  """Trains `trainer.cfg` on `data` in `workdir` (resuming its checkpoints); returns results.

  `evaluate(params) -> metrics` replaces the default loss-based evaluation
  on `data.eval` (fine-tuning scores predictions). `initial_params` (name ->
  array) seeds a fresh run, e.g. a pretrained backbone; `lineage` is recorded
  in checkpoint metadata and results. With `train.best_metric`, the best
  eval's params are kept in workdir/best and training stops after
  `train.patience` evals without improvement. Returns the final eval metrics,
  also in workdir/results.json.

  Raises:
    Interrupted: SIGTERM/SIGINT arrived; the checkpoint of the step it
      stopped at is saved first, so the same command resumes.
    TrainingError: the loss or gradient became NaN/Inf (no bad state is saved).
    CheckpointError: the newest checkpoints all fail to restore, another run
      holds the workdir, or a save or a write failed (a full disk): one line
      naming the cause and the intact checkpoints a rerun resumes from.
  """
  directory = os.path.join(workdir, "checkpoints")
  with WorkdirLock(workdir):
    try:
      return _train_and_evaluate(trainer, workdir, data, evaluate, initial_params, lineage)
    except SaveFailed as e:  # of the best params, say: name the run's checkpoints
      raise CheckpointError(e.line(committed_steps(directory))) from e
    except OSError as e:  # metrics.jsonl, TensorBoard, results.json
      what = f"writing {e.filename}" if e.filename else "writing the run's files"
      raise CheckpointError(str(write_failure(what, e, committed_steps(directory)))) from e


def _train_and_evaluate(trainer, workdir, data, evaluate, initial_params, lineage) -> dict:
  cfg, t = trainer.cfg, trainer.cfg.train
  is_main = jax.process_index() == 0
  # This process holds the workdir (WorkdirLock): it removes what a killed run left half-saved.
  ckpts = Checkpoints(os.path.join(workdir, "checkpoints"), keep=t.keep_checkpoints, cleanup=True)
  best = BestParams(os.path.join(workdir, "best"), t.best_metric, t.best_mode, t.patience,
                    cleanup=True)
  train_iter = pipeline.train_iterator(data.train, t.batch_size, cfg.seed,
                                       jax.process_index(), jax.process_count())
  if evaluate is None:
    eval_batches = pipeline.eval_batches(data.eval, t.batch_size, t.eval_batches,
                                         jax.process_index(), jax.process_count())
    evaluate = lambda params: trainer.evaluate(params, eval_batches)
  meta = {"config_hash": config_lib.config_hash(cfg), "num_params": trainer.num_params,
          "lineage": lineage or {}}
  state, start = _resume(trainer, ckpts, train_iter, best, initial_params)
  log = MetricLog(workdir, start, enabled=is_main)
  peak = throughput.peak_flops(cfg)  # of model.dtype, as experiments/benchmark.py
  tokens_per_step = t.batch_size * cfg.data.seq_len

  batch = next(train_iter)
  flops_per_step = throughput.step_flops(cfg, batch, trainer.heads)
  compile_s = trainer.compile(state, batch)
  if is_main:
    print(f"{trainer.num_params:,} params; step compiled in {compile_s:.1f}s; "
          f"mesh {dict(trainer.mesh.shape)}; starting at step {start}", flush=True)
  stop = _StopSignal()
  pending, last_saved, results = [], start if start else None, {}
  finished = start >= t.steps or best.stopped
  if finished:  # nothing left to train: report the final state again
    results = evaluate(state["params"])
  bar = tqdm(total=t.steps, initial=start, desc="train", disable=not is_main or finished,
             dynamic_ncols=True)
  tick = time.perf_counter()
  try:
    step = start
    while not finished:
      step += 1
      if step > start + 1:
        batch = next(train_iter)
      state, metrics = trainer.step(state, batch)
      pending.append((step, metrics))
      bar.update(1)
      final = step == t.steps
      if step % t.log_every == 0 or final or stop.received:
        pending = jax.device_get(pending)
        _check_finite(pending, last_saved)
        row = _train_row(pending, time.perf_counter() - tick, tokens_per_step, trainer.weights,
                         flops_per_step, peak)
        log.write(step, "train", row)
        bar.set_postfix(loss=f"{row['loss']:.3f}")
        pending, tick = [], time.perf_counter()
      if (t.eval_every and step % t.eval_every == 0) or final:
        _check_finite(jax.device_get(pending), last_saved)
        results = evaluate(state["params"])
        log.write(step, "eval", results)
        if is_main:
          tqdm.write(f"step {step}: " + ", ".join(
              f"{k} {v:.4g}" for k, v in results.items() if "/" not in k and isinstance(v, float)))
        final = best.update(step, results, state["params"]) or final
        tick = time.perf_counter()
      if (t.checkpoint_every and step % t.checkpoint_every == 0) or final or stop.received:
        _check_finite(jax.device_get(pending), last_saved)
        ckpts.save(step, state, train_iter.get_state(), dict(meta, best=best.state()))
        last_saved = step
      if stop.received:
        if is_main:
          tqdm.write(f"signal {stop.received}: saved step {step}; "
                     "run the same command to resume")
        raise Interrupted(stop.received, step)  # the save completes in `finally` first
      finished = final
  finally:
    bar.close()
    try:
      ckpts.close()  # before restoring the handlers: a signal now must not kill the last save
    finally:
      best.close()
      stop.restore()
      log.close()
  results = dict(results, step=int(state["step"]), num_params=trainer.num_params,
                 config_hash=meta["config_hash"], compile_s=compile_s, **best.summary())
  if data.unigram_perplexity:
    results["unigram_perplexity"] = data.unigram_perplexity
  if lineage:
    results["lineage"] = lineage
  if is_main:
    write_atomically(os.path.join(workdir, "results.json"), json.dumps(results, indent=2))
  return results


def pretrain(cfg, workdir: str) -> dict:
  """The whole pretraining run: checks, data, training, results (see train_and_evaluate).

  Every user error (config, workdir, data) is raised before anything compiles.
  """
  cfg = resolve(cfg, jax.device_count())
  check_workdir(cfg, workdir)
  data = pipeline.load_pretraining_data(cfg, jax.process_index(), jax.process_count())
  with WorkdirLock(workdir):
    prepare_workdir(cfg, workdir)  # the data loaded: the run starts
    if jax.process_index() == 0:  # the workdir is self-contained: generate/finetune read it
      data.tokenizer.save(workdir)
    trainer = Trainer(cfg, Vocab.from_tokenizer(data.tokenizer, cfg.model.vocab_size))
    return train_and_evaluate(trainer, workdir, data.examples)
