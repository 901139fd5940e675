"""Trellis' LSTM (or GRU) language model in PyTorch, on torch.nn.LSTM / torch.nn.GRU.

The layout of research/models/rnn.py's decoder, built from the modules a
PyTorch user would reach for: token embedding, then per layer
x + proj(rnn(norm(x))) with one single-layer `nn.LSTM` (or `nn.GRU`) per
layer (a stacked `nn.LSTM(num_layers=n)` has no norms or residuals between
its layers), the projection back to width only when the state size differs,
a final norm, and the tied embedding (or a separate head) for the logits.
Trained by gpt_torch.make_step: AdamW with global-norm clipping.

Gate orders agree with Trellis (LSTM: input, forget, cell, output; GRU:
reset, update, new, the candidate's recurrent half gated by the reset), so
the cells compute the same function. The sizes: a GRU layer has exactly
Trellis' parameters (both biases); an LSTM layer has one extra bias vector,
`bias_hh` (4 * hidden), which Trellis folds into its single bias: 0.2% of
lstm_clm:small. Under bfloat16 autocast PyTorch runs `nn.LSTM` in bfloat16
but leaves `nn.GRU` in float32 (it is not on the CPU autocast list).

torch.compile (torch 2.13) does not compile the recurrences: dynamo
graph-breaks at every nn.LSTM/nn.GRU, which then run eagerly between the
compiled norms, residuals and head. `torch._dynamo.config.allow_rnn=True`
would trace them, but inductor unrolls the time loop: on a busy 2-core CPU,
150 s to compile one 256-wide layer over 16 steps, 400 s over 64, so the
benchmark leaves it off. Needs the `bench` extra (`pip install -e ".[bench]"`).
"""

import torch
import torch.nn.functional as F
from torch import nn

from experiments.reference.gpt_torch import make_step  # noqa: F401  (the shared step)

RNNS = {"lstm": nn.LSTM, "gru": nn.GRU}
# What the benchmark's torch_compile row of these models notes beside its figures.
COMPILE_NOTE = "nn.LSTM/nn.GRU stay eager: dynamo graph-breaks at them"


def make_norm(kind: str, width: int, eps: float) -> nn.Module:
  """RMSNorm or LayerNorm, the choices of Trellis' `model.norm`."""
  if kind == "rmsnorm":
    return nn.RMSNorm(width, eps=eps)
  return nn.LayerNorm(width, eps=eps)


class Layer(nn.Module):
  """norm -> nn.LSTM/nn.GRU (one layer) -> (projection to width) -> dropout -> residual."""

  def __init__(self, cell: str, width: int, hidden: int, norm: str, eps: float,
               residual: bool, dropout: float):
    super().__init__()
    self.residual, self.dropout = residual, nn.Dropout(dropout)
    self.norm = make_norm(norm, width, eps)
    self.rnn = RNNS[cell](width, hidden, batch_first=True)
    if cell == "lstm":  # forget-gate bias 1, as Trellis initialises it
      with torch.no_grad():
        self.rnn.bias_ih_l0[hidden:2 * hidden].fill_(1.0)
        self.rnn.bias_hh_l0.zero_()
    self.proj = nn.Linear(hidden, width) if hidden != width else None

  def forward(self, x):
    y, _ = self.rnn(self.norm(x))
    if self.proj is not None:
      y = self.proj(y)
    y = self.dropout(y)
    return x + y if self.residual else y


class BlockLM(nn.Module):
  """Embedding, residual `blocks`, final norm, tied (or separate) vocabulary head, CLM loss."""

  def __init__(self, vocab: int, width: int, blocks: list, *, norm: str, eps: float,
               tie_embeddings: bool, dropout: float):
    super().__init__()
    self.embed = nn.Embedding(vocab, width)
    self.dropout = nn.Dropout(dropout)
    nn.init.normal_(self.embed.weight, std=width ** -0.5)
    self.blocks = nn.ModuleList(blocks)
    self.norm = make_norm(norm, width, eps)
    self.head = None if tie_embeddings else nn.Linear(width, vocab, bias=False)

  def forward(self, tokens):
    """Mean next-token cross-entropy of tokens [B, T]."""
    x = self.dropout(self.embed(tokens))
    for block in self.blocks:
      x = block(x)
    x = self.norm(x[:, :-1])
    logits = x @ self.embed.weight.T if self.head is None else self.head(x)
    return F.cross_entropy(logits.float().flatten(0, 1), tokens[:, 1:].flatten())


class RNNLM(BlockLM):
  """Embedding, `layers` recurrent layers, final norm, tied (or separate) vocabulary head."""

  def __init__(self, cell: str, vocab: int, width: int, layers: int, hidden: int = 0, *,
               norm: str = "rmsnorm", eps: float = 1e-6, residual: bool = True,
               tie_embeddings: bool = True, dropout: float = 0.0):
    blocks = [Layer(cell, width, hidden or width, norm, eps, residual, dropout)
              for _ in range(layers)]
    super().__init__(vocab, width, blocks, norm=norm, eps=eps,
                     tie_embeddings=tie_embeddings, dropout=dropout)


def from_config(m) -> RNNLM:
  """The reference for a Trellis `model` config block (arch "lstm" or "gru", a decoder)."""
  return RNNLM(m.arch, m.vocab_size, m.width, m.num_layers, m.rnn_hidden, norm=m.norm,
               eps=m.norm_eps, residual=m.residual, tie_embeddings=m.tie_embeddings,
               dropout=m.dropout)

