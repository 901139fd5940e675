"""What every entry point shares: flag parsing and the one-line user errors.

`run(main)` is `absl.app.run` except that a bad flag, a bad config override
or any `TrellisError` prints `error: ...` on stderr and exits with status 2,
without a traceback.
"""

import json
import os
import sys

# Fake CPU devices must be requested before jax is imported anywhere.
if os.environ.get("TRELLIS_CPU_DEVICES"):
  os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_"
                             f"device_count={os.environ['TRELLIS_CPU_DEVICES']}")


def _quiet_tpu_runtime_without_tpus() -> None:
  """Keeps an installed but idle libtpu (the `tpu` extra) from warning at every start.

  Without TPU chips, jax still tries the TPU runtime: libtpu prints warnings
  about the missing TPU metadata, and takes a machine-wide lock that makes a
  second process (e.g. experiments.compile_check) fail. Naming a placeholder
  host keeps it quiet and the lock is not needed where there is no chip to
  guard; on a TPU VM (chips present) nothing is set.
  """
  from jax._src import hardware_utils  # the check jax itself makes before loading libtpu
  if hardware_utils.num_available_tpu_chips_and_device_id()[0] == 0:
    os.environ.setdefault("TPU_ACCELERATOR_TYPE", "v5litepod-4")
    os.environ.setdefault("TPU_WORKER_HOSTNAMES", "localhost")
    os.environ.setdefault("ALLOW_MULTIPLE_LIBTPU_LOAD", "1")


_quiet_tpu_runtime_without_tpus()

from absl import app, flags, logging  # noqa: E402

from research.errors import ConfigError, TrellisError  # noqa: E402

JSON_OVERRIDES = ("--config.objectives=",)  # dict fields given whole as JSON


def fail(message: str) -> None:
  print(f"error: {message}", file=sys.stderr)
  sys.exit(2)


def _first_line(e: BaseException) -> str:
  text = str(e).strip() or type(e).__name__
  return text.splitlines()[0]


def load_config(config_flag, overrides: dict):
  """The config from a config_flags flag, with JSON overrides applied.

  config_flags defers loading the file until first access, so a missing or
  broken config file surfaces here; it becomes a ConfigError.
  """
  try:
    cfg = config_flag.value
    cfg.keys()  # a failed load is a proxy that raises on first use
  except (OSError, ImportError, SyntaxError) as e:
    lines = [l.strip() for l in str(e).splitlines() if l.strip()]
    raise ConfigError(f"cannot load the config file: {lines[-1] if lines else e}") from e
  apply_json_overrides(cfg, overrides)
  return cfg


def apply_json_overrides(cfg, overrides: dict) -> None:
  """Sets dict-valued fields passed as JSON (e.g. --config.objectives='{"mlm": 1}')."""
  import ml_collections
  for dotted, text in overrides.items():
    try:
      value = json.loads(text)
    except json.JSONDecodeError as e:
      raise ConfigError(f"--config.{dotted} is not valid JSON: {e}") from e
    if not isinstance(value, dict):
      raise ConfigError(f"--config.{dotted} must be a JSON object")
    with cfg.unlocked():
      cfg[dotted] = ml_collections.ConfigDict(value)


def run(main, distributed: bool = True) -> None:
  """Runs main(argv, json_overrides) with user errors mapped to `error: ...`, exit 2.

  With `distributed`, the process first joins a multi-host run if the
  environment describes one (research/distributed.py), before main touches
  any device.
  """
  overrides = {}

  def parse(argv):
    rest = []
    for arg in argv:
      prefix = next((p for p in JSON_OVERRIDES if arg.startswith(p)), None)
      if prefix:
        overrides[prefix[len("--config."):-1]] = arg[len(prefix):]
      else:
        rest.append(arg)
    try:
      return flags.FLAGS(rest)
    except (flags.Error, TrellisError, KeyError, AttributeError, ValueError, TypeError) as e:
      fail(_first_line(e))

  def guarded(argv):
    logging.set_verbosity(logging.WARNING)
    try:
      if distributed:
        from research import distributed as distributed_lib
        distributed_lib.initialize_from_env()
      return main(argv, overrides)
    except TrellisError as e:
      fail(_first_line(e))

  app.run(guarded, flags_parser=parse)


def define_run_flags():
  """The --config and --workdir flags every training entry point takes."""
  from ml_collections import config_flags
  config = config_flags.DEFINE_config_file("config", None, "config file[:preset]",
                                           lock_config=True)
  workdir = flags.DEFINE_string("workdir", None, "run directory (created, or resumed)")
  flags.mark_flags_as_required(["config", "workdir"])
  return config, workdir


def run_training(entry, config_flag, workdir_flag, overrides) -> None:
  """entry(cfg, workdir) -> results; prints them (process 0), or exits 128+signal if interrupted."""
  cfg = load_config(config_flag, overrides)
  results = entry(cfg, workdir_flag.value)
  if "interrupted" in results:
    sys.exit(128 + results["interrupted"])
  import jax
  if jax.process_index() == 0:
    print(json.dumps(results, indent=2))
