"""The one config loader (research/presets.py) and the check of data.source."""

import glob
import importlib
import os

import huggingface_hub
import pytest

from conftest import REPO
from research import finetune, presets
from research.config import validate
from research.data import sources, text
from research.errors import ConfigError, DataError

GPT, BERT = "configs/pretrain/gpt_clm.py", "configs/pretrain/bert_mlm_nsp.py"


def test_values_are_parsed_by_the_field_type():
  cfg = presets.load(f"{GPT}:tiny", [
      "--config.train.steps=1000", "--config.train.lr=1", "--config.model.scan_layers=true",
      "--config.model.tie_embeddings=False", "--config.data.train_files='a,b.txt'",
      "--config.train.freeze_backbone", '--config.objectives={"mlm": 1}',
      "--config.train.steps=7"])
  assert cfg.train.steps == 7 and cfg.train.lr == 1.0 and isinstance(cfg.train.lr, float)
  assert cfg.model.scan_layers is True and cfg.model.tie_embeddings is False
  assert cfg.train.freeze_backbone is True  # a bare bool field, as absl allows
  assert cfg.data.train_files == "'a,b.txt'"  # text as given (the shell strips quotes)
  assert cfg.objectives.to_dict() == {"mlm": 1} and cfg.is_locked


def test_without_a_preset_the_file_default_is_used():
  assert presets.load(GPT).to_dict() == presets.load(f"{GPT}:tiny").to_dict()


def test_a_new_objective_weight_is_added():
  cfg = presets.load(f"{BERT}:tiny", ["--config.objectives.clm=1.0", "--config.objectives.nsp=0"])
  assert cfg.objectives.to_dict() == {"mlm": 1.0, "nsp": 0.0, "clm": 1.0}


def test_a_json_object_updates_a_section_field_by_field():
  cfg = presets.load(f"{GPT}:tiny", ['--config.mesh.rules={"batch": "data"}'])
  assert cfg.mesh.rules.batch == "data" and cfg.mesh.rules.mlp == "tensor"


@pytest.mark.parametrize("override, message", [
    ("--config.train.setps=5", "--config.train.setps: the config has no field train.setps; "
                               "nearest: train.steps, train.eps, train.warmup_steps"),
    ("--config.lr=1", "--config.lr: the config has no field lr; nearest: train.lr"),
    ("--config.no_such_key=1", "--config.no_such_key: the config has no field no_such_key; "
                               "the fields of the config are data, generate, init_from, mesh, "
                               "model, objective_options, objectives, seed, task, train"),
    ("--config.objectives.clm.x=1", "no field objectives.clm.x"),
    ('--config.mesh.rules={"bach": "data"}',
     "no field mesh.rules.bach; nearest: mesh.rules.batch"),
    ("--config.train.steps=1e3",
     "--config.train.steps=1e3: train.steps takes an integer (it is 30)"),
    ("--config.model.scan_layers=maybe", "model.scan_layers takes true or false"),
    ("--config.train.steps",
     "--config.train.steps needs a value: write --config.train.steps=VALUE"),
    ("--config.objectives={mlm",
     "--config.objectives takes a JSON object; '{mlm' is not valid JSON"),
    ("--config.objectives=[1]", "--config.objectives takes a JSON object, e.g. "
                                "--config.objectives='{\"clm\": 1.0}'"),
    ('--config.mesh.rules={"batch": 1}', "--config.mesh.rules.batch takes text, not 1"),
    ("--config.a..b=1", "is not --config.FIELD=VALUE"),
])
def test_bad_overrides_say_what_to_do(override, message):
  with pytest.raises(ConfigError) as e:
    presets.load(f"{GPT}:tiny", [override])
  assert message in str(e.value) and "\n" not in str(e.value)


def test_a_section_after_its_field_is_refused():
  with pytest.raises(ConfigError, match="--config.objectives comes after --config.objectives.clm"):
    presets.load(f"{GPT}:tiny", ["--config.objectives.clm=1", '--config.objectives={"mlm": 1}'])


def test_bad_files_and_presets(tmp_path):
  with pytest.raises(ConfigError, match="no config file configs/pretrain/nope.py"):
    presets.load("configs/pretrain/nope.py:tiny")
  with pytest.raises(ConfigError, match="unknown preset 'huge'"):
    presets.load(f"{GPT}:huge")
  (tmp_path / "broken.py").write_text("def get_config(:\n")
  with pytest.raises(ConfigError, match="cannot load the config file .*broken.py"):
    presets.load(f"{tmp_path}/broken.py")


def test_source_kinds():
  assert sources.source_kind("kjv") == "builtin" and sources.source_kind("files") == "files"
  assert sources.source_kind("Salesforce/wikitext") == "hub"
  assert sources.source_kind("wikitext", "wikitext-2-raw-v1") == "hub"  # the README's example
  for name in ("shakespear", "wikitext", "", "a/b/c"):
    with pytest.raises(ConfigError, match="is neither a built-in corpus .* nor files"):
      sources.source_kind(name)


def test_unreachable_hub_is_one_line(monkeypatch):
  def unreachable(self, name, **kwargs):
    raise OSError("[Errno 111] Connection refused\nmore")
  monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)
  monkeypatch.setattr(huggingface_hub.HfApi, "dataset_info", unreachable)
  with pytest.raises(DataError, match=r"^data.source='a/b': cannot reach the Hugging Face hub "
                     r"\(OSError: \[Errno 111\] Connection refused\); connect, or set "
                     r"HF_HUB_OFFLINE=1 to read a copy cached before$"):
    text.check_on_hub("a/b")


def test_path_fields_and_flags_expand_home_and_variables(tmp_path, monkeypatch):
  """`~` in the README's compilation_cache example made a folder named `~` in the repo."""
  monkeypatch.setenv("HOME", str(tmp_path))
  monkeypatch.setenv("TRELLIS_DATA", "/data/corpus")
  cfg = presets.load(f"{GPT}:tiny", ["--config.train.compilation_cache=~/.cache/trellis-xla",
                                     "--config.data.train_files=~/a/*.txt, $TRELLIS_DATA/b.txt",
                                     "--config.init_from=~/runs/gpt"])
  assert cfg.train.compilation_cache == f"{tmp_path}/.cache/trellis-xla"
  assert cfg.data.train_files == f"{tmp_path}/a/*.txt,/data/corpus/b.txt"
  assert cfg.init_from == f"{tmp_path}/runs/gpt"
  from absl import flags

  from experiments import cli
  flag_values = flags.FlagValues()
  flags.DEFINE_string("workdir", None, "", flag_values=flag_values)
  flags.DEFINE_string("preset", "tiny", "", flag_values=flag_values)
  flag_values(["prog", "--workdir=~/runs/x"])
  cli.expand_path_flags(flag_values)
  assert flag_values.workdir == f"{tmp_path}/runs/x" and flag_values.preset == "tiny"


def _preset_specs():
  for path in sorted(glob.glob(os.path.join(REPO, "configs", "*", "*.py"))):
    path = os.path.relpath(path, REPO)
    if path.endswith("__init__.py") or path.endswith("common.py"):
      continue
    module = importlib.import_module(path[:-3].replace(os.sep, "."))
    for preset in getattr(module, "PRESETS", {}):
      yield f"{path}:{preset}"


@pytest.mark.parametrize("spec", list(_preset_specs()))
def test_every_preset_of_every_config_file_is_valid(spec):
  """As its command would run it (fine-tuning: with the task's objective for its kind)."""
  cfg = presets.load(spec, [])
  if "configs/finetune/" in spec:
    cfg = finetune.task_config(cfg)[1]
  validate(cfg, 8)
