"""Multi-host runs: 2 processes x 4 devices train as 1 process x 8, and checkpoints move between them.

Each process is a real `experiments.pretrain` started by `experiments.launch`
and joined through `jax.distributed` over 127.0.0.1, as hosts of a pod are.
"""

import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest

from conftest import REPO
from research import distributed
from research.errors import ConfigError

# A small corpus trains its tokenizer in well under a second; the tiny GPT
# at 32 tokens compiles in a few seconds.
SETTINGS = ["--config=configs/pretrain/gpt_clm.py:tiny", "--config.data.source=files",
            "--config.data.vocab_size=400", "--config.data.seq_len=32",
            "--config.model.max_len=32", "--config.train.steps=6", "--config.train.log_every=1",
            "--config.train.checkpoint_every=3", "--config.train.eval_every=3",
            "--config.train.eval_batches=1"]
TIMING = ("tokens_per_s", "step_time_s", "mfu")


def _run(args, env_extra=None, timeout=300):
  env = dict(os.environ, PYTHONUNBUFFERED="1", **(env_extra or {}))
  # No shared compilation cache here: if one process finds its step cached
  # and the other compiles, the first waits at the first collective and the
  # gloo context times out after 30 s.
  env.pop("JAX_COMPILATION_CACHE_DIR", None)
  return subprocess.run([sys.executable, "-m", *args], cwd=REPO, capture_output=True, text=True,
                        timeout=timeout, env=env)


def _rows(workdir):
  with open(os.path.join(workdir, "metrics.jsonl")) as f:
    return [{k: v for k, v in json.loads(line).items() if k not in TIMING} for line in f]


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
  rng = np.random.default_rng(0)
  letters = np.array(list("abcdefghijklmnopqrstuvwxyz"))
  words = ["".join(rng.choice(letters, rng.integers(2, 9))) for _ in range(300)]
  path = tmp_path_factory.mktemp("corpus") / "train.jsonl"
  with open(path, "w") as f:
    for _ in range(200):
      f.write(json.dumps({"text": " ".join(rng.choice(words, 60))}) + "\n")
  return [f"--config.data.train_files={path}",
          f"--config.data.cache_dir={tmp_path_factory.mktemp('cache')}"]


@pytest.fixture(scope="module")
def two_process_run(tmp_path_factory, corpus):
  """The workdir of a 6-step run by 2 processes of 4 fake CPU devices each."""
  root = tmp_path_factory.mktemp("two")
  result = _run(["experiments.launch", "--num_processes=2", "--devices_per_process=4",
                 f"--process_logs={root}/logs", "--", *SETTINGS, *corpus,
                 f"--workdir={root}/run"])
  assert result.returncode == 0, result.stderr[-3000:]
  return root / "run"


def test_two_processes_match_one_process(two_process_run, corpus, tmp_path):
  result = _run(["experiments.pretrain", *SETTINGS, *corpus, f"--workdir={tmp_path}"],
                {"TRELLIS_CPU_DEVICES": "8"})
  assert result.returncode == 0, result.stderr[-3000:]
  two, one = _rows(two_process_run), _rows(tmp_path)
  # Process 0 alone logs: each step once, in order.
  assert [(r["step"], r["split"]) for r in two] == [(r["step"], r["split"]) for r in one]
  assert len(two) == 8
  for a, b in zip(two, one):
    for key in ("loss", "accuracy", "grad_norm"):
      if key in a:
        np.testing.assert_allclose(a[key], b[key], rtol=1e-5, err_msg=f"{key} {a['step']}")
  results = json.load(open(two_process_run / "results.json"))
  assert results["step"] == 6


def test_checkpoint_data_state_is_written_once(two_process_run):
  data_item = two_process_run / "checkpoints" / "3" / "data"
  files = sorted(p.name for p in data_item.iterdir())
  assert files == ["commit_success.txt", "metadata"], files  # one JSON file, by process 0
  assert json.load(open(data_item / "metadata")) == {"next_index": 3}


def test_two_process_checkpoint_resumes_in_one_process(two_process_run, corpus, tmp_path):
  """As after a kill at step 5: the step-3 checkpoint of 2 processes resumes in 1."""
  workdir = tmp_path / "run"
  shutil.copytree(two_process_run, workdir)
  shutil.rmtree(workdir / "checkpoints" / "6")
  os.remove(workdir / "results.json")
  result = _run(["experiments.pretrain", *SETTINGS, *corpus, f"--workdir={workdir}"],
                {"TRELLIS_CPU_DEVICES": "8"})
  assert result.returncode == 0, result.stderr[-3000:]
  assert "starting at step 3" in result.stdout
  resumed, full = _rows(workdir), _rows(two_process_run)
  assert [(r["step"], r["split"]) for r in resumed] == [(r["step"], r["split"]) for r in full]
  for a, b in zip(resumed, full):
    for key in ("loss", "accuracy", "grad_norm"):
      if key in a:
        np.testing.assert_allclose(a[key], b[key], rtol=1e-5, err_msg=f"{key} {a['step']}")


def test_launch_propagates_a_user_error(corpus, tmp_path):
  result = _run(["experiments.launch", "--num_processes=2", "--devices_per_process=4",
                 f"--process_logs={tmp_path}/logs", "--", *SETTINGS, *corpus,
                 f"--workdir={tmp_path}/run", "--config.train.lr=0"])
  lines = [line for line in result.stderr.splitlines() if line.strip()]
  assert result.returncode == 2, result.stderr[-2000:]
  assert len(lines) == 1 and lines[0].startswith("error: ") and "train.lr" in lines[0], lines


def test_launch_stops_the_others_when_one_process_dies(tmp_path):
  """A process that dies leaves its peers waiting on it: they are killed, its status kept."""
  code = ("import os, sys, time\n"
          "if os.environ['TRELLIS_PROCESS_ID'] == '1': sys.exit(7)\n"
          "time.sleep(60)\n")
  script = tmp_path / "die.py"
  script.write_text(code)
  result = subprocess.run(
      [sys.executable, "-m", "experiments.launch", "--num_processes=2",
       f"--process_logs={tmp_path}/logs", "--module=die"], cwd=REPO, capture_output=True,
      text=True, timeout=60, env=dict(os.environ, PYTHONPATH=str(tmp_path)))
  assert result.returncode == 7, result.stderr
  assert "process 1 exited with status 7" in result.stderr


@pytest.mark.parametrize("env, expected", [
    ({}, None),
    ({"TRELLIS_DISTRIBUTED": "off", "TRELLIS_COORDINATOR": "h:1"}, None),
    ({"TRELLIS_DISTRIBUTED": "auto"}, {}),
    ({"TRELLIS_COORDINATOR": "10.0.0.1:1234", "TRELLIS_NUM_PROCESSES": "4",
      "TRELLIS_PROCESS_ID": "3", "TRELLIS_LOCAL_DEVICE_IDS": "0,1"},
     {"coordinator_address": "10.0.0.1:1234", "num_processes": 4, "process_id": 3,
      "local_device_ids": [0, 1]}),
])
def test_initialize_args_from_environment(env, expected):
  assert distributed.initialize_args(env) == expected


@pytest.mark.parametrize("env, fragment", [
    ({"TRELLIS_COORDINATOR": "host:1", "TRELLIS_NUM_PROCESSES": "2",
      "TRELLIS_PROCESS_ID": "2"}, "TRELLIS_PROCESS_ID=2"),
    ({"TRELLIS_COORDINATOR": "host", "TRELLIS_NUM_PROCESSES": "2"}, "host:port"),
    ({"TRELLIS_COORDINATOR": "host:1", "TRELLIS_NUM_PROCESSES": "two"}, "integer"),
    ({"TRELLIS_PROCESS_ID": "1"}, "TRELLIS_COORDINATOR"),
    ({"TRELLIS_DISTRIBUTED": "yes"}, "auto, off"),
])
def test_bad_distributed_environment_is_a_config_error(env, fragment):
  with pytest.raises(ConfigError, match=fragment):
    distributed.initialize_args(env)
