"""What every entry point shares: flag parsing and the one-line user errors.

`run(main)` is `absl.app.run` except that a bad flag or any `TrellisError`
prints `error: ...` on stderr and exits with status 2, without a traceback.
The `--config.a.b=V` overrides are taken out of the arguments before absl
parses them and handed to `main`; `load_config` applies them to the config
file's preset through research/presets.py, the one config loader.
"""

import json
import os
import sys

# Fake CPU devices must be requested before jax is imported anywhere.
if os.environ.get("TRELLIS_CPU_DEVICES"):
  os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_"
                             f"device_count={os.environ['TRELLIS_CPU_DEVICES']}")


from absl import app, flags, logging  # noqa: E402

# Importing research quiets an idle libtpu (research/__init__.py) before jax picks a backend.
from research import config as config_lib  # noqa: E402
from research import presets  # noqa: E402
from research.errors import Interrupted, TrellisError, first_line  # noqa: E402


def fail(message: str) -> None:
  print(f"error: {message}", file=sys.stderr)
  sys.exit(2)


def load_config(config_flag, overrides: list[str]):
  """The config of a `--config=FILE.py[:PRESET]` flag with the run's `--config.*` overrides."""
  return presets.load(config_flag.value, overrides)


def split_overrides(argv: list[str]) -> tuple[list[str], list[str]]:
  """(the `--config.a.b=V` arguments before any `--`, in order; the other arguments)."""
  end = argv.index("--") if "--" in argv else len(argv)
  head, tail = argv[:end], argv[end:]
  return ([a for a in head if a.startswith(presets.PREFIX)],
          [a for a in head if not a.startswith(presets.PREFIX)] + tail)


def run(main, distributed: bool = True) -> None:
  """Runs main(argv, overrides) with user errors mapped to `error: ...`, exit 2.

  A run stopped by SIGTERM/SIGINT (errors.Interrupted, raised once its
  checkpoint is saved) exits with 128 + the signal's number.

  `overrides` are the `--config.a.b=V` arguments, for `load_config`, when the
  program has a --config flag (elsewhere absl refuses them as unknown flags).
  With `distributed`, the process first joins a multi-host run if the
  environment describes one (research/distributed.py), before main touches
  any device.
  """
  overrides = []

  def parse(argv):
    rest = argv
    if "config" in flags.FLAGS:
      overrides[:], rest = split_overrides(argv)
    try:
      rest = flags.FLAGS(rest)
    except (flags.Error, TrellisError) as e:
      fail(first_line(e))
    expand_path_flags(flags.FLAGS)
    return rest

  def guarded(argv):
    logging.set_verbosity(logging.WARNING)
    try:
      if distributed:
        from research import distributed as distributed_lib
        distributed_lib.initialize_from_env()
      return main(argv, overrides)
    except TrellisError as e:
      fail(first_line(e))
    except Interrupted as e:  # the run saved its work: exit as the signal would have
      sys.exit(128 + e.signum)

  app.run(guarded, flags_parser=parse)


# Flags that name files or folders; `~` and $VARIABLES in them are expanded (a shell
# leaves `--workdir=~/runs` as it is).
PATH_FLAGS = ("workdir", "out", "markdown", "process_logs", "init_from")


def expand_path_flags(flag_values) -> None:
  """Expands `~` and $VARIABLES in the PATH_FLAGS `flag_values` has."""
  for name in PATH_FLAGS:
    if name in flag_values and isinstance(flag_values[name].value, str):
      flag_values[name].value = config_lib.expand_path(flag_values[name].value)


def define_run_flags():
  """The --config and --workdir flags every training entry point takes."""
  config = flags.DEFINE_string("config", None, "config file[:preset], e.g. "
                               "configs/pretrain/gpt_clm.py:tiny; override fields with "
                               "--config.a.b=VALUE")
  workdir = flags.DEFINE_string("workdir", None, "run directory (created, or resumed)")
  flags.mark_flags_as_required(["config", "workdir"])
  return config, workdir


def run_training(entry, config_flag, workdir_flag, overrides) -> None:
  """entry(cfg, workdir) -> results; prints them (process 0).

  An interrupted run raises errors.Interrupted through here: `run` exits 128+signal.
  """
  cfg = load_config(config_flag, overrides)
  results = entry(cfg, workdir_flag.value)
  import jax
  if jax.process_index() == 0:
    print(json.dumps(results, indent=2))
