"""Sweeps: spec expansion, run names, statistics, tables, plots, and one sweep through the CLI."""

import csv
import math
import os
import sys

import pytest

from research import sweep
from research.errors import ConfigError
from test_cli import CONFIG, assert_user_error, run_cli, run_cli_many

PNG = b"\x89PNG\r\n\x1a\n"


def test_parse_spec_splits_outside_brackets_and_quotes():
  assert sweep.parse_spec("model.arch=transformer, lstm,cnn") == (
      "model.arch", ["transformer", "lstm", "cnn"])
  assert sweep.parse_spec('objectives={"mlm": 1, "nsp": 1},{"clm": 1}') == (
      "objectives", ['{"mlm": 1, "nsp": 1}', '{"clm": 1}'])
  assert sweep.parse_spec("data.train_files='a,b.txt',c.txt")[1] == ["'a,b.txt'", "c.txt"]
  for bad, fragment in [("model.arch", "KEY=V1"), ("=1,2", "KEY=V1"), ("a..b=1", "KEY=V1"),
                        ("seed=0,,1", "empty"), ("seed=", "empty"), ("seed=1,1", "twice"),
                        ('objectives={"mlm": 1', "unbalanced")]:
    with pytest.raises(ConfigError, match=fragment):
      sweep.parse_spec(bad)


def test_grid_is_the_product_in_spec_order():
  runs = sweep.expand([("model.arch", ["a", "b"]), ("seed", ["0", "1"])])
  assert runs == [{"model.arch": "a", "seed": "0"}, {"model.arch": "a", "seed": "1"},
                  {"model.arch": "b", "seed": "0"}, {"model.arch": "b", "seed": "1"}]
  with pytest.raises(ConfigError, match="twice"):
    sweep.expand([("seed", ["0"]), ("seed", ["1"])])


def test_zip_pairs_the_lists_and_crosses_the_seeds():
  specs = [("seed", ["0", "1"]), ("model.width", ["32", "64"]), ("model.num_heads", ["2", "4"])]
  runs = sweep.expand(specs, "zip")
  assert [tuple(r.values()) for r in runs] == [("0", "32", "2"), ("1", "32", "2"),
                                               ("0", "64", "4"), ("1", "64", "4")]
  assert list(runs[0]) == ["seed", "model.width", "model.num_heads"]
  assert sweep.expand([("seed", ["3", "4"])], "zip") == [{"seed": "3"}, {"seed": "4"}]
  with pytest.raises(ConfigError, match="model.width: 2, model.num_heads: 3"):
    sweep.expand([("model.width", ["32", "64"]), ("model.num_heads", ["2", "4", "8"])], "zip")


def test_run_names_are_readable_safe_distinct_and_stable():
  assert sweep.run_name({"model.arch": "lstm", "seed": "1"}) == "model.arch=lstm,seed=1"
  assert sweep.run_name({"train.lr": "1e-3"}) == "train.lr=1e-3"
  names = [sweep.run_name({"init_from": v}) for v in ("runs/a b", "runs/a_b", "runs_a_b")]
  assert len(set(names)) == 3
  assert names[0].startswith("init_from=runs_a_b-") and names[2] == "init_from=runs_a_b"
  assert all("/" not in n and " " not in n for n in names)
  assert sweep.run_name({"objectives": '{"mlm": 1}'}) == "objectives=mlm_1-f180b8dd"
  long = sweep.run_name({"data.train_files": "x" * 300})
  assert len(long) <= 120 and long == sweep.run_name({"data.train_files": "x" * 300})


def test_statistics_match_hand_computed_values():
  s = sweep.summarize([1.0, 2.0, 3.0, 4.0])
  # std = sqrt(((1.5^2 + 0.5^2) * 2) / 3) = sqrt(5/3); t(0.975, df=3) = 3.182
  assert s.n == 4 and s.mean == 2.5 and s.std == pytest.approx(1.290994, abs=1e-6)
  half = 3.182 * math.sqrt(5 / 3) / 2  # 2.0543
  assert s.ci_low == pytest.approx(2.5 - half, abs=1e-3)
  assert s.ci_high == pytest.approx(2.5 + half, abs=1e-3)
  one = sweep.summarize([7.0])
  assert one.n == 1 and one.mean == 7.0 and math.isnan(one.std) and math.isnan(one.ci_low)
  assert sweep.summarize([]).n == 0


def test_statistics_are_the_exactly_rounded_ones_the_reproductions_print():
  import statistics
  # MR test accuracies of three seeds (experiments/reproductions/README.md, reproduction 3):
  # a float sum gives 0.6774999999999999, the exact mean 0.6775.
  values = [0.6325, 0.71, 0.69]
  s = sweep.summarize(values)
  assert s.mean == statistics.mean(values) == 0.6775
  assert s.std == statistics.stdev(values)  # sample std, n - 1, as the tables were computed
  assert f"{s.mean:.3f} ± {s.std:.3f}" == "0.677 ± 0.040"
  diverged = sweep.summarize([float("inf"), 1.0])  # no exception on a diverged run's value
  assert diverged.n == 2 and diverged.mean == float("inf") and math.isnan(diverged.std)


def test_t_table_without_scipy_agrees(monkeypatch):
  with_scipy = [sweep.t_critical(df) for df in (1, 2, 4, 9, 29)]
  monkeypatch.setitem(sys.modules, "scipy", None)  # import scipy now raises ImportError
  table = [sweep.t_critical(df) for df in (1, 2, 4, 9, 29)]
  assert table == pytest.approx(with_scipy, abs=1e-3)
  assert table == [12.706, 4.303, 2.776, 2.262, 2.045]
  assert sweep.t_critical(45) == 2.021  # past the table's df: the nearest smaller, wider


def test_read_metric_reaches_nested_results():
  results = {"loss": 2.0, "test": {"accuracy": 0.75}, "task": "classification"}
  assert sweep.read_metric(results, "loss") == 2.0
  assert sweep.read_metric(results, "test/accuracy") == 0.75
  for missing in ("accuracy", "test/f1", "task"):
    with pytest.raises(KeyError):
      sweep.read_metric(results, missing)
  assert sweep.metric_names(results) == ["loss", "test/accuracy"]
  # An objective's metrics are keys with a `/` (results.json of an MLM pretraining);
  # metric_names lists them and read_metric reads them, nested or not.
  mlm = {"mlm/accuracy": 0.4, "loss": 2.5, "test": {"mlm/loss": 3.0}}
  assert sweep.metric_names(mlm) == ["mlm/accuracy", "loss", "test/mlm/loss"]
  assert [sweep.read_metric(mlm, m) for m in sweep.metric_names(mlm)] == [0.4, 2.5, 3.0]
  with pytest.raises(KeyError):
    sweep.read_metric(mlm, "mlm/f1")


def _results(values: dict) -> list:
  return [sweep.RunResult(sweep.run_name(o), o, "done" if v is not None else "failed", v,
                          f"hash{i}", "abc123", "" if v is not None else "error: boom")
          for i, (o, v) in enumerate((dict(k), v) for k, v in values.items())]


def test_tables_and_plots_are_written(tmp_path):
  runs = _results({(("model.arch", "lstm"), ("seed", "0")): 1.0,
                   (("model.arch", "lstm"), ("seed", "1")): 2.0,
                   (("model.arch", "lstm"), ("seed", "2")): 3.0,
                   (("model.arch", "cnn"), ("seed", "0")): 5.0,
                   (("model.arch", "cnn"), ("seed", "1")): None})
  rows = sweep.aggregate(runs)
  assert [(r.setting, r.stats.n, r.missing) for r in rows] == [
      ({"model.arch": "lstm"}, 3, 0), ({"model.arch": "cnn"}, 1, 1)]
  md = sweep.write_tables(rows, "loss", tmp_path / "s.csv", tmp_path / "s.md", "A sweep.")
  with open(tmp_path / "s.csv") as f:
    table = list(csv.DictReader(f))
  assert table[0]["model.arch"] == "lstm" and float(table[0]["mean"]) == 2.0
  assert float(table[0]["std"]) == 1.0 and table[0]["config_hashes"] == "hash0 hash1 hash2"
  # t(0.975, 2) = 4.303: 2 -+ 4.303 / sqrt(3)
  assert float(table[0]["ci95_low"]) == pytest.approx(2 - 4.303 / math.sqrt(3), abs=1e-3)
  assert table[1]["n"] == "1" and table[1]["missing"] == "1" and table[1]["std"] == ""
  assert md == (tmp_path / "s.md").read_text() and md.startswith("A sweep.")
  assert "| `lstm` | 3 | 0 | 2 ± 1 | [-0.484" in md  # 4th digit: scipy's t or the table's
  assert "4.484] | hash0 hash1 hash2 | abc123 |" in md
  assert "| `cnn` | 1 | 1 | 5 | - | hash3 | abc123 |" in md
  sweep.write_runs_csv(runs, "loss", tmp_path / "runs.csv")
  assert "error: boom" in (tmp_path / "runs.csv").read_text()
  curves = [(r.overrides, [1, 2, 3], [3.0, 2.0, 1.5]) for r in runs] + [({"seed": "9"}, [], [])]
  sweep.plot_loss_curves(curves, tmp_path / "loss.png")
  sweep.plot_metric_bars(rows, "loss", tmp_path / "bars.png")
  for name in ("loss.png", "bars.png"):
    assert (tmp_path / name).read_bytes().startswith(PNG)


def test_train_losses_reads_train_rows(tmp_path):
  (tmp_path / "metrics.jsonl").write_text(
      '{"step": 1, "split": "train", "loss": 3.0}\n{"step": 2, "split": "eval", "loss": 9}\n'
      '{"step": 2, "split": "train", "loss": 2.5}\n')
  assert sweep.train_losses(tmp_path) == ([1, 2], [3.0, 2.5])
  assert sweep.train_losses(tmp_path / "none") == ([], [])


FAST = ["--config.train.steps=2", "--config.train.log_every=1", "--config.train.eval_every=2"]


def test_sweep_end_to_end_then_skips_finished_runs(tmp_path):
  args = ("experiments.sweep", CONFIG, f"--workdir={tmp_path}", "--sweep", "seed=0,1",
          "--parallel=2", *FAST)
  first = run_cli(*args)
  assert first.returncode == 0, first.stderr[-3000:]
  for name in ("summary.csv", "summary.md", "runs.csv", "loss_curves.png", "metric_bars.png"):
    assert (tmp_path / name).exists(), name
  with open(tmp_path / "summary.csv") as f:
    (row,) = list(csv.DictReader(f))
  assert row["metric"] == "loss" and row["n"] == "2" and row["missing"] == "0"
  assert float(row["ci95_low"]) < float(row["mean"]) < float(row["ci95_high"])
  assert len(row["config_hashes"].split()) == 2 and row["commits"]
  assert "| base | 2 | 0 |" in (tmp_path / "summary.md").read_text()
  assert (tmp_path / "loss_curves.png").read_bytes().startswith(PNG)
  logs = {n: os.path.getmtime(tmp_path / n / "stdout.log") for n in ("seed=0", "seed=1")}

  second = run_cli(*args)
  assert second.returncode == 0, second.stderr[-3000:]
  assert "2 runs, 2 already done, 0 to run" in second.stdout
  assert logs == {n: os.path.getmtime(tmp_path / n / "stdout.log") for n in logs}


BAD_SPECS = {
    "unknown_key": (["--sweep", "model.colour=red,blue"], "model.colour"),
    "misspelt_key": (["--sweep", "train.setps=1,2"], "--sweep train.setps: the config has no "
                     "field train.setps; nearest: train.steps"),
    "misspelt_base": (["--sweep", "seed=0,1", "--config.train.setps=2"],
                      "--config.train.setps: the config has no field train.setps; nearest"),
    "zip_lengths": (["--sweep", "model.arch=lstm,cnn", "--sweep", "model.width=32,64,128",
                     "--mode=zip"], "zip"),
    "bad_value": (["--sweep", "model.arch=lstm,mamba"], "model.arch=mamba"),
}


def test_bad_sweep_specs_are_one_line_errors(tmp_path):
  results = run_cli_many({name: ("experiments.sweep", CONFIG, f"--workdir={tmp_path}/{name}",
                                 *args) for name, (args, _) in BAD_SPECS.items()}, workers=3)
  for name, (_, fragment) in BAD_SPECS.items():
    assert_user_error(results[name], fragment)
    assert not (tmp_path / name).exists()
