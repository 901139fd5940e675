"""The command-line contract: user errors are one line `error: ...` and exit status 2."""

import concurrent.futures
import importlib.util
import json
import os
import subprocess
import sys

import pytest

from conftest import REPO

CONFIG = "--config=configs/pretrain/gpt_clm.py:tiny"


def run_cli(module, *args, timeout=300, env=None):
  return subprocess.run([sys.executable, "-m", module, *args], cwd=REPO, capture_output=True,
                        text=True, timeout=timeout,
                        env=dict(os.environ, PYTHONUNBUFFERED="1", **(env or {})))


def run_cli_many(commands: dict, workers: int = 3) -> dict:
  """{name: CompletedProcess} of {name: (module, *args)}, a few at a time.

  Each command spends most of its time importing and compiling on one core,
  so running a few side by side nearly halves the wall time on 2 cores.
  """
  with concurrent.futures.ThreadPoolExecutor(workers) as pool:
    futures = {name: pool.submit(run_cli, *command) for name, command in commands.items()}
    return {name: future.result() for name, future in futures.items()}


def assert_user_error(result, *fragments):
  lines = [l for l in result.stderr.splitlines() if l.strip()]
  assert result.returncode == 2, result.stderr[-2000:]
  assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr[-2000:]
  for fragment in fragments:
    assert fragment in lines[0], lines[0]


@pytest.fixture(scope="module")
def bad_files(tmp_path_factory):
  root = tmp_path_factory.mktemp("bad")
  (root / "empty.txt").write_text("")
  (root / "latin1.txt").write_bytes("caf\xe9 cr\xe8me".encode("latin-1") * 50)
  return root


CASES = {
    "unknown_key": (["--config.model.colour=1"], "colour"),
    "zero_lr": (["--config.train.lr=0"], "train.lr"),
    "negative_steps": (["--config.train.steps=-5"], "train.steps"),
    "heads_vs_width": (["--config.model.num_heads=3"], "num_heads"),
    "mesh_vs_devices": (["--config.mesh.data=3"], "devices"),
    "batch_vs_mesh": (["--config.train.batch_size=12"], "batch_size"),
    "seq_len_vs_positions": (["--config.data.seq_len=4096"], "max_len"),
    "unknown_arch": (["--config.model.arch=mamba"], "model.arch"),
    "unknown_objective": (['--config.objectives={"xyz": 1}'], "xyz"),
    "bad_objectives_json": (["--config.objectives={mlm"], "JSON"),
    "missing_file": (["--config.data.source=files", "--config.data.train_files=/nonexistent/*.txt"],
                     "/nonexistent"),
}


@pytest.fixture(scope="module")
def bad_config_runs(tmp_path_factory):
  root = tmp_path_factory.mktemp("runs")
  return root, run_cli_many({name: ("experiments.pretrain", CONFIG, f"--workdir={root}/{name}",
                                    *args) for name, (args, _) in CASES.items()})


@pytest.mark.parametrize("name", sorted(CASES))
def test_bad_config_is_one_line_error(name, bad_config_runs):
  root, results = bad_config_runs
  assert_user_error(results[name], CASES[name][1])
  assert not os.path.exists(root / name / "checkpoints")


BERT = "--config=configs/pretrain/bert_mlm_nsp.py:tiny"
# Errors that say what to do: (config, overrides, what the one line must say).
GUIDED = {
    "misspelt_field": (CONFIG, ["--config.train.setps=5"],
                       ["--config.train.setps", "no field train.setps",
                        "nearest: train.steps, train.eps"]),
    "unknown_field": (CONFIG, ["--config.no_such_key=1"],
                      ["no field no_such_key", "data, generate, init_from, mesh, model"]),
    # objectives is an open field: clm is added, and the objective check speaks.
    "new_objective": (BERT, ["--config.objectives.clm=1.0"],
                      ["objective clm needs a causal (decoder) model"]),
    "unknown_source": (CONFIG, ["--config.data.source=shakespear"],
                       ["data.source='shakespear'", "shakespeare, kjv, python_code, bbc_news",
                        "nor files", "did you mean shakespeare?", "owner/name"]),
}


def test_config_errors_say_what_to_do(tmp_path):
  results = run_cli_many({name: ("experiments.pretrain", config, f"--workdir={tmp_path}/{name}",
                                 *args) for name, (config, args, _) in GUIDED.items()})
  for name, (_, _, fragments) in GUIDED.items():
    assert_user_error(results[name], *fragments)
    assert not (tmp_path / name).exists()


def test_unreachable_hub_is_one_line_at_once(tmp_path):
  """A hub name is asked of the hub once: unreachable (here a closed local port), one line."""
  result = run_cli("experiments.pretrain", CONFIG, f"--workdir={tmp_path}",
                   "--config.data.source=nobody/no-such-corpus", timeout=120,
                   env={"HF_ENDPOINT": "http://127.0.0.1:9", "HF_HUB_OFFLINE": "0"})
  assert_user_error(result, "data.source='nobody/no-such-corpus'",
                    "cannot reach the Hugging Face hub", "HF_HUB_OFFLINE=1")


def test_unknown_preset_and_missing_config_file(tmp_path):
  assert_user_error(run_cli("experiments.pretrain", "--config=configs/pretrain/gpt_clm.py:huge",
                            f"--workdir={tmp_path}"), "huge")
  assert_user_error(run_cli("experiments.pretrain", "--config=configs/pretrain/nope.py",
                            f"--workdir={tmp_path}"))


@pytest.mark.parametrize("file,fragment", [("empty.txt", "empty"), ("latin1.txt", "UTF-8")])
def test_bad_data_file_is_one_line_error(file, fragment, bad_files, tmp_path):
  result = run_cli("experiments.pretrain", CONFIG, f"--workdir={tmp_path}",
                   "--config.data.source=files", f"--config.data.train_files={bad_files / file}")
  assert_user_error(result, fragment, file)


def test_workdir_of_another_run_is_refused(tmp_path):
  from configs.pretrain import gpt_clm
  from research import config as config_lib
  other = gpt_clm.get_config("tiny")
  other.model.width = 32
  os.makedirs(tmp_path)  if not tmp_path.exists() else None
  (tmp_path / "config.json").write_text(config_lib.to_json(other))
  result = run_cli("experiments.pretrain", CONFIG, f"--workdir={tmp_path}")
  assert_user_error(result, "model", "--workdir")
  assert json.loads((tmp_path / "config.json").read_text())["model"]["width"] == 32


def test_generate_without_a_run_is_one_line_error(tmp_path):
  assert_user_error(run_cli("experiments.generate", f"--workdir={tmp_path}", "--prompt=hi"),
                    "config.json")


@pytest.mark.skipif(importlib.util.find_spec("libtpu") is None,
                    reason="libtpu (the tpu extra) is not installed: nothing to quiet")
def test_importing_research_quiets_an_idle_libtpu():
  """A notebook or script that imports research, then starts jax, prints no libtpu noise."""
  env = {k: v for k, v in os.environ.items()
         if not k.startswith("TPU_") and k not in ("JAX_PLATFORMS", "ALLOW_MULTIPLE_LIBTPU_LOAD")}
  done = subprocess.run([sys.executable, "-c", "import research, jax; print(jax.devices())"],
                        cwd=REPO, env=env, capture_output=True, text=True, timeout=120)
  assert done.returncode == 0, done.stderr
  assert "INVALID_ARGUMENT" not in done.stderr and "TPU" not in done.stderr, done.stderr


def test_launch_relays_process_0_without_gloo_noise():
  """`launch` showed 8 `[Gloo] Rank 0 is connected ...` lines a user reads as breakage."""
  import io

  from experiments import launch
  source = io.StringIO("[Gloo] Rank 0 is connected to 1 peer ranks. Expected number of "
                       "connected peer ranks is : 1\n" * 8 + '{\n  "step": 2\n}\n')
  sink = io.StringIO()
  launch.relay(source, sink)
  assert sink.getvalue() == '{\n  "step": 2\n}\n'
