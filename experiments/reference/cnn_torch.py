"""Trellis' gated convolutional language model (Dauphin et al. 2017) in PyTorch.

The layout of research/models/cnn.py's causal stack, on `nn.Conv1d`: token
embedding, then per block x + GLU(conv(norm(x))), where the convolution has
`kernel_size` taps spaced by the block's dilation (2 ** (i % dilation_cycle)),
is made causal by (kernel_size - 1) * dilation zeros of left padding, and
outputs 2 * width channels that `F.glu` turns into a * sigmoid(b) (the first
half is the value, the second the gate, as in Trellis' [.., (value, gate),
out] kernel). A final norm and the tied embedding (or a separate head) give
the logits. Each block has exactly Trellis' parameters (kernel, both halves'
biases, norm). Trained by gpt_torch.make_step: AdamW with global-norm
clipping. Needs the `bench` extra (`pip install -e ".[bench]"`).
"""

import torch.nn.functional as F
from torch import nn

from experiments.reference.gpt_torch import make_step  # noqa: F401  (the shared step)
from experiments.reference.lstm_torch import BlockLM, make_norm


class ConvBlock(nn.Module):
  """norm -> causal dilated Conv1d to 2 * width channels -> GLU -> dropout -> residual."""

  def __init__(self, width: int, kernel_size: int, dilation: int, norm: str, eps: float,
               residual: bool, dropout: float):
    super().__init__()
    self.residual, self.pad = residual, (kernel_size - 1) * dilation
    self.norm = make_norm(norm, width, eps)
    self.conv = nn.Conv1d(width, 2 * width, kernel_size, dilation=dilation)
    nn.init.zeros_(self.conv.bias)
    self.dropout = nn.Dropout(dropout)

  def forward(self, x):  # x [B, T, D]
    h = F.pad(self.norm(x).transpose(1, 2), (self.pad, 0))  # [B, D, pad + T]
    y = self.dropout(F.glu(self.conv(h), dim=1).transpose(1, 2))
    return x + y if self.residual else y


class GatedCNN(BlockLM):
  """Embedding, `layers` gated conv blocks, final norm, tied (or separate) vocabulary head."""

  def __init__(self, vocab: int, width: int, layers: int, kernel_size: int,
               dilation_cycle: int, *, norm: str = "rmsnorm", eps: float = 1e-6,
               residual: bool = True, tie_embeddings: bool = True, dropout: float = 0.0):
    blocks = [ConvBlock(width, kernel_size, 2 ** (i % dilation_cycle), norm, eps, residual,
                        dropout) for i in range(layers)]
    super().__init__(vocab, width, blocks, norm=norm, eps=eps,
                     tie_embeddings=tie_embeddings, dropout=dropout)


def from_config(m) -> GatedCNN:
  """The reference for a Trellis `model` config block (arch "cnn", a decoder)."""
  return GatedCNN(m.vocab_size, m.width, m.num_layers, m.kernel_size, m.dilation_cycle,
                  norm=m.norm, eps=m.norm_eps, residual=m.residual,
                  tie_embeddings=m.tie_embeddings, dropout=m.dropout)
