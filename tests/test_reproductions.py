"""The paper-style reproductions (experiments/reproductions/) at tiny scale, with tolerances.

Each reproduction's `run` (not a subprocess) is called once per module, with
the tiny presets, one seed and few steps (the *_workdir fixtures); the tests
check what the full-size run claims: the architectures compared are the same
size and see the same data, every run trains its steps, and the numbers in
the summary are the runs' own. Then the same finished workdirs are reported
again (from results.json: nothing may train or compile), refused for other
settings (one error line, nothing rewritten), and the command lines'
defaults are checked against the results table of experiments/reproductions/README.md.
"""

import hashlib
import json
import os
import re
import shutil
import time

import pytest
from absl import flags

from conftest import REPO
from research.errors import ConfigError
from test_cli import assert_user_error, run_cli

ARCHS = ("transformer", "lstm", "cnn")
ARCH_STEPS, KIM_STEPS, PRE_STEPS, FINE_STEPS = 80, 30, 40, 20


@pytest.fixture(scope="module")
def arch_workdir(tmp_path_factory):
  from experiments.reproductions import arch_ablation
  path = tmp_path_factory.mktemp("arch_ablation")
  return path, arch_ablation.run(str(path), seeds=[0], steps=ARCH_STEPS, preset="tiny")


@pytest.fixture(scope="module")
def kim_workdir(tmp_path_factory):
  from experiments.reproductions import kim_mr
  path = tmp_path_factory.mktemp("kim_mr")
  return path, kim_mr.run(str(path), seeds=[0], steps=KIM_STEPS, preset="tiny")


@pytest.fixture(scope="module")
def pvs_workdir(tmp_path_factory):
  from experiments.reproductions import pretrain_vs_scratch
  path = tmp_path_factory.mktemp("pretrain_vs_scratch")
  return path, pretrain_vs_scratch.run(str(path), seeds=[0], pretrain_steps=PRE_STEPS,
                                       finetune_steps=FINE_STEPS, preset="tiny")


def _table_rows(path) -> list[str]:
  with open(path) as f:
    return [line for line in f if line.startswith("| ") and not line.startswith("| architecture")]


def test_arch_ablation_tiny(arch_workdir):
  tmp_path, summary = arch_workdir
  steps = ARCH_STEPS

  assert sorted(summary["archs"]) == sorted(ARCHS)
  assert summary["forced_equal"] == []  # the three presets agree on data and training
  assert summary["tokens_seen"] == steps * 16 * 64  # gpt_clm:tiny batch 16 x seq_len 64
  unigram = summary["unigram_perplexity"]
  assert 20 < unigram < 512  # the tiny vocabulary has 512 pieces
  params = [row["params"] for row in summary["archs"].values()]
  assert max(params) / min(params) < 1.05  # equal parameter count, within 5%
  for arch, row in summary["archs"].items():
    (ppl,) = row["perplexity"]
    # 80 steps take every model well below the unigram model (measured: 0.70-0.80 of it).
    assert 1 < ppl < 0.9 * unigram, (arch, ppl, unigram)
    assert row["mean"] == pytest.approx(ppl) and row["std"] == 0.0
    results = json.loads((tmp_path / f"{arch}_seed0" / "results.json").read_text())
    assert results["step"] == steps and results["perplexity"] == pytest.approx(ppl)
    assert results["num_params"] == row["params"]
  assert json.loads((tmp_path / "summary.json").read_text()) == summary
  rows = _table_rows(tmp_path / "summary.md")
  assert [r.split("|")[1].strip() for r in rows] == list(summary["archs"])


def test_kim_mr_tiny(kim_workdir):
  tmp_path, summary = kim_workdir
  steps = KIM_STEPS

  assert sorted(summary["archs"]) == sorted(ARCHS)
  assert summary["forced_equal"] == []  # the mr.py presets share data and training
  assert 0.5 <= summary["majority_test_accuracy"] < 0.6  # MR is balanced
  params = [row["params"] for row in summary["archs"].values()]
  assert max(params) / min(params) < 1.1  # about the same size, within 10%
  tokenizers = {(tmp_path / f"{arch}_seed0" / "tokenizer.model").read_bytes() for arch in ARCHS}
  assert len(tokenizers) == 1  # one tokenizer: only the backbone differs
  for arch, row in summary["archs"].items():
    (accuracy,), (validation,), (best_step,) = (row["test_accuracy"],
                                                row["validation_accuracy"], row["best_step"])
    assert row["steps_run"] == [steps]  # no early stop
    results = json.loads((tmp_path / f"{arch}_seed0" / "results.json").read_text())
    assert results["test"]["examples"] == 400 and results["test"]["accuracy"] == accuracy
    evals = [json.loads(line) for line in open(tmp_path / f"{arch}_seed0" / "metrics.jsonl")]
    evals = {r["step"]: r["accuracy"] for r in evals if r["split"] == "eval"}
    assert sorted(evals) == [10, 20, 30]
    # The reported checkpoint is the best validation evaluation of the run.
    assert validation == max(evals.values()) == evals[best_step]
    # 30 tiny steps stay near chance on MR (leaving it takes ~400 tiny steps, beyond a
    # unit test's budget): only the range is checked here.
    assert 0.4 < accuracy < 0.65 and 0.4 < validation < 0.65, (arch, accuracy, validation)
  assert json.loads((tmp_path / "summary.json").read_text()) == summary
  rows = _table_rows(tmp_path / "summary.md")
  assert [r.split("|")[1].strip() for r in rows] == list(summary["archs"])


def test_pretrain_vs_scratch_tiny(pvs_workdir):
  import math

  tmp_path, summary = pvs_workdir
  pre_steps, steps = PRE_STEPS, FINE_STEPS

  mlm = summary["pretrain_mlm_eval"]
  assert mlm["mlm/loss"] < math.log(512) and 0 < mlm["mlm/accuracy"] < 1  # it learned something
  pretrain = tmp_path / "pretrain_mlm"
  tokenizer = (pretrain / "tokenizer.model").read_bytes()
  arms = summary["arms"]
  assert list(arms) == ["pretrained", "scratch"]
  assert arms["pretrained"]["params"] == arms["scratch"]["params"]
  for arm, row in arms.items():
    run_dir = tmp_path / f"mr_{arm}_seed0_mean"
    assert (run_dir / "tokenizer.model").read_bytes() == tokenizer  # one tokenizer for both
    results = json.loads((run_dir / "results.json").read_text())
    assert results["step"] == steps and results["test"]["examples"] == 400
    assert row["test_accuracy"] == [results["test"]["accuracy"]]
    assert row["validation_accuracy"] == [results["best_value"]]
    config = json.loads((run_dir / "config.json").read_text())
    assert config["objective_options"]["pooling"] == "mean"
    assert config["model"]["position"] == "rope"
  # Only the pretrained arm starts from the MLM run, at its last step.
  (lineage,) = arms["pretrained"]["lineage"]
  assert lineage["source"].endswith("pretrain_mlm") and lineage["step"] == pre_steps
  assert arms["scratch"]["lineage"] == [None]
  gain = summary["paired_gain"]
  assert gain["per_seed"] == [arms["pretrained"]["test_accuracy"][0]
                              - arms["scratch"]["test_accuracy"][0]]
  assert json.loads((tmp_path / "summary_mean.json").read_text()) == summary
  table = (tmp_path / "summary_mean.md").read_text()
  assert "| pretrained |" in table and "| scratch |" in table and "| pretrained - scratch |" in table


# The same request as each fixture's, by reproduction: (module name, fixture, run's kwargs).
REQUESTS = {
    "arch_ablation": ("arch_workdir", dict(seeds=[0], steps=ARCH_STEPS, preset="tiny")),
    "kim_mr": ("kim_workdir", dict(seeds=[0], steps=KIM_STEPS, preset="tiny")),
    "pretrain_vs_scratch": ("pvs_workdir", dict(seeds=[0], pretrain_steps=PRE_STEPS,
                                                finetune_steps=FINE_STEPS, preset="tiny")),
}


def _files(root) -> dict:
  """{relative path: (sha256, mtime_ns)} of every file under root."""
  out = {}
  for folder, _, names in os.walk(root):
    for name in names:
      path = os.path.join(folder, name)
      with open(path, "rb") as f:
        out[os.path.relpath(path, root)] = (hashlib.sha256(f.read()).hexdigest(),
                                            os.stat(path).st_mtime_ns)
  return out


def _reproduction(name):
  import importlib
  return importlib.import_module(f"experiments.reproductions.{name}")


def _forbid_training(monkeypatch) -> list:
  """Makes every way into building, compiling or training a model raise; returns the calls."""
  from research import finetune, train
  calls = []

  def refuse(what):
    def raiser(*args, **kwargs):
      calls.append(what)
      raise AssertionError(f"a finished reproduction called {what}")
    return raiser

  for owner, name in [(train, "pretrain"), (train, "train_and_evaluate"), (finetune, "finetune"),
                      (train.Trainer, "__init__"), (train.Trainer, "compile")]:
    monkeypatch.setattr(owner, name, refuse(f"{getattr(owner, '__name__', owner)}.{name}"))
  return calls


@pytest.mark.parametrize("name", sorted(REQUESTS))
def test_finished_reproduction_is_reported_from_results_json(name, request, monkeypatch):
  fixture, kwargs = REQUESTS[name]
  workdir, summary = request.getfixturevalue(fixture)
  before = _files(workdir)
  calls = _forbid_training(monkeypatch)
  start = time.perf_counter()
  again = _reproduction(name).run(str(workdir), **kwargs)
  elapsed = time.perf_counter() - start
  assert calls == [] and again == summary
  assert elapsed < 30, elapsed  # reading a few results.json (and MR's labels): seconds
  after = _files(workdir)
  # No run's file is rewritten (config.json, results.json, checkpoints...): only the summary.
  runs = {k: v for k, v in before.items() if os.sep in k}
  assert {k: v for k, v in after.items() if os.sep in k} == runs
  assert {k: v[0] for k, v in after.items()} == {k: v[0] for k, v in before.items()}


# Per reproduction, requests that differ from the fixture's in one setting, and the
# fragments its one error line must hold.
MISMATCHES = {
    "arch_ablation": [({"steps": 40}, ["--steps=80", "not --steps=40", "pass --steps=80"]),
                      ({"seeds": [0, 1]}, ["--seeds=0", "not --seeds=0,1"]),
                      ({"preset": "small"}, ["--preset=tiny", "not --preset=small"]),
                      ({"corpus": "kjv"}, ["--corpus=shakespeare", "not --corpus=kjv"])],
    "kim_mr": [({"steps": 300}, ["--steps=30", "not --steps=300"]),
               ({"seeds": [1]}, ["--seeds=0", "not --seeds=1"])],
    "pretrain_vs_scratch": [({"pretrain_steps": 8000}, ["--pretrain_steps=40"]),
                            ({"finetune_steps": 10}, ["--finetune_steps=20"]),
                            ({"position": "learned"}, ["--position=rope"])],
}


@pytest.mark.parametrize("name", sorted(MISMATCHES))
def test_other_settings_on_a_finished_workdir_are_refused(name, request, monkeypatch):
  fixture, kwargs = REQUESTS[name]
  workdir, _ = request.getfixturevalue(fixture)
  before = _files(workdir)
  calls = _forbid_training(monkeypatch)
  for change, fragments in MISMATCHES[name]:
    with pytest.raises(ConfigError) as e:
      _reproduction(name).run(str(workdir), **dict(kwargs, **change))
    message = str(e.value)
    assert "\n" not in message and "another --workdir" in message, message
    for fragment in fragments:
      assert fragment in message, (fragment, message)
  assert calls == [] and _files(workdir) == before  # nothing read into a model, nothing written


def test_workdir_of_another_reproduction_is_refused(kim_workdir):
  from experiments.reproductions import arch_ablation
  workdir, _ = kim_workdir
  before = _files(workdir)
  with pytest.raises(ConfigError, match="holds the kim_mr reproduction, not arch_ablation"):
    arch_ablation.run(str(workdir), seeds=[0], steps=KIM_STEPS, preset="tiny")
  assert _files(workdir) == before


def test_workdir_from_before_the_record_is_checked_run_by_run(kim_workdir, tmp_path,
                                                               monkeypatch):
  """A workdir without reproduction.json (made before it existed): its summary.json and
  each run's config.json and results.json say what it holds."""
  from experiments.reproductions import kim_mr
  source, summary = kim_workdir
  old = tmp_path / "old"
  shutil.copytree(source, old, ignore=shutil.ignore_patterns("checkpoints", "best", "tb"))
  (old / "reproduction.json").unlink()
  calls = _forbid_training(monkeypatch)
  before = _files(old)
  with pytest.raises(ConfigError, match="made with --seeds=0, not --seeds=1"):
    kim_mr.run(str(old), seeds=[1], steps=KIM_STEPS, preset="tiny")  # from summary.json
  with pytest.raises(ConfigError, match="cnn_seed0 holds a run made with --steps=30 "
                     r"\(train.steps\), not --steps=20"):
    kim_mr.run(str(old), seeds=[0], steps=20, preset="tiny")  # from the runs' config.json
  assert _files(old) == before
  # What a shorter request did before the record existed: it rewrote config.json's
  # train.steps and the summary's steps; the results' step still says what was trained.
  for path in [old / f"{arch}_seed0" / "config.json" for arch in ARCHS]:
    config = json.loads(path.read_text())
    config["train"]["steps"] = 20
    path.write_text(json.dumps(config))
  (old / "summary.json").write_text(json.dumps(dict(summary, steps=20)))
  with pytest.raises(ConfigError, match=r"--steps=30 \(train.steps\), not --steps=20"):
    kim_mr.run(str(old), seeds=[0], steps=20, preset="tiny")
  again = kim_mr.run(str(old), seeds=[0], steps=KIM_STEPS, preset="tiny")
  assert calls == [] and again == summary
  assert json.loads((old / "reproduction.json").read_text())["steps"] == KIM_STEPS


def test_reproduction_cli_mismatch_is_one_line_and_report_compiles_nothing(kim_workdir):
  workdir, summary = kim_workdir
  before = _files(workdir)
  args = ("experiments.reproductions.kim_mr", f"--workdir={workdir}", "--preset=tiny",
          "--seeds=0")
  refused = run_cli(*args, "--steps=20")
  assert_user_error(refused, "--steps=30", "not --steps=20", "pass --steps=30",
                    "another --workdir")
  assert _files(workdir) == before
  start = time.perf_counter()
  report = run_cli(*args, f"--steps={KIM_STEPS}")
  elapsed = time.perf_counter() - start
  assert report.returncode == 0, report.stderr[-3000:]
  assert "compiled" not in report.stdout + report.stderr  # train_and_evaluate prints it
  assert elapsed < 60, elapsed  # the import of jax and a few JSON files
  for arch, row in summary["archs"].items():
    assert f"| {arch} | {row['params']:,} | {row['test_accuracy'][0]:.3f} |" in report.stdout


def _readme_commands() -> dict:
  """{script: {flag: value}} of the commands in experiments/reproductions/README.md's table."""
  with open(os.path.join(REPO, "experiments", "reproductions", "README.md")) as f:
    text = f.read()
  commands = re.findall(r"`python -m experiments\.reproductions\.(\w+)((?: --[\w]+=\S+?)*)`",
                        text)
  return {name: dict(re.findall(r"--(\w+)=(\S+)", args)) for name, args in commands}


def test_defaults_are_the_results_table_settings():
  commands = _readme_commands()
  assert sorted(commands) == sorted(REQUESTS)
  workdirs = set()
  for name, measured in commands.items():
    values = flags.FlagValues()
    _reproduction(name).define_flags(values)
    defaults = {k: values[k].default for k in values}
    workdirs.add(defaults["workdir"])
    assert defaults["workdir"] == f"runs/repro_{name}"
    for flag, value in measured.items():
      if flag != "workdir":
        default = defaults[flag]
        assert (",".join(default) if isinstance(default, list) else str(default)) == value, (
            name, flag, default, value)
  assert len(workdirs) == 3


def test_reproductions_use_the_sweeps_statistics():
  from experiments import reproductions
  from research import sweep
  values = [105.06, 104.92, 100.80]  # reproduction 1's Transformer: 103.59 ± 2.42
  s = sweep.summarize(values)
  assert reproductions.spread(values) == {"mean": s.mean, "std": s.std,
                                          "ci95": [s.ci_low, s.ci_high]}
  assert f"{s.mean:.2f} ± {s.std:.2f}" == "103.59 ± 2.42"
  # One seed: the tables have always printed ± 0 there; the sweep's std is undefined (NaN).
  assert reproductions.spread([0.5]) == {"mean": 0.5, "std": 0.0, "ci95": None}
  assert not hasattr(reproductions, "mean_std")  # one implementation: research/sweep.py's
