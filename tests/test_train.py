"""The training core: loss falls, meshes agree, resume is exact, checkpoints move meshes."""

import json
import os
import signal
import subprocess
import sys

import jax
import numpy as np
import pytest

from conftest import REPO, SignalAt, tiny_config
from research import train
from research.data import pipeline
from research.errors import Interrupted
from research.workdir import prepare_workdir, resolve, restore_params


def _rows(workdir, split):
  with open(os.path.join(workdir, "metrics.jsonl")) as f:
    return [r for r in map(json.loads, f) if r["split"] == split]


def _train(cfg, workdir, data, devices=None):
  cfg = resolve(cfg, len(devices or jax.devices()))
  prepare_workdir(cfg, str(workdir))
  return train.train_and_evaluate(train.Trainer(cfg, devices=devices), str(workdir), data)


def test_loss_falls_and_workdir_is_complete(tmp_path, synthetic_data):
  results = _train(tiny_config(), tmp_path, synthetic_data())
  rows = _rows(tmp_path, "train")
  assert [r["step"] for r in rows] == [2, 4, 6, 8, 10, 12]
  assert rows[-1]["loss"] < rows[0]["loss"] - 0.5
  for key in ("tokens_per_s", "mfu", "grad_norm", "perplexity", "accuracy"):
    assert np.isfinite(rows[-1][key]), key
  evals = _rows(tmp_path, "eval")
  assert [r["step"] for r in evals] == [6, 12]
  assert np.isfinite(results["perplexity"]) and results["perplexity"] < 128
  assert json.load(open(tmp_path / "results.json"))["loss"] == results["loss"]
  assert sorted(os.listdir(tmp_path / "checkpoints")) == ["12", "6"]
  assert os.listdir(tmp_path / "tb")


def test_sharded_mesh_matches_one_device(tmp_path, synthetic_data):
  data = synthetic_data()
  _train(tiny_config(**{"mesh.data": 2, "mesh.fsdp": 2, "mesh.tensor": 2}),
         tmp_path / "mesh", data)
  _train(tiny_config(), tmp_path / "one", data, devices=jax.devices()[:1])
  mesh_losses = [r["loss"] for r in _rows(tmp_path / "mesh", "train")]
  one_losses = [r["loss"] for r in _rows(tmp_path / "one", "train")]
  np.testing.assert_allclose(mesh_losses, one_losses, rtol=2e-4)


def test_params_are_sharded_by_the_rules():
  cfg = resolve(tiny_config(**{"mesh.data": 2, "mesh.fsdp": 2, "mesh.tensor": 2}), 8)
  trainer = train.Trainer(cfg)
  spec = trainer.state_shardings["params"]["backbone/blocks/mlp/up/kernel"].spec
  assert tuple(spec) == (None, "fsdp", "tensor")  # [layers, embed, mlp]
  # Adam moments follow their parameter's sharding.
  mu = trainer.state_shardings["opt_state"][1][0].mu["backbone/blocks/mlp/up/kernel"]
  assert tuple(mu.spec) == (None, "fsdp", "tensor")


def test_sigterm_then_resume_equals_uninterrupted_run(tmp_path, synthetic_data, monkeypatch):
  data = synthetic_data()
  cfg = lambda: tiny_config(**{"train.log_every": 1})  # per-step rows compare per-step losses
  _train(cfg(), tmp_path / "full", data)
  original = pipeline.train_iterator
  monkeypatch.setattr(pipeline, "train_iterator",
                      lambda *a, **k: SignalAt(original(*a, **k), at=5))
  with pytest.raises(Interrupted) as out:
    _train(cfg(), tmp_path / "cut", data)
  assert out.value.signum == signal.SIGTERM and out.value.step == 5
  assert "5" in os.listdir(tmp_path / "cut" / "checkpoints")
  monkeypatch.setattr(pipeline, "train_iterator", original)
  _train(cfg(), tmp_path / "cut", data)
  keys = ("step", "loss", "accuracy", "grad_norm")
  for split in ("train", "eval"):
    full = [[r[k] for k in keys if k in r] for r in _rows(tmp_path / "full", split)]
    cut = [[r[k] for k in keys if k in r] for r in _rows(tmp_path / "cut", split)]
    assert len(full) == (12 if split == "train" else 2)
    assert cut == full, split  # bitwise: same floats, same data order


def test_the_command_line_exits_128_plus_the_signal_of_an_interrupted_run():
  script = ("from experiments import cli\n"
            "from research.errors import Interrupted\n"
            "def main(argv, overrides):\n"
            "  raise Interrupted(15, 5)\n"
            "cli.run(main, distributed=False)\n")
  result = subprocess.run([sys.executable, "-c", script], cwd=REPO, capture_output=True,
                          text=True, timeout=120)
  assert result.returncode == 128 + signal.SIGTERM, result.stderr[-2000:]
  assert "Traceback" not in result.stderr and "error:" not in result.stderr


def test_checkpoint_restores_onto_another_mesh(tmp_path, synthetic_data):
  data = synthetic_data()
  _train(tiny_config(**{"mesh.data": 2, "mesh.fsdp": 2, "mesh.tensor": 2}), tmp_path, data)
  cfg, netdef, params, step = restore_params(str(tmp_path))
  assert step == 12
  assert all(len(p.sharding.device_set) == 1 for p in params.values())
  # Training continues on a (4, 2, 1) mesh from the (2, 2, 2) checkpoint.
  more = tiny_config(**{"mesh.data": 4, "mesh.fsdp": 2, "train.steps": 14})
  results = _train(more, tmp_path, data)
  assert results["step"] == 14 and np.isfinite(results["loss"])


def test_microbatches_match_full_batch(tmp_path, synthetic_data):
  data = synthetic_data()
  _train(tiny_config(), tmp_path / "full", data)
  _train(tiny_config(**{"train.microbatches": 2}), tmp_path / "micro", data)
  full = [r["loss"] for r in _rows(tmp_path / "full", "train")]
  micro = [r["loss"] for r in _rows(tmp_path / "micro", "train")]
  np.testing.assert_allclose(micro, full, rtol=1e-3)


def test_nan_loss_stops_and_keeps_the_good_checkpoint(tmp_path, synthetic_data):
  from research.errors import TrainingError
  cfg = tiny_config(**{"train.lr": 1e6, "train.clip_norm": 0.0, "train.warmup_steps": 0,
                       "train.steps": 40, "train.log_every": 1, "train.checkpoint_every": 1})
  with pytest.raises(TrainingError, match=r"at step \d+"):
    _train(cfg, tmp_path, synthetic_data())
  saved = sorted(int(s) for s in os.listdir(tmp_path / "checkpoints") if s.isdigit())
  _, _, params, _ = restore_params(str(tmp_path), step=saved[-1])
  assert all(np.isfinite(np.asarray(p)).all() for p in params.values())


def test_resume_after_kill_drops_rows_past_the_checkpoint(tmp_path, synthetic_data):
  """What kill -9 leaves behind: rows logged after the last checkpoint, no results."""
  import shutil
  data = synthetic_data()
  _train(tiny_config(), tmp_path / "full", data)
  shutil.copytree(tmp_path / "full", tmp_path / "killed")
  shutil.rmtree(tmp_path / "killed" / "checkpoints" / "12")
  os.remove(tmp_path / "killed" / "results.json")
  _train(tiny_config(), tmp_path / "killed", data)
  strip = lambda rows: [{k: v for k, v in r.items() if k not in ("tokens_per_s", "step_time_s",
                                                                 "mfu")} for r in rows]
  for split in ("train", "eval"):
    assert strip(_rows(tmp_path / "killed", split)) == strip(_rows(tmp_path / "full", split))


def test_a_run_that_fails_on_its_data_claims_no_workdir(tmp_path):
  """The error's own advice (another data.vocab_size) must work on the same workdir."""
  from research.errors import DataError
  corpus = tmp_path / "corpus.txt"
  corpus.write_text("".join(f"line {i} of a very small corpus\n\n" for i in range(40)))
  workdir = tmp_path / "run"
  files = {"data.source": "files", "data.train_files": str(corpus),
           "data.eval_files": str(corpus), "data.cache_dir": str(tmp_path / "cache")}
  with pytest.raises(DataError, match="data.vocab_size=5000"):
    train.pretrain(tiny_config(**files, **{"data.vocab_size": 5000}), str(workdir))
  assert not (workdir / "config.json").exists()


def test_a_workdir_mismatch_names_only_the_fields_that_differ(tmp_path):
  from research import config as config_lib
  from research.errors import ConfigError
  saved = tiny_config(**{"model.width": 32}).to_dict()
  with pytest.raises(ConfigError) as e:
    config_lib.check_compatible(saved, tiny_config(**{"model.width": 64, "model.num_heads": 4,
                                                     "data.seq_len": 16}))
  message = str(e.value)
  assert "model.width was 32, now 64" in message and "data.seq_len was 32, now 16" in message
  assert "mlp_dim" not in message and "{" not in message and "\n" not in message, message


def _first_token(network, batch):
  return batch["tokens"][:, 0]


def test_predict_over_several_batches_shows_a_progress_bar(capsys):
  """Translation and summarization evaluation decoded for 40-60 s without a word."""
  trainer = train.Trainer(resolve(tiny_config(**{"train.batch_size": 8}), 8))
  params = trainer.init()["params"]
  arrays = {"tokens": np.arange(20 * 4, dtype=np.int32).reshape(20, 4),
            "segment_ids": np.ones((20, 4), np.int32)}
  out = trainer.predict(params, _first_token, arrays)
  np.testing.assert_array_equal(out, arrays["tokens"][:, 0])
  err = capsys.readouterr().err
  assert "predict:" in err and "/3 " in err, err  # a bar over the 3 batches


def test_a_data_fsdp_tensor_mesh_compiles_without_involuntary_rematerialization(capfd,
                                                                                  synthetic_data):
  """Lookups into FSDP-sharded tables (tokens, learned positions, token types) made XLA
  replicate their whole [B, T, D] output, warning on the README's mesh example."""
  cfg = resolve(tiny_config(**{"mesh.data": 2, "mesh.fsdp": 2, "mesh.tensor": 2,
                               "model.kind": "encoder", "model.position": "learned",
                               "model.type_vocab_size": 2, "objectives": {"mlm": 1.0}}), 8)
  trainer = train.Trainer(cfg)
  batch = {k: v[:cfg.train.batch_size] for k, v in synthetic_data().train.items()}
  trainer.compile(trainer.init(), batch)
  err = capfd.readouterr().err
  assert "Involuntary full rematerialization" not in err, err[-2000:]
