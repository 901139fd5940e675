"""Model FLOPs per train step, the machine's measured matmul peak, and memory: MFU's inputs."""

import functools
import time

import jax
import jax.numpy as jnp
import numpy as np

from research import objectives
from research.models import HEADS, MODELS


def _length(field) -> int:
  return (field.shape if hasattr(field, "shape") else tuple(field))[1]


def step_flops(cfg, batch_shapes: dict, heads: dict | None = None) -> float:
  """Model FLOPs of one training step: the numerator of MFU (PaLM, appendix B).

  `batch_shapes` maps batch fields to arrays, ShapeDtypeStructs or shapes; only
  their lengths (axis 1) are read, and the rows are `cfg.train.batch_size`. The
  backbone's FLOPs come from its registry entry (`Architecture.flops`), once per
  step whatever the number of objectives, the heads' from research.models.HEADS;
  training is three times the forward (the backward computes two matmuls per
  forward one). Recomputation (model.remat, chunked_loss) and elementwise work
  are not model FLOPs. `heads` are the network's, name -> (kind, outputs)
  (default: the objectives' heads, task heads without labels).
  """
  length, target, vocab = _length(batch_shapes["tokens"]), 0, False
  for name in objectives.active(cfg.objectives):
    objective = objectives.OBJECTIVES[name]  # it says what it runs beside the backbone
    if objective.decoder_field:
      target = max(target, _length(batch_shapes[objective.decoder_field]))
    vocab = vocab or objective.vocab_logits
  m = cfg.model
  forward = MODELS[m.arch].flops(m, length=length, target_length=target,
                                 vocab_positions=(target or length) if vocab else 0)
  heads = objectives.heads(cfg.objectives) if heads is None else heads
  for kind, outputs in heads.values():
    forward += HEADS[kind].flops(m.width, outputs, length)
  return 3.0 * cfg.train.batch_size * forward


def peak_flops(cfg) -> float:
  """MFU's denominator: `train.peak_flops`, else the measured matmul peak of `model.dtype`."""
  return cfg.train.peak_flops or matmul_peak_flops(cfg.model.dtype)


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


def synthetic_batch(cfg, seed: int = 0, num_labels: int = 2) -> dict:
  """A global batch of random examples in the config's shape, one example per row.

  Holds every field the active objectives read: tokens, segments and positions of
  `data.seq_len`, decoder fields of `data.target_len`, labels in range(num_labels).
  A decoder's seq2seq row (prefix_lm) holds both: `data.seq_len + data.target_len`
  tokens, the last `data.target_len` of them the target.
  """
  rng = np.random.default_rng(seed)
  fields = {"tokens", "segment_ids", "positions"}
  for name in objectives.active(cfg.objectives):
    fields.update(objectives.OBJECTIVES[name].fields)
  rows, length, target = cfg.train.batch_size, cfg.data.seq_len, cfg.data.target_len
  if "target_mask" in fields:
    length += target
  ids = lambda n: rng.integers(4, cfg.model.vocab_size, (rows, n)).astype(np.int32)
  ones = lambda n: np.ones((rows, n), np.int32)
  labels = lambda n: rng.integers(0, n, (rows,)).astype(np.int32)
  make = {"tokens": lambda: ids(length), "segment_ids": lambda: ones(length),
          "positions": lambda: np.broadcast_to(np.arange(length, dtype=np.int32),
                                               (rows, length)).copy(),
          "token_type_ids": lambda: (np.arange(length) >= length // 2).astype(np.int32)
                                    [None].repeat(rows, 0),
          "label": lambda: labels(num_labels), "nsp_label": lambda: labels(2),
          "start_position": lambda: labels(length), "end_position": lambda: labels(length),
          "decoder_tokens": lambda: ids(target), "decoder_targets": lambda: ids(target),
          "decoder_segment_ids": lambda: ones(target),
          "target_mask": lambda: (np.arange(length) >= length - target).astype(np.int32)
                                 [None].repeat(rows, 0)}
  unknown = fields - set(make)
  if unknown:
    raise ValueError(f"synthetic_batch cannot make batch fields {sorted(unknown)}")
  return {name: make[name]() for name in sorted(fields)}


def roofline(figures: dict, model_flops: float, tokens: int, hbm_bytes_per_s: float) -> dict:
  """A lower bound on the step time, and the MFU and tokens/s it allows.

  `figures` holds one device's compiled `flops`, `bytes_accessed` and `peak_flops`;
  `model_flops` is its share of step_flops. The step takes at least its
  FLOPs at peak and its HBM traffic at full bandwidth (communication and imperfect
  overlap only add to it). XLA's cost analysis counts a while loop's body once
  (model.scan_layers, train.microbatches, recurrences), so the FLOPs are at least
  the model's.
  """
  compute_s = max(figures["flops"], model_flops) / figures["peak_flops"]
  memory_s = figures["bytes_accessed"] / hbm_bytes_per_s
  step_s = max(compute_s, memory_s)
  return {"compute_time_s": compute_s, "memory_time_s": memory_s, "model_flops": model_flops,
          "step_time_s": step_s, "mfu": model_flops / (step_s * figures["peak_flops"]),
          "tokens_per_s": tokens / step_s}
