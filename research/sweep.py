"""Ablation sweeps: expanding specs into runs, naming them, and summarising results.

A sweep is a list of specs `KEY=V1,V2,...` over dotted config fields. Grid
mode takes their cartesian product; zip mode pairs the i-th values of every
list except `seed`, which is always crossed with the settings, because the
results table aggregates each setting over its seeds. A run is named by its
overrides (`model.arch=lstm,seed=1`); its *setting* is the overrides other
than `seed`. experiments/sweep.py runs the runs; this module reads their
results.json and metrics.jsonl into a table (CSV, markdown) and two plots.
"""

import csv
import hashlib
import itertools
import json
import math
import os
import re
import statistics
from typing import NamedTuple

from research.errors import ConfigError
from research.metric_log import MetricLog

SEED = "seed"
_KEY = re.compile(r"[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*")
_SAFE_VALUE = re.compile(r"[A-Za-z0-9._+-]+")
_MAX_NAME = 120  # well under the 255-byte limit of a file name

# Two-sided 95% critical values of Student's t by degrees of freedom, used
# when scipy is not installed (it is not a dependency). Past 30 the nearest
# smaller tabled df is used, which errs toward a wider interval.
_T95 = {1: 12.706, 2: 4.303, 3: 3.182, 4: 2.776, 5: 2.571, 6: 2.447, 7: 2.365, 8: 2.306,
        9: 2.262, 10: 2.228, 11: 2.201, 12: 2.179, 13: 2.160, 14: 2.145, 15: 2.131,
        16: 2.120, 17: 2.110, 18: 2.101, 19: 2.093, 20: 2.086, 21: 2.080, 22: 2.074,
        23: 2.069, 24: 2.064, 25: 2.060, 26: 2.056, 27: 2.052, 28: 2.048, 29: 2.045,
        30: 2.042, 40: 2.021, 60: 2.000, 120: 1.980}


def split_values(text: str) -> list[str]:
  """Splits `a,b,{"x": 1, "y": 2}` on the commas outside brackets and quotes."""
  values, depth, quote, start = [], 0, None, 0
  for i, ch in enumerate(text):
    if quote:
      quote = None if ch == quote else quote
    elif ch in "\"'":
      quote = ch
    elif ch in "{[(":
      depth += 1
    elif ch in "}])":
      depth -= 1
    elif ch == "," and depth == 0:
      values.append(text[start:i].strip())
      start = i + 1
  if depth or quote:
    raise ConfigError(f"--sweep {text!r} has unbalanced brackets or quotes")
  return values + [text[start:].strip()]


def parse_spec(spec: str) -> tuple[str, list[str]]:
  """`KEY=V1,V2` -> (KEY, [V1, V2]); a ConfigError names what is wrong."""
  key, sep, rest = spec.partition("=")
  key = key.strip()
  if not sep or not _KEY.fullmatch(key):
    raise ConfigError(f"--sweep {spec!r} is not KEY=V1,V2,... with a dotted config field as KEY")
  values = split_values(rest)
  if any(not v for v in values):
    raise ConfigError(f"--sweep {spec!r} has an empty value")
  duplicate = next((v for v in values if values.count(v) > 1), None)
  if duplicate is not None:
    raise ConfigError(f"--sweep {spec!r} lists {duplicate!r} twice")
  return key, values


def expand(specs: list[tuple[str, list[str]]], mode: str = "grid") -> list[dict]:
  """The runs' overrides ({key: value string}, keys in spec order) of parsed specs."""
  keys = [k for k, _ in specs]
  duplicate = next((k for k in keys if keys.count(k) > 1), None)
  if duplicate:
    raise ConfigError(f"--sweep {duplicate} is given twice; list its values in one --sweep")
  if mode == "grid":
    return [dict(zip(keys, combo)) for combo in itertools.product(*(v for _, v in specs))]
  if mode != "zip":
    raise ConfigError(f"--mode={mode} is not one of grid, zip")
  zipped = [(k, v) for k, v in specs if k != SEED]
  lengths = {k: len(v) for k, v in zipped}
  if len(set(lengths.values())) > 1:
    raise ConfigError("--mode=zip needs lists of one length, got "
                      + ", ".join(f"{k}: {n}" for k, n in lengths.items()))
  settings = [dict(zip(lengths, combo)) for combo in zip(*(v for _, v in zipped))] or [{}]
  seeds = dict(specs).get(SEED)
  if seeds is None:
    return settings
  runs = [dict(s, seed=seed) for s in settings for seed in seeds]
  return [{k: r[k] for k in keys} for r in runs]  # names keep the order of the specs


def _safe(value: str) -> str:
  """The value itself if it is file-name safe; else a readable slug plus a hash of it."""
  if _SAFE_VALUE.fullmatch(value):
    return value
  slug = re.sub(r"[^A-Za-z0-9._+-]+", "_", value).strip("_.")[:40]
  return f"{slug}-{hashlib.sha256(value.encode()).hexdigest()[:8]}"


def run_name(overrides: dict) -> str:
  """A stable, file-name-safe, readable name: `model.arch=lstm,seed=1`."""
  name = ",".join(f"{k}={_safe(v)}" for k, v in overrides.items()) or "base"
  if len(name) > _MAX_NAME:
    digest = hashlib.sha256(json.dumps(overrides).encode()).hexdigest()[:8]
    name = f"{name[:_MAX_NAME - 9]}-{digest}"
  return name


def setting_of(overrides: dict) -> dict:
  """The overrides that define a table row: all but the seed."""
  return {k: v for k, v in overrides.items() if k != SEED}


def setting_label(setting: dict) -> str:
  return ",".join(f"{k}={v}" for k, v in setting.items()) or "base"


def t_critical(df: int) -> float:
  """The two-sided 95% critical value of Student's t with `df` degrees of freedom."""
  try:
    from scipy import stats
    return float(stats.t.ppf(0.975, df))
  except ImportError:
    return _T95[max(d for d in _T95 if d <= df)]


class Stats(NamedTuple):
  """Summary of one setting's metric over its seeds (NaN where undefined)."""
  n: int
  mean: float
  std: float  # sample standard deviation (n - 1 in the denominator)
  ci_low: float  # 95% t-interval for the mean
  ci_high: float


def summarize(values: list[float]) -> Stats:
  """Mean, sample std and the 95% t confidence interval of the mean."""
  n, nan = len(values), float("nan")
  if n == 0:
    return Stats(0, nan, nan, nan, nan)
  if not all(math.isfinite(v) for v in values):  # a diverged run: inf or NaN, no spread
    return Stats(n, sum(values) / n, nan, nan, nan)
  # The statistics module sums exactly and rounds once: the figures the reproductions
  # (experiments/reproductions) have always printed, to the last digit.
  mean = float(statistics.mean(values))
  if n == 1:
    return Stats(1, mean, nan, nan, nan)
  std = statistics.stdev(values)
  half = t_critical(n - 1) * std / math.sqrt(n)
  return Stats(n, mean, std, mean - half, mean + half)


def _lookup(tree, parts: list[str]):
  """(True, value) of the `/`-joined path `parts` in nested dicts, else (False, None).

  A key may itself hold a `/` (an objective's metrics: `mlm/accuracy`), so the
  longest key that matches is tried first at every level.
  """
  for i in range(len(parts), 0, -1):
    key = "/".join(parts[:i])
    if isinstance(tree, dict) and key in tree:
      if i == len(parts):
        return True, tree[key]
      found, value = _lookup(tree[key], parts[i:])
      if found:
        return True, value
  return False, None


def read_metric(results: dict, metric: str) -> float:
  """`metric` from a results.json dict; `test/accuracy` reaches into nested dicts, and
  `mlm/accuracy` reads an objective's metric (a key with a `/`), as metric_names lists it."""
  found, value = _lookup(results, metric.split("/"))
  if not found:
    raise KeyError(f"results.json has no {metric!r}")
  if not isinstance(value, (int, float)) or isinstance(value, bool):
    raise KeyError(f"results.json's {metric!r} is not a number")
  return float(value)


def metric_names(results: dict, prefix: str = "") -> list[str]:
  """Every numeric metric path in a results.json dict (for error messages)."""
  names = []
  for key, value in results.items():
    if isinstance(value, dict):
      names += metric_names(value, f"{prefix}{key}/")
    elif isinstance(value, (int, float)) and not isinstance(value, bool):
      names.append(prefix + key)
  return names


class RunResult(NamedTuple):
  """What a sweep knows about one run after it ran (or was skipped)."""
  name: str
  overrides: dict
  status: str  # done | failed | interrupted | locked | not run
  value: float | None  # the metric, when done
  config_hash: str
  commit: str
  error: str  # the failure's last stderr line, or ""


def load_results(workdir: str) -> dict | None:
  path = os.path.join(workdir, "results.json")
  if not os.path.exists(path):
    return None
  with open(path) as f:
    return json.load(f)


class Row(NamedTuple):
  """One line of the results table: a setting and its metric over seeds."""
  setting: dict
  stats: Stats
  missing: int  # runs of this setting without a result (failed, interrupted, not run)
  config_hashes: list
  commits: list


def aggregate(runs: list[RunResult]) -> list[Row]:
  """One Row per setting, in the order the settings first appear."""
  groups = {}
  for run in runs:
    groups.setdefault(setting_label(setting_of(run.overrides)), []).append(run)
  rows = []
  for group in groups.values():
    done = [r for r in group if r.value is not None]
    rows.append(Row(setting_of(group[0].overrides), summarize([r.value for r in done]),
                    len(group) - len(done), [r.config_hash for r in done],
                    sorted({r.commit for r in done})))
  return rows


def _fmt(x: float) -> str:
  return "-" if math.isnan(x) else f"{x:.4g}"


def write_tables(rows: list[Row], metric: str, csv_path: str, md_path: str,
                 title: str = "") -> str:
  """Writes the summary as CSV and markdown; returns the markdown."""
  keys = list(rows[0].setting) if rows else []
  with open(csv_path, "w", newline="") as f:
    writer = csv.writer(f)
    writer.writerow(keys + ["metric", "n", "missing", "mean", "std", "ci95_low", "ci95_high",
                            "config_hashes", "commits"])
    for row in rows:
      s = row.stats
      writer.writerow([row.setting[k] for k in keys]
                      + [metric, s.n, row.missing]
                      + ["" if math.isnan(v) else repr(v) for v in s[1:]]  # "": NaN to pandas
                      + [" ".join(row.config_hashes), " ".join(row.commits)])
  header = (keys or ["setting"]) + ["n", "missing", f"{metric} (mean ± std)", "95% CI",
                                    "config hashes", "commit"]
  lines = [f"| {' | '.join(header)} |", "|" + "---|" * len(header)]
  for row in rows:
    s = row.stats
    spread = f"{_fmt(s.mean)} ± {_fmt(s.std)}" if s.n > 1 else _fmt(s.mean)
    ci = f"[{_fmt(s.ci_low)}, {_fmt(s.ci_high)}]" if s.n > 1 else "-"
    cells = ([f"`{row.setting[k]}`" for k in keys] or ["base"]) + [
        str(s.n), str(row.missing), spread, ci, " ".join(row.config_hashes) or "-",
        " ".join(c[:12] for c in row.commits) or "-"]
    lines.append(f"| {' | '.join(cells)} |")
  text = (f"{title}\n\n" if title else "") + "\n".join(lines) + "\n"
  with open(md_path, "w") as f:
    f.write(text)
  return text


def write_runs_csv(runs: list[RunResult], metric: str, path: str) -> None:
  """One line per run (status, metric, hash, commit, error): the raw data of the table."""
  with open(path, "w", newline="") as f:
    writer = csv.writer(f)
    writer.writerow(["name", "overrides", "status", metric, "config_hash", "commit", "error"])
    for r in runs:
      writer.writerow([r.name, json.dumps(r.overrides), r.status,
                       "" if r.value is None else repr(r.value), r.config_hash, r.commit,
                       r.error])


def train_losses(workdir: str) -> tuple[list[int], list[float]]:
  """(steps, losses) of the train rows of a run's metrics.jsonl (empty if none yet)."""
  rows = [r for r in MetricLog.read(workdir, "train") if "loss" in r]
  steps, losses = [r["step"] for r in rows], [r["loss"] for r in rows]
  return steps, losses


def _figure(width: float = 7.0, height: float = 4.5):
  """A matplotlib Figure drawn by the Agg backend, without pyplot's global state."""
  from matplotlib.backends.backend_agg import FigureCanvasAgg
  from matplotlib.figure import Figure
  fig = Figure(figsize=(width, height), layout="constrained")
  FigureCanvasAgg(fig)
  return fig


def plot_loss_curves(curves: list[tuple[dict, list, list]], path: str) -> None:
  """Train loss vs step from (overrides, steps, losses) per run; one colour per setting."""
  from matplotlib.ticker import MaxNLocator
  fig = _figure()
  ax = fig.add_subplot()
  colours, labelled = {}, set()
  for overrides, steps, losses in curves:
    label = setting_label(setting_of(overrides))
    colour = colours.setdefault(label, f"C{len(colours) % 10}")
    ax.plot(steps, losses, color=colour, alpha=0.8, linewidth=1.2,
            label=None if label in labelled else label)
    labelled.add(label)
  ax.xaxis.set_major_locator(MaxNLocator(integer=True))
  ax.set(xlabel="step", ylabel="train loss", title="Training loss of every run")
  ax.grid(alpha=0.3)
  if labelled:
    ax.legend(fontsize="small")
  fig.savefig(path, dpi=120)


def plot_metric_bars(rows: list[Row], metric: str, path: str) -> None:
  """The metric's mean per setting, with the std over seeds as error bars."""
  fig = _figure(max(5.0, 1.2 * len(rows) + 2), 4.5)
  ax = fig.add_subplot()
  labels = [setting_label(r.setting) for r in rows]
  means = [0.0 if math.isnan(r.stats.mean) else r.stats.mean for r in rows]
  errors = [0.0 if math.isnan(r.stats.std) else r.stats.std for r in rows]
  ax.bar(range(len(rows)), means, yerr=errors, capsize=4,
         color=[f"C{i % 10}" for i in range(len(rows))])
  ax.set_xticks(range(len(rows)), labels, rotation=20 if len(rows) > 3 else 0, ha="right"
                if len(rows) > 3 else "center", fontsize="small")
  ax.set(ylabel=metric, title=f"{metric}: mean ± std over seeds")
  ax.grid(axis="y", alpha=0.3)
  fig.savefig(path, dpi=120)
