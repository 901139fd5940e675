"""The transfer stage: every task's tiny preset on real examples, init_from, transfer options."""

import json

import numpy as np
import pytest

from research import optim
from research.config import default_config
from test_cli import assert_user_error, run_cli, run_cli_many

FAST = ["--config.train.steps=6", "--config.train.eval_every=6", "--config.train.log_every=3",
        "--config.train.checkpoint_every=6", "--config.generate.eval_examples=8"]


# "file:preset" (preset tiny unless named) -> the metrics its results hold.
TASK_METRICS = {
    "mr": ("accuracy", "macro_f1"),
    "qa": ("exact_match", "f1"),
    "translation": ("bleu", "chrf"),
    "translation:tiny_decoder": ("bleu", "chrf"),  # a decoder, as a prefix LM
    "summarization": ("rouge1", "rouge2", "rougeL"),
    "code": ("exact_match", "chrf", "parse_rate", "pass@1"),  # doctests run in a sandbox
}


def _config_arg(config: str) -> str:
  name, _, preset = config.partition(":")
  return f"--config=configs/finetune/{name}.py:{preset or 'tiny'}"


@pytest.fixture(scope="module")
def task_runs(tmp_path_factory):
  root = tmp_path_factory.mktemp("tasks")
  return root, run_cli_many({config: ("experiments.finetune", _config_arg(config),
                                      f"--workdir={root / config.replace(':', '_')}", *FAST)
                             for config in TASK_METRICS}, workers=2)


@pytest.mark.parametrize("config", sorted(TASK_METRICS))
def test_task_tiny_preset_scores_real_examples(config, task_runs):
  root, runs = task_runs
  result, metrics, tmp_path = runs[config], TASK_METRICS[config], root / config.replace(":", "_")
  assert result.returncode == 0, result.stderr[-3000:]
  results = json.loads((tmp_path / "results.json").read_text())
  for name in metrics:
    assert 0 <= results["test"][name] <= 100 and 0 <= results[name] <= 100, name
  assert results["test"]["examples"] >= 8 and results["best_step"] == 6
  assert (tmp_path / "best").is_dir() and (tmp_path / "tokenizer.model").is_file()


def test_finetune_from_a_pretrained_run_records_lineage(tmp_path):
  pre = tmp_path / "bert"
  result = run_cli("experiments.pretrain", "--config=configs/pretrain/bert_mlm_nsp.py:tiny",
                   f"--workdir={pre}", "--config.train.steps=4", "--config.train.log_every=2",
                   '--config.objectives={"mlm": 1}')
  assert result.returncode == 0, result.stderr[-3000:]
  out = tmp_path / "mr"
  # The source fixes the architecture, kind included (a GPT run under the encoder preset
  # needed --config.model.kind=decoder): the config's other kind is named, not an error.
  result = run_cli("experiments.finetune", "--config=configs/finetune/mr.py:tiny",
                   f"--workdir={out}", f"--config.init_from={pre}",
                   "--config.model.kind=decoder", *FAST)
  assert result.returncode == 0, result.stderr[-3000:]
  assert (f"init_from={pre} is a transformer encoder: this run fine-tunes it as one (the "
          "config said model.arch=transformer model.kind=decoder)") in result.stdout
  assert json.loads((out / "config.json").read_text())["model"]["kind"] == "encoder"
  lineage = json.loads((out / "results.json").read_text())["lineage"]
  assert lineage["source"] == str(pre) and lineage["step"] == 4 and lineage["config_hash"]


def test_unknown_task_and_missing_source_are_one_line_errors(tmp_path):
  assert_user_error(run_cli("experiments.finetune", "--config=configs/finetune/mr.py:tiny",
                            f"--workdir={tmp_path}/a", "--config.task=poetry"), "poetry")
  assert_user_error(run_cli("experiments.finetune", "--config=configs/finetune/mr.py:tiny",
                            f"--workdir={tmp_path}/b", "--config.init_from=/nonexistent/run"),
                    "/nonexistent/run")


def test_lr_multipliers_freeze_and_decay_by_layer():
  t = default_config().train
  names = ["backbone/embed/embedding", "backbone/blocks/0/mlp/up/kernel",
           "backbone/blocks/1/mlp/up/kernel", "backbone/final_norm/scale", "heads/classify/out/kernel"]
  t.layer_lr_decay, t.head_lr_multiplier = 0.5, 10.0
  f = optim.lr_multipliers(t, names, num_layers=2)
  assert f == {"backbone/embed/embedding": 0.125, "backbone/blocks/0/mlp/up/kernel": 0.25,
               "backbone/blocks/1/mlp/up/kernel": 0.5, "backbone/final_norm/scale": 1.0,
               "heads/classify/out/kernel": 10.0}
  t.layer_lr_decay, t.freeze_layers = 1.0, 1
  f = optim.lr_multipliers(t, names, num_layers=2)
  assert f["backbone/embed/embedding"] == 0 and f["backbone/blocks/0/mlp/up/kernel"] == 0
  assert f["backbone/blocks/1/mlp/up/kernel"] == 1 and f["heads/classify/out/kernel"] == 10
  t.freeze_backbone = True
  f = optim.lr_multipliers(t, names, num_layers=2)
  assert all(v == 0 for k, v in f.items() if k.startswith("backbone/"))


@pytest.mark.parametrize("kind", ["encoder", "decoder"])
def test_frozen_backbone_does_not_move(kind, tmp_path, synthetic_data):
  """An optimizer step with freeze_backbone changes the heads and nothing else.

  A decoder classifies from its last real token (objectives/classify.py).
  """
  import jax
  from conftest import tiny_config
  from research import objectives, train
  from research.workdir import resolve
  data = synthetic_data()
  rows = len(data.train["tokens"])
  arrays = dict(data.train, label=(data.train["tokens"][:, 0] % 2).astype(np.int32))
  cfg = tiny_config(**{"model.kind": kind, "train.freeze_backbone": True, "train.warmup_steps": 0,
                       "train.weight_decay": 0.1}, objectives={"classify": 1.0}, task="classification")
  cfg = resolve(cfg, 8)
  trainer = train.Trainer(cfg, heads=objectives.heads(cfg.objectives, num_labels=2))
  state = trainer.init()
  before = jax.device_get(state["params"])
  state, _ = trainer.step(state, {k: v[:16] for k, v in arrays.items()})
  after = jax.device_get(state["params"])
  assert rows > 16
  for name in before:
    moved = not np.array_equal(before[name], after[name])
    assert moved == name.startswith("heads/"), name
