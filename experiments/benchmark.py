"""Training throughput of a config: tokens/s, step time, MFU, compile time, memory.

  python -m experiments.benchmark --config=configs/pretrain/gpt_clm.py:small [--steps=10] [--out=bench.json]

Times the real train step (the one `experiments.pretrain` runs, same
shardings) on synthetic batches of the config's shape, so no data is read.
MFU is against the float32 matmul peak measured on this machine in the same
run (or `--config.train.peak_flops`). Prints a JSON object and writes it to --out.
"""

import json
import time

from absl import flags
from ml_collections import config_flags

from experiments import cli

_CONFIG = config_flags.DEFINE_config_file("config", None, "config file[:preset]",
                                          lock_config=True)
_STEPS = flags.DEFINE_integer("steps", 10, "timed steps per repeat (after compile and warmup)")
_REPEATS = flags.DEFINE_integer("repeats", 3, "timed repeats; the median is reported")
_OUT = flags.DEFINE_string("out", "", "where to write the JSON result ('' = stdout only)")
flags.mark_flags_as_required(["config"])


def benchmark(cfg, steps: int, repeats: int) -> dict:
  """Measures the train step of an already-resolved config."""
  import jax
  import numpy as np
  from research import throughput, train

  trainer = train.Trainer(cfg, "", None)
  state = trainer.init()
  batch = throughput.synthetic_batch(cfg)
  compile_s = trainer.compile(state, batch)
  state, _ = trainer.step(state, batch)  # warmup
  jax.block_until_ready(state)
  times = []
  for _ in range(repeats):
    start = time.perf_counter()
    for _ in range(steps):
      state, metrics = trainer.step(state, batch)
    jax.block_until_ready((state, metrics))
    times.append((time.perf_counter() - start) / steps)
  step_s = float(np.median(times))
  tokens_per_s = cfg.train.batch_size * cfg.data.seq_len / step_s
  peak = cfg.train.peak_flops or throughput.matmul_peak_flops()
  flops = throughput.flops_per_token(cfg, trainer.num_params) * tokens_per_s
  return {"config": f"{cfg.model.arch}/{cfg.model.kind}", "num_params": trainer.num_params,
          "batch_size": cfg.train.batch_size, "seq_len": cfg.data.seq_len,
          "dtype": cfg.model.dtype, "devices": jax.device_count(),
          "platform": jax.devices()[0].platform, "mesh": dict(trainer.mesh.shape),
          "step_time_s": step_s, "step_times_s": times, "tokens_per_s": tokens_per_s,
          "model_flops_per_s": flops, "peak_flops_per_s": peak, "mfu": flops / peak,
          "compile_s": compile_s, "peak_memory_bytes": throughput.peak_memory_bytes()}


def main(argv, overrides):
  import jax
  from research import train
  cfg = cli.load_config(_CONFIG, overrides)
  cfg = train.resolve(cfg, jax.device_count())
  result = benchmark(cfg, _STEPS.value, _REPEATS.value)
  text = json.dumps(result, indent=2)
  print(text)
  if _OUT.value:
    with open(_OUT.value, "w") as f:
      f.write(text + "\n")


if __name__ == "__main__":
  cli.run(main)
