"""FLOP counts, the machine's measured matmul peak, and memory: inputs to MFU."""

import functools
import resource
import time

import jax
import jax.numpy as jnp


def flops_per_token(cfg, num_params: int) -> float:
  """Training FLOPs per token: 6N, plus attention scores (PaLM, appendix B).

  The attention term, 12 * layers * width * seq_len, counts QK^T and AV in
  the forward and backward pass of a Transformer; other families have none.
  """
  flops = 6.0 * num_params
  if cfg.model.arch == "transformer":
    stacks = 2 if cfg.model.kind == "encoder_decoder" else 1
    flops += 12.0 * stacks * cfg.model.num_layers * cfg.model.width * cfg.data.seq_len
  return flops


@functools.lru_cache(maxsize=None)
def matmul_peak_flops(dtype_name: str = "float32", size: int = 2048, repeats: int = 5) -> float:
  """FLOP/s of a large jitted matmul on this host: the practical peak for MFU.

  On CPU all fake devices share the same cores, so one measurement is the
  whole host's peak; on accelerators it is one chip's, times the chip count.
  """
  dtype = jnp.dtype(dtype_name)
  device = jax.devices()[0]
  a = jax.device_put(jnp.ones((size, size), dtype), device)
  matmul = jax.jit(lambda x, y: jnp.matmul(x, y, preferred_element_type=jnp.float32))
  matmul(a, a).block_until_ready()
  best = float("inf")
  for _ in range(repeats):
    start = time.perf_counter()
    matmul(a, a).block_until_ready()
    best = min(best, time.perf_counter() - start)
  per_device = 2.0 * size ** 3 / best
  return per_device if device.platform == "cpu" else per_device * jax.device_count()


def peak_memory_bytes() -> int:
  """Peak memory: the devices' own counter where there is one, else host RSS."""
  stats = jax.devices()[0].memory_stats() or {}
  if "peak_bytes_in_use" in stats:
    return int(stats["peak_bytes_in_use"])
  return int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss) * 1024


def synthetic_batch(cfg, seed: int = 0) -> dict:
  """A global batch of random tokens in the config's shape (one document per row)."""
  import numpy as np
  rng = np.random.default_rng(seed)
  shape = (cfg.train.batch_size, cfg.data.seq_len)
  return {"tokens": rng.integers(4, cfg.model.vocab_size, shape).astype(np.int32),
          "segment_ids": np.ones(shape, np.int32),
          "positions": np.broadcast_to(np.arange(shape[1], dtype=np.int32), shape).copy()}
