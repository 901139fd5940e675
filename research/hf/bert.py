"""Hugging Face BERT (and RoBERTa) checkpoints: import into Trellis, export back (BERT).

RoBERTa imports as BERT under BERT's names (`_roberta_as_bert`): its `lm_head`
is BERT's MLM head, and its position table drops the padding_idx + 1 rows
RoBERTa never reads for real tokens (its positions start there).

BERT maps onto the Trellis Transformer encoder with post-LN blocks
(`model.prenorm=False`), learned positions, LayerNorm and token types:

  embeddings.word_embeddings          backbone/embed/embedding
  embeddings.position_embeddings      backbone/pos_embed
  embeddings.token_type_embeddings    backbone/type_embed
  embeddings.LayerNorm                backbone/embed_norm (post-LN: on the embeddings)
  encoder.layer.i.attention.self.q/k/v   backbone/blocks/attn/query|key|value [i]
  encoder.layer.i.attention.output.dense backbone/blocks/attn/out [i]
  encoder.layer.i.attention.output.LayerNorm  backbone/blocks/attn_norm [i]
  encoder.layer.i.intermediate.dense  backbone/blocks/mlp/up [i]
  encoder.layer.i.output.dense        backbone/blocks/mlp/down [i]
  encoder.layer.i.output.LayerNorm    backbone/blocks/mlp_norm [i]
  pooler.dense                        heads/<h>/pool of every "pooled" head
  cls.seq_relationship                heads/nsp/out (BERT's NSP head, on the pooler)
  cls.predictions.transform.dense     backbone/vocab_transform/dense   (BERT's MLM
  cls.predictions.transform.LayerNorm backbone/vocab_transform/norm     head: model.
  cls.predictions.bias                backbone/vocab_bias/bias          vocab_transform
  cls.predictions.decoder             the tied word embeddings          and vocab_bias)

The pooler and the NSP and MLM heads are optional: a checkpoint without a
pooler (sentence-transformers exports) imports with the pooled heads' `pool`
layers fresh. Tensors are saved under `bert.` with `cls.` heads
(BertForPreTraining, BertForMaskedLM, BertForNextSentencePrediction) when
heads are exported, as BertModel's names otherwise. BERT keeps one tensor per
layer where Trellis stacks the layers of a param on a leading axis ([i] above):
import stacks them, export takes them apart.

Linear weights are [out, in] in PyTorch and [in, out] here (transposed);
LayerNorm weight/bias are scale/bias. BERT's attention mask is Trellis'
`segment_ids` (1 for tokens, 0 for padding); both give the same states at
the real tokens (padding rows differ and are never read).
"""

import pathlib
import sys

import numpy as np

from research.errors import CheckpointError, few
from research.hf import folder as hf_folder
from research.hf.folder import read_config, read_safetensors

# Tensors of other BERT classes' heads (MLM, NSP, classifiers, QA), and
# buffers: known, and reported as unused instead of refused.
_OTHER_HEADS = ("cls.", "classifier.", "qa_outputs.", "embeddings.position_ids")
# The NSP objective's head (research/objectives/nsp.py): BERT's cls.seq_relationship.
NSP_HEAD = "nsp"
# hidden_act -> model.gelu_approximate ("gelu_new" is the tanh approximation).
_GELU = {"gelu": False, "gelu_new": True, "gelu_pytorch_tanh": True}


def bert_config_to_model(hf_config: dict) -> dict:
  """The `model.*` config values (dotted keys) of a Hugging Face BERT config.json.

  Raises:
    CheckpointError: the config is not BERT, or uses a variant Trellis lacks.
  """
  c = hf_config
  if c.get("model_type") not in ("bert", "roberta"):
    raise CheckpointError(f"model_type {c.get('model_type')!r} is not BERT or RoBERTa")
  act = c.get("hidden_act", "gelu")
  if act not in _GELU:
    raise CheckpointError(f"BERT hidden_act {act!r} is not supported "
                          f"(one of {', '.join(_GELU)})")
  if c.get("position_embedding_type", "absolute") != "absolute":
    raise CheckpointError(f"BERT position_embedding_type {c['position_embedding_type']!r} "
                          "is not supported (only 'absolute')")
  if c.get("is_decoder") or c.get("add_cross_attention"):
    raise CheckpointError("BERT as a decoder is not supported: only the encoder imports")
  try:
    return {
        "model.arch": "transformer", "model.kind": "encoder",
        "model.num_layers": int(c["num_hidden_layers"]), "model.width": int(c["hidden_size"]),
        "model.num_heads": int(c["num_attention_heads"]),
        "model.mlp_dim": int(c["intermediate_size"]), "model.vocab_size": int(c["vocab_size"]),
        "model.max_len": int(c.get("max_position_embeddings", 512))
                         - (_roberta_offset(c) if c["model_type"] == "roberta" else 0),
        "model.type_vocab_size": int(c.get("type_vocab_size", 2)),
        "model.position": "learned", "model.norm": "layernorm", "model.prenorm": False,
        "model.mlp": "gelu", "model.gelu_approximate": _GELU[act],
        "model.norm_eps": float(c.get("layer_norm_eps", 1e-12)),
        "model.tie_embeddings": True, "model.dropout": float(c.get("hidden_dropout_prob", 0.1)),
        "model.attention_dropout": float(c.get("attention_probs_dropout_prob", 0.1)),
        # Set by import_bert when the checkpoint carries the MLM head.
        "model.vocab_transform": False, "model.vocab_bias": False,
    }
  except KeyError as e:
    raise CheckpointError(f"BERT config.json lacks {e.args[0]!r}") from None


def model_to_bert_config(model_cfg, pad_id: int = 0, architecture: str = "BertModel") -> dict:
  """The Hugging Face config.json of a BERT-shaped Trellis encoder config.

  Raises:
    CheckpointError: the model is not a post-LN LayerNorm GELU encoder with
      learned positions (what `BertModel` computes).
  """
  m = model_cfg
  needs = {"arch": "transformer", "kind": "encoder", "position": "learned",
           "norm": "layernorm", "prenorm": False, "mlp": "gelu"}
  for field, value in needs.items():
    if m[field] != value:
      raise CheckpointError(f"cannot export as BERT: it needs model.{field}={value!r}, "
                            f"not {m[field]!r}")
  if m.vocab_transform != m.vocab_bias:
    raise CheckpointError("cannot export as BERT: its MLM head has both the transform and the "
                          f"bias, not model.vocab_transform={m.vocab_transform} and "
                          f"model.vocab_bias={m.vocab_bias}")
  return {
      "architectures": [architecture], "model_type": "bert",
      "hidden_act": "gelu_new" if m.gelu_approximate else "gelu",
      "hidden_size": m.width, "num_hidden_layers": m.num_layers,
      "num_attention_heads": m.num_heads, "intermediate_size": m.mlp_dim or 4 * m.width,
      "vocab_size": m.vocab_size, "max_position_embeddings": m.max_len,
      "type_vocab_size": max(m.type_vocab_size, 1), "layer_norm_eps": m.norm_eps,
      "hidden_dropout_prob": m.dropout, "attention_probs_dropout_prob": m.attention_dropout,
      "position_embedding_type": "absolute", "pad_token_id": pad_id,
      "initializer_range": 0.02, "dtype": "float32",
      "tie_word_embeddings": bool(m.tie_embeddings or not m.vocab_transform),
  }


def _name_map(num_layers: int, pooled_heads, *, nsp: bool = False, mlm: bool = False,
              tied: bool = True) -> dict[str, tuple[str, bool, int | None]]:
  """HF tensor name -> (Trellis param name, whether it is a transposed Linear weight,
  its layer: the index into the Trellis param's stacked layers, None if not a block's).

  `pooled_heads` take the pooler; `nsp` adds the NSP head (on NSP_HEAD's pool), `mlm`
  the MLM head (and, not `tied`, its own decoder: the Trellis `head`).
  """
  pairs = {"embeddings.word_embeddings.weight": ("backbone/embed/embedding", False, None),
           "embeddings.position_embeddings.weight": ("backbone/pos_embed", False, None),
           "embeddings.token_type_embeddings.weight": ("backbone/type_embed", False, None)}

  def linear(hf, ours, layer=None):
    pairs[f"{hf}.weight"] = (f"{ours}/kernel", True, layer)
    pairs[f"{hf}.bias"] = (f"{ours}/bias", False, layer)

  def layernorm(hf, ours, layer=None):
    pairs[f"{hf}.weight"] = (f"{ours}/scale", False, layer)
    pairs[f"{hf}.bias"] = (f"{ours}/bias", False, layer)

  layernorm("embeddings.LayerNorm", "backbone/embed_norm")
  for i in range(num_layers):
    hf, ours = f"encoder.layer.{i}", "backbone/blocks"
    for proj in ("query", "key", "value"):
      linear(f"{hf}.attention.self.{proj}", f"{ours}/attn/{proj}", i)
    linear(f"{hf}.attention.output.dense", f"{ours}/attn/out", i)
    layernorm(f"{hf}.attention.output.LayerNorm", f"{ours}/attn_norm", i)
    linear(f"{hf}.intermediate.dense", f"{ours}/mlp/up", i)
    linear(f"{hf}.output.dense", f"{ours}/mlp/down", i)
    layernorm(f"{hf}.output.LayerNorm", f"{ours}/mlp_norm", i)
  for head in pooled_heads:
    linear("pooler.dense", f"heads/{head}/pool")
  if nsp:
    linear("cls.seq_relationship", f"heads/{NSP_HEAD}/out")
  if mlm:
    linear("cls.predictions.transform.dense", "backbone/vocab_transform/dense")
    layernorm("cls.predictions.transform.LayerNorm", "backbone/vocab_transform/norm")
    pairs["cls.predictions.bias"] = ("backbone/vocab_bias/bias", False, None)
    if not tied:
      pairs["cls.predictions.decoder.weight"] = ("backbone/head/kernel", True, None)
  return pairs


def _specs(pairs: dict) -> list:
  """The folder.Tensor specs of a `_name_map`."""
  return [hf_folder.plain(hf, name, layer, transpose)
          for hf, (name, transpose, layer) in pairs.items()]


# RoBERTa's MLM head (lm_head) under the names BERT's has.
_ROBERTA_HEAD = {"lm_head.dense.": "cls.predictions.transform.dense.",
                 "lm_head.layer_norm.": "cls.predictions.transform.LayerNorm.",
                 "lm_head.decoder.weight": "cls.predictions.decoder.weight",
                 "lm_head.bias": "cls.predictions.bias"}


def _roberta_as_bert(tensors: dict, config: dict) -> dict:
  """A RoBERTa checkpoint under BERT's names, its position table starting at position 0.

  RoBERTa numbers positions from padding_idx + 1 (rows 0..padding_idx are never read
  for real tokens): Trellis' position p is RoBERTa's row p + padding_idx + 1.
  """
  tensors = {k[8:] if k.startswith("roberta.") else k: v for k, v in tensors.items()}
  tensors.pop("lm_head.decoder.bias", None)  # the same values as lm_head.bias
  renamed = {}
  for k, v in tensors.items():
    new = next((k.replace(a, b, 1) for a, b in _ROBERTA_HEAD.items() if k.startswith(a)), k)
    renamed[new] = v
  table = "embeddings.position_embeddings.weight"
  if table in renamed:
    renamed[table] = renamed[table][_roberta_offset(config):]
  return renamed


def _roberta_offset(config: dict) -> int:
  return int(config.get("pad_token_id", 1)) + 1


def _strip_prefix(tensors: dict, config: dict | None = None) -> dict:
  """Names as BertModel has them: task models (BertForX) prefix the encoder with `bert.`."""
  if (config or {}).get("model_type") == "roberta":
    tensors = _roberta_as_bert(tensors, config)
  if any(k.startswith("bert.") for k in tensors):
    tensors = {k[5:] if k.startswith("bert.") else k: v for k, v in tensors.items()}
  # Checkpoints from the original TF code name LayerNorm params gamma/beta.
  tensors = {k.replace("LayerNorm.gamma", "LayerNorm.weight").replace("LayerNorm.beta",
                                                                      "LayerNorm.bias"): v
             for k, v in tensors.items()}
  # The MLM decoder's bias is cls.predictions.bias (tied): older saves may keep either name.
  if "cls.predictions.decoder.bias" in tensors and "cls.predictions.bias" not in tensors:
    tensors["cls.predictions.bias"] = tensors.pop("cls.predictions.decoder.bias")
  return tensors


def _pooled_heads(heads: dict | None) -> list[str]:
  return sorted(name for name, (kind, _) in (heads or {}).items() if kind == "pooled")


def _mlm_head(config: dict, tensors: dict) -> dict | None:
  """The model overrides of the checkpoint's MLM head (None: it has none)."""
  if "cls.predictions.transform.dense.weight" not in tensors:
    return None
  tied = bool(config.get("tie_word_embeddings", True))
  if tied and "embeddings.word_embeddings.weight" not in tensors:
    # A tied save may keep the shared matrix under the decoder's name only.
    tensors["embeddings.word_embeddings.weight"] = tensors.get("cls.predictions.decoder.weight")
  return {"model.vocab_transform": True, "model.vocab_bias": True, "model.tie_embeddings": tied}


def import_bert(folder, heads: dict | None = None) -> tuple[dict, dict[str, np.ndarray]]:
  """(model overrides, params) of a Hugging Face BERT folder, for a Trellis Network.

  Args:
    folder: a model folder (config.json + model.safetensors).
    heads: the task network's heads, {name: (kind, outputs)} as Network takes
      them; BERT's pooler initialises the `pool` layer of every "pooled"
      head (a checkpoint without a pooler leaves them fresh, and says so on
      stderr), and BERT's NSP head the `out` layer of the NSP_HEAD head.
      The MLM head, when the checkpoint has one, becomes the encoder's
      vocabulary head (model.vocab_transform, model.vocab_bias). Tensors
      without a place (the pooler when there is no pooled head, classifier
      heads) are named on stderr as unused.

  Returns:
    `overrides`: dotted `model.*` config values (`cfg.update_from_flattened_dict`);
    `params`: flat Trellis param name -> float32 array, the backbone complete,
    heads only where the checkpoint has them (the rest start fresh); BERT's
    per-layer tensors stacked into the Trellis blocks' params.

  Raises:
    CheckpointError: no config.json, not BERT, no safetensors, or tensors
      missing, unexpected, or of the wrong shape.
  """
  folder = pathlib.Path(folder)
  config = read_config(folder)
  overrides = bert_config_to_model(config)
  tensors = _strip_prefix(read_safetensors(folder), config)
  mlm = _mlm_head(config, tensors)
  overrides.update(mlm or {})
  pooled = _pooled_heads(heads)
  has_pooler = "pooler.dense.weight" in tensors
  nsp = has_pooler and NSP_HEAD in pooled and "cls.seq_relationship.weight" in tensors
  pairs = _name_map(overrides["model.num_layers"], pooled if has_pooler else [], nsp=nsp,
                    mlm=mlm is not None, tied=overrides["model.tie_embeddings"])
  abstract = hf_folder.abstract_params(overrides, heads)
  missing = [hf for hf in pairs if tensors.get(hf) is None]
  if missing:
    raise CheckpointError(f"{folder}: missing BERT tensors: {few(missing)}")
  unknown = [k for k in tensors if k not in pairs and not k.startswith(_OTHER_HEADS + ("pooler.",))]
  if unknown:
    raise CheckpointError(f"{folder}: unexpected tensors for BertModel: {few(unknown)}")
  params = hf_folder.place(_specs(pairs), tensors, abstract, str(folder), "BERT")
  # The tied decoder is the word embeddings (imported); position_ids is a buffer.
  known = {"embeddings.position_ids"} | ({"cls.predictions.decoder.weight"}
                                         if mlm and mlm["model.tie_embeddings"] else set())
  unused = [k for k in tensors if k not in pairs and k not in known]
  if unused:
    print(f"trellis: {folder}: not used by this network: {few(unused)}", file=sys.stderr)
  if pooled and not has_pooler:
    fresh = ", ".join(f"heads/{h}/pool" for h in pooled)
    print(f"trellis: {folder} has no pooler (pooler.dense): {fresh} "
          f"start{'s' if len(pooled) == 1 else ''} fresh", file=sys.stderr)
  return overrides, params


def _bert_heads(model_cfg, params: dict, pooler_head: str | None) -> tuple[bool, bool, str]:
  """(export the NSP head, export the MLM head, the transformers class) of Trellis params."""
  nsp = pooler_head == NSP_HEAD and f"heads/{NSP_HEAD}/out/kernel" in params
  mlm = bool(model_cfg.vocab_transform and model_cfg.vocab_bias)
  architecture = {(True, True): "BertForPreTraining", (False, True): "BertForMaskedLM",
                  (True, False): "BertForNextSentencePrediction"}.get((nsp, mlm), "BertModel")
  return nsp, mlm, architecture


def _params_to_bert(model_cfg, params: dict, pooler_head: str | None) -> dict[str, np.ndarray]:
  """BERT tensors (PyTorch layout) of Trellis params: BertModel's names, or with heads
  `bert.`-prefixed next to the `cls.` heads (BertForPreTraining's layout)."""
  nsp, mlm, _ = _bert_heads(model_cfg, params, pooler_head)
  pairs = _name_map(model_cfg.num_layers, [pooler_head] if pooler_head else [], nsp=nsp,
                    mlm=mlm, tied=model_cfg.tie_embeddings)
  tensors = {}
  for hf, (name, transpose, layer) in pairs.items():
    if name not in params:
      raise CheckpointError(f"cannot export as BERT: param {name} is missing")
    value = np.asarray(params[name], np.float32)
    value = value if layer is None else value[layer]
    tensors[hf] = np.ascontiguousarray(value.T if transpose else value)
  if model_cfg.type_vocab_size == 0:
    # BertModel always adds a type embedding; a zero table adds nothing.
    tensors["embeddings.token_type_embeddings.weight"] = np.zeros((1, model_cfg.width),
                                                                  np.float32)
  if nsp or mlm:
    tensors = {k if k.startswith("cls.") else f"bert.{k}": v for k, v in tensors.items()}
  return tensors


def export_bert(cfg, params: dict, folder, tokenizer=None, pooler_head: str | None = None):
  """Writes a Trellis encoder as a Hugging Face BERT folder transformers loads.

  Args:
    cfg: the run config (its `model` block must be BERT-shaped, see
      `model_to_bert_config`).
    params: flat Trellis params (e.g. from `workdir.restore_params`).
    folder: created if needed; config.json and model.safetensors are written.
    tokenizer: optional; an HFTokenizer writes its HF files, a Trellis
      SentencePiece Tokenizer its model as `tokenizer.model` (which
      `data.hf_tokenizer.load_tokenizer` reads back; transformers does not).
    pooler_head: a pooled head whose `pool` layer becomes BERT's pooler;
      None leaves the pooler out (transformers then initialises it afresh).
      NSP_HEAD also exports its `out` layer as BERT's NSP head.

  The MLM head (model.vocab_transform and model.vocab_bias) is exported too;
  config.json names the class holding what was written (BertForPreTraining,
  BertForMaskedLM, BertForNextSentencePrediction or BertModel).
  """
  params = {k: np.asarray(v) for k, v in params.items()}
  pad_id = tokenizer.pad_id if tokenizer is not None else 0
  if tokenizer is not None and tokenizer.vocab_size > cfg.model.vocab_size:
    raise CheckpointError(f"the tokenizer has {tokenizer.vocab_size} pieces but the model "
                          f"only {cfg.model.vocab_size} embeddings")
  bert_config = model_to_bert_config(cfg.model, pad_id,
                                     _bert_heads(cfg.model, params, pooler_head)[2])
  tensors = _params_to_bert(cfg.model, params, pooler_head)
  hf_folder.write_folder(folder, bert_config, tensors)
  if tokenizer is not None:
    tokenizer.save(folder)

