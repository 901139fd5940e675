"""Tests of research/hf.py and research/data/hf_tokenizer.py.

The MiniLM parity check reads tests/data/minilm_reference.npz, made by
experiments/make_hf_reference.py with transformers' PyTorch BertModel (see
its docstring to regenerate), so it needs neither torch nor transformers.
The built-in `minilm-l6` is fetched into the shared cache on first use.
"""

import json
import os
import shutil

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from safetensors.numpy import load_file, save_file

from research import config, hf
from research.data import hf_tokenizer, tokenizer
from research.errors import CheckpointError, DataError
from research.network import define_network, init_params

REFERENCE = os.path.join(os.path.dirname(__file__), "data", "minilm_reference.npz")
POOLED = {"cls": ("pooled", 3)}


@pytest.fixture(scope="module")
def minilm():
  return hf.fetch_minilm()


@pytest.fixture(scope="module")
def reference():
  return np.load(REFERENCE)  # no allow_pickle: the file holds plain arrays only


def model_config(overrides: dict):
  cfg = config.default_config()
  cfg.update_from_flattened_dict(overrides)
  return cfg


def forward(cfg, params, heads, ids, types, mask):
  """(hidden states, BERT pooler output of the first pooled head) of a Trellis network."""
  netdef, shapes = define_network(cfg, heads)
  missing = {n: np.zeros(s.shape, s.dtype) for n, s in shapes.items() if n not in params}
  network = netdef.merge({**params, **missing})
  hidden = network.backbone(jnp.asarray(ids), segment_ids=jnp.asarray(mask),
                            token_type_ids=jnp.asarray(types))
  pooled = jnp.tanh(network.heads[sorted(heads)[0]].pool(hidden[:, 0]))
  return np.asarray(hidden), np.asarray(pooled)


def tiny_bert_config(**model):
  """A small BERT-shaped Trellis encoder config."""
  return model_config({
      "model.kind": "encoder", "model.position": "learned", "model.norm": "layernorm",
      "model.prenorm": False, "model.num_layers": 2, "model.width": 32, "model.num_heads": 4,
      "model.mlp_dim": 48, "model.vocab_size": 64, "model.max_len": 16,
      **{f"model.{k}": v for k, v in model.items()}})


def tiny_bert_folder(path, heads=POOLED, pooler_head="cls", **model):
  """A freshly initialised tiny encoder exported as a BERT folder; returns (cfg, params)."""
  cfg = tiny_bert_config(**model)
  params = jax.tree.map(np.asarray, init_params(cfg, heads, jax.random.PRNGKey(0)))
  hf.export_bert(cfg, params, path, pooler_head=pooler_head)
  return cfg, params


# MiniLM against transformers (the reference file)


def test_minilm_hidden_states_match_transformers(minilm, reference):
  overrides, params = hf.import_bert(minilm, POOLED)
  hidden, pooled = forward(model_config(overrides), params, POOLED, reference["input_ids"],
                           reference["token_type_ids"], reference["attention_mask"])
  real = reference["attention_mask"].astype(bool)  # padding rows differ and are never read
  assert np.abs(hidden - reference["last_hidden_state"])[real].max() <= 1e-4
  assert np.abs(pooled - reference["pooler_output"]).max() <= 1e-4


def test_minilm_config(minilm):
  overrides = hf.bert_config_to_model(hf.read_config(minilm))
  assert overrides["model.num_layers"] == 6 and overrides["model.width"] == 384
  assert overrides["model.num_heads"] == 12 and overrides["model.vocab_size"] == 30522
  assert not overrides["model.prenorm"] and not overrides["model.gelu_approximate"]
  assert overrides["model.norm_eps"] == 1e-12


@pytest.mark.parametrize("source", ["tokenizer.json", "vocab.txt"])
def test_wordpiece_matches_bert_tokenizer_fast(minilm, reference, source):
  tok = hf_tokenizer.WordPieceTokenizer(minilm / source)
  expected = np.split(reference["tokenizer_ids"], np.cumsum(reference["tokenizer_lengths"])[:-1])
  texts = [str(t) for t in reference["tokenizer_texts"]]
  for text, ids in zip(texts, expected):
    assert tok.encode(text) == ids.tolist(), text
  assert tok.encode_batch(texts) == [ids.tolist() for ids in expected]


def test_wordpiece_builds_the_model_inputs(minilm, reference):
  tok = hf_tokenizer.load_tokenizer(minilm)
  for text, ids, types in zip(reference["model_texts"], reference["input_ids"],
                              reference["token_type_ids"]):
    row, row_types = [tok.cls_id], [0]
    for segment, part in enumerate(str(text).split("\t")):
      pieces = tok.encode(part) + [tok.sep_id]
      row, row_types = row + pieces, row_types + [segment] * len(pieces)
    pad = len(ids) - len(row)
    assert row + [tok.pad_id] * pad == ids.tolist()
    assert row_types + [0] * pad == types.tolist()


def test_wordpiece_interface(minilm):
  tok = hf_tokenizer.WordPieceTokenizer(minilm)
  assert (tok.pad_id, tok.unk_id, tok.cls_id, tok.sep_id, tok.mask_id) == (0, 100, 101, 102, 103)
  assert (tok.bos_id, tok.eos_id, tok.sentinel_ids) == (101, 102, ())
  assert tok.special_ids == (0, 100, 101, 102, 103) and tok.vocab_size == 30522
  assert tok.path == minilm / "tokenizer.json" and len(tok.fingerprint) == 16
  ids = tok.encode("Unaffordable films")
  assert [tok.id_to_piece(i) for i in ids] == ["una", "##ff", "##ord", "##able", "films"]
  assert tok.decode(ids + [tok.pad_id] * 3) == "unaffordable films"
  starts = tok.word_starts()
  assert starts[ids].tolist() == [True, False, False, False, True]
  text = "Unaffordable films"
  with_offsets, offsets = tok.encode_with_offsets(text)
  assert with_offsets == ids
  assert [text[s:e] for s, e in offsets] == ["Una", "ff", "ord", "able", "films"]


def test_load_tokenizer_picks_the_kind(minilm, tmp_path):
  assert isinstance(hf_tokenizer.load_tokenizer(minilm / "vocab.txt"),
                    hf_tokenizer.WordPieceTokenizer)
  data = config.default_config().data
  data.update(vocab_size=400, cache_dir=str(tmp_path / "cache"))
  sp = tokenizer.load_or_train_tokenizer([(minilm / "README.md").read_text()], data)
  assert isinstance(hf_tokenizer.load_tokenizer(sp.path), tokenizer.Tokenizer)
  shutil.copyfile(sp.path, tmp_path / "tokenizer.model")  # a workdir holds one
  assert hf_tokenizer.load_tokenizer(tmp_path).fingerprint == sp.fingerprint
  with pytest.raises(DataError, match="holds no tokenizer"):
    hf_tokenizer.load_tokenizer(tmp_path / "cache")


# Export


def test_export_round_trip(minilm, tmp_path):
  overrides, params = hf.import_bert(minilm, POOLED)
  tok = hf_tokenizer.load_tokenizer(minilm)
  hf.export_bert(model_config(overrides), params, tmp_path, tokenizer=tok, pooler_head="cls")
  again_overrides, again = hf.import_bert(tmp_path, POOLED)
  assert again_overrides == overrides and sorted(again) == sorted(params)
  for name, value in params.items():
    np.testing.assert_array_equal(again[name], value, err_msg=name)
  assert hf_tokenizer.load_tokenizer(tmp_path).fingerprint == tok.fingerprint
  assert sorted(load_file(tmp_path / "model.safetensors")) == sorted(
      k for k in load_file(minilm / "model.safetensors") if k != "embeddings.position_ids")


@pytest.mark.parametrize("bert_numerics", [False, True])
def test_exported_encoder_loads_in_transformers(tmp_path, bert_numerics):
  try:
    import torch
    import transformers
  except ImportError:
    pytest.skip("needs the optional parity extra: pip install .[parity]")
  numerics = dict(gelu_approximate=False, norm_eps=1e-12) if bert_numerics else {}
  cfg, params = tiny_bert_folder(tmp_path, **numerics)
  model = transformers.BertModel.from_pretrained(tmp_path).eval()
  rng = np.random.default_rng(0)
  ids = rng.integers(1, 64, (2, 9)).astype(np.int32)
  types = (np.arange(9) >= 5).astype(np.int32)[None].repeat(2, 0)
  mask = np.ones_like(ids)
  mask[1, 6:] = 0
  with torch.no_grad():
    out = model(input_ids=torch.from_numpy(ids.astype(np.int64)),
                token_type_ids=torch.from_numpy(types.astype(np.int64)),
                attention_mask=torch.from_numpy(mask.astype(np.int64)))
  hidden, pooled = forward(cfg, params, POOLED, ids, types, mask)
  real = mask.astype(bool)
  assert np.abs(hidden - out.last_hidden_state.numpy())[real].max() <= 1e-5
  assert np.abs(pooled - out.pooler_output.numpy()).max() <= 1e-5


def test_export_refuses_non_bert_models(tmp_path):
  cfg = tiny_bert_config(prenorm=True)
  with pytest.raises(CheckpointError, match="model.prenorm=False"):
    hf.export_bert(cfg, {}, tmp_path)


# Bad input: one line CheckpointError each


def assert_one_line(error):
  assert "\n" not in str(error.value)


def test_import_needs_config_json(tmp_path):
  with pytest.raises(CheckpointError, match="no config.json") as e:
    hf.import_bert(tmp_path)
  assert_one_line(e)
  with pytest.raises(CheckpointError, match="is not a folder"):
    hf.import_bert(tmp_path / "absent")


def test_import_refuses_non_bert(tmp_path):
  tiny_bert_folder(tmp_path)
  config_json = json.loads((tmp_path / "config.json").read_text())
  for change, message in [({"model_type": "gpt2"}, "is not BERT or RoBERTa"),
                          ({"hidden_act": "relu"}, "hidden_act 'relu'"),
                          ({"position_embedding_type": "relative_key"}, "only 'absolute'")]:
    (tmp_path / "config.json").write_text(json.dumps({**config_json, **change}))
    with pytest.raises(CheckpointError, match=message) as e:
      hf.import_bert(tmp_path)
    assert_one_line(e)


def test_import_refuses_shape_mismatch(tmp_path):
  tiny_bert_folder(tmp_path)
  config_json = json.loads((tmp_path / "config.json").read_text())
  (tmp_path / "config.json").write_text(json.dumps({**config_json, "intermediate_size": 40}))
  with pytest.raises(CheckpointError, match=r"intermediate.dense.weight has shape \[48, 32\]") as e:
    hf.import_bert(tmp_path)
  assert_one_line(e)


def test_import_refuses_bin_only_folders(tmp_path):
  tiny_bert_folder(tmp_path)
  os.remove(tmp_path / "model.safetensors")
  (tmp_path / "pytorch_model.bin").write_bytes(b"not unpickled")
  with pytest.raises(CheckpointError, match="holds only pytorch_model.bin.*safetensors") as e:
    hf.import_bert(tmp_path)
  assert_one_line(e)


def test_import_refuses_missing_and_unexpected_tensors(tmp_path):
  tiny_bert_folder(tmp_path)
  tensors = load_file(tmp_path / "model.safetensors")
  del tensors["encoder.layer.1.output.dense.bias"]
  save_file(tensors, tmp_path / "model.safetensors")
  with pytest.raises(CheckpointError, match="missing BERT tensors: encoder.layer.1.output"):
    hf.import_bert(tmp_path)
  tensors = load_file(tmp_path / "model.safetensors")
  tensors["encoder.layer.1.output.dense.bias"] = np.zeros(32, np.float32)
  tensors["encoder.layer.2.output.dense.bias"] = np.zeros(32, np.float32)
  save_file(tensors, tmp_path / "model.safetensors")
  with pytest.raises(CheckpointError, match="unexpected tensors.*layer.2") as e:
    hf.import_bert(tmp_path)
  assert_one_line(e)


def test_import_refuses_corrupt_safetensors(tmp_path):
  tiny_bert_folder(tmp_path)
  (tmp_path / "model.safetensors").write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{garbage")
  with pytest.raises(CheckpointError, match="cannot read") as e:
    hf.import_bert(tmp_path)
  assert_one_line(e)


def test_task_checkpoints_import_their_encoder(tmp_path, capsys):
  """BertForX prefixes `bert.` and adds heads: the encoder imports, the rest is named."""
  _, params = tiny_bert_folder(tmp_path)
  tensors = {f"bert.{k}": v for k, v in load_file(tmp_path / "model.safetensors").items()}
  tensors["classifier.weight"] = np.zeros((2, 32), np.float32)
  save_file(tensors, tmp_path / "model.safetensors")
  _, imported = hf.import_bert(tmp_path)  # no pooled head: the pooler is unused too
  assert sorted(imported) == sorted(n for n in params if n.startswith("backbone/"))
  np.testing.assert_array_equal(imported["backbone/blocks/mlp/up/kernel"],
                                params["backbone/blocks/mlp/up/kernel"])
  err = capsys.readouterr().err
  assert "not used by this network: classifier.weight, pooler.dense.bias" in err


# BERT's pretraining heads (MLM transform + bias, NSP), the pooler, attention dropout


NSP = {"nsp": ("pooled", 2)}


def parity_libraries():
  try:
    import torch
    import transformers
  except ImportError:
    pytest.skip("needs the optional parity extra: pip install .[parity]")
  return torch, transformers


def bert_for_pretraining(path):
  """A tiny randomly initialised transformers BertForPreTraining saved to `path`."""
  torch, transformers = parity_libraries()
  torch.manual_seed(0)
  model = transformers.BertForPreTraining(transformers.BertConfig(
      vocab_size=64, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
      intermediate_size=48, max_position_embeddings=16, hidden_dropout_prob=0.15,
      attention_probs_dropout_prob=0.2))
  with torch.no_grad():  # BERT initialises these to constants: make them tell apart
    for name, p in model.named_parameters():
      if "LayerNorm" in name or name == "cls.predictions.bias":
        p.add_(0.5 * torch.randn_like(p))
  model.save_pretrained(path)
  return model.eval()


def pair_inputs():
  rng = np.random.default_rng(0)
  ids = rng.integers(1, 64, (2, 9)).astype(np.int32)
  types = (np.arange(9) >= 5).astype(np.int32)[None].repeat(2, 0)
  mask = np.ones_like(ids)
  mask[1, 6:] = 0
  return ids, types, mask


def transformers_heads(model, ids, types, mask):
  import torch
  with torch.no_grad():
    out = model(input_ids=torch.from_numpy(ids.astype(np.int64)),
                token_type_ids=torch.from_numpy(types.astype(np.int64)),
                attention_mask=torch.from_numpy(mask.astype(np.int64)))
  return out.prediction_logits.numpy(), out.seq_relationship_logits.numpy()


def trellis_heads(cfg, params, ids, types, mask):
  """(MLM logits, NSP logits) of a Trellis network with an NSP head; absent params are 0."""
  netdef, shapes = define_network(cfg, NSP)
  missing = {n: np.zeros(s.shape, s.dtype) for n, s in shapes.items() if n not in params}
  network = netdef.merge({**params, **missing})
  hidden = network.backbone(jnp.asarray(ids), segment_ids=jnp.asarray(mask),
                            token_type_ids=jnp.asarray(types))
  return np.asarray(network.backbone.logits(hidden)), np.asarray(network.heads["nsp"](hidden[:, 0]))


def test_bert_pretraining_heads_match_transformers(tmp_path):
  model = bert_for_pretraining(tmp_path)
  overrides, params = hf.import_bert(tmp_path, NSP)
  assert overrides["model.vocab_transform"] and overrides["model.vocab_bias"]
  assert overrides["model.attention_dropout"] == 0.2 and overrides["model.dropout"] == 0.15
  ids, types, mask = pair_inputs()
  mlm, nsp = trellis_heads(model_config(overrides), params, ids, types, mask)
  expected_mlm, expected_nsp = transformers_heads(model, ids, types, mask)
  real = mask.astype(bool)
  assert np.abs(mlm - expected_mlm)[real].max() <= 1e-4
  assert np.abs(nsp - expected_nsp).max() <= 1e-4


def test_bert_pretraining_heads_export_and_reload_in_transformers(tmp_path):
  _, transformers = parity_libraries()
  model = bert_for_pretraining(tmp_path / "hf")
  overrides, params = hf.import_bert(tmp_path / "hf", NSP)
  hf.export_bert(model_config(overrides), params, tmp_path / "out", pooler_head="nsp")
  again, info = transformers.BertForPreTraining.from_pretrained(tmp_path / "out",
                                                               output_loading_info=True)
  assert not info["missing_keys"] and not info["unexpected_keys"], info
  assert again.config.attention_probs_dropout_prob == 0.2
  assert again.config.hidden_dropout_prob == 0.15
  ids, types, mask = pair_inputs()
  for ours, theirs in zip(transformers_heads(again.eval(), ids, types, mask),
                          transformers_heads(model, ids, types, mask)):
    np.testing.assert_allclose(ours, theirs, atol=1e-5)
  again_overrides, again_params = hf.import_bert(tmp_path / "out", NSP)
  assert again_overrides == overrides and sorted(again_params) == sorted(params)
  for name, value in params.items():
    np.testing.assert_array_equal(again_params[name], value, err_msg=name)


@pytest.mark.parametrize("tied", [True, False])
def test_pretraining_heads_round_trip(tmp_path, tied):
  """Without transformers: a Trellis encoder with BERT's heads exports and imports unchanged."""
  cfg, params = tiny_bert_folder(tmp_path, heads=NSP, pooler_head="nsp", vocab_transform=True,
                                 vocab_bias=True, tie_embeddings=tied)
  names = set(load_file(tmp_path / "model.safetensors"))
  assert {"cls.predictions.transform.dense.weight", "cls.predictions.transform.LayerNorm.bias",
          "cls.predictions.bias", "cls.seq_relationship.weight",
          "bert.pooler.dense.weight"} <= names
  assert ("cls.predictions.decoder.weight" in names) == (not tied)
  config_json = json.loads((tmp_path / "config.json").read_text())
  assert config_json["architectures"] == ["BertForPreTraining"]
  assert config_json["tie_word_embeddings"] == tied
  overrides, again = hf.import_bert(tmp_path, NSP)
  assert overrides["model.vocab_transform"] and overrides["model.vocab_bias"]
  assert overrides["model.tie_embeddings"] == tied
  assert sorted(again) == sorted(params)
  for name, value in params.items():
    np.testing.assert_array_equal(again[name], value, err_msg=name)
  with pytest.raises(CheckpointError, match="model.vocab_bias") as e:
    hf.export_bert(tiny_bert_config(vocab_transform=True), params, tmp_path / "half")
  assert_one_line(e)


def test_a_folder_without_a_pooler_imports_for_classification(tmp_path, capsys):
  """sentence-transformers exports ship no pooler: the pooled head's pool layer starts fresh."""
  _, params = tiny_bert_folder(tmp_path, pooler_head=None)
  assert not any(k.startswith("pooler.") for k in load_file(tmp_path / "model.safetensors"))
  capsys.readouterr()
  _, imported = hf.import_bert(tmp_path, POOLED)
  assert sorted(imported) == sorted(n for n in params if n.startswith("backbone/"))
  lines = capsys.readouterr().err.strip().splitlines()
  assert len(lines) == 1 and "no pooler" in lines[0] and "heads/cls/pool starts fresh" in lines[0]


def test_attention_dropout_imports_and_exports(tmp_path):
  tiny_bert_folder(tmp_path, attention_dropout=0.2, dropout=0.15)
  config_json = json.loads((tmp_path / "config.json").read_text())
  assert config_json["attention_probs_dropout_prob"] == 0.2
  assert config_json["hidden_dropout_prob"] == 0.15
  config_json["attention_probs_dropout_prob"] = 0.05
  (tmp_path / "config.json").write_text(json.dumps(config_json))
  overrides = hf.import_bert(tmp_path)[0]
  assert overrides["model.attention_dropout"] == 0.05 and overrides["model.dropout"] == 0.15
