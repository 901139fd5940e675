"""Run an ablation sweep and tabulate it: one subprocess per run, a table and plots at the end.

  python -m experiments.sweep --config=configs/pretrain/gpt_clm.py:small --workdir=runs/sweep1 \
      --sweep 'model.arch=transformer,lstm,cnn' --sweep 'seed=0,1,2' [--parallel=2]

Each `--sweep KEY=V1,V2,...` lists values of a dotted config field, parsed by
the field's type as `--config.KEY=V` would be (JSON for `objectives`:
`--sweep 'objectives={"mlm": 1},{"clm": 1}'`). `--mode=grid` (default) runs
every combination; `--mode=zip` pairs the lists' i-th values (seeds are still
crossed with every setting). `--config.KEY=V` applies to every run. Each run
is `python -m experiments.{pretrain,finetune}` in WORKDIR/NAME, NAME being its
overrides (`model.arch=lstm,seed=1`), with its output in stdout.log and
stderr.log there. Running the same command again skips finished runs (their
results.json holds the metric) and resumes interrupted ones; a run whose
workdir another process holds (research/workdir.py: WorkdirLock) is not
started but reported as `locked`. WORKDIR gets
summary.csv and summary.md (mean ± std and a 95% t-interval over seeds per
setting), runs.csv, loss_curves.png and metric_bars.png. Exit status: 0, 1
if any run failed or was locked, 2 for a bad sweep (before any run starts), 128+signal if
interrupted.
"""

import json
import os
import signal
import subprocess
import sys
import time

from absl import flags

from experiments import cli
from research import config as config_lib
from research import presets
from research import sweep
from research import lock as lock_lib
from research.errors import ConfigError, TrellisError

_CONFIG = flags.DEFINE_string("config", None, "config file[:preset] of every run")
_WORKDIR = flags.DEFINE_string("workdir", None, "sweep directory: a sub-workdir per run, tables")
_SWEEP = flags.DEFINE_multi_string("sweep", None, "KEY=V1,V2,... (repeat for more fields)")
_MODE = flags.DEFINE_enum("mode", "grid", ["grid", "zip"], "cartesian product or paired lists")
_PARALLEL = flags.DEFINE_integer("parallel", 1, "runs at a time (on one accelerator: 1)",
                                 lower_bound=1)
_ENTRY = flags.DEFINE_enum("entry", "pretrain", ["pretrain", "finetune"], "what each run is")
_METRIC = flags.DEFINE_string("metric", "", "results.json metric to tabulate, `a/b` for nested "
                              "(default: loss; finetune: test/<the task's metric>)")
flags.mark_flags_as_required(["config", "workdir", "sweep"])
_REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def plan(config: str, base: list[str], specs: list[str], mode: str, entry: str) -> dict:
  """{run name: (overrides, args, cfg)}; every bad spec is a ConfigError here.

  Each run's config is loaded as its entry point will load it (research/presets.py).
  """
  bad = next((a for a in base if "=" not in a), None)
  if bad:
    raise ConfigError(f"{bad} needs a value: write {bad}=VALUE")
  parsed = [sweep.parse_spec(s) for s in specs]
  base_cfg = presets.load(config, base)  # a bad base field or value, reported as such
  base_keys = [presets.parse_override(a)[0] for a in base]
  for key, _ in parsed:
    presets.locate(base_cfg, key, f"--sweep {key}")
    if key in base_keys:
      raise ConfigError(f"{key} is both swept and set by --config.{key}; drop one")
  runs = {}
  for overrides in sweep.expand(parsed, mode):
    name = sweep.run_name(overrides)
    args = [f"--config={config}", *base, *(f"--config.{k}={v}" for k, v in overrides.items())]
    try:
      cfg = presets.load(config, args[1:])
    except ConfigError as e:
      raise ConfigError(f"run {name}: {e}") from e
    if entry == "finetune" and cfg.task not in _tasks():
      raise ConfigError(f"run {name}: task={cfg.task!r} is not one of {', '.join(_tasks())}")
    runs[name] = (overrides, args, cfg)
  return runs


def _tasks() -> dict:
  from research.tasks import TASKS
  return TASKS


def default_metric(entry: str, configs) -> str:
  """loss for pretraining; the task's own metric on the test split for fine-tuning."""
  if entry == "pretrain":
    return "loss"
  metrics = {f"test/{_tasks()[cfg.task].metric}" for cfg in configs}
  if len(metrics) > 1:
    raise ConfigError(f"the runs score different metrics ({', '.join(sorted(metrics))}); "
                      "choose one with --metric")
  return metrics.pop()


def check_workdirs(root: str, runs: dict, entry: str, metric: str) -> None:
  """Refuses a sweep directory whose runs were made otherwise, or a metric no result has."""
  found = []
  for name, (_, args, _) in runs.items():
    path = os.path.join(root, name, "sweep_run.json")
    if os.path.exists(path):
      with open(path) as f:
        before = json.load(f)
      if before["entry"] != entry or sorted(before["args"]) != sorted(args):
        changed = sorted(set(before["args"]) ^ set(args)) or [f"--entry={before['entry']}"]
        raise ConfigError(f"{os.path.join(root, name)} was run with other arguments "
                          f"({', '.join(changed)}); use a new --workdir")
    results = sweep.load_results(os.path.join(root, name))
    if results is not None:
      found.append(results)
  if found and not any(metric in sweep.metric_names(r) for r in found):
    raise ConfigError(f"--metric={metric} is not in the runs' results.json; they have "
                      + ", ".join(sweep.metric_names(found[0])))


def device_count() -> int:
  """The devices a run will see, asked of a fresh process: this one never takes an accelerator."""
  code = "from experiments import cli; import jax; print(jax.device_count())"
  out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                       env=_child_env())
  if out.returncode:
    raise TrellisError(f"cannot count the devices: {_last_line(out.stderr)}")
  return int(out.stdout.split()[-1])


def git_commit() -> str:
  """HEAD of the checkout this code runs from (`-dirty` if tracked files changed), or unknown."""
  def git(*args):
    return subprocess.run(["git", "-C", _REPO, *args], capture_output=True, text=True,
                          timeout=30)
  try:
    head = git("rev-parse", "HEAD")
    if head.returncode:
      return "unknown"
    dirty = git("status", "--porcelain", "--untracked-files=no").stdout.strip()
  except (OSError, subprocess.TimeoutExpired):
    return "unknown"
  return head.stdout.strip() + ("-dirty" if dirty else "")


def _child_env() -> dict:
  # The children run this checkout's code whatever the working directory.
  path = os.pathsep.join(filter(None, [_REPO, os.environ.get("PYTHONPATH")]))
  return dict(os.environ, PYTHONPATH=path, PYTHONUNBUFFERED="1")


def _last_line(text: str) -> str:
  """The `error: ...` line a run printed, else its last line (tqdm's \\r redraws split too)."""
  lines = [l.strip() for l in text.replace("\r", "\n").splitlines() if l.strip()]
  errors = [l for l in lines if l.startswith("error: ")]
  return (errors or lines or ["(no output)"])[-1]


class _Stop:
  """SIGINT/SIGTERM: launch nothing more, pass SIGTERM on to the runs (they checkpoint).

  A second signal of the same kind acts as usual (Ctrl-C twice stops the wait at once).
  """

  def __init__(self):
    self.signum = None
    self._old = {s: signal.signal(s, self._handle) for s in (signal.SIGINT, signal.SIGTERM)}

  def _handle(self, signum, frame):
    self.signum = self.signum or signum
    signal.signal(signum, self._old[signum])

  def restore(self):
    for s, handler in self._old.items():
      signal.signal(s, handler)


def run_all(root: str, todo: dict, entry: str, parallel: int, total: int, commit: str):
  """Runs `todo` ({name: args}), `parallel` at a time; returns ({name: (status, error)}, signal)."""
  from tqdm import tqdm
  outcome, running, queue = {}, {}, list(todo)
  bar = tqdm(total=total, initial=total - len(todo), desc="sweep", unit="run", dynamic_ncols=True)
  stop, forwarded = _Stop(), set()
  try:
    while (queue and not stop.signum) or running:
      while queue and len(running) < parallel and not stop.signum:
        name = queue.pop(0)
        holder = lock_lib.lock_holder(os.path.join(root, name))
        if holder:  # another sweep (or a requeued job) runs it now: leave it alone
          outcome[name] = ("locked", lock_lib.busy_message(os.path.join(root, name), holder))
          bar.update(1)
          tqdm.write(f"locked {name}: {outcome[name][1]}")
          continue
        running[name] = _launch(os.path.join(root, name), entry, todo[name], commit)
      time.sleep(0.2)
      for name, (proc, started, logs) in list(running.items()):
        if stop.signum and name not in forwarded:
          proc.send_signal(signal.SIGTERM)
          forwarded.add(name)
        if proc.poll() is None:
          continue
        del running[name]
        for f in logs:
          f.close()
        with open(logs[1].name, errors="replace") as f:
          last = _last_line(f.read())
        status = "done" if proc.returncode == 0 else "interrupted" if stop.signum else "failed"
        outcome[name] = (status, last if status == "failed" else "")
        bar.update(1)
        tqdm.write(f"{status} {name} ({time.time() - started:.0f}s)"
                   + (f": {last}" if status == "failed" else ""))
  finally:
    stop.restore()
    bar.close()
  return outcome, stop.signum


def _launch(workdir: str, entry: str, args: list[str], commit: str):
  os.makedirs(workdir, exist_ok=True)
  with open(os.path.join(workdir, "sweep_run.json"), "w") as f:
    json.dump({"entry": entry, "args": args, "commit": commit}, f, indent=2)
  logs = [open(os.path.join(workdir, n), "w") for n in ("stdout.log", "stderr.log")]
  proc = subprocess.Popen([sys.executable, "-m", f"experiments.{entry}", *args,
                           f"--workdir={workdir}"], stdout=logs[0], stderr=logs[1],
                          stdin=subprocess.DEVNULL, env=_child_env())
  return proc, time.time(), logs


def collect(root: str, runs: dict, outcome: dict, metric: str, commit: str) -> list:
  """A RunResult per run, from its results.json and sweep_run.json."""
  results = []
  for name, (overrides, _, _) in runs.items():
    workdir = os.path.join(root, name)
    data = sweep.load_results(workdir) or {}
    status, error = outcome.get(name, ("done", ""))
    try:
      value = sweep.read_metric(data, metric) if status == "done" else None
    except KeyError as e:
      value, status = None, "failed" if data else "not run"
      error = f"{e.args[0]} (it has: {', '.join(sweep.metric_names(data))})" if data else ""
    run_commit = commit
    if os.path.exists(os.path.join(workdir, "sweep_run.json")):
      with open(os.path.join(workdir, "sweep_run.json")) as f:
        run_commit = json.load(f)["commit"]
    results.append(sweep.RunResult(name, overrides, status, value,
                                   data.get("config_hash", ""), run_commit, error))
  return results


def report(root: str, results: list, metric: str, title: str) -> str:
  """Writes summary.csv/.md, runs.csv and the two plots; returns the markdown table."""
  rows = sweep.aggregate(results)
  table = sweep.write_tables(rows, metric, os.path.join(root, "summary.csv"),
                             os.path.join(root, "summary.md"), title)
  sweep.write_runs_csv(results, metric, os.path.join(root, "runs.csv"))
  curves = [(r.overrides, *sweep.train_losses(os.path.join(root, r.name))) for r in results]
  sweep.plot_loss_curves(curves, os.path.join(root, "loss_curves.png"))
  sweep.plot_metric_bars(rows, metric, os.path.join(root, "metric_bars.png"))
  return table


def main(argv, overrides):
  if len(argv) > 1:
    raise ConfigError(f"unexpected argument {argv[1]!r}; overrides are --config.KEY=VALUE")
  root, entry, base = _WORKDIR.value, _ENTRY.value, overrides  # base: every run's --config.*
  runs = plan(_CONFIG.value, base, _SWEEP.value, _MODE.value, entry)
  metric = _METRIC.value or default_metric(entry, [cfg for _, _, cfg in runs.values()])
  check_workdirs(root, runs, entry, metric)
  done = {name for name in runs
          if metric in sweep.metric_names(sweep.load_results(os.path.join(root, name)) or {})}
  todo = {name: args for name, (_, args, _) in runs.items() if name not in done}
  if todo:
    num_devices = device_count()
    for name in todo:
      try:
        config_lib.validate(runs[name][2], num_devices)
      except ConfigError as e:
        raise ConfigError(f"run {name}: {e}") from e
  commit = git_commit()
  os.makedirs(root, exist_ok=True)
  with open(os.path.join(root, "sweep.json"), "w") as f:
    json.dump({"config": _CONFIG.value, "entry": entry, "mode": _MODE.value,
               "sweep": _SWEEP.value, "base": base, "metric": metric, "commit": commit,
               "runs": {name: overrides for name, (overrides, _, _) in runs.items()}}, f, indent=2)
  print(f"sweep: {len(runs)} runs, {len(done)} already done, {len(todo)} to run "
        f"({_PARALLEL.value} at a time) in {root}", flush=True)
  outcome, signum = run_all(root, todo, entry, _PARALLEL.value, len(runs), commit)
  results = collect(root, runs, outcome, metric, commit)
  title = (f"Sweep of `{_CONFIG.value}` ({entry}, {len(runs)} run{'s' * (len(runs) > 1)}): "
           f"`{metric}`, mean ± std "
           f"over seeds and the 95% t-interval of the mean. Commit {commit}.")
  print("\n" + report(root, results, metric, title))
  print(f"tables and plots in {root}: summary.csv, summary.md, runs.csv, loss_curves.png, "
        "metric_bars.png")
  failed = [r for r in results if r.status in ("failed", "locked")]
  for r in failed:
    print(f"{r.status}: {r.name}: {r.error}" + (
        f" (see {os.path.join(root, r.name, 'stderr.log')})" if r.status == "failed" else ""),
          file=sys.stderr)
  if signum:
    sys.exit(128 + signum)
  if failed:
    sys.exit(1)


if __name__ == "__main__":
  cli.run(main, distributed=False)
