"""A config from the command line: `FILE.py[:PRESET]` plus `--config.a.b=VALUE` overrides.

Every entry point (pretrain, finetune, sweep, benchmark, compile_check) turns
its config arguments into a ConfigDict with `load`, so one command line means
one config everywhere:

  load("configs/pretrain/gpt_clm.py:tiny",
       ["--config.train.steps=1000", '--config.objectives={"mlm": 1}'])

A value is parsed by the type of the field it sets (int, float, bool, str). A
section (a dict-valued field) takes a JSON object: an open field such as
`objectives`, whose keys are the user's choice, is replaced whole; any other
section has the object's fields set one by one. A new key of an open field
is added (`--config.objectives.clm=1.0`); any other unknown field is a
ConfigError naming the nearest known fields.
"""

import difflib
import importlib.machinery
import importlib.util
import json
import os
import re
from typing import Sequence

import ml_collections

from research.config import OPEN_FIELDS, expand_paths
from research.errors import ConfigError, first_line

PREFIX = "--config."
_TRUE, _FALSE = ("true", "t", "1"), ("false", "f", "0")  # absl's spellings of a bool
_KINDS = {bool: "true or false", int: "an integer", float: "a number", str: "text"}


def load(spec: str, overrides: Sequence[str] = ()) -> ml_collections.ConfigDict:
  """The locked config of `spec` ("path/to/file.py[:preset]") with `overrides` applied.

  Raises:
    ConfigError: a missing or broken config file, an unknown preset or field,
      or a value that does not parse as its field's type (one line).
  """
  cfg = from_file(spec)
  apply_overrides(cfg, overrides)
  expand_paths(cfg)
  return cfg


def from_file(spec: str) -> ml_collections.ConfigDict:
  """`get_config(preset)` of the file named by "path.py[:preset]" (no preset: its default)."""
  path, has_preset, preset = spec.partition(":")
  if not os.path.isfile(path):
    raise ConfigError(f"--config={spec}: no config file {path}")
  module = _import_file(path)
  if not callable(getattr(module, "get_config", None)):
    raise ConfigError(f"--config={spec}: {path} has no get_config(preset)")
  cfg = module.get_config(preset) if has_preset else module.get_config()
  if not isinstance(cfg, ml_collections.ConfigDict):
    raise ConfigError(f"--config={spec}: get_config returned a {type(cfg).__name__}, "
                      "not a ConfigDict")
  cfg.lock()
  return cfg


def _import_file(path: str):
  name = "trellis_config_" + re.sub(r"\W", "_", os.path.splitext(path)[0])
  loader = importlib.machinery.SourceFileLoader(name, path)
  module = importlib.util.module_from_spec(importlib.util.spec_from_loader(name, loader))
  try:
    loader.exec_module(module)
  except (OSError, ImportError, SyntaxError) as e:
    raise ConfigError(f"cannot load the config file {path}: {first_line(e)}") from e
  return module


def parse_override(arg: str) -> tuple[str, str | None]:
  """"--config.a.b=V" -> ("a.b", "V"); a bare "--config.a.b" gives ("a.b", None)."""
  dotted, has_value, text = arg.removeprefix(PREFIX).partition("=")
  if not arg.startswith(PREFIX) or not all(dotted.split(".")):
    raise ConfigError(f"{arg!r} is not {PREFIX}FIELD=VALUE")
  return dotted, text if has_value else None


def apply_overrides(cfg, overrides: Sequence[str]) -> None:
  """Sets each "--config.a.b=V" of `overrides` in `cfg`, in order (a repeated field: the last)."""
  done = []
  for arg in overrides:
    dotted, text = parse_override(arg)
    undone = next((d for d in done if d.startswith(dotted + ".")), None)
    if undone:
      raise ConfigError(f"{PREFIX}{dotted} comes after {PREFIX}{undone} and would undo it; "
                        f"give {PREFIX}{dotted} first")
    set_from_text(cfg, dotted, text)
    done.append(dotted)


def set_from_text(cfg, dotted: str, text: str | None) -> None:
  """Sets field `dotted` of `cfg` from command-line text, parsed by the field's type."""
  section, key = locate(cfg, dotted)
  if key not in section:  # a new entry of an open field: a weight, say
    _assign(cfg, section, key, _json(dotted, text, "a JSON value, e.g. 1.0"), dotted)
  elif isinstance(section[key], ml_collections.ConfigDict):
    value = _json(dotted, text, "a JSON object")
    if not isinstance(value, dict):
      raise ConfigError(f"{PREFIX}{dotted} takes a JSON object, e.g. "
                        f"{PREFIX}{dotted}='{json.dumps(section[key].to_dict())}'")
    _set_section(cfg, dotted, value)
  else:
    _assign(cfg, section, key, _parse(dotted, text, section[key]), dotted)


def locate(cfg, dotted: str, where: str = "") -> tuple:
  """(the section holding field `dotted`, its key); the key is new only in an open field.

  Raises:
    ConfigError: no such field, naming the nearest known ones; `where` says
      which argument named it (default: --config.DOTTED).
  """
  *parents, key = dotted.split(".")
  section = cfg
  for name in parents:
    if not isinstance(section, ml_collections.ConfigDict) or name not in section:
      break
    section = section[name]
  else:
    if isinstance(section, ml_collections.ConfigDict) and (
        key in section or ".".join(parents) in OPEN_FIELDS):
      return section, key
  raise ConfigError(f"{where or PREFIX + dotted}: {unknown_field(cfg, dotted)}")


def unknown_field(cfg, dotted: str) -> str:
  """"the config has no field X; nearest: ..." with difflib's nearest dotted names."""
  paths = list(_field_paths(cfg))
  near = difflib.get_close_matches(dotted, paths, n=3, cutoff=0.6)
  if not near:  # a right name in the wrong section: `lr` for `train.lr`
    last = {p: p.rsplit(".", 1)[-1] for p in paths}
    close = difflib.get_close_matches(dotted.rsplit(".", 1)[-1], set(last.values()), cutoff=0.6)
    near = [p for p in paths if last[p] in close][:3]
  if near:
    return f"the config has no field {dotted}; nearest: {', '.join(near)}"
  parent = dotted.rpartition(".")[0]
  fields = [p for p in paths if p.rpartition(".")[0] == parent]
  if not fields:
    parent, fields = "", [p for p in paths if "." not in p]
  return (f"the config has no field {dotted}; the fields of {parent or 'the config'} are "
          + ", ".join(fields))


def _field_paths(cfg, prefix: str = ""):
  for key, value in cfg.items():
    yield prefix + key
    if isinstance(value, ml_collections.ConfigDict) and prefix + key not in OPEN_FIELDS:
      yield from _field_paths(value, f"{prefix}{key}.")


def _parse(dotted: str, text: str | None, current):
  """`text` as the type of the field's current value."""
  if text is None:
    if isinstance(current, bool):  # absl's bare boolean flag
      return True
    raise ConfigError(f"{PREFIX}{dotted} needs a value: write {PREFIX}{dotted}=VALUE")
  try:
    if isinstance(current, bool):
      if text.lower() not in _TRUE + _FALSE:
        raise ValueError(text)
      return text.lower() in _TRUE
    if isinstance(current, (int, float, str)):
      return type(current)(text)
  except ValueError:
    raise ConfigError(f"{PREFIX}{dotted}={text}: {dotted} takes {_KINDS[type(current)]} "
                      f"(it is {current!r})") from None
  raise ConfigError(f"{PREFIX}{dotted}: a {type(current).__name__} field cannot be set "
                    "from the command line")


def _json(dotted: str, text: str | None, wanted: str):
  if text is None:
    raise ConfigError(f"{PREFIX}{dotted} needs a value: write {PREFIX}{dotted}=VALUE")
  try:
    return json.loads(text)
  except json.JSONDecodeError as e:
    raise ConfigError(f"{PREFIX}{dotted} takes {wanted}; {text!r} is not valid JSON: {e}") from None


def _set_section(cfg, dotted: str, value: dict) -> None:
  """A JSON object for a section: an open field is replaced, any other updated field by field."""
  if dotted in OPEN_FIELDS:
    section, key = locate(cfg, dotted)
    _assign(cfg, section, key, ml_collections.ConfigDict(value), dotted)
    return
  for name, item in value.items():
    field = f"{dotted}.{name}"
    section, key = locate(cfg, field, f"{PREFIX}{dotted}")
    if isinstance(item, dict) and key in section:
      _set_section(cfg, field, item)
    else:
      _assign(cfg, section, key, item, field)


def _assign(cfg, section, key: str, value, dotted: str) -> None:
  try:
    with cfg.unlocked():  # new entries of open fields; existing fields keep their types
      section[key] = value
  except TypeError:  # a JSON value of another type than the field's
    kind = type(section[key])
    raise ConfigError(f"{PREFIX}{dotted} takes {_KINDS.get(kind, kind.__name__)}, "
                      f"not {value!r}") from None
