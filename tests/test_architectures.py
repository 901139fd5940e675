"""Every registered family under the one training step: mesh training, exact resume, sharding.

Loops over MODELS like tests/test_models.py, so a new architecture is covered
with no new test code. The last tests check options the registry loop does
not vary: BERT-style encoders and the encoder-decoder's decoder side.
"""

import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from conftest import SignalAt, tiny_config
from research import sharding, train
from research.config import default_config
from research.data import pipeline
from research.errors import ConfigError, Interrupted
from research.models import HEADS, MODELS
from research.network import define_network
from research.workdir import prepare_workdir, resolve

CASES = [(arch, kind) for arch in sorted(MODELS) for kind in MODELS[arch].kinds]
DECODERS = [arch for arch, kind in CASES if kind == "decoder"]
MESH = {"mesh.data": 2, "mesh.fsdp": 2, "mesh.tensor": 2}


def _config(arch, kind="decoder", **overrides):
  return tiny_config(**{"model.arch": arch, "model.kind": kind, "model.width": 32,
                        "model.num_layers": 1, "train.steps": 8, "train.log_every": 1,
                        "train.eval_every": 0, "train.checkpoint_every": 0,
                        "train.eval_batches": 1, "train.lr": 1e-2, **MESH, **overrides})


def _train(cfg, workdir, data):
  cfg = resolve(cfg, jax.device_count())
  prepare_workdir(cfg, str(workdir))
  return train.train_and_evaluate(train.Trainer(cfg), str(workdir), data)


def _rows(workdir):
  with open(os.path.join(workdir, "metrics.jsonl")) as f:
    rows = [json.loads(line) for line in f]
  return [[r["split"], r["step"], r["loss"], r.get("grad_norm")] for r in rows]


@pytest.mark.parametrize("arch", DECODERS)
def test_clm_on_mesh_lowers_loss_and_resumes_exactly(arch, tmp_path, synthetic_data,
                                                     monkeypatch):
  data = synthetic_data()
  _train(_config(arch), tmp_path / "full", data)
  full = _rows(tmp_path / "full")
  train_losses = [loss for split, _, loss, _ in full if split == "train"]
  assert len(train_losses) == 8 and train_losses[-1] < train_losses[0] - 0.3, train_losses

  original = pipeline.train_iterator
  monkeypatch.setattr(pipeline, "train_iterator",
                      lambda *a, **k: SignalAt(original(*a, **k), at=4))
  with pytest.raises(Interrupted) as cut:
    _train(_config(arch), tmp_path / "cut", data)
  assert cut.value.step == 4
  monkeypatch.setattr(pipeline, "train_iterator", original)
  _train(_config(arch), tmp_path / "cut", data)
  assert _rows(tmp_path / "cut") == full  # bitwise: same floats, same data order


# Every head kind, and the model options that add params (a Transformer's BERT MLM head,
# learned positions, an untied head, LayerNorm biases, an RNN projection).
ALL_HEADS = {f"{kind}_head": (kind, 3) for kind in HEADS}
PARAM_OPTIONS = {"model.tie_embeddings": False, "model.norm": "layernorm", "model.rnn_hidden": 16}
TRANSFORMER_OPTIONS = {"model.vocab_transform": True, "model.vocab_bias": True,
                       "model.position": "learned"}


@pytest.mark.parametrize("arch,kind", CASES)
def test_every_param_has_axes_and_the_rules_shard_them(arch, kind):
  """A logical axis without a rule (a typo) would be replicated: sharding refuses it."""
  options = dict(PARAM_OPTIONS, **(TRANSFORMER_OPTIONS if arch == "transformer" else {}))
  cfg = _config(arch, kind, **{"model.vocab_size": 128}, **options)
  netdef, shapes = define_network(cfg, ALL_HEADS)
  assert {name.split("/")[1] for name in shapes if name.startswith("heads/")} == set(ALL_HEADS)
  rules = dict(cfg.mesh.rules)
  for name, shape in shapes.items():
    assert netdef.axes[name] is not None and len(netdef.axes[name]) == len(shape.shape), name
  mesh = sharding.make_mesh(cfg)
  specs = sharding.tree_shardings(netdef.axes, shapes, mesh, rules)
  used = {axis for s in specs.values() for dim in s.spec if dim
          for axis in (dim if isinstance(dim, tuple) else (dim,))}
  assert {"fsdp", "tensor"} <= used, used


def test_an_axis_without_a_rule_is_a_one_line_error():
  cfg = _config("transformer")
  mesh, rules = sharding.make_mesh(cfg), dict(cfg.mesh.rules)
  with pytest.raises(ConfigError, match=r"param heads/x/kernel: logical axis 'embd' has no "
                                        r"rule in mesh.rules \(known: batch, classes, embed") as e:
    sharding.tree_shardings({"heads/x/kernel": ("embd", "classes")},
                            {"heads/x/kernel": jax.ShapeDtypeStruct((8, 2), jnp.float32)},
                            mesh, rules)
  assert "\n" not in str(e.value)
  assert tuple(sharding.logical_spec((None, "embed"), (8, 8), mesh, rules)) == (None, "fsdp")


@pytest.mark.parametrize("arch,kind", [(a, k) for a, k in CASES if k != "decoder"])
def test_bidirectional_model_refuses_clm(arch, kind):
  with pytest.raises(ConfigError, match="needs a causal"):
    resolve(_config(arch, kind), 8)


def _model(**overrides):
  cfg = default_config().model
  cfg.update(width=32, num_heads=4, vocab_size=97, max_len=32, **overrides)
  return MODELS[cfg.arch](cfg, rngs=nnx.Rngs(0))


def _tokens(seed, length=12):
  return jax.random.randint(jax.random.PRNGKey(seed), (2, length), 4, 97)


def test_bert_style_encoder_uses_token_types_and_post_norm():
  bert = _model(kind="encoder", position="learned", norm="layernorm", prenorm=False)
  tokens = _tokens(0)
  assert bert.type_embed.shape == (2, 32) and not hasattr(_model(kind="decoder"), "type_embed")
  zeros = bert(tokens)
  np.testing.assert_allclose(bert(tokens, token_type_ids=jnp.zeros_like(tokens)), zeros)
  sentence_b = jnp.zeros_like(tokens).at[:, 6:].set(1)
  assert not np.allclose(bert(tokens, token_type_ids=sentence_b), zeros, atol=1e-4)
  # Post-LN: every block ends in a norm, so outputs are normalised rows.
  np.testing.assert_allclose(jnp.std(zeros, -1), 1.0, atol=1e-2)
  with pytest.raises(ValueError, match="token-type"):
    _model(kind="decoder")(tokens, token_type_ids=sentence_b)


def test_post_norm_decoder_decodes_incrementally():
  model = _model(kind="decoder", position="learned", norm="layernorm", prenorm=False)
  tokens = _tokens(1)
  full = model.logits(model(tokens))
  logits, cache = model.decode_step(tokens[:, :7], model.init_cache(2, 16))
  logits2, _ = model.decode_step(tokens[:, 7:], cache)
  np.testing.assert_allclose(jnp.concatenate([logits, logits2], 1), full, atol=2e-4)


@pytest.mark.parametrize("position", ["rope", "learned"])
def test_encoder_decoder_decoder_is_causal_and_packed(position):
  model = _model(kind="encoder_decoder", position=position)
  source, targets = _tokens(2, 10), _tokens(3)
  src_segments = jnp.asarray([[1] * 6 + [2] * 4] * 2)
  tgt_segments = jnp.asarray([[1] * 7 + [2] * 5] * 2)
  tgt_positions = jnp.asarray([list(range(7)) + list(range(5))] * 2)

  def decode(src, tgt):
    encoded = model.encode(src, segment_ids=src_segments,
                           positions=jnp.asarray([list(range(6)) + list(range(4))] * 2))
    return model.decode(tgt, encoded, segment_ids=tgt_segments, positions=tgt_positions,
                        source_segment_ids=src_segments)

  base = decode(source, targets)
  # Target pair 2 never sees source pair 1 or target pair 1, and vice versa.
  out = decode(source.at[:, :6].set(5), targets.at[:, :7].set(5))
  np.testing.assert_allclose(out[:, 7:], base[:, 7:], atol=1e-5)
  out = decode(source.at[:, 6:].set(5), targets)
  np.testing.assert_allclose(out[:, :7], base[:, :7], atol=1e-5)
  # Within a pair, target t sees only targets <= t.
  out = decode(source, targets.at[:, 4:7].set(5))
  np.testing.assert_allclose(out[:, :4], base[:, :4], atol=1e-5)
  assert not np.allclose(out[:, 4:7], base[:, 4:7], atol=1e-5)
