"""Every config in configs/pretrain: its tiny preset learns on the 8-device mesh and resumes exactly."""

import glob
import importlib
import json
import os
import signal

import pytest

from conftest import REPO, SignalAt
from research import train
from research.data import pipeline
from research.errors import Interrupted
from research.objectives.base import Vocab
from research.workdir import prepare_workdir, resolve

CONFIGS = sorted(os.path.basename(p)[:-3] for p in glob.glob(
    os.path.join(REPO, "configs", "pretrain", "*.py")) if not p.endswith("__init__.py"))


def _config(name):
  cfg = importlib.import_module(f"configs.pretrain.{name}").get_config("tiny")
  cfg.update_from_flattened_dict({
      "mesh.data": 2, "mesh.fsdp": 2, "mesh.tensor": 2, "train.steps": 8,
      "train.log_every": 1, "train.eval_every": 8, "train.checkpoint_every": 4})
  return resolve(cfg, 8)


def _run(cfg, workdir, data):
  prepare_workdir(cfg, str(workdir))
  trainer = train.Trainer(cfg, Vocab.from_tokenizer(data.tokenizer, cfg.model.vocab_size))
  return train.train_and_evaluate(trainer, str(workdir), data.examples)


def _rows(workdir):
  with open(os.path.join(workdir, "metrics.jsonl")) as f:
    return [{k: v for k, v in r.items() if k not in ("tokens_per_s", "step_time_s", "mfu")}
            for r in map(json.loads, f)]


@pytest.mark.parametrize("name", CONFIGS)
def test_tiny_preset_learns_and_resumes_exactly(name, tmp_path, monkeypatch):
  cfg = _config(name)
  data = pipeline.load_pretraining_data(cfg)
  _run(cfg, tmp_path / "full", data)
  rows = [r for r in _rows(tmp_path / "full") if r["split"] == "train"]
  first, last = rows[0]["loss"], min(r["loss"] for r in rows[-2:])
  assert last < first - 0.3, (first, last)

  original = pipeline.train_iterator
  signalling = lambda *a, **k: SignalAt(original(*a, **k), at=3)
  monkeypatch.setattr(pipeline, "train_iterator", signalling)
  with pytest.raises(Interrupted) as cut:
    _run(cfg, tmp_path / "cut", data)
  assert cut.value.signum == signal.SIGTERM
  monkeypatch.setattr(pipeline, "train_iterator", original)
  _run(cfg, tmp_path / "cut", data)
  assert _rows(tmp_path / "cut") == _rows(tmp_path / "full")
