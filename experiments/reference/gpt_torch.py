"""The same GPT in PyTorch: the reference the benchmark reports Trellis against.

Pre-norm RMSNorm blocks, RoPE, biased projections, tanh-GELU MLP, tied
embeddings, final norm; AdamW with global-norm clipping. Needs the `bench`
extra (`pip install -e ".[bench]"`).
"""

import torch
import torch.nn.functional as F
from torch import nn


def _rope(x):  # x [B, H, T, Dh]
  half = x.shape[-1] // 2
  freq = 10000.0 ** (-torch.arange(half, dtype=torch.float32) / half)
  angle = torch.arange(x.shape[2], dtype=torch.float32)[:, None] * freq
  sin, cos = angle.sin().to(x.dtype), angle.cos().to(x.dtype)
  x1, x2 = x.chunk(2, -1)
  return torch.cat([x1 * cos - x2 * sin, x2 * cos + x1 * sin], -1)


class Block(nn.Module):

  def __init__(self, width: int, heads: int, mlp: int):
    super().__init__()
    self.heads = heads
    self.norm1, self.norm2 = nn.RMSNorm(width, eps=1e-6), nn.RMSNorm(width, eps=1e-6)
    self.qkv = nn.Linear(width, 3 * width)
    self.out = nn.Linear(width, width)
    self.up, self.down = nn.Linear(width, mlp), nn.Linear(mlp, width)

  def forward(self, x):
    b, t, d = x.shape
    q, k, v = self.qkv(self.norm1(x)).view(b, t, 3, self.heads, -1).permute(2, 0, 3, 1, 4)
    y = F.scaled_dot_product_attention(_rope(q), _rope(k), v, is_causal=True)
    x = x + self.out(y.transpose(1, 2).reshape(b, t, d))
    return x + self.down(F.gelu(self.up(self.norm2(x)), approximate="tanh"))


class GPT(nn.Module):

  def __init__(self, vocab: int, width: int, layers: int, heads: int, mlp: int):
    super().__init__()
    self.embed = nn.Embedding(vocab, width)
    nn.init.normal_(self.embed.weight, std=width ** -0.5)
    self.blocks = nn.ModuleList([Block(width, heads, mlp) for _ in range(layers)])
    self.norm = nn.RMSNorm(width, eps=1e-6)

  def forward(self, tokens):
    """Mean next-token cross-entropy of tokens [B, T]."""
    x = self.embed(tokens)
    for block in self.blocks:
      x = block(x)
    logits = self.norm(x[:, :-1]) @ self.embed.weight.T  # tied head
    return F.cross_entropy(logits.float().flatten(0, 1), tokens[:, 1:].flatten())


def make_step(model: nn.Module, dtype: torch.dtype, compile_model: bool):
  """A step function tokens -> loss: forward, backward, clip, AdamW.

  bfloat16 is autocast (matmuls in bfloat16, params and optimizer in float32),
  the PyTorch counterpart of Trellis' model.dtype=bfloat16.
  """
  opt = torch.optim.AdamW(model.parameters(), lr=1e-3, betas=(0.9, 0.95), weight_decay=0.1)
  forward = torch.compile(model) if compile_model else model

  def step(tokens):
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=dtype == torch.bfloat16):
      loss = forward(tokens)
    opt.zero_grad(set_to_none=True)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
    opt.step()
    return loss

  return step
