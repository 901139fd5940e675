"""Paper-style experiments, one script each, and what their scripts share.

A SIGTERM/SIGINT stops a reproduction at the run it is in (errors.Interrupted,
its checkpoint saved; experiments.cli exits 128+signal); the same command
then resumes that run and goes on.

A reproduction's workdir holds one reproduction: its command-line settings
are recorded in WORKDIR/reproduction.json before the first run starts, and a
later command with other settings is refused (a ConfigError naming the
differing flag) before anything is read, trained or written. A finished run
is reported from its results.json, as research/sweep.py does for a sweep's
runs, without building or compiling a model; its statistics are the sweep's
(`sweep.summarize`: mean, sample std, 95% t-interval).
"""

import glob
import json
import os

from research import config as config_lib
from research import sweep
from research.errors import ConfigError

MANIFEST = "reproduction.json"


def spread(values: list[float]) -> dict:
  """{"mean", "std", "ci95"} of the values, by research.sweep.summarize.

  `std` is the sample standard deviation (n - 1), 0 for a single value (the
  tables print `± 0` there, as they always have), and `ci95` the 95%
  t-interval of the mean ([low, high]; None for a single value).
  """
  s = sweep.summarize(values)
  if s.n == 1:
    return {"mean": s.mean, "std": 0.0, "ci95": None}
  return {"mean": s.mean, "std": s.std, "ci95": [s.ci_low, s.ci_high]}


def _flag(key: str, value) -> str:
  """`--key=value` as the command line spells it (lists comma-separated)."""
  if isinstance(value, list):
    value = ",".join(str(v) for v in value)
  return f"--{key}={value}"


def _held_request(workdir: str, name: str, keys, checked_by_runs) -> dict | None:
  """The settings the workdir's reproduction was made with: its reproduction.json, or
  (a workdir from before it existed) those its summary*.json records; None if neither.

  From a summary, the keys in `checked_by_runs` are left out: the runs' own
  config.json and results.json say those better (before the record existed, a
  shorter --steps rewrote the summary and config.json, not the results' step).
  """
  path = os.path.join(workdir, MANIFEST)
  if os.path.exists(path):
    with open(path) as f:
      return json.load(f)
  for summary in sorted(glob.glob(os.path.join(workdir, "summary*.json"))):
    with open(summary) as f:
      held = json.load(f)
    return {"reproduction": name,
            **{k: held[k] for k in keys if k in held and k not in checked_by_runs}}
  return None


def _check_run(run_dir: str, cfg, flags: dict) -> None:
  """Refuses a run directory whose config.json (or results) was made with another value
  of one of `flags` ({dotted config field: the flag that sets it})."""
  config_path = os.path.join(run_dir, "config.json")
  if not os.path.exists(config_path):
    return
  with open(config_path) as f:
    saved = json.load(f)
  results = sweep.load_results(run_dir) or {}
  for field, flag in flags.items():
    try:
      held = config_lib.get_dotted(saved, field)
    except KeyError:
      continue
    # An early-stopped run ends before train.steps; a larger step is one trained
    # for more than the config.json an earlier, shorter request rewrote now says.
    if field == "train.steps" and isinstance(results.get("step"), int):
      held = max(held, results["step"])
    wanted = config_lib.get_dotted(cfg, field)
    if held != wanted:
      raise ConfigError(
          f"{run_dir} holds a run made with {flag}={held} ({field}), not {flag}={wanted}; "
          f"pass {flag}={held} to report it, or another --workdir to run {flag}={wanted}")


def check_workdir(workdir: str, name: str, request: dict, runs) -> None:
  """Refuses a workdir whose reproduction was made with other settings; records new ones.

  `request` maps the script's flags (without `--`) to their values; `runs`
  lists (run_dir, cfg, flags) of the runs the request makes, `flags` mapping
  config fields (dotted) to the flags that set them. The settings are read
  from WORKDIR/reproduction.json, or (a workdir made before it existed) its
  summary*.json; each run's config.json and results.json are checked too.
  The first setting that differs is one ConfigError naming the flag, both
  values and what to do, and nothing in the workdir is written; otherwise a
  workdir without a record gets WORKDIR/reproduction.json.
  """
  request = json.loads(json.dumps(request))  # tuples -> lists, as the record holds them
  if "seeds" in request and not request["seeds"]:
    raise ConfigError("--seeds is empty; give at least one seed, e.g. --seeds=0,1,2")
  checked_by_runs = {flag.lstrip("-") for run_dir, _, flags in runs
                     if os.path.exists(os.path.join(run_dir, "config.json"))
                     for flag in flags.values()}
  held = _held_request(workdir, name, request, checked_by_runs)
  if held is not None:
    if held.get("reproduction", name) != name:
      raise ConfigError(f"{workdir} holds the {held['reproduction']} reproduction, not "
                        f"{name}; pass another --workdir")
    for key, value in request.items():
      if key in held and held[key] != value:
        raise ConfigError(
            f"{workdir} holds the {name} reproduction made with {_flag(key, held[key])}, not "
            f"{_flag(key, value)}; pass {_flag(key, held[key])} to report it, or another "
            f"--workdir to run {_flag(key, value)}")
  for run_dir, cfg, flags in runs:
    _check_run(run_dir, cfg, flags)
  path = os.path.join(workdir, MANIFEST)
  if not os.path.exists(path):
    os.makedirs(workdir, exist_ok=True)
    with open(path, "w") as f:
      json.dump({"reproduction": name, **request}, f, indent=2)


def run_dir(workdir: str, name: str, seed: int) -> str:
  """Where a reproduction keeps the run of `name` (an architecture) with `seed`."""
  return os.path.join(workdir, f"{name}_seed{seed}")


def pretrain(cfg, run_dir: str) -> dict:
  """research.train.pretrain, imported only when a run must train (a report reads JSON)."""
  from research import train
  return train.pretrain(cfg, run_dir)


def finetune(cfg, run_dir: str) -> dict:
  """research.finetune.finetune, imported only when a run must train."""
  from research import finetune as finetune_lib
  return finetune_lib.finetune(cfg, run_dir)


def run_or_report(train, cfg, run_dir: str, metric: str) -> dict:
  """The results of the run in `run_dir`: those of its results.json if it finished, else
  `train(cfg, run_dir)`'s (which trains it, or resumes it where it stopped).

  A run has finished when its results.json holds `metric` (the test a sweep
  makes, experiments/sweep.py); such a run is read, not rebuilt, recompiled
  or re-evaluated, and nothing in it is written. Check the run first
  (check_workdir): this trusts that it was made as `cfg` asks.
  """
  results = sweep.load_results(run_dir)
  if results is not None and metric in sweep.metric_names(results):
    return results
  return train(cfg, run_dir)


def write_summary(workdir: str, summary: dict, markdown: str, name: str = "summary") -> None:
  """WORKDIR/<name>.json and its table WORKDIR/<name>.md."""
  os.makedirs(workdir, exist_ok=True)
  with open(os.path.join(workdir, f"{name}.json"), "w") as f:
    json.dump(summary, f, indent=2)
  with open(os.path.join(workdir, f"{name}.md"), "w") as f:
    f.write(markdown + "\n")


def force_equal(cfgs: dict, fields, reference: str = "transformer") -> list[str]:
  """Makes every config's `fields` equal to cfgs[reference]'s; names each one that differed.

  A field is a config section (compared key by key, so the list names
  "arch: section.key") or a plain value ("arch: field").
  """
  ref, forced = cfgs[reference], []
  for name, cfg in cfgs.items():
    for field in fields:
      ours, theirs = cfg[field], ref[field]
      if hasattr(ours, "to_dict"):
        ours, theirs = ours.to_dict(), theirs.to_dict()
        diff = [f"{field}.{k}" for k in sorted(set(ours) | set(theirs))
                if ours.get(k) != theirs.get(k)]
      else:
        diff = [field] if ours != theirs else []
      if diff:
        forced += [f"{name}: {d}" for d in diff]
        cfg[field] = (ref[field].copy_and_resolve_references()
                      if hasattr(ref[field], "copy_and_resolve_references") else ref[field])
  return forced


def arch_table(title: str, metric: str, archs: dict, key: str, digits: int) -> str:
  """A markdown table under `title`: per architecture its params, row[key] per seed, mean ± std."""
  lines = [title, "", f"| architecture | params | {metric} per seed | mean ± std |",
           "|---|---|---|---|"]
  for arch, row in archs.items():
    seeds = ", ".join(f"{v:.{digits}f}" for v in row[key])
    lines.append(f"| {arch} | {row['params']:,} | {seeds} | "
                 f"{row['mean']:.{digits}f} ± {row['std']:.{digits}f} |")
  return "\n".join(lines)
