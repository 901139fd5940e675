"""Parity of every imported Hugging Face family with transformers' own outputs.

tests/data/hf/<name>/ holds a tiny random-initialised transformers model of each
family with its switches on (GQA, sliding windows, ALiBi, biases, gated GELU,
RoBERTa's position offset, ...) and reference.npz: its logits on a fixed batch
with padding and its greedy generation (experiments/make_hf_parity.py writes
them). These tests need neither torch nor transformers: the import must give
the same logits (<= 1e-4 in float32), the same greedy tokens, and KV-cache
decoding equal to the full forward pass. Export -> import must give
byte-identical params; with torch installed, transformers must load each export
and give the same logits.
"""

import functools
import json
import pathlib

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from safetensors.numpy import load_file, save_file

from research import config as config_lib
from research import hf
from research.errors import CheckpointError
from research.generate import generate, translate
from research.network import define_network

DATA = pathlib.Path(__file__).parent / "data" / "hf"
DECODERS = ("gpt2", "gpt_neo", "bloom", "gpt_neox", "llama", "mistral", "qwen2")
SEQ2SEQ = ("t5", "t5_v1_1")
ENCODERS = ("bert", "roberta")
TOLERANCE = 1e-4


@functools.lru_cache(maxsize=None)
def imported(name: str):
  """(cfg, params, netdef, reference) of tests/data/hf/<name>."""
  overrides, params, fmt = hf.import_checkpoint(DATA / name)
  assert fmt == f"hf-{hf.read_config(DATA / name)['model_type']}"
  cfg = config_lib.default_config()
  cfg.update_from_flattened_dict(overrides)
  netdef, abstract = define_network(cfg, {})
  assert set(params) == set(abstract), set(abstract) ^ set(params)
  for k, v in abstract.items():
    assert params[k].shape == v.shape, k
  return cfg, params, netdef, dict(np.load(DATA / name / "reference.npz"))


def _logits(name: str):
  cfg, params, netdef, ref = imported(name)
  model = netdef.merge(params).backbone
  mask = jnp.asarray(ref["attention_mask"])
  if cfg.model.kind == "encoder_decoder":
    encoded = model.encode(jnp.asarray(ref["input_ids"]), segment_ids=mask)
    hidden = model.decode(jnp.asarray(ref["decoder_input_ids"]), encoded,
                          source_segment_ids=mask)
    return np.asarray(model.logits(hidden)), None
  types = ref.get("token_type_ids")
  hidden = model(jnp.asarray(ref["input_ids"]), segment_ids=mask,
                 token_type_ids=None if types is None or not hasattr(model, "type_embed")
                 else jnp.asarray(types))
  return np.asarray(model.logits(hidden)), np.asarray(hidden)


@pytest.mark.parametrize("name", DECODERS + SEQ2SEQ + ENCODERS)
def test_logits_match_transformers(name):
  logits, hidden = _logits(name)
  ref = imported(name)[3]
  # Padding rows (attention_mask 0) are never read; decoders' targets are the mask's rows.
  real = ref["attention_mask"].astype(bool) if name not in SEQ2SEQ else np.ones(
      ref["logits"].shape[:2], bool)
  diff = np.abs(logits - ref["logits"])[real].max()
  assert diff <= TOLERANCE, f"{name}: max |logits - transformers'| = {diff:.2e}"
  assert ref["logits"][real].std() > 0.5  # a real test: the logits are not all ~0
  if hidden is not None and "last_hidden_state" in ref:
    assert np.abs(hidden - ref["last_hidden_state"])[real].max() <= TOLERANCE


@pytest.mark.parametrize("name", ("gpt_neo", "t5"))
def test_scanned_layers_give_the_same_logits(name):
  """GPT-Neo's per-layer windows and T5's shared relative bias inside one lax.scan."""
  cfg, params, _, ref = imported(name)
  scanned = cfg.copy_and_resolve_references()
  scanned.model.scan_layers = True
  netdef = define_network(scanned, {})[0]
  model = netdef.merge(params).backbone
  mask = jnp.asarray(ref["attention_mask"])
  if name == "t5":
    hidden = model.decode(jnp.asarray(ref["decoder_input_ids"]),
                          model.encode(jnp.asarray(ref["input_ids"]), segment_ids=mask),
                          source_segment_ids=mask)
    real = np.ones(ref["logits"].shape[:2], bool)
  else:
    hidden = model(jnp.asarray(ref["input_ids"]), segment_ids=mask)
    real = ref["attention_mask"].astype(bool)
  assert np.abs(np.asarray(model.logits(hidden)) - ref["logits"])[real].max() <= TOLERANCE


@pytest.mark.parametrize("name", DECODERS)
def test_greedy_generation_matches_transformers(name):
  cfg, params, netdef, ref = imported(name)
  prompt = ref["prompt"]
  new = ref["greedy"].shape[1] - prompt.shape[1]
  merge = lambda p: netdef.merge(p).backbone
  out = generate(merge, params, prompt.tolist(), max_new_tokens=new, rng=jax.random.PRNGKey(0),
                 banned=())
  assert out[0] == ref["greedy"][0, prompt.shape[1]:].tolist()


@pytest.mark.parametrize("name", SEQ2SEQ)
def test_t5_greedy_generation_matches_transformers(name):
  cfg, params, netdef, ref = imported(name)
  config = hf.read_config(DATA / name)
  new = ref["greedy"].shape[1] - 1
  merge = lambda p: netdef.merge(p).backbone
  out = translate(merge, params, ref["input_ids"], ref["attention_mask"], max_new_tokens=new,
                  bos_id=config["decoder_start_token_id"], eos_id=-1, banned=())
  assert out == ref["greedy"][:, 1:].tolist()


@pytest.mark.parametrize("name", ("mistral", "gpt_neo", "bloom", "llama"))
def test_kv_cache_decoding_equals_the_full_forward_pass(name):
  """Feeding the prompt, then one token at a time, gives the full pass's logits."""
  cfg, params, netdef, ref = imported(name)
  model = netdef.merge(params).backbone
  tokens = jnp.asarray(ref["input_ids"][:1])
  full = np.asarray(model.logits(model(tokens)))
  cache = model.init_cache(1, tokens.shape[1])
  steps = []
  logits, cache = model.decode_step(tokens[:, :5], cache)
  steps.append(np.asarray(logits))
  for t in range(5, tokens.shape[1]):
    logits, cache = model.decode_step(tokens[:, t:t + 1], cache)
    steps.append(np.asarray(logits))
  assert np.abs(np.concatenate(steps, 1) - full).max() <= TOLERANCE


@pytest.mark.parametrize("name", DECODERS + SEQ2SEQ + ("bert",))  # RoBERTa exports as BERT
def test_export_then_import_gives_byte_identical_params(name, tmp_path):
  cfg, params, _, _ = imported(name)
  hf.export(cfg, params, tmp_path)
  overrides, again, _ = hf.import_checkpoint(tmp_path)
  assert set(again) == set(params)
  for k in params:
    assert again[k].dtype == params[k].dtype and np.array_equal(again[k], params[k]), k
  again_cfg = config_lib.default_config()
  again_cfg.update_from_flattened_dict(overrides)
  assert again_cfg.model.to_dict() == cfg.model.to_dict()


@pytest.mark.parametrize("name", DECODERS + SEQ2SEQ)
def test_transformers_loads_each_export_with_the_same_logits(name, tmp_path):
  torch = pytest.importorskip("torch", reason="the parity extra (pip install -e '.[parity]')")
  transformers = pytest.importorskip("transformers")
  cfg, params, _, ref = imported(name)
  hf.export(cfg, params, tmp_path)
  kind = (transformers.AutoModelForSeq2SeqLM if name in SEQ2SEQ
          else transformers.AutoModelForCausalLM)
  model = kind.from_pretrained(tmp_path, attn_implementation="eager").eval()
  inputs = {k: torch.tensor(ref[k].astype(np.int64))
            for k in ("input_ids", "attention_mask", "decoder_input_ids") if k in ref}
  with torch.no_grad():
    logits = model(**inputs).logits.numpy()
  real = ref["attention_mask"].astype(bool) if name not in SEQ2SEQ else np.ones(
      logits.shape[:2], bool)
  assert np.abs(logits - ref["logits"])[real].max() <= TOLERANCE


def test_config_without_an_equivalent_is_refused_naming_the_field(tmp_path):
  cfg = config_lib.default_config()  # rope + RMSNorm + GELU: no Hugging Face decoder
  cfg.model.vocab_size = 64
  with pytest.raises(CheckpointError, match=r"needs model\.(norm|mlp)="):
    hf.export(cfg, {}, tmp_path / "out")
  assert not (tmp_path / "out").exists()


def _copy(name, tmp_path, **config_changes):
  folder = tmp_path / name
  folder.mkdir()
  config = {**hf.read_config(DATA / name), **config_changes}
  (folder / "config.json").write_text(json.dumps(config))
  (folder / "model.safetensors").write_bytes((DATA / name / "model.safetensors").read_bytes())
  return folder


@pytest.mark.parametrize("name, change, message", [
    ("llama", {"rope_parameters": {"rope_type": "linear", "factor": 2.0}}, "rope_type='linear'"),
    ("llama", {"hidden_act": "gelu"}, "hidden_act='gelu'"),
    ("gpt_neox", {"use_parallel_residual": True}, "use_parallel_residual=True"),
    ("gpt_neox", {"rope_parameters": {"partial_rotary_factor": 0.25}}, "=0.25 is not"),
    ("bloom", {"apply_residual_connection_post_layernorm": True}, "apply_residual"),
    ("gpt2", {"scale_attn_by_inverse_layer_idx": True}, "scale_attn_by_inverse_layer_idx"),
    ("t5", {"num_decoder_layers": 3}, "num_decoder_layers=3"),
    ("t5", {"feed_forward_proj": "gated-relu2"}, "feed_forward_proj"),
    ("qwen2", {"use_sliding_window": True}, "use_sliding_window"),
    ("llama", {"model_type": "falcon"}, "model_type 'falcon' is not supported"),
    ("llama", {"num_hidden_layers": 3}, "missing LlamaForCausalLM tensors"),
    ("llama", {"intermediate_size": 48}, "has shape"),
])
def test_a_field_trellis_lacks_is_one_error_naming_it(name, change, message, tmp_path):
  with pytest.raises(CheckpointError, match=message):
    hf.import_checkpoint(_copy(name, tmp_path, **change))


def test_gpt_neox_fields_absent_from_config_json_take_transformers_defaults(tmp_path):
  """transformers reads an absent rotary_pct as 0.25 and use_parallel_residual as True
  (Pythia's): neither is what Trellis computes, so such a config is refused."""
  config = hf.read_config(DATA / "gpt_neox")
  folder = _copy("gpt_neox", tmp_path)
  for drop, message in (("rope_parameters", "=0.25 is not"),
                        ("use_parallel_residual", "use_parallel_residual=True")):
    (folder / "config.json").write_text(json.dumps({k: v for k, v in config.items()
                                                    if k != drop}))
    with pytest.raises(CheckpointError, match=message):
      hf.import_checkpoint(folder)


def test_a_pickle_only_checkpoint_is_refused_unread(tmp_path):
  (tmp_path / "config.json").write_text(json.dumps(hf.read_config(DATA / "gpt2")))
  (tmp_path / "pytorch_model.bin").write_bytes(b"not unpickled")
  with pytest.raises(CheckpointError, match="safetensors only"):
    hf.import_checkpoint(tmp_path)


def test_sharded_safetensors_with_an_index_import(tmp_path):
  tensors = load_file(DATA / "llama" / "model.safetensors")
  names = sorted(tensors)
  half = len(names) // 2
  shards = {"model-00001-of-00002.safetensors": names[:half],
            "model-00002-of-00002.safetensors": names[half:]}
  for file, keys in shards.items():
    save_file({k: tensors[k] for k in keys}, tmp_path / file)
  (tmp_path / "model.safetensors.index.json").write_text(json.dumps(
      {"weight_map": {k: f for f, keys in shards.items() for k in keys}}))
  (tmp_path / "config.json").write_text(json.dumps(hf.read_config(DATA / "llama")))
  _, params, _ = hf.import_checkpoint(tmp_path)
  whole = imported("llama")[1]
  assert set(params) == set(whole) and all(np.array_equal(params[k], whole[k]) for k in whole)
