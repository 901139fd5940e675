"""model.scan_layers: one lax.scan over stacked block params computes what the unrolled stack does.

The same seed gives the same weights (stacked), the same losses and gradients
(with dropout, remat none and full), the same generated tokens (KV cache, beam
search) and the same BERT export; the mesh shards every stacked param as its
layers were, the layer axis not at all; what it cannot serve is refused in one line.
"""

import json
import re

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest
from flax import nnx
from safetensors.numpy import load_file

from conftest import synthetic_examples, tiny_config
from research import generate, hf, train
from research.config import check_compatible, default_config, validate
from research.errors import ConfigError
from research.models import MODELS, transformer

V = 61
KINDS = ("decoder", "encoder", "encoder_decoder")


def _model_cfg(kind, scan, **overrides):
  cfg = default_config().model
  cfg.update(kind=kind, num_layers=2, width=16, num_heads=2, vocab_size=V, max_len=32,
             scan_layers=scan, **overrides)
  return cfg


def _split(kind, scan, **overrides):
  """(graphdef, flat params by name) of a freshly built Transformer."""
  graphdef, state = nnx.split(MODELS["transformer"](_model_cfg(kind, scan, **overrides),
                                                    rngs=nnx.Rngs(0)))
  return graphdef, {"/".join(map(str, p)): v[...] for p, v in nnx.to_flat_state(state)}


def _merge(graphdef, flat):
  nested = {}
  for name, value in flat.items():
    *parents, leaf = name.split("/")
    node = nested
    for key in parents:
      node = node.setdefault(int(key) if key.isdigit() else key, {})
    node[leaf] = value
  return nnx.merge(graphdef, nested)


def _assert_close(actual: dict, expected: dict, **tol):
  assert sorted(actual) == sorted(expected)
  for name in expected:
    np.testing.assert_allclose(actual[name], expected[name], err_msg=name, **tol)


@pytest.mark.parametrize("kind", KINDS)
def test_same_params_loss_and_gradients_with_dropout_and_remat(kind):
  off_def, off = _split(kind, False, dropout=0.1)
  on_defs = {policy: _split(kind, True, dropout=0.1, remat=policy)[0]
             for policy in ("none", "full")}
  # Layer by layer initialisation: the scanned model's weights are the others stacked.
  on = _split(kind, True)[1]
  _assert_close(on, transformer.stack_layers(off), rtol=0, atol=0)
  assert transformer.unstack_layers(on).keys() == off.keys()
  tokens = jax.random.randint(jax.random.PRNGKey(0), (2, 10), 4, V)
  source = jax.random.randint(jax.random.PRNGKey(1), (2, 7), 4, V)

  def loss(params, graphdef):
    model = _merge(graphdef, params)
    keys = jax.random.split(jax.random.PRNGKey(2), 2)  # dropout on: per-layer keys matter
    if kind == "encoder_decoder":
      encoded = model.encode(source, deterministic=False, rng=keys[0])
      hidden = model.decode(tokens, encoded, deterministic=False, rng=keys[1])
    else:
      hidden = model(tokens, deterministic=False, rng=keys[0])
    return jnp.mean(model.logits(hidden) ** 2)

  grad = jax.value_and_grad(loss)
  stacked = transformer.stack_layers(off)
  results = jax.jit(lambda off, stacked: [grad(off, off_def)] + [
      grad(stacked, g) for g in on_defs.values()])(off, stacked)
  expected_loss, expected_grads = results[0]
  for (value, grads), policy in zip(results[1:], on_defs):
    np.testing.assert_allclose(value, expected_loss, rtol=1e-6, err_msg=policy)
    _assert_close(transformer.unstack_layers(grads), expected_grads, rtol=1e-5, atol=1e-6)


def test_optimizer_treats_stacked_params_per_layer():
  """Weight decay skips stacked vectors; freezing and layer-wise lr decay act per layer."""
  transfer = {"train.weight_decay": 0.1, "train.freeze_layers": 1, "train.layer_lr_decay": 0.5,
              "train.lr": 1e-2, "train.warmup_steps": 0}
  params = {}
  for scan in (False, True):
    cfg = train.resolve(tiny_config(**transfer, **{"model.scan_layers": scan}), 8)
    trainer = train.Trainer(cfg, "", None)
    state = trainer.init()
    for step in range(2):
      state, _ = trainer.step(state, synthetic_examples(16, 32, 128, step))
    params[scan] = jax.tree.map(np.asarray, state["params"])
  _assert_close(transformer.unstack_layers(params[True]), params[False], rtol=2e-5, atol=2e-6)
  start = jax.tree.map(np.asarray, train.Trainer(cfg, "", None).init()["params"])
  name = "backbone/blocks/mlp/up/kernel"
  assert np.array_equal(params[True][name][0], start[name][0])  # layer 0 frozen
  assert not np.array_equal(params[True][name][1], start[name][1])
  # A per-layer checkpoint fine-tunes into a scanning config and back.
  from research.finetune import _layer_layout
  cfg = tiny_config(**{"model.scan_layers": True})
  assert sorted(_layer_layout(params[False], cfg)) == sorted(params[True])
  assert sorted(_layer_layout(params[True], tiny_config())) == sorted(params[False])


def test_mesh_step_shards_the_stacked_params_as_their_layers():
  mesh = {"mesh.data": 2, "mesh.fsdp": 2, "mesh.tensor": 2, "train.weight_decay": 0.0,
          "model.dropout": 0.1, "model.remat": "full"}
  specs = {}
  for scan in (False, True):
    cfg = train.resolve(tiny_config(**mesh, **{"model.scan_layers": scan}), 8)
    trainer = train.Trainer(cfg, "", None)
    specs[scan] = {name: tuple(s.spec) for name, s in trainer.param_shardings.items()}
  for name, spec in specs[False].items():  # "backbone/blocks/<i>/<rest>" is [i] of one array
    stacked = re.sub(r"/blocks/\d+/", "/blocks/", name)
    assert specs[True][stacked] == ((None, *spec) if stacked != name else spec), name
  assert len(specs[True]) < len(specs[False])
  assert specs[True]["backbone/blocks/mlp/up/kernel"] == (None, "fsdp", "tensor")
  assert specs[True]["backbone/blocks/attn/out/kernel"] == (None, "tensor", "fsdp")
  # One step on the mesh (scan on): the state comes back with those shardings, moments too.
  state, metrics = trainer.step(trainer.init(), synthetic_examples(16, 32, 128, 0))
  assert np.isfinite(float(metrics["total_loss"][0]))
  assert np.isfinite(float(metrics["grad_norm"][0])) and float(metrics["grad_norm"][0]) > 0
  assert tuple(state["params"]["backbone/blocks/mlp/up/kernel"].sharding.spec) == (
      None, "fsdp", "tensor")
  for name, expected in trainer.param_shardings.items():
    param, mu = state["params"][name], state["opt_state"][1][0].mu[name]
    assert param.sharding.is_equivalent_to(expected, param.ndim), name
    assert mu.sharding.is_equivalent_to(expected, mu.ndim), name
  assert state["params"]["backbone/blocks/attn_norm/scale"].shape[0] == cfg.model.num_layers


def test_generation_gives_the_same_tokens():
  outputs = {}
  for scan in (False, True):
    graphdef, params = nnx.split(MODELS["transformer"](_model_cfg("decoder", scan),
                                                       rngs=nnx.Rngs(0)))
    merge = lambda p, graphdef=graphdef: nnx.merge(graphdef, p)
    greedy = generate.generate(merge, params, [[5, 9, 13, 2], [7, 7, 3, 11]],
                               max_new_tokens=6, rng=jax.random.PRNGKey(0))
    graphdef, params = nnx.split(MODELS["transformer"](_model_cfg("encoder_decoder", scan),
                                                       rngs=nnx.Rngs(0)))
    merge = lambda p, graphdef=graphdef: nnx.merge(graphdef, p)
    source = np.asarray([[5, 9, 13, 2, 8, 0], [7, 3, 11, 4, 0, 0]], np.int32)
    # Beam search reorders the rows of the stacked (batch-major) cache.
    beams = generate.translate(merge, params, source, (source > 0).astype(np.int32),
                               max_new_tokens=5, bos_id=1, eos_id=2, beam_size=3)
    outputs[scan] = (greedy, beams)
  assert outputs[True] == outputs[False]
  assert len(outputs[True][0][0]) == 6


def test_bert_export_and_import_with_stacked_layers(tmp_path):
  heads = {"cls": ("pooled", 3)}
  cfgs = {}
  for scan in (False, True):
    cfgs[scan] = default_config()
    cfgs[scan].update_from_flattened_dict({
        "model.kind": "encoder", "model.position": "learned", "model.norm": "layernorm",
        "model.prenorm": False, "model.num_layers": 2, "model.width": 32, "model.num_heads": 4,
        "model.mlp_dim": 48, "model.vocab_size": 64, "model.max_len": 16,
        "model.scan_layers": scan})
  stacked = jax.tree.map(np.asarray, train.init_params(cfgs[True], heads, jax.random.PRNGKey(0)))
  per_layer = transformer.unstack_layers(stacked)
  hf.export_bert(cfgs[True], stacked, tmp_path / "stacked", pooler_head="cls")
  hf.export_bert(cfgs[False], per_layer, tmp_path / "per_layer", pooler_head="cls")
  _assert_close(load_file(tmp_path / "stacked" / "model.safetensors"),
                load_file(tmp_path / "per_layer" / "model.safetensors"), rtol=0, atol=0)
  for scan, expected in ((True, stacked), (False, per_layer)):
    overrides, imported = hf.import_bert(tmp_path / "stacked", heads, scan_layers=scan)
    assert overrides.get("model.scan_layers", False) is scan
    # The backbone and the pooler come back; the classifier starts fresh.
    assert set(expected) - set(imported) == {"heads/cls/out/bias", "heads/cls/out/kernel"}
    _assert_close(imported, {n: expected[n] for n in imported}, rtol=0, atol=0)
  assert "backbone/blocks/attn/query/kernel" in stacked


def _one_line_error(cfg, match):
  with pytest.raises(ConfigError, match=match) as error:
    validate(cfg, 8)
  assert "\n" not in str(error.value)


def test_what_scan_layers_cannot_serve_is_refused_in_one_line():
  scan = {"model.scan_layers": True}
  validate(tiny_config(**scan), 8)
  validate(tiny_config(**scan, **{"model.kind": "encoder_decoder", "objectives": {"span": 1.0}}),
           8)
  _one_line_error(tiny_config(**scan, **{"model.arch": "lstm"}), "needs model.arch=transformer")
  # ConfigDict fields keep their type; a config rebuilt from a dict may not.
  fields = tiny_config().to_dict()
  fields["model"]["scan_layers"] = "yes"
  _one_line_error(ml_collections.ConfigDict(fields), "model.scan_layers must be True or False")


def test_resuming_with_the_other_layout_is_refused_in_one_line(tmp_path):
  saved = tiny_config().to_dict()
  del saved["model"]["scan_layers"]  # a run from before the field: per-layer params
  check_compatible(saved, tiny_config())
  (tmp_path / "config.json").write_text(json.dumps(saved))
  with pytest.raises(ConfigError, match="resume with --config.model.scan_layers=False") as e:
    train.prepare_workdir(tiny_config(**{"model.scan_layers": True}), str(tmp_path))
  assert "\n" not in str(e.value)
  stacked = tiny_config(**{"model.scan_layers": True}).to_dict()
  check_compatible(stacked, tiny_config(**{"model.scan_layers": True, "model.remat": "full"}))
  with pytest.raises(ConfigError, match="hold stacked params"):
    check_compatible(stacked, tiny_config())
