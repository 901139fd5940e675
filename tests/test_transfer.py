"""Transfer correctness: what a fine-tuning run takes from its source, and how it trains it.

- The post-LN embedding LayerNorm (BERT's embeddings.LayerNorm) learns and
  freezes with the embeddings under LLRD and freezing (issue 12, item 3);
  workdirs saved under its old name (final_norm) still restore.
- A fine-tuning run inherits every architecture field of a Trellis source,
  and keeps only its free fields (config.FREE_MODEL_FIELDS) (item 5); params
  that do not fit the network are refused in one line.
- The fine-tuning config's dropout wins over an imported BERT's (item 6).
"""

import json

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from conftest import tiny_config
from research import config as config_lib
from research import finetune, hf, objectives, optim, train
from research.checkpoint import Checkpoints
from research.errors import CheckpointError, ConfigError, TrellisError
from research.network import define_network, init_params
from research.workdir import load_config, resolve, restore_params

POST_LN = {"model.prenorm": False, "model.norm": "layernorm", "model.position": "learned"}


def _names(cfg, heads=None):
  return sorted(define_network(cfg, heads or {})[1])


def _outside_blocks_norms(names):
  """Backbone norm params outside every block: the embedding norm(s) of a post-LN stack."""
  return [n for n in names if n.startswith("backbone/") and "norm" in n and "blocks" not in n]


@pytest.mark.parametrize("kind", ["encoder", "encoder_decoder"])
@pytest.mark.parametrize("scan", [False, True])
def test_post_ln_embedding_norm_trains_and_freezes_with_the_embeddings(kind, scan):
  cfg = tiny_config(**POST_LN, **{"model.kind": kind, "model.scan_layers": scan})
  names = _names(cfg)
  norms = _outside_blocks_norms(names)
  assert len(norms) == (2 if kind == "encoder" else 4), norms  # scale and bias per stack
  for setting in ({"layer_lr_decay": 0.5}, {"freeze_layers": 1}, {"freeze_backbone": True},
                  {"freeze_layers": 1, "layer_lr_decay": 0.5}):
    t = config_lib.default_config().train
    t.update(setting)
    factors = optim.lr_multipliers(t, names, cfg.model.num_layers)
    embeddings = factors["backbone/embed/embedding"]
    assert embeddings < 1.0
    for name in norms:
      assert factors[name] == embeddings, (setting, name, factors[name], embeddings)


def test_pre_ln_final_norm_stays_the_top():
  cfg = tiny_config(**{"model.kind": "encoder"})
  names = _names(cfg)
  assert _outside_blocks_norms(names) == ["backbone/final_norm/scale"]
  t = config_lib.default_config().train
  t.layer_lr_decay, t.freeze_layers = 0.5, 1
  assert optim.lr_multipliers(t, names, 2)["backbone/final_norm/scale"] == 1.0


def _rename_keys(tree, rename):
  """`tree` with every dict key k replaced by rename.get(k, k) (params and Adam moments)."""
  if isinstance(tree, dict):
    return {rename.get(k, k): _rename_keys(v, rename) for k, v in tree.items()}
  if isinstance(tree, tuple) and hasattr(tree, "_fields"):
    return type(tree)(*(_rename_keys(v, rename) for v in tree))
  if isinstance(tree, (tuple, list)):
    return type(tree)(_rename_keys(v, rename) for v in tree)
  return tree


@pytest.mark.parametrize("kind", ["encoder", "encoder_decoder"])
def test_workdirs_saved_with_the_old_embedding_norm_name_are_refused_in_one_line(tmp_path, kind):
  """Runs saved before the post-LN embedding norm had its own name (it was the stack's
  final_norm etc.) are refused naming the param, not restored with a silent mix-up."""
  cfg = resolve(tiny_config(**POST_LN, **{"model.kind": kind, "objectives": {"mlm": 1.0}}), 1)
  trainer = train.Trainer(cfg, devices=jax.devices()[:1])
  state = jax.device_get(trainer.init())
  old_names = {"embed_norm": "final_norm", "encoder_embed_norm": "encoder_norm",
               "decoder_embed_norm": "decoder_norm"}
  new_to_old = {}
  for name in state["params"]:
    stack = name.split("/")[1]
    if stack in old_names:  # this code's embedding norm(s)
      new_to_old[name] = name.replace(f"/{stack}/", f"/{old_names[stack]}/")
  assert len(new_to_old) == (2 if kind == "encoder" else 4)
  ckpts = Checkpoints(str(tmp_path / "checkpoints"), async_save=False)
  ckpts.save(3, _rename_keys(state, new_to_old), {}, {})
  ckpts.close()
  (tmp_path / "config.json").write_text(config_lib.to_json(cfg))
  with pytest.raises(CheckpointError, match="lacks the network's param backbone/") as e:
    restore_params(str(tmp_path))
  assert "\n" not in str(e.value) and "fresh workdir" in str(e.value)


# Item 5: every model field but the free ones comes from a Trellis source.

# Non-default architecture values of the source (free fields: dropout, dtype, scan_layers...).
SOURCE_MODEL = {"model.prenorm": False, "model.gelu_approximate": False, "model.norm_eps": 1e-12,
                "model.type_vocab_size": 3, "model.mlp_dim": 96}


def _fast(**more):
  return {"train.steps": 1, "train.log_every": 1, "train.eval_every": 1,
          "train.checkpoint_every": 1, "train.eval_batches": 1, **more}


def _restore_finetuned(workdir, label_names):
  """(cfg, netdef, params) of a fine-tuning workdir's last checkpoint (heads sized by labels)."""
  cfg = load_config(workdir)
  with cfg.unlocked():
    cfg.mesh.data, cfg.mesh.fsdp, cfg.mesh.tensor = -1, 1, 1
  heads = objectives.heads(cfg.objectives, len(label_names))
  trainer = train.Trainer(cfg, heads=heads, devices=jax.devices()[:1])
  ckpts = Checkpoints(f"{workdir}/checkpoints", async_save=False)
  state = ckpts.restore(ckpts.latest_step(), trainer.abstract_state)[0]
  ckpts.close()
  return cfg, trainer.netdef, state["params"]


def test_finetuning_inherits_every_architecture_field_of_a_trellis_source(tmp_path):
  from configs.finetune import mr
  from configs.pretrain import bert_mlm_nsp
  source = bert_mlm_nsp.get_config("tiny")
  source.objectives = ml_collections.ConfigDict({"mlm": 1.0})
  source.update_from_flattened_dict({**SOURCE_MODEL, **_fast(**{"train.steps": 2})})
  train.pretrain(source, str(tmp_path / "src"))
  cfg = mr.get_config("tiny")
  cfg.update_from_flattened_dict(_fast(**{
      "init_from": str(tmp_path / "src"), "train.freeze_backbone": True,
      # Free fields stay the fine-tuning config's.
      "model.dropout": 0.1, "model.scan_layers": True}))
  results = finetune.finetune(cfg, str(tmp_path / "ft"))
  ft_cfg, ft_def, ft_params = _restore_finetuned(str(tmp_path / "ft"), results["label_names"])
  for field, value in SOURCE_MODEL.items():
    assert ft_cfg.model[field.split(".")[1]] == value, field
  assert ft_cfg.model.dropout == 0.1 and ft_cfg.model.scan_layers
  # The frozen backbone computes the source's hidden states.
  src_cfg, src_def, src_params, _ = restore_params(str(tmp_path / "src"))
  tokens = jnp.asarray(np.random.default_rng(0).integers(5, 500, (2, 24)), jnp.int32)
  types = jnp.asarray(np.arange(24) >= 12, jnp.int32)[None].repeat(2, 0) * 2
  src_hidden = src_def.merge(src_params).backbone(tokens, token_type_ids=types)
  ft_hidden = ft_def.merge(ft_params).backbone(tokens, token_type_ids=types)
  np.testing.assert_allclose(np.asarray(ft_hidden), np.asarray(src_hidden), atol=1e-5)
  # A fine-tuning workdir restores like any other (it died on its 0-output head), heads
  # sized as saved.
  _, _, params, _ = restore_params(str(tmp_path / "ft"))
  assert sorted(params) == sorted(ft_params)
  assert params["heads/classify/out/kernel"].shape == (64, len(results["label_names"]))
  for name, value in ft_params.items():
    np.testing.assert_array_equal(np.asarray(params[name]), np.asarray(value))


def test_free_fields_are_shared_with_resuming():
  free = config_lib.FREE_MODEL_FIELDS
  for field in ("remat", "attention", "scan_layers", "dtype", "dropout", "attention_dropout"):
    assert field in free
  model = config_lib.default_config().model
  assert set(free) <= set(model)
  # An architecture field is never free.
  for field in ("prenorm", "norm_eps", "gelu_approximate", "type_vocab_size", "residual",
                "rnn_hidden", "kernel_size", "dilation_cycle", "vocab_transform", "vocab_bias"):
    assert field in model and field not in free
  # Resuming: free fields may change, and a run saved before a field existed has its default.
  saved = tiny_config().to_dict()
  for field in ("attention_dropout", "vocab_transform", "vocab_bias"):
    del saved["model"][field]
  config_lib.check_compatible(saved, tiny_config(**{"model.dropout": 0.2,
                                                    "model.dtype": "bfloat16"}))
  with pytest.raises(ConfigError, match="different run"):
    config_lib.check_compatible(saved, tiny_config(**{"model.prenorm": False}))


def test_params_that_do_not_fit_are_refused_in_one_line():
  cfg = resolve(tiny_config(), 8)
  trainer = train.Trainer(cfg)
  for params, message in [({"backbone/nope/kernel": np.zeros(3)}, "backbone/nope/kernel"),
                          ({"backbone/embed/embedding": np.zeros((5, 3))},
                           r"backbone/embed/embedding has shape \[5, 3\]")]:
    with pytest.raises(CheckpointError, match=message) as e:
      trainer.init(params)
    assert "\n" not in str(e.value) and isinstance(e.value, TrellisError)


# Item 6: the fine-tuning config's dropout wins over an imported BERT's.


def test_the_configs_dropout_wins_over_an_imported_berts(tmp_path, capsys):
  from configs.finetune import mr
  from research.data import hf_tokenizer
  folder = tmp_path / "bert"
  bert = config_lib.default_config()
  bert.update_from_flattened_dict({
      **POST_LN, "model.kind": "encoder", "model.num_layers": 1, "model.width": 32,
      "model.num_heads": 4, "model.vocab_size": 30522, "model.max_len": 64,
      "model.dropout": 0.3})
  heads = {"cls": ("pooled", 2)}
  params = jax.tree.map(np.asarray, init_params(bert, heads, jax.random.PRNGKey(0)))
  tokenizer = hf_tokenizer.WordPieceTokenizer(hf.fetch_minilm())
  hf.export_bert(bert, params, folder, tokenizer=tokenizer, pooler_head="cls")
  config_json = json.loads((folder / "config.json").read_text())
  assert config_json["hidden_dropout_prob"] == 0.3
  cfg = mr.get_config("tiny")
  cfg.update_from_flattened_dict(_fast(**{"init_from": str(folder), "model.dropout": 0.05}))
  finetune.finetune(cfg, str(tmp_path / "ft"))
  assert load_config(str(tmp_path / "ft")).model.dropout == 0.05
  captured = capsys.readouterr()
  assert "model.dropout=0.3" in captured.out + captured.err
