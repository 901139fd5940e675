"""Will this config compile and fit on that TPU slice? Ask before spending a pod-hour.

  python -m experiments.compile_check --config=configs/pretrain/gpt_clm.py:base \\
      --topology=v5p:4x4x4 [--config.mesh.fsdp=8] [--out=check.json]

Compiles the real train step (`Trainer.lower`: the function, shardings and
donation the trainer jits) for a TPU topology described by
`jax.experimental.topologies`, on this CPU host, with the TPU compiler from
the `libtpu` package (`pip install -e ".[tpu]"`). Prints, per chip: argument,
output and temporary bytes (the compiled program's memory analysis), FLOPs
per step (its cost analysis; the model's, research/throughput.step_flops, beside
it), a roofline estimate of the step time and the MFU it would give, and
whether the program fits in the chip's HBM.

Exit status: 0 fits; 1 does not fit (or the TPU compiler ran out of HBM);
2 a user error (bad topology or config), one line `error: ...`.
"""

import json
import os
import re
import sys
import time

os.environ.setdefault("JAX_PLATFORMS", "cpu")  # the host runs nothing on a TPU

from absl import flags  # noqa: E402

from experiments import cli  # noqa: E402
from research import presets  # noqa: E402
from research.errors import ConfigError, first_line  # noqa: E402

_CONFIG = flags.DEFINE_string("config", None, "config file[:preset]; override fields with "
                              "--config.a.b=VALUE")
_TOPOLOGY = flags.DEFINE_string("topology", None, "TPU generation and chip grid, e.g. "
                                "v5e:4x4 or v5p:4x4x4")
_OUT = flags.DEFINE_string("out", "", "also write the figures as JSON here")
flags.mark_flags_as_required(["config", "topology"])

GIB = 1024 ** 3
# Per chip: dense bf16 peak FLOP/s, HBM bytes, HBM bytes/s, from Google Cloud's
# system-architecture pages (cloud.google.com/tpu/docs/{v4,v5e,v5p,v6e}).
CHIPS = {
    "v4": {"peak_flops": 275e12, "hbm_bytes": 32 * GIB, "hbm_bytes_per_s": 1200e9},
    "v5e": {"peak_flops": 197e12, "hbm_bytes": 16 * GIB, "hbm_bytes_per_s": 819e9},
    "v5p": {"peak_flops": 459e12, "hbm_bytes": 95 * GIB, "hbm_bytes_per_s": 2765e9},
    "v6e": {"peak_flops": 918e12, "hbm_bytes": 32 * GIB, "hbm_bytes_per_s": 1640e9},
}


def topology_devices(topology: str) -> tuple[str, list]:
  """(generation, devices) of a topology string such as "v5p:4x4x4".

  Raises:
    ConfigError: an unknown generation, a malformed grid, a grid the TPU
      runtime rejects, or no `libtpu` to describe it.
  """
  match = re.fullmatch(r"(v\w+):(\d+(?:x\d+){1,2})", topology)
  if not match or match.group(1) not in CHIPS:
    raise ConfigError(f"--topology={topology!r} is not GEN:GRID with GEN one of "
                      f"{', '.join(CHIPS)} (e.g. v5e:4x4, v5p:4x4x4)")
  try:
    import libtpu  # noqa: F401  (only to say clearly that it is missing)
  except ImportError:
    raise ConfigError("the TPU compiler is not installed: pip install -e '.[tpu]'") from None
  import jax
  from jax.experimental import topologies
  try:
    desc = topologies.get_topology_desc(platform="tpu", topology_name=topology)
  except (jax.errors.JaxRuntimeError, ValueError, RuntimeError) as e:
    message = first_line(e)
    raise ConfigError(f"--topology={topology!r}: {message}") from None
  return match.group(1), list(desc.devices)


def memory_and_cost(compiled) -> dict:
  """Per-device bytes and FLOPs of a compiled program."""
  mem = compiled.memory_analysis()
  cost = compiled.cost_analysis()
  cost = cost[0] if isinstance(cost, (list, tuple)) else cost
  # Donated state is both argument and output; aliased bytes are held once.
  total = (mem.argument_size_in_bytes + mem.output_size_in_bytes - mem.alias_size_in_bytes
           + mem.temp_size_in_bytes + mem.generated_code_size_in_bytes)
  return {"argument_bytes": mem.argument_size_in_bytes, "output_bytes": mem.output_size_in_bytes,
          "alias_bytes": mem.alias_size_in_bytes, "temp_bytes": mem.temp_size_in_bytes,
          "code_bytes": mem.generated_code_size_in_bytes, "total_bytes": total,
          "flops": float(cost.get("flops", 0.0)),
          "bytes_accessed": float(cost.get("bytes accessed", 0.0))}


def check(cfg, topology: str) -> dict:
  """Compiles the train step of `cfg` (not yet resolved) for `topology`; returns the figures."""
  import jax
  from research import throughput, train, workdir

  generation, devices = topology_devices(topology)
  chip = CHIPS[generation]
  # Chips with two TensorCores may show up as two devices (v4 without megacore).
  per_chip = len(devices) // len({tuple(d.coords) for d in devices})
  cfg = workdir.resolve(cfg, len(devices))
  trainer = train.Trainer(cfg, devices=devices)
  shapes = {name: jax.ShapeDtypeStruct(a.shape, a.dtype)
            for name, a in throughput.synthetic_batch(cfg).items()}
  start = time.perf_counter()
  result = {"topology": topology, "devices": len(devices), "devices_per_chip": per_chip,
            "mesh": dict(trainer.mesh.shape), "num_params": trainer.num_params,
            "hbm_bytes": chip["hbm_bytes"] / per_chip, "peak_flops": chip["peak_flops"] / per_chip}
  try:
    compiled = trainer.lower(shapes).compile()
  except jax.errors.JaxRuntimeError as e:
    if "RESOURCE_EXHAUSTED" not in str(e) and "out of memory" not in str(e).lower():
      raise
    return dict(result, fits=False, error=first_line(e),
                compile_s=time.perf_counter() - start)
  result.update(memory_and_cost(compiled), compile_s=time.perf_counter() - start)
  model_flops = throughput.step_flops(cfg, shapes, trainer.heads) / len(devices)
  result.update(throughput.roofline(result, model_flops,
                                   cfg.train.batch_size * cfg.data.seq_len,
                                   chip["hbm_bytes_per_s"] / per_chip),
                fits=result["total_bytes"] <= result["hbm_bytes"])
  return result


def report(r: dict) -> str:
  """The figures as a short human-readable table."""
  gb = lambda b: f"{b / GIB:8.2f} GiB" if b >= GIB / 10 else f"{b / 1024**2:8.2f} MiB"
  lines = [f"{r['topology']}: {r['devices']} devices, mesh {r['mesh']}, "
           f"{r['num_params']:,} params, compiled in {r['compile_s']:.1f}s"]
  if "error" in r:
    return "\n".join(lines + [f"DOES NOT FIT: the TPU compiler ran out of memory: {r['error']}"])
  lines += [f"per device:  arguments {gb(r['argument_bytes'])}",
            f"             outputs   {gb(r['output_bytes'])}  ({gb(r['alias_bytes'])} "
            "donated, shared with arguments)",
            f"             temporary {gb(r['temp_bytes'])}",
            f"             total     {gb(r['total_bytes'])}  of {gb(r['hbm_bytes'])} HBM",
            f"FLOPs per step per device: {r['flops']:.3e} (model: {r['model_flops']:.3e})",
            f"estimated step time >= {r['step_time_s'] * 1e3:.2f} ms (roofline: "
            f"{r['compute_time_s'] * 1e3:.2f} ms of FLOPs at peak, {r['memory_time_s'] * 1e3:.2f} "
            "ms of HBM traffic)",
            f"so MFU <= {r['mfu']:.1%} and <= {r['tokens_per_s']:,.0f} tokens/s for the slice"]
  if r["fits"]:
    lines.append("fits in HBM")
  else:
    lines.append(f"DOES NOT FIT: needs {gb(r['total_bytes']).strip()} per device, the chip has "
                 f"{gb(r['hbm_bytes']).strip()}; raise mesh.fsdp, lower train.batch_size or "
                 "use train.microbatches")
  return "\n".join(lines)


def main(argv, overrides):
  cfg = presets.load(_CONFIG.value, overrides)
  result = check(cfg, _TOPOLOGY.value)
  print(report(result))
  if _OUT.value:
    with open(_OUT.value, "w") as f:
      json.dump(result, f, indent=2)
  sys.exit(0 if result["fits"] else 1)


if __name__ == "__main__":
  cli.run(main, distributed=False)
