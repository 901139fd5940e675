"""Hugging Face checkpoints in and out: GPT-2, GPT-Neo, BLOOM, GPT-NeoX, Llama (Mistral,
Qwen2), T5, BERT and RoBERTa.

`import_checkpoint(folder, heads)` reads a Hugging Face model folder (config.json
and model.safetensors, or shards with their index) of any family below, derives
the Trellis model config from config.json's `model_type` and places every
tensor through the family's name map (research/hf/folder.py: names and shapes
checked, per-layer tensors stacked). `export(cfg, params, folder)` writes a
Trellis Transformer as the family whose layout its config has (decoders as
GPT-2, GPT-Neo, BLOOM, GPT-NeoX, Llama, Mistral or Qwen2; encoders as BERT;
encoder-decoders as T5) and refuses a config none has, naming the fields.

  model_type                 module                 Trellis kind
  gpt2 gpt_neo bloom gpt_neox
  llama mistral qwen2        research/hf/decoders   decoder
  t5                         research/hf/t5         encoder_decoder
  bert roberta               research/hf/bert       encoder
"""

import pathlib
import sys

import numpy as np

from research import config as config_lib
from research.data.hf_tokenizer import load_tokenizer
from research.errors import CheckpointError, DataError, few
from research.hf import decoders, t5
from research.hf.bert import (NSP_HEAD, bert_config_to_model, export_bert, import_bert,
                              model_to_bert_config)
from research.hf.family import mismatches
from research.hf.folder import (abstract_params, extract, fetch_minilm, model_config,
                                model_folder, place, read_config, read_safetensors, unplaced,
                                write_folder)
from research.network import define_network

FAMILIES = (*decoders.FAMILIES, t5.T5)
BY_MODEL_TYPE = {t: f for f in FAMILIES for t in f.model_types}
BERT_TYPES = ("bert", "roberta")
MODEL_TYPES = tuple(sorted((*BY_MODEL_TYPE, *BERT_TYPES)))

__all__ = ["NSP_HEAD", "FAMILIES", "MODEL_TYPES", "bert_config_to_model", "export",
           "export_bert", "fetch_minilm", "import_bert", "import_checkpoint",
           "model_folder", "model_to_bert_config", "read_config", "read_safetensors"]


def family_of(config: dict):
  """The Family of a config.json (None for BERT and RoBERTa, which research/hf/bert reads)."""
  model_type = config.get("model_type")
  if model_type in BERT_TYPES:
    return None
  if model_type not in BY_MODEL_TYPE:
    raise CheckpointError(f"model_type {model_type!r} is not supported: Trellis imports "
                          f"{', '.join(MODEL_TYPES)}")
  return BY_MODEL_TYPE[model_type]


def _base_names(tensors: dict, prefix: str) -> dict:
  """Names as the family's base model has them (the task classes prefix them)."""
  if prefix and any(k.startswith(prefix) for k in tensors):
    return {k[len(prefix):] if k.startswith(prefix) else k: v for k, v in tensors.items()}
  return tensors


def import_checkpoint(folder, heads: dict | None = None) -> tuple[dict, dict, str]:
  """(model overrides, params, format) of a Hugging Face model folder of any family.

  `overrides` are dotted `model.*` values (cfg.update_from_flattened_dict);
  `params` flat Trellis name -> float32 array, the backbone complete (`heads`,
  {name: (kind, outputs)}, start fresh except BERT's pooled and NSP heads, see
  `import_bert`); `format` "hf-<model_type>".

  Raises:
    CheckpointError: not a model folder, an unsupported family or config field,
      a pickle-only checkpoint, or tensors missing, unexpected or of the wrong shape.
  """
  folder = pathlib.Path(folder)
  config = read_config(folder)
  family = family_of(config)
  if family is None:
    overrides, params = import_bert(folder, heads)
    return overrides, params, f"hf-{config['model_type']}"
  overrides = family.to_model(config)
  tensors = _base_names(read_safetensors(folder), family.prefix)
  embed = next(s.hf for s in family.specs(model_config(overrides))
               if s.ours == ("backbone/embed/embedding",))
  if (overrides["model.tie_embeddings"] and family.head in tensors and embed in tensors
      and not np.array_equal(tensors[family.head], tensors[embed])):
    # As transformers loads it: a head saved apart from the embeddings is not tied.
    overrides["model.tie_embeddings"] = False
  m = model_config(overrides)
  specs = family.specs(m)
  known = lambda name: family.known(name) or (m.tie_embeddings and name == family.head)
  unexpected = unplaced(specs, tensors, known)
  if unexpected:
    raise CheckpointError(f"{folder}: unexpected tensors for {family.architecture}: "
                          f"{few(unexpected)} (a variant Trellis does not model)")
  params = place(specs, tensors, abstract_params(overrides, heads), str(folder),
                 family.architecture)
  return overrides, params, f"hf-{config['model_type']}"


def _family_for(model_cfg):
  """The family a Trellis model config exports as: the first whose needs it meets all.

  Raises:
    CheckpointError: none; names what the nearest family needs.
  """
  if model_cfg.arch != "transformer":
    raise CheckpointError(f"cannot export model.arch={model_cfg.arch}: only Transformers "
                          "have Hugging Face equivalents")
  if model_cfg.kind == "encoder_decoder":
    candidates = [t5.T5]
  else:
    candidates = list(decoders.FAMILIES)
  needs = {"vocab_transform": False, "vocab_bias": False}
  if model_cfg.kind == "decoder":
    needs["scale_logits"] = False
  missing = [(mismatches(model_cfg, {**needs, **f.needs(model_cfg)}), f) for f in candidates]
  for wrong, family in missing:
    if not wrong:
      return family
  wrong, family = min(missing, key=lambda pair: len(pair[0]))
  raise CheckpointError(f"cannot export this {model_cfg.kind} to Hugging Face: the nearest "
                        f"family, {family.name}, needs {', '.join(wrong)}")


def _special_ids(tokenizer) -> dict:
  """config.json's special ids of a tokenizer: its own pad/bos/eos tokens (a role it
  borrows from another token, as GPT-2's pad from eos, is left out, as the hub's are)."""
  if tokenizer is None:
    return {}
  borrowed = getattr(tokenizer, "borrowed", {})
  ids = {}
  for role in ("pad", "bos", "eos"):
    if role in borrowed:
      continue
    try:
      ids[f"{role}_token_id"] = getattr(tokenizer, f"{role}_id")
    except DataError:  # a tokenizer without this special token says so when asked
      pass
  return ids


def export(cfg, params: dict, folder, tokenizer=None, pooler_head: str | None = None):
  """Writes a Trellis Transformer as a Hugging Face folder `from_pretrained` loads.

  Decoders and encoder-decoders are written as their family (see `_family_for`),
  encoders as BERT (`export_bert`, which also takes `pooler_head`). `tokenizer`,
  when given, is saved beside the weights and sets config.json's special ids.
  Nothing is written when the config has no equivalent.

  Raises:
    CheckpointError: the model config has no Hugging Face equivalent (the fields
      are named), a param is missing, or the tokenizer outgrows the embeddings.
  """
  m = cfg.model
  if m.arch == "transformer" and m.kind == "encoder":
    return export_bert(cfg, params, folder, tokenizer=tokenizer, pooler_head=pooler_head)
  family = _family_for(m)
  if tokenizer is not None and tokenizer.vocab_size > m.vocab_size:
    raise CheckpointError(f"the tokenizer has {tokenizer.vocab_size} pieces but the model "
                          f"only {m.vocab_size} embeddings")
  hf_config = {"architectures": [family.architecture], **family.from_model(m),
               "dtype": "float32", **_special_ids(tokenizer)}
  if family is t5.T5 and tokenizer is not None:
    hf_config["decoder_start_token_id"] = tokenizer.pad_id
  params = {k: np.asarray(v) for k, v in params.items() if k.startswith("backbone/")}
  tensors = extract(family.specs(m), params, family.name)
  head = family.head
  tensors = {(k if k == head or not family.prefix else family.prefix + k): v
             for k, v in tensors.items()}
  write_folder(folder, hf_config, tensors)
  if tokenizer is not None:
    tokenizer.save(folder)
  print(f"trellis: wrote {folder} as {hf_config['architectures'][0]} "
        f"(model_type {hf_config['model_type']})", file=sys.stderr)


def describe(overrides: dict) -> str:
  """The Trellis model an import derived, in one line (printed when a run starts from it)."""
  m = model_config(overrides)
  parts = [f"model.kind={m.kind}", f"num_layers={m.num_layers}", f"width={m.width}",
           f"num_heads={m.num_heads}"]
  parts += [f"{k}={m[k]}" for k in ("num_kv_heads", "head_dim", "sliding_window") if m[k]]
  parts += [f"position={m.position}", f"norm={m.norm}", f"mlp={m.mlp}",
            f"vocab_size={m.vocab_size}", f"tie_embeddings={m.tie_embeddings}"]
  return " ".join(parts)


def load_model(name_or_folder: str, cache_dir: str = ""):
  """(cfg, netdef, params, tokenizer) of a Hugging Face folder, to generate or evaluate
  with no training run; the derived model config is printed in one line."""
  folder = model_folder(name_or_folder, cache_dir)
  overrides, params, fmt = import_checkpoint(folder)
  cfg = config_lib.default_config()
  cfg.update_from_flattened_dict(overrides)
  print(f"trellis: {name_or_folder} ({fmt}): {describe(overrides)}", file=sys.stderr, flush=True)
  tokenizer = load_tokenizer(folder)
  if tokenizer.vocab_size > cfg.model.vocab_size:
    raise CheckpointError(f"{folder}: the tokenizer has {tokenizer.vocab_size} ids but the "
                          f"model only {cfg.model.vocab_size} embeddings: not its tokenizer")
  return cfg, define_network(cfg, {})[0], params, tokenizer
