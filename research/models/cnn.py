"""Convolutional backbones: gated, dilated convolution stacks (Dauphin et al. 2017).

Each block computes x + dropout(GLU(conv(norm(x)))), where the convolution
has `model.kernel_size` taps spaced by the block's dilation (2 ** (i %
`model.dilation_cycle`)) and the gated linear unit is a * sigmoid(b) of its
two output halves. Decoders are causal (taps at t, t-d, ..., left zero
padding); encoders centre the window ("same" padding).

A window is built from shifted copies of the sequence, and a tap whose token
lies in another packed segment reads zero, exactly like the padding at a row
edge: no receptive field crosses a document boundary. A decoder's
incremental state is, per block, the last (kernel_size - 1) * dilation
normalised inputs.
"""

import jax
import jax.numpy as jnp
from flax import nnx

from research.models import layers
from research.models.backbone import Backbone


def _shift(x, segment_ids, offset: int):
  """x[:, t + offset] where that token is in t's segment and in the row, else 0."""
  length = x.shape[1]
  if offset == 0:
    return x
  lo, hi = (0, -offset) if offset < 0 else (offset, 0)
  pad = [(0, 0), (hi, lo)] + [(0, 0)] * (x.ndim - 2)
  shifted = jnp.pad(x, pad)[:, lo:lo + length]
  segments = jnp.pad(segment_ids, [(0, 0), (hi, lo)], constant_values=-1)[:, lo:lo + length]
  return jnp.where((segments == segment_ids)[..., None], shifted, 0).astype(x.dtype)


class ConvBlock(nnx.Module):
  """One gated convolution with a residual connection."""

  def __init__(self, cfg, dilation: int, *, causal: bool, dtype, rngs):
    k, width = cfg.kernel_size, cfg.width
    if causal:
      self.offsets = tuple(dilation * (j - k + 1) for j in range(k))
    else:  # centred; an even kernel reaches one tap further right than left
      self.offsets = tuple(dilation * (j - (k - 1) // 2) for j in range(k))
    self.dtype, self.dropout, self.residual = dtype, cfg.dropout, cfg.residual
    self.norm = layers.norm(cfg.norm, width, rngs=rngs, eps=cfg.norm_eps)
    init = nnx.initializers.variance_scaling(1.0, "fan_in", "truncated_normal",
                                             in_axis=(0, 1), out_axis=(2, 3))
    # [tap, in, (value, gate), out]: output channels split over the tensor axis.
    self.kernel = nnx.Param(init(rngs.params(), (k, width, 2, width)),
                            axes=(None, "embed", None, "mlp"))
    self.bias = nnx.Param(jnp.zeros((2, width), jnp.float32), axes=(None, "mlp"))

  def _glu(self, window):
    y = jnp.einsum("btkd,kdgo->btgo", window, self.kernel[...].astype(self.dtype),
                   preferred_element_type=jnp.float32) + self.bias[...]
    return (y[:, :, 0] * jax.nn.sigmoid(y[:, :, 1])).astype(self.dtype)

  def _add(self, x, y, rng, deterministic):
    y = layers.dropout(y, self.dropout, rng, deterministic)
    return x + y if self.residual else y

  def __call__(self, x, segment_ids, rng, deterministic):
    h = self.norm(x).astype(self.dtype)
    window = jnp.stack([_shift(h, segment_ids, o) for o in self.offsets], axis=2)
    return self._add(x, self._glu(window), rng, deterministic)

  @property
  def span(self) -> int:
    """How many past inputs a causal block's window reaches back."""
    return -self.offsets[0]

  def step(self, x, buffer, padding=None):
    """Causal block on new tokens x [B, S, D] after the `buffer` of past inputs.

    Returns the outputs and the new buffer (the last `span` normalised inputs);
    a fresh buffer of zeros is the left padding of the full pass. `padding`
    [B, S] marks a row's left padding, whose inputs enter the buffer as zeros.
    """
    h = self.norm(x).astype(self.dtype)
    if padding is not None:
      h = jnp.where(padding[..., None], 0, h).astype(self.dtype)
    h = jnp.concatenate([buffer, h], axis=1)
    steps, span = x.shape[1], self.span
    window = jnp.stack([h[:, span + o:span + o + steps] for o in self.offsets], axis=2)
    return self._add(x, self._glu(window), None, True), h[:, h.shape[1] - span:]


class CNN(Backbone):
  """Token embedding (tied head), `model.num_layers` gated conv blocks, final norm."""

  def __init__(self, cfg, *, causal: bool, rngs: nnx.Rngs):
    self.causal = causal
    self._init_embeddings(cfg, rngs, token_types=not causal)
    self.blocks = nnx.List([
        ConvBlock(cfg, 2 ** (i % cfg.dilation_cycle), causal=causal, dtype=self.dtype,
                  rngs=rngs) for i in range(cfg.num_layers)])
    self._init_norm(cfg, rngs)
    self._init_head(cfg, rngs)

  def __call__(self, tokens, *, segment_ids=None, positions=None, deterministic=True,
               rng=None, token_type_ids=None):
    """Hidden states [B, T, width] of token ids [B, T]; `positions` is not needed."""
    del positions  # convolutions see relative order; segments bound the windows
    if segment_ids is None:
      segment_ids = jnp.ones_like(tokens)
    rngs = layers.split_rng(rng, len(self.blocks) + 1)
    x = self._embed(tokens, token_type_ids=token_type_ids)
    x = layers.dropout(x, self.dropout, rngs[-1], deterministic)
    call = layers.remat(lambda block, x, rng: block(x, segment_ids, rng, deterministic),
                        self.remat)
    for block, block_rng in zip(self.blocks, rngs):
      x = call(block, x, block_rng)
    return self.final_norm(x).astype(self.dtype)




class CausalCNN(CNN):
  """The causal stack, plus convolution buffers for incremental decoding."""

  def __init__(self, cfg, *, rngs: nnx.Rngs):
    super().__init__(cfg, causal=True, rngs=rngs)

  def init_cache(self, batch: int, max_len: int, pad=None):
    """Per block, a zero buffer of its last `span` inputs; `max_len` is unused.

    `pad` [B] (default 0): each row's count of left padding, which enters the
    buffers as zeros (prompts of different lengths feed in one call).
    """
    del max_len
    width = self.embed.embedding.shape[1]
    pad = jnp.zeros((batch,), jnp.int32) if pad is None else jnp.asarray(pad, jnp.int32)
    return {"layers": [jnp.zeros((batch, b.span, width), self.dtype) for b in self.blocks],
            "index": jnp.zeros((), jnp.int32), "pad": pad}

  def decode_step(self, tokens, cache):
    """Logits for the next tokens [B, S], continuing from the cached buffers."""
    columns = cache["index"] + jnp.arange(tokens.shape[1])
    padding = columns[None, :] < cache["pad"][:, None]
    x, buffers = self.embed(tokens), []
    for block, buffer in zip(self.blocks, cache["layers"]):
      x, buffer = block.step(x, buffer, padding)
      buffers.append(buffer)
    return self.logits(self.final_norm(x).astype(self.dtype)), dict(
        cache, layers=buffers, index=cache["index"] + tokens.shape[1])


def build(cfg, *, rngs: nnx.Rngs) -> nnx.Module:
  """A causal CNN for `model.kind="decoder"`, a non-causal one for "encoder"."""
  return CausalCNN(cfg, rngs=rngs) if cfg.kind == "decoder" else CNN(cfg, causal=False,
                                                                      rngs=rngs)


def flops(cfg, *, length: int, target_length: int = 0, vocab_positions: int = 0) -> float:
  """Forward matmul FLOPs of one row: per token and block, the gated convolution's
  2 * kernel_size * width * (2 * width) (value and gate halves); `vocab_positions`
  positions through the vocabulary head (2 * width * vocab each). The GLU is
  elementwise and the embedding a gather: not counted. Training costs 3x.
  """
  del target_length  # no encoder-decoder CNN
  d = cfg.width
  return float(cfg.num_layers * 2 * cfg.kernel_size * d * 2 * d * length
               + 2 * d * cfg.vocab_size * vocab_positions)
