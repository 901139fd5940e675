"""Every command of the README is checked, so the README cannot drift from the code.

Each `python -m experiments.X ...` line of a README code block names only
flags its entry point defines, and each config it builds (a preset plus
`--config.*` overrides; a sweep's every run; a benchmark's every --config)
loads and validates, without running anything. The README's first tour, the
tiny GPT then `experiments.generate` on it, runs for real at a few steps,
exactly as written but for the step counts and the workdir (the mesh example's
compile is tests/test_train.py's involuntary-rematerialization test).
"""

import ast
import pathlib
import re
import shlex

import pytest

from conftest import REPO
from research import config as config_lib
from research import finetune, presets, sweep
from test_cli import run_cli

README = pathlib.Path(REPO) / "README.md"
FAST = ["--config.train.steps=2", "--config.train.log_every=1", "--config.train.eval_every=2",
        "--config.train.checkpoint_every=2", "--config.train.eval_batches=1"]


def readme_commands() -> list[str]:
  """The `python -m experiments...` commands of the README's code blocks, one line each."""
  commands = []
  for lang, block in re.findall(r"```(\w*)\n(.*?)```", README.read_text(), re.S):
    if lang not in ("", "bash", "sh"):
      continue
    for line in block.replace("\\\n", " ").splitlines():
      line = re.sub(r"\s+#.*$", "", line).strip()
      if line.count("'") % 2:  # the end of a quoted remote command (gcloud ... --command='...')
        line = line.rstrip("'")
      if re.search(r"(^|\s)python -m experiments\.", line):
        commands.append(line)
  return commands


COMMANDS = readme_commands()


def _defined_flags(module: str) -> set[str]:
  """The flag names `module` (and experiments/cli.py's run flags, if it takes them) defines."""
  path = pathlib.Path(REPO, *module.split(".")).with_suffix(".py")
  if not path.exists():
    path = pathlib.Path(REPO, *module.split("."), "__init__.py")
  source = path.read_text()
  names = {node.args[0].value for node in ast.walk(ast.parse(source))
           if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
           and node.func.attr.startswith("DEFINE_") and node.args
           and isinstance(node.args[0], ast.Constant)}
  if "define_run_flags" in source:
    names |= {"config", "workdir"}
  return names


def _parse(command: str) -> tuple[dict, str, list[str]]:
  """(environment assignments, module, arguments) of a README command line."""
  words = shlex.split(command)
  env = {}
  while words[0] != "python":  # VAR=value prefixes; a launcher's own words (srun ...)
    key, is_env, value = words.pop(0).partition("=")
    if is_env and not key.startswith("-"):
      env[key] = value
  assert words[:2] == ["python", "-m"], command
  return env, words[2], words[3:]


def _flags_and_overrides(args: list[str]) -> tuple[dict[str, list[str]], list[str]]:
  """({flag: [values]}, the --config.* overrides) of an argument list."""
  flags, overrides = {}, []
  i = 0
  while i < len(args):
    arg = args[i]
    if arg.startswith(presets.PREFIX):
      overrides.append(arg)
    else:
      assert arg.startswith("--"), f"positional argument {arg!r}"
      name, has_value, value = arg[2:].partition("=")
      if not has_value and i + 1 < len(args) and not args[i + 1].startswith("--"):
        value, i = args[i + 1], i + 1  # `--sweep 'a=1,2'`, `--prompt "To be"`
      flags.setdefault(name, []).append(value)
    i += 1
  return flags, overrides


def _configs(module: str, flags: dict, overrides: list[str]) -> list:
  """Every config the command would build, loaded as its entry point loads it."""
  if module == "experiments.benchmark":
    specs = [s if ":" in s else f"{s}:small" for s in flags.get("config", [])]
    return [presets.load(s, overrides) for s in specs]
  if module == "experiments.sweep":
    parsed = [sweep.parse_spec(s) for s in flags["sweep"]]
    return [presets.load(flags["config"][0], overrides + [f"--config.{k}={v}"
                                                          for k, v in run.items()])
            for run in sweep.expand(parsed, flags.get("mode", ["grid"])[0])]
  if module == "experiments.finetune":
    return [finetune.task_config(presets.load(flags["config"][0], overrides))[1]]
  if "config" in flags:
    return [presets.load(flags["config"][0], overrides)]
  assert not overrides, f"{module} takes no --config.* overrides"
  return []


def test_the_readme_has_its_commands():
  modules = {_parse(c)[1] for c in COMMANDS}
  assert len(COMMANDS) >= 20 and {"experiments.pretrain", "experiments.finetune",
                                   "experiments.generate", "experiments.sweep",
                                   "experiments.benchmark"} <= modules, COMMANDS


@pytest.mark.parametrize("command", COMMANDS, ids=lambda c: re.sub(r"\W+", "_", c)[18:80])
def test_a_readme_command_names_real_flags_and_valid_configs(command):
  env, module, args = _parse(command)
  flags, overrides = _flags_and_overrides(args)
  unknown = sorted(set(flags) - _defined_flags(module))
  assert not unknown, f"{module} has no flag {unknown}: {command}"
  devices = 8
  match = re.search(r"device_count=(\d+)", env.get("XLA_FLAGS", ""))
  if match:
    devices = int(match.group(1))
  for cfg in _configs(module, flags, overrides):
    config_lib.validate(cfg, devices)


def _as_written(command: str, workdirs: dict) -> list[str]:
  """The command's arguments with its runs/... workdirs moved under the test's folder."""
  _, _, args = _parse(command)
  for old, new in workdirs.items():
    args = [a.replace(f"={old}", f"={new}") for a in args]
  return args


def _readme_line(pattern: str) -> str:
  return next(c for c in COMMANDS if re.search(pattern, c))


def test_the_first_tour_runs_as_written(tmp_path):
  """The tiny GPT, then the README's generate command on it (it failed: 67 > max_len 64)."""
  workdirs = {"runs/gpt": str(tmp_path / "gpt")}
  pretrain = _readme_line(r"pretrain .*gpt_clm.py:tiny --workdir=runs/gpt$")
  result = run_cli("experiments.pretrain", *_as_written(pretrain, workdirs), *FAST)
  assert result.returncode == 0, result.stderr[-3000:]
  generate = _readme_line(r"experiments.generate --workdir=runs/gpt ")
  result = run_cli("experiments.generate", *_as_written(generate, workdirs))
  assert result.returncode == 0, result.stderr[-3000:]
  assert result.stdout.startswith("[step 2] To be"), result.stdout
  assert "trellis: max_new_tokens not set: generating up to 61 tokens" in result.stderr
