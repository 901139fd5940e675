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


def run(main) -> None:
  """Runs main(argv, json_overrides) with user errors mapped to `error: ...`, exit 2."""
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
      return main(argv, overrides)
    except TrellisError as e:
      fail(_first_line(e))

  app.run(guarded, flags_parser=parse)
