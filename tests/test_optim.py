"""The optimizer: weight decay by param role, clipping of the applied gradients only,
and layer-stacked params (their "layers" logical axis) treated layer by layer.

Decay: every param of every registered architecture (each kind, with a pooled
and a token head) is decayed iff it is a weight matrix, kernel or embedding
table; biases and norm scales/biases never are. The role is checked against an
oracle independent of names and shapes: a bias or norm param is initialised to
constants (the same under every seed), a kernel or embedding randomly.
"""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from research import optim
from research.config import default_config
from research.models import MODELS
from research.network import define_network, init_params

HEADS = {"classify": ("pooled", 3), "qa": ("token", 2)}
CASES = [(arch, kind) for arch, entry in MODELS.items() for kind in entry.kinds]


def _config(arch, kind, **model):
  """A small default config; the options that add params (learned positions, untied
  head, LayerNorm biases, token types, an RNN projection) are on."""
  cfg = default_config()
  cfg.model.update(arch=arch, kind=kind, num_layers=2, width=16, num_heads=2, vocab_size=61,
                   max_len=32, position="learned", norm="layernorm", tie_embeddings=False,
                   type_vocab_size=2, rnn_hidden=8, mlp="swiglu", **model)
  return cfg


def _init(cfg, seed):
  return jax.jit(lambda rng: init_params(cfg, HEADS, rng))(jax.random.PRNGKey(seed))


@pytest.mark.parametrize("arch,kind", CASES)
def test_decay_follows_the_param_role_in_every_architecture(arch, kind):
  cfg = _config(arch, kind)
  _, shapes = define_network(cfg, HEADS)
  mask = optim.decay_mask(shapes)
  assert sorted(mask) == sorted(shapes)
  a, b = _init(cfg, 0), _init(cfg, 1)
  for name in shapes:
    random_init = not np.array_equal(a[name], b[name])  # kernels and tables: True
    assert mask[name] == random_init, (name, shapes[name].shape)
    assert (optim.param_role(name) in ("kernel", "embedding")) == random_init, name
  if arch in ("lstm", "gru", "cnn"):
    assert not mask["backbone/blocks/0/forward/bias" if arch != "cnn"
                    else "backbone/blocks/0/bias"]


def test_unknown_param_leaf_has_no_role():
  with pytest.raises(ValueError, match="gamma"):
    optim.param_role("backbone/blocks/0/gamma")


def _zero_grad_steps(t, params, steps):
  tx = optim.make_optimizer(t, params, 2)
  state = tx.init(params)
  zeros = jax.tree.map(jnp.zeros_like, params)
  for _ in range(steps):
    updates, state = tx.update(zeros, state, params)
    params = optax.apply_updates(params, updates)
  return params


def test_weight_decay_leaves_the_lstm_forget_bias_and_shrinks_kernels():
  """Zero gradients: AdamW moves only by weight decay, so biases must stay put."""
  t = default_config().train
  t.update(lr=0.1, weight_decay=0.1, warmup_steps=0, schedule="constant")
  cfg = _config("lstm", "decoder")
  params = _init(cfg, 0)
  after = _zero_grad_steps(t, params, 10)
  bias = "backbone/blocks/0/forward/bias"
  np.testing.assert_array_equal(after[bias][1], 1.0)  # forget gate: Jozefowicz et al.
  np.testing.assert_array_equal(after[bias], params[bias])
  kernel = "backbone/blocks/0/forward/input_kernel"
  np.testing.assert_allclose(after[kernel], params[kernel] * (1 - 0.1 * 0.1) ** 10, rtol=1e-5)


def _transfer_train(**overrides):
  t = default_config().train
  t.update(lr=1e-2, warmup_steps=0, schedule="constant", weight_decay=0.1, clip_norm=1.0,
           **overrides)
  return t


def _steps(tx, params, grads, steps=2):
  state = tx.init(params)
  for _ in range(steps):
    updates, state = tx.update(grads, state, params)
    params = optax.apply_updates(params, updates)
  return params


@pytest.mark.parametrize("head_scale", [0.1, 3.0])  # head grad norm under and over clip_norm
def test_clipping_sees_only_the_gradients_that_are_applied(head_scale):
  """A frozen backbone with huge gradients leaves the head's clipped update as if alone."""
  rng = np.random.default_rng(0)
  params = {"backbone/embed/embedding": rng.normal(size=(8, 4)).astype(np.float32),
            "backbone/blocks/0/mlp/up/kernel": rng.normal(size=(4, 4)).astype(np.float32),
            "heads/classify/out/kernel": rng.normal(size=(4, 3)).astype(np.float32),
            "heads/classify/out/bias": np.zeros(3, np.float32)}
  grads = {name: rng.normal(size=p.shape).astype(np.float32) * (1e9 if "backbone" in name
                                                                  else head_scale)
           for name, p in params.items()}
  frozen = _steps(optim.make_optimizer(_transfer_train(freeze_backbone=True), params, 1),
                  params, grads)
  heads = [n for n in params if n.startswith("heads/")]
  alone = _steps(optim.make_optimizer(_transfer_train(), heads, 1),
                 {n: params[n] for n in heads}, {n: grads[n] for n in heads})
  for name in heads:
    np.testing.assert_allclose(frozen[name], alone[name], rtol=1e-6, atol=1e-7, err_msg=name)
  for name in params:
    if name.startswith("backbone/"):  # weight decay included: bit for bit unchanged
      np.testing.assert_array_equal(frozen[name], params[name], err_msg=name)


def test_clipping_skips_frozen_layers_of_stacked_params():
  """freeze_layers zeroes layer 0 of a stacked param (by its axes) before the clip."""
  rng = np.random.default_rng(1)
  stacked = "backbone/blocks/mlp/up/kernel"
  params = {stacked: rng.normal(size=(2, 4, 4)).astype(np.float32),
            "heads/classify/out/kernel": rng.normal(size=(4, 3)).astype(np.float32)}
  grads = {stacked: np.stack([1e9 * rng.normal(size=(4, 4)), 3 * rng.normal(size=(4, 4))]
                             ).astype(np.float32),
           "heads/classify/out/kernel": 3 * rng.normal(size=(4, 3)).astype(np.float32)}
  axes = {stacked: ("layers", "embed", "mlp"), "heads/classify/out/kernel": ("embed", "classes")}
  frozen = _steps(optim.make_optimizer(_transfer_train(freeze_layers=1), params, 2, axes),
                  params, grads)
  # Unstacked, layer 1 and the head are all that learn; layer 0 is left out.
  layer1, head = "backbone/blocks/1/mlp/up/kernel", "heads/classify/out/kernel"
  alone = _steps(optim.make_optimizer(_transfer_train(), [layer1, head], 2),
                 {layer1: params[stacked][1], head: params[head]},
                 {layer1: grads[stacked][1], head: grads[head]})
  np.testing.assert_array_equal(frozen[stacked][0], params[stacked][0])
  np.testing.assert_allclose(frozen[stacked][1], alone[layer1], rtol=1e-6, atol=1e-7)
  np.testing.assert_allclose(frozen[head], alone[head], rtol=1e-6, atol=1e-7)


def test_the_layer_axis_comes_from_the_axes_wherever_it_is():
  t = default_config().train
  t.layer_lr_decay, t.freeze_layers = 0.5, 1
  names = ["backbone/blocks/mlp/up/kernel", "backbone/stack/w", "backbone/blocks/0/mlp/up/kernel"]
  axes = {"backbone/blocks/mlp/up/kernel": ("layers", "embed", "mlp"),
          "backbone/stack/w": ("embed", "layers", "mlp")}
  factors = optim.lr_multipliers(t, names, 3, axes)
  np.testing.assert_array_equal(factors["backbone/blocks/mlp/up/kernel"], [0.0, 0.25, 0.5])
  np.testing.assert_array_equal(factors["backbone/stack/w"], [[0.0, 0.25, 0.5]])
  assert factors["backbone/blocks/0/mlp/up/kernel"] == 0.0  # per layer by name (RNN, CNN)
  update = optim.scale_per_param(factors).update
  ones = {name: jnp.ones((2, 3, 4) if name == "backbone/stack/w" else (3, 2, 4)) for name in names}
  scaled = update(ones, None)[0]
  np.testing.assert_array_equal(scaled["backbone/stack/w"][1, :, 0], [0.0, 0.25, 0.5])
  np.testing.assert_array_equal(scaled["backbone/blocks/mlp/up/kernel"][:, 1, 0], [0.0, 0.25, 0.5])
