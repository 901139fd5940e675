"""One Transformer params layout; model.scan_layers only chooses how the blocks run.

Every stack's params are stacked on a leading "layers" axis, built so layer i
draws the keys it drew when blocks were built one after the other. Scanned or
unrolled, a seed gives the same params (names and values), the same losses and
gradients (with dropout, remat none and full), the same decoding caches and
generated tokens (KV cache, beam search), the same optimizer treatment and
shardings (the layer axis not sharded), and the same BERT export; a run may
switch it on resume; what it cannot serve is refused in one line. Checkpoints
saved before the one layout, one param per layer, restore stacked.
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
from research import generate, hf, optim, train
from research.checkpoint import Checkpoints, per_layer_names
from research.config import check_compatible, default_config, validate
from research.errors import CheckpointError, ConfigError
from research.models import MODELS, transformer
from research.network import define_network, init_params
from research.workdir import prepare_workdir, resolve

V = 61
KINDS = ("decoder", "encoder", "encoder_decoder")


def _model_cfg(kind, scan, **overrides):
  cfg = default_config().model
  cfg.update(kind=kind, num_layers=2, width=16, num_heads=2, vocab_size=V, max_len=32,
             scan_layers=scan, **overrides)
  return cfg


def _flat(state) -> dict:
  return {"/".join(map(str, p)): v[...] for p, v in nnx.to_flat_state(state)}


def _split(kind, scan, **overrides):
  """(graphdef, flat params by name) of a freshly built Transformer."""
  graphdef, state = nnx.split(MODELS["transformer"](_model_cfg(kind, scan, **overrides),
                                                    rngs=nnx.Rngs(0)))
  return graphdef, _flat(state)


def _merge(graphdef, flat):
  nested = {}
  for name, value in flat.items():
    *parents, leaf = name.split("/")
    node = nested
    for key in parents:
      node = node.setdefault(key, {})
    node[leaf] = value
  return nnx.merge(graphdef, nested)


def _assert_close(actual: dict, expected: dict, **tol):
  assert sorted(actual) == sorted(expected)
  for name in expected:
    np.testing.assert_allclose(actual[name], expected[name], err_msg=name, **tol)


@pytest.mark.parametrize("cross", [False, True])
def test_a_stack_draws_the_keys_of_blocks_built_one_by_one(cross):
  cfg = _model_cfg("decoder", False)
  stack_rngs, rngs = nnx.Rngs(0), nnx.Rngs(0)
  stack = _flat(nnx.state(transformer._blocks(cfg, dtype=jnp.float32, rngs=stack_rngs,
                                              cross=cross)))
  blocks = [_flat(nnx.state(transformer.Block(cfg, dtype=jnp.float32, rngs=rngs, cross=cross)))
            for _ in range(cfg.num_layers)]
  assert sorted(stack) == sorted(blocks[0]) and ("cross/query/kernel" in stack) == cross
  for name, value in stack.items():
    assert value.shape == (cfg.num_layers, *blocks[0][name].shape), name
    for i, block in enumerate(blocks):
      np.testing.assert_array_equal(value[i], block[name], err_msg=f"{name} [{i}]")
  # The params stream goes on where the blocks left it: later params draw alike too.
  assert int(stack_rngs.params.count[...]) == int(rngs.params.count[...])


@pytest.mark.parametrize("kind", KINDS)
def test_scan_layers_changes_no_param(kind):
  off, on = (nnx.state(MODELS["transformer"](_model_cfg(kind, scan), rngs=nnx.Rngs(0)))
             for scan in (False, True))
  axes = lambda state: {"/".join(map(str, p)): v.get_metadata().get("axes")
                        for p, v in nnx.to_flat_state(state)}
  assert axes(off) == axes(on)
  _assert_close(_flat(on), _flat(off), rtol=0, atol=0)
  stacks = [name for name in axes(off) if "blocks/" in name]
  assert stacks and all(axes(off)[name][0] == transformer.LAYER_AXIS for name in stacks)
  assert all(_flat(off)[name].shape[0] == 2 for name in stacks)


@pytest.mark.parametrize("kind", KINDS)
def test_same_loss_and_gradients_with_dropout_and_remat(kind):
  off_def, params = _split(kind, False, dropout=0.1)
  on_defs = {policy: _split(kind, True, dropout=0.1, remat=policy)[0]
             for policy in ("none", "full")}
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
  results = jax.jit(lambda params: [grad(params, off_def)] + [
      grad(params, g) for g in on_defs.values()])(params)
  expected_loss, expected_grads = results[0]
  for (value, grads), policy in zip(results[1:], on_defs):
    np.testing.assert_allclose(value, expected_loss, rtol=1e-6, err_msg=policy)
    _assert_close(grads, expected_grads, rtol=1e-5, atol=1e-6)


def test_optimizer_treats_stacked_params_per_layer():
  """Weight decay skips stacked vectors; freezing and layer-wise lr decay act per layer."""
  transfer = {"train.weight_decay": 0.1, "train.freeze_layers": 1, "train.layer_lr_decay": 0.5,
              "train.lr": 1e-2, "train.warmup_steps": 0}
  params = {}
  for scan in (False, True):
    cfg = resolve(tiny_config(**transfer, **{"model.scan_layers": scan}), 8)
    trainer = train.Trainer(cfg)
    state = trainer.init()
    for step in range(2):
      state, _ = trainer.step(state, synthetic_examples(16, 32, 128, step))
    params[scan] = jax.tree.map(np.asarray, state["params"])
  # Adam divides by sqrt(v) + eps: where a gradient is near eps, the loop's and the scan's
  # summation orders move a param by up to ~1e-5 of lr=1e-2 (seen on some CPUs); a real
  # difference in what trains would move it by a step, ~lr.
  _assert_close(params[True], params[False], rtol=2e-5, atol=2e-5)
  start = jax.tree.map(np.asarray, train.Trainer(cfg).init()["params"])
  name = "backbone/blocks/mlp/up/kernel"
  assert np.array_equal(params[True][name][0], start[name][0])  # layer 0 frozen
  assert not np.array_equal(params[True][name][1], start[name][1])
  # The layer axis comes from the params' logical axes, not from their names.
  netdef, shapes = define_network(cfg, {})
  factors = optim.lr_multipliers(cfg.train, shapes, 2, netdef.axes)
  np.testing.assert_array_equal(factors[name], [0.0, 0.5])
  assert factors["backbone/embed/embedding"] == 0.0


def test_mesh_step_shards_the_stacked_params_the_same_either_way():
  mesh = {"mesh.data": 2, "mesh.fsdp": 2, "mesh.tensor": 2, "train.weight_decay": 0.0,
          "model.dropout": 0.1, "model.remat": "full"}
  specs = {}
  for scan in (False, True):
    cfg = resolve(tiny_config(**mesh, **{"model.scan_layers": scan}), 8)
    trainer = train.Trainer(cfg)
    specs[scan] = {name: tuple(s.spec) for name, s in trainer.param_shardings.items()}
  assert specs[True] == specs[False]
  assert specs[True]["backbone/blocks/mlp/up/kernel"] == (None, "fsdp", "tensor")
  assert specs[True]["backbone/blocks/attn/out/kernel"] == (None, "tensor", "fsdp")
  assert all(spec[0] is None for name, spec in specs[True].items() if "blocks/" in name)
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


def test_generation_gives_the_same_tokens_from_the_same_caches():
  outputs, caches = {}, {}
  for scan in (False, True):
    graphdef, params = nnx.split(MODELS["transformer"](_model_cfg("decoder", scan),
                                                       rngs=nnx.Rngs(0)))
    merge = lambda p, graphdef=graphdef: nnx.merge(graphdef, p)
    greedy = generate.generate(merge, params, [[5, 9, 13, 2], [7, 7, 3, 11]],
                               max_new_tokens=6, rng=jax.random.PRNGKey(0))
    shapes = lambda cache: jax.tree.map(lambda a: (a.shape, a.dtype), cache)
    decoder_cache = shapes(merge(params).init_cache(2, 8))
    graphdef, params = nnx.split(MODELS["transformer"](_model_cfg("encoder_decoder", scan),
                                                       rngs=nnx.Rngs(0)))
    merge = lambda p, graphdef=graphdef: nnx.merge(graphdef, p)
    source = np.asarray([[5, 9, 13, 2, 8, 0], [7, 3, 11, 4, 0, 0]], np.int32)
    # Beam search reorders the rows of the stacked (batch-major) cache.
    beams = generate.translate(merge, params, source, (source > 0).astype(np.int32),
                               max_new_tokens=5, bos_id=1, eos_id=2, beam_size=3)
    encoded = merge(params).encode(jnp.asarray(source))
    caches[scan] = (decoder_cache, shapes(merge(params).init_cache(2, 8, encoded=encoded)))
    outputs[scan] = (greedy, beams)
  assert outputs[True] == outputs[False]
  assert len(outputs[True][0][0]) == 6
  assert caches[True] == caches[False]  # one cache layout: every layer's on axis 1
  assert caches[True][0]["layers"]["k"][0] == (2, 2, 8, 2, 8)


def test_bert_export_takes_the_layers_apart_and_import_stacks_them(tmp_path):
  heads = {"cls": ("pooled", 3)}
  cfg = default_config()
  cfg.update_from_flattened_dict({
      "model.kind": "encoder", "model.position": "learned", "model.norm": "layernorm",
      "model.prenorm": False, "model.num_layers": 2, "model.width": 32, "model.num_heads": 4,
      "model.mlp_dim": 48, "model.vocab_size": 64, "model.max_len": 16})
  params = jax.tree.map(np.asarray, init_params(cfg, heads, jax.random.PRNGKey(0)))
  hf.export_bert(cfg, params, tmp_path, pooler_head="cls")
  tensors = load_file(tmp_path / "model.safetensors")
  for i in range(2):
    np.testing.assert_array_equal(tensors[f"encoder.layer.{i}.attention.self.query.weight"],
                                  params["backbone/blocks/attn/query/kernel"][i].T)
    np.testing.assert_array_equal(tensors[f"encoder.layer.{i}.output.LayerNorm.bias"],
                                  params["backbone/blocks/mlp_norm/bias"][i])
  assert not any(re.search(r"blocks/\d+/", name) for name in params)
  overrides, imported = hf.import_bert(tmp_path, heads)
  assert "model.scan_layers" not in overrides
  # The backbone and the pooler come back; the classifier starts fresh.
  assert set(params) - set(imported) == {"heads/cls/out/bias", "heads/cls/out/kernel"}
  _assert_close(imported, {n: params[n] for n in imported}, rtol=0, atol=0)


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


def test_a_run_may_switch_scan_layers_on_resume(tmp_path):
  before_the_field = tiny_config().to_dict()
  del before_the_field["model"]["scan_layers"]
  for saved in (before_the_field, tiny_config().to_dict(),
                tiny_config(**{"model.scan_layers": True}).to_dict()):
    for scan in (False, True):
      check_compatible(saved, tiny_config(**{"model.scan_layers": scan, "model.remat": "full"}))
  (tmp_path / "config.json").write_text(json.dumps(before_the_field))
  prepare_workdir(tiny_config(**{"model.scan_layers": True}), str(tmp_path))
  # The checkpointed state has one layout: either value restores the other's.
  states = [train.Trainer(resolve(tiny_config(**{"model.scan_layers": scan}), 8)).abstract_state
            for scan in (False, True)]
  assert jax.tree.structure(states[0]) == jax.tree.structure(states[1])
  for a, b in zip(jax.tree.leaves(states[0]), jax.tree.leaves(states[1])):
    assert a.shape == b.shape and a.sharding == b.sharding


# The stacks of a Transformer, as per-layer checkpoints named them: "<stack>/<i>/<rest>".
_STACK = re.compile(r"^(backbone/(?:encoder_|decoder_)?blocks)/(.+)$")


def _as_saved_before_issue_13(tree):
  """A state as older Trellis saved it: per-layer block params."""
  if isinstance(tree, dict):
    out = {}
    for name, value in tree.items():
      match = _STACK.match(name)
      if match:
        out.update({f"{match[1]}/{i}/{match[2]}": np.asarray(value[i])
                    for i in range(value.shape[0])})
      else:
        out[name] = _as_saved_before_issue_13(value)
    return out
  if isinstance(tree, tuple) and hasattr(tree, "_fields"):
    return type(tree)(*(_as_saved_before_issue_13(v) for v in tree))
  if isinstance(tree, (tuple, list)):
    return type(tree)(_as_saved_before_issue_13(v) for v in tree)
  return np.asarray(tree)


def test_a_checkpoint_saved_per_layer_restores_stacked(tmp_path):
  """Post-norm encoder-decoder: every stack per layer."""
  cfg = resolve(tiny_config(**{"model.kind": "encoder_decoder", "model.prenorm": False,
                               "model.norm": "layernorm", "objectives": {"span": 1.0},
                               "mesh.fsdp": 2, "mesh.tensor": 2}), 8)
  trainer = train.Trainer(cfg)
  state = jax.tree.map(np.asarray, trainer.init())
  moments = state["opt_state"][1][0]
  ones = lambda tree: jax.tree.map(lambda a: a + np.float32(1), tree)  # moments not all 0
  state["opt_state"] = (state["opt_state"][0], (moments._replace(
      mu=ones(moments.mu), nu=ones(ones(moments.nu))), *state["opt_state"][1][1:]),
      *state["opt_state"][2:])
  saved = _as_saved_before_issue_13(state)
  assert "backbone/decoder_blocks/1/cross/query/kernel" in saved["params"]
  assert "backbone/decoder_blocks/1/cross/query/kernel" in saved["opt_state"][1][0].mu
  ckpts = Checkpoints(str(tmp_path), async_save=False)
  ckpts.save(3, saved, {"position": 7}, {"step": 3})
  restored, data, meta = ckpts.restore(3, trainer.abstract_state)
  ckpts.close()
  assert data == {"position": 7} and meta == {"step": 3}
  assert jax.tree.structure(restored) == jax.tree.structure(state)
  jax.tree.map(lambda a, b: np.testing.assert_array_equal(np.asarray(a), b), restored, state)
  for name, sharding in trainer.param_shardings.items():
    param, mu = restored["params"][name], restored["opt_state"][1][0].mu[name]
    assert param.sharding.is_equivalent_to(sharding, param.ndim), name
    assert mu.sharding.is_equivalent_to(sharding, mu.ndim), name


def test_a_checkpoint_with_other_layers_is_refused_in_one_line():
  params = {"backbone/blocks/attn/query/kernel": jax.ShapeDtypeStruct((2, 4, 4), jnp.float32)}
  saved = {"backbone/blocks/0/attn/query/kernel", "backbone/blocks/1/attn/query/kernel"}
  assert per_layer_names(saved, params) == {
      "backbone/blocks/attn/query/kernel": sorted(saved)}
  assert per_layer_names(set(params), params) == {}  # saved stacked: nothing to do
  with pytest.raises(CheckpointError, match=r"layers \[0, 1, 2\] of backbone/blocks") as e:
    per_layer_names(saved | {"backbone/blocks/2/attn/query/kernel"}, params)
  assert "\n" not in str(e.value)
