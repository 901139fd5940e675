"""The transfer stage: fine-tune a pretrained backbone (or a fresh one) on a task.

Fine-tuning is the same training loop as pretraining (train.train_and_evaluate)
with the task's objective, the task's examples, and an evaluation that
scores predictions. `cfg.init_from` says where the weights come from:

  ""                a fresh network of `cfg.model` (the from-scratch baseline)
  a Trellis workdir its latest checkpoint's backbone; the architecture and
                    tokenizer come from that run, heads start fresh
  "minilm-l6"       the built-in MiniLM (all-MiniLM-L6-v2), or
  an HF folder      a BERT config.json + model.safetensors and its WordPiece tokenizer

A source fixes every model field but the free ones (config.FREE_MODEL_FIELDS:
execution, compute dtype, dropout rates), which stay the fine-tuning config's;
an imported BERT's own dropout rates are named in one printed line.
Trainer.init checks the source's params against the network (one error line).

The run selects its best validation checkpoint (train.best_metric, the
task's metric by default) and reports that checkpoint's test metrics.
"""

import functools
import json
import os
from typing import NamedTuple

import jax
import numpy as np

from research import config as config_lib
from research import hf, objectives, train
from research.checkpoint import BestParams, Checkpoints
from research.data.hf_tokenizer import load_tokenizer
from research.data.pipeline import TrainData
from research.data.tasks import load_task_data
from research.data.tokenizer import load_or_train_tokenizer
from research.errors import CheckpointError, ConfigError
from research.objectives.base import Vocab
from research.tasks import TASKS
from research.lock import WorkdirLock
from research.workdir import (check_workdir, prepare_workdir, resolve, restore_params,
                              write_atomically)

# Free fields whose source value differs from the run's are named (regularisation).
_NOTED_FREE_FIELDS = ("dropout", "attention_dropout")


class Source(NamedTuple):
  """Where a fine-tuning run's weights come from."""
  model: dict  # model.* overrides from the source
  params: dict  # flat param name -> np.ndarray (backbone, maybe pooled heads)
  tokenizer: object  # the source's tokenizer
  lineage: dict  # recorded in checkpoint metadata and results.json


def _is_workdir(path: str) -> bool:
  return os.path.isfile(os.path.join(path, "config.json")) and os.path.isdir(
      os.path.join(path, "checkpoints"))


def _fixed_fields(name: str, overrides: dict, cfg) -> dict:
  """The `model.*` overrides a source fixes: all but config.FREE_MODEL_FIELDS.

  The architecture, its family and kind included, is the source's (a GPT run
  fine-tunes as a decoder under an encoder preset), named in one printed line
  where the config said otherwise. The free fields stay the fine-tuning
  config's; a source's differing dropout rate is named in one printed line, so
  the run's value is a visible choice.
  """
  fixed, theirs, ours = {}, [], []
  arch, kind = overrides.get("model.arch", cfg.model.arch), overrides.get("model.kind",
                                                                          cfg.model.kind)
  if (arch, kind) != (cfg.model.arch, cfg.model.kind) and jax.process_index() == 0:
    print(f"trellis: init_from={name} is a {arch} {kind}: this run fine-tunes it as one "
          f"(the config said model.arch={cfg.model.arch} model.kind={cfg.model.kind})",
          flush=True)
  for key, value in overrides.items():
    field = key.split(".", 1)[1]
    if field not in config_lib.FREE_MODEL_FIELDS:
      fixed[key] = value
    elif field in _NOTED_FREE_FIELDS and value != cfg.model[field]:
      theirs.append(f"{key}={value}")
      ours.append(f"{key}={cfg.model[field]}")
  if theirs and jax.process_index() == 0:
    print(f"trellis: init_from={name} was trained with {', '.join(theirs)}; this run keeps "
          f"its config's {', '.join(ours)}", flush=True)
  return fixed


def load_source(cfg, heads: dict) -> Source | None:
  """The pretrained weights, tokenizer and lineage named by cfg.init_from (None: scratch)."""
  name = cfg.init_from
  if not name:
    return None
  if _is_workdir(name):
    src_cfg, _, params, step = restore_params(name)
    model = _fixed_fields(name, {f"model.{k}": v for k, v in src_cfg.model.items()}, cfg)
    backbone = {k: np.asarray(v) for k, v in params.items() if k.startswith("backbone/")}
    lineage = {"source": os.path.abspath(name), "step": int(step),
               "config_hash": config_lib.config_hash(src_cfg)}
    return Source(model, backbone, load_tokenizer(name), lineage)
  folder = hf.model_folder(name, cfg.data.cache_dir)
  if not folder.is_dir():
    raise CheckpointError(f"init_from={name} is neither a Trellis workdir nor a model folder")
  model, params, fmt = hf.import_checkpoint(folder, heads)
  if jax.process_index() == 0:
    print(f"trellis: init_from={name} ({fmt}): {hf.describe(model)}", flush=True)
  model = _fixed_fields(name, model, cfg)
  return Source(model, params, load_tokenizer(folder), {"source": str(name), "format": fmt})


def _tokenizer_for(cfg, splits: dict):
  """A SentencePiece tokenizer trained on the task's train texts (from-scratch runs)."""
  texts = [" ".join(str(v) for k, v in e.items() if isinstance(v, str) and k != "id")
           for e in splits["train"]]
  return load_or_train_tokenizer(texts, cfg.data)


def _selected_params(trainer: train.Trainer, workdir: str):
  """The best validation checkpoint's params; the last state's if no evaluation ran."""
  best = BestParams(os.path.join(workdir, "best"), trainer.cfg.train.best_metric)
  params = best.restore(trainer.abstract_state["params"])
  best.close()
  if params is None:
    ckpts = Checkpoints(os.path.join(workdir, "checkpoints"), async_save=False)
    params = ckpts.restore(ckpts.latest_step(), trainer.abstract_state)[0]["params"]
    ckpts.close()
  return params


def task_config(cfg):
  """(the task, `cfg` as its fine-tuning runs it): the task's objective alone, and its
  metric selecting the best checkpoint unless train.best_metric says otherwise."""
  if cfg.task not in TASKS:
    raise ConfigError(f"task={cfg.task!r} is not one of {', '.join(sorted(TASKS))}")
  task = TASKS[cfg.task]
  cfg = cfg.copy_and_resolve_references()
  _set_objective(cfg, task)
  with cfg.unlocked():
    if not cfg.train.best_metric:
      cfg.train.best_metric = task.metric
  return task, cfg


def _set_objective(cfg, task) -> None:
  """The task's objective for cfg.model.kind (a decoder trains seq2seq as a prefix LM)."""
  with cfg.unlocked():
    cfg.objectives = config_lib.ml_collections.ConfigDict(
        {task.objective_for(cfg.model.kind): 1.0})


def finetune(cfg, workdir: str) -> dict:
  """Fine-tunes per `cfg` in `workdir` (resumable); returns the results.

  Results hold the best validation metrics under "validation" and the test
  metrics of the best checkpoint under "test"; also in workdir/results.json.
  Raises errors.Interrupted as train_and_evaluate does.
  """
  task, cfg = task_config(cfg)
  task_data = load_task_data(task.kind, cfg.data)
  heads = objectives.heads(cfg.objectives, len(task_data.label_names or ()))
  source = load_source(cfg, heads)
  if source:
    cfg.update_from_flattened_dict(source.model)
    _set_objective(cfg, task)  # the source fixes model.kind (a GPT-2 is a decoder)
  tokenizer = source.tokenizer if source else _tokenizer_for(cfg, task_data.splits)
  with cfg.unlocked():
    cfg.model.vocab_size = cfg.model.vocab_size or tokenizer.vocab_size
  if tokenizer.vocab_size > cfg.model.vocab_size:
    raise ConfigError(f"the tokenizer has {tokenizer.vocab_size} ids but the model only "
                      f"{cfg.model.vocab_size} embeddings")
  cfg = resolve(cfg, jax.device_count())
  check_workdir(cfg, workdir)
  encoded = {split: task.encode(examples, tokenizer, cfg)
             for split, examples in task_data.splits.items()}
  with WorkdirLock(workdir):  # the run, its test scoring and results.json: one run's
    prepare_workdir(cfg, workdir)  # the data loaded and encoded: the run starts
    if jax.process_index() == 0:  # the workdir is self-contained: generate/evaluate read it
      tokenizer.save(workdir)
    trainer = train.Trainer(cfg, Vocab.from_tokenizer(tokenizer, cfg.model.vocab_size), heads)
    score = lambda params, split: task.evaluate(functools.partial(trainer.predict, params),
                                                encoded[split], tokenizer, cfg)
    results = train.train_and_evaluate(
        trainer, workdir, TrainData(encoded["train"].arrays, encoded["validation"].arrays),
        evaluate=lambda params: score(params, "validation"),
        initial_params=source.params if source else None,
        lineage=source.lineage if source else None)
    test = score(_selected_params(trainer, workdir), "test")
    results = dict(results, test=test, task=cfg.task, data=cfg.data.source,
                   label_names=list(task_data.label_names or ()))
    if jax.process_index() == 0:
      write_atomically(os.path.join(workdir, "results.json"), json.dumps(results, indent=2))
  return results
