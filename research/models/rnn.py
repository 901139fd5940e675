"""Recurrent backbones: LSTM and GRU, unidirectional (decoder) or bidirectional (encoder).

Each layer computes x + dropout(proj(rnn(norm(x)))): the recurrence runs
with `jax.lax.scan` over time, the projection maps the `model.rnn_hidden`
state (both directions, concatenated) back to `model.width` and exists only
when the sizes differ, and `model.residual=False` drops the `x +`. The input
half of every gate is one matmul over the whole sequence before the scan, so
the scan body holds only the recurrent matmul.

The state resets to zero wherever `segment_ids` changes (the backward
direction: where it changes next), so packed documents never see each other.
Decoders carry (h, c) per layer (GRU: h) as their incremental decoding state.
"""

import jax
import jax.numpy as jnp
from flax import nnx

from research.models import layers
from research.models.backbone import Backbone

GATES = {"lstm": 4, "gru": 3}  # LSTM: input, forget, cell, output; GRU: reset, update, new


class Cell(nnx.Module):
  """One direction of one recurrent layer: an LSTM or GRU cell scanned over time.

  Kernels are [in, gate, hidden] so the hidden units (logical "mlp") can be
  split over the tensor axis with every gate of a unit on the same device:
  the cell update is then local and each step gathers only the small state.
  """

  def __init__(self, cell: str, width: int, hidden: int, *, dtype, rngs):
    self.cell, self.hidden, self.dtype = cell, hidden, dtype
    gates = GATES[cell]
    init = nnx.initializers.variance_scaling(1.0, "fan_in", "truncated_normal", in_axis=0,
                                             out_axis=(1, 2))
    self.input_kernel = nnx.Param(init(rngs.params(), (width, gates, hidden)),
                                  axes=("embed", None, "mlp"))
    # The incoming-state axis stays replicated: sharding it would gather the weight
    # inside the scan at every step.
    self.recurrent_kernel = nnx.Param(init(rngs.params(), (hidden, gates, hidden)),
                                      axes=(None, None, "mlp"))
    bias = jnp.zeros((gates, hidden), jnp.float32)
    if cell == "lstm":
      bias = bias.at[1].set(1.0)  # forget-gate bias 1 (Jozefowicz et al. 2015)
    self.bias = nnx.Param(bias, axes=(None, "mlp"))
    if cell == "gru":  # the new-gate candidate needs its own recurrent bias
      self.recurrent_bias = nnx.Param(jnp.zeros((gates, hidden), jnp.float32),
                                      axes=(None, "mlp"))

  def init_state(self, batch: int):
    """The zero state: (h, c) for an LSTM, (h,) for a GRU, float32 [B, hidden]."""
    zeros = jnp.zeros((batch, self.hidden), jnp.float32)
    return (zeros, zeros) if self.cell == "lstm" else (zeros,)

  def _step(self, state, inputs):
    gate_inputs, reset = inputs
    state = tuple(jnp.where(reset[:, None], 0.0, s) for s in state)
    recurrent = jnp.einsum("bh,hgk->bgk", state[0].astype(self.dtype),
                           self.recurrent_kernel[...].astype(self.dtype),
                           preferred_element_type=jnp.float32)
    if self.cell == "lstm":
      z = gate_inputs + recurrent
      c = jax.nn.sigmoid(z[:, 1]) * state[1] + jax.nn.sigmoid(z[:, 0]) * jnp.tanh(z[:, 2])
      h = jax.nn.sigmoid(z[:, 3]) * jnp.tanh(c)
      return (h, c), h
    recurrent = recurrent + self.recurrent_bias[...]
    r = jax.nn.sigmoid(gate_inputs[:, 0] + recurrent[:, 0])
    u = jax.nn.sigmoid(gate_inputs[:, 1] + recurrent[:, 1])
    n = jnp.tanh(gate_inputs[:, 2] + r * recurrent[:, 2])
    h = (1.0 - u) * n + u * state[0]
    return (h,), h

  def __call__(self, x, reset, state=None, reverse: bool = False):
    """Outputs [B, T, hidden] and the final state, from inputs x [B, T, width].

    `reset` [B, T] zeroes the state before step t (in scan order: with
    `reverse=True` time runs from T-1 down to 0).
    """
    state = self.init_state(x.shape[0]) if state is None else state
    gate_inputs = jnp.einsum("btd,dgh->tbgh", x, self.input_kernel[...].astype(self.dtype),
                             preferred_element_type=jnp.float32) + self.bias[...]
    state, outputs = jax.lax.scan(self._step, state, (gate_inputs, reset.T), reverse=reverse)
    return outputs.swapaxes(0, 1).astype(self.dtype), state


class Layer(nnx.Module):
  """norm -> one cell per direction -> (projection to width) -> dropout -> residual."""

  def __init__(self, cfg, cell: str, *, bidirectional: bool, dtype, rngs):
    hidden = cfg.rnn_hidden or cfg.width
    self.dtype, self.dropout, self.residual = dtype, cfg.dropout, cfg.residual
    self.norm = layers.norm(cfg.norm, cfg.width, rngs=rngs, eps=cfg.norm_eps)
    self.forward = Cell(cell, cfg.width, hidden, dtype=dtype, rngs=rngs)
    if bidirectional:
      self.backward = Cell(cell, cfg.width, hidden, dtype=dtype, rngs=rngs)
    out = hidden * (2 if bidirectional else 1)
    if out != cfg.width:
      self.proj = layers.dense(out, cfg.width, ("mlp", "embed"), dtype=dtype, rngs=rngs)

  def __call__(self, x, starts, ends, state, rng, deterministic):
    """(x [B, T, width] after this layer, the forward direction's final state)."""
    h = self.norm(x).astype(self.dtype)
    y, state = self.forward(h, starts, state)
    if hasattr(self, "backward"):
      y = jnp.concatenate([y, self.backward(h, ends, reverse=True)[0]], axis=-1)
    if hasattr(self, "proj"):
      y = self.proj(y).astype(self.dtype)
    y = layers.dropout(y, self.dropout, rng, deterministic)
    return (x + y if self.residual else y), state


def segment_edges(segment_ids):
  """(starts, ends) [B, T]: where a segment begins, and where it ends (incl. row edges)."""
  change = segment_ids[:, 1:] != segment_ids[:, :-1]
  edge = jnp.ones_like(segment_ids[:, :1], bool)
  return (jnp.concatenate([edge, change], axis=1), jnp.concatenate([change, edge], axis=1))


class RNN(Backbone):
  """Token embedding (tied head), `model.num_layers` recurrent layers, final norm."""

  def __init__(self, cfg, cell: str, *, bidirectional: bool, rngs: nnx.Rngs):
    self.causal = not bidirectional
    self._init_embeddings(cfg, rngs, token_types=bidirectional)
    self.blocks = nnx.List([Layer(cfg, cell, bidirectional=bidirectional, dtype=self.dtype,
                                  rngs=rngs) for _ in range(cfg.num_layers)])
    self._init_norm(cfg, rngs)
    self._init_head(cfg, rngs)

  def __call__(self, tokens, *, segment_ids=None, positions=None, deterministic=True,
               rng=None, token_type_ids=None):
    """Hidden states [B, T, width] of token ids [B, T]; `positions` is not needed."""
    del positions  # order is implicit in the recurrence; segments say where to reset
    if segment_ids is None:
      segment_ids = jnp.ones_like(tokens)
    starts, ends = segment_edges(segment_ids)
    rngs = layers.split_rng(rng, len(self.blocks) + 1)
    x = self._embed(tokens, token_type_ids=token_type_ids)
    x = layers.dropout(x, self.dropout, rngs[-1], deterministic)
    call = layers.remat(
        lambda block, x, rng: block(x, starts, ends, None, rng, deterministic)[0], self.remat)
    for block, block_rng in zip(self.blocks, rngs):
      x = call(block, x, block_rng)
    return self.final_norm(x).astype(self.dtype)




class RNNDecoder(RNN):
  """The unidirectional stack, plus its recurrent state for incremental decoding."""

  def __init__(self, cfg, cell: str, *, rngs: nnx.Rngs):
    super().__init__(cfg, cell, bidirectional=False, rngs=rngs)

  def init_cache(self, batch: int, max_len: int, pad=None):
    """Zero recurrent state per layer; `max_len` is unused (the state has a fixed size).

    `pad` [B] (default 0): each row's count of left padding, during which its
    state stays zero (prompts of different lengths feed in one call).
    """
    del max_len
    pad = jnp.zeros((batch,), jnp.int32) if pad is None else jnp.asarray(pad, jnp.int32)
    return {"layers": [b.forward.init_state(batch) for b in self.blocks],
            "index": jnp.zeros((), jnp.int32), "pad": pad}

  def decode_step(self, tokens, cache):
    """Logits for the next tokens [B, S], continuing from the cached state."""
    columns = cache["index"] + jnp.arange(tokens.shape[1])
    # Zero state up to and including a row's first real token: padding leaves no trace.
    reset = columns[None, :] <= cache["pad"][:, None]
    x, states = self.embed(tokens), []
    for block, state in zip(self.blocks, cache["layers"]):
      x, state = block(x, reset, None, state, None, True)
      states.append(state)
    return self.logits(self.final_norm(x).astype(self.dtype)), dict(
        cache, layers=states, index=cache["index"] + tokens.shape[1])


def build(cell: str):
  """The registry's build function for `cell` ("lstm" or "gru")."""

  def build_rnn(cfg, *, rngs: nnx.Rngs) -> nnx.Module:
    if cfg.kind == "decoder":
      return RNNDecoder(cfg, cell, rngs=rngs)
    return RNN(cfg, cell, bidirectional=True, rngs=rngs)

  return build_rnn


def flops(cell: str):
  """The registry's FLOP function for `cell`: forward matmul FLOPs of one row.

  Per token, layer and direction (encoders have two): the input and recurrent gate
  matmuls, 2 * (width + hidden) * gates * hidden, plus the projection back to width
  (2 * directions * hidden * width) when the sizes differ; `vocab_positions` positions
  through the vocabulary head (2 * width * vocab each). The gate nonlinearities are
  elementwise and the embedding a gather: not counted. Training costs 3x.
  """

  def rnn_flops(cfg, *, length: int, target_length: int = 0, vocab_positions: int = 0) -> float:
    del target_length  # no encoder-decoder recurrent model
    d, hidden = cfg.width, cfg.rnn_hidden or cfg.width
    directions = 1 if cfg.kind == "decoder" else 2
    layer = directions * 2 * (d + hidden) * GATES[cell] * hidden
    if directions * hidden != d:
      layer += 2 * directions * hidden * d
    return float(cfg.num_layers * layer * length + 2 * d * cfg.vocab_size * vocab_positions)

  return rnn_flops
