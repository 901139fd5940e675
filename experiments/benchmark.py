"""Training throughput, beside hand-written JAX and PyTorch references, in one run.

  python -m experiments.benchmark [--config=configs/pretrain/gpt_clm.py:small ...] \\
      [--dtypes=float32,bfloat16] [--references=jax,torch,torch_compile] \\
      [--steps=5] [--repeats=3] [--config.train.batch_size=32] \\
      [--out=runs/bench/bench.json] [--markdown=runs/bench/bench.md]

The JSON rows and the markdown table go under runs/ (git-ignored) by default.
`--config` may be repeated; by default the `small` preset of every
configs/pretrain/*.py (a file without `:PRESET` means its `small`).
`--config.a.b=V` (or `--set=a.b=V`) changes every config alike, parsed as
`experiments.pretrain` parses it. Each config's real train step (the one
`experiments.pretrain` runs, same shardings) is timed on synthetic batches,
once per compute dtype (`model.dtype`). Beside a decoder of a family with
references, in the same run, with the same batch, size and precision:
  jax            GPT only: experiments/reference/gpt_jax.py, plain jit + optax, no Trellis
  torch          the PyTorch model of the same architecture and size, eager
                 (`pip install -e ".[bench]"`): experiments/reference/gpt_torch.py
                 (arch transformer), lstm_torch.py (lstm, gru: on nn.LSTM / nn.GRU),
                 cnn_torch.py (cnn: gated dilated nn.Conv1d)
  torch_compile  the same through torch.compile
bfloat16 runs the PyTorch models under autocast. A reference that fails (e.g.
torch.compile without a C++ toolchain) gets a row saying why; PyTorch missing
only skips them. Candidates are timed interleaved (A B C, A B C, ...),
`--repeats` times, and medians reported, since these machines drift run to
run. Ratios are Trellis' tokens/s over the reference's. MFU is the model's
FLOPs per step (research/throughput.step_flops, the formula train rows use)
per second, against the matmul peak of that dtype measured in the same run
(or `--config.train.peak_flops`).
"""

import glob
import json
import os
import time

from absl import flags

from experiments import cli
from research import presets
from research.errors import ConfigError, first_line

_CONFIGS = flags.DEFINE_multi_string("config", None, "config file:preset (repeatable; default: "
                                     "the small preset of every configs/pretrain/*.py)")
_DTYPES = flags.DEFINE_list("dtypes", ["float32", "bfloat16"], "compute dtypes to time")
_REFERENCES = flags.DEFINE_list("references", ["jax", "torch", "torch_compile"],
                                "references timed beside decoders of the families that have "
                                "them (GPT, LSTM/GRU, CNN; jax: GPT only) ('' for none)")
_STEPS = flags.DEFINE_integer("steps", 5, "timed steps per repeat (after compile and warmup)")
_REPEATS = flags.DEFINE_integer("repeats", 3, "interleaved repeats; medians are reported")
_OUT = flags.DEFINE_string("out", "runs/bench/bench.json",
                           "where to write the JSON rows ('' = stdout only)")
_MARKDOWN = flags.DEFINE_string("markdown", "runs/bench/bench.md",
                                "where to write the markdown table ('' = nowhere)")
_SETS = flags.DEFINE_multi_string("set", [], "config change for every config, the same as "
                                  "--config.a.b=V: --set=train.batch_size=32 (repeatable)")


def load(spec: str, overrides: list[str]):
  """The config of "file.py[:preset]" (default preset: small) with "--config.a.b=V" overrides."""
  path, _, preset = spec.partition(":")
  return presets.load(f"{path}:{preset or 'small'}", overrides)


class Candidate:
  """One thing to time: `run(n)` takes n train steps and waits for them."""

  def __init__(self, name: str, dtype: str, run, compile_s: float, memory_bytes=None,
               num_params=None, note=""):
    self.name, self.dtype, self.run = name, dtype, run
    self.compile_s, self.memory_bytes, self.times = compile_s, memory_bytes, []
    self.num_params = num_params  # a PyTorch reference's own count (None: Trellis')
    self.note = note  # a caveat the row carries (e.g. what torch.compile left eager)


class Failed:
  """A reference that could not run: a row saying why, never timed."""

  def __init__(self, name: str, dtype: str, error: str):
    self.name, self.dtype, self.error = name, dtype, error


def _compiled_bytes(compiled) -> int:
  mem = compiled.memory_analysis()
  return int(mem.argument_size_in_bytes + mem.output_size_in_bytes - mem.alias_size_in_bytes
             + mem.temp_size_in_bytes)


def trellis_candidate(cfg, batch) -> tuple[Candidate, int]:
  """The real Trellis step of a resolved config, and its parameter count."""
  import jax
  from research import train
  trainer = train.Trainer(cfg)
  box = {"state": trainer.init()}
  compile_s = trainer.compile(box["state"], batch)
  box["state"], _ = trainer.step(box["state"], batch)  # warmup

  def run(n):
    for _ in range(n):
      box["state"], metrics = trainer.step(box["state"], batch)
    jax.block_until_ready((box["state"], metrics))

  run(1)
  return (Candidate("trellis", cfg.model.dtype, run, compile_s,
                    _compiled_bytes(trainer.compiled_step)), trainer.num_params)


def jax_reference(cfg, tokens) -> Candidate:
  """experiments/reference/gpt_jax.py at the config's size, batch and dtype."""
  import jax
  import jax.numpy as jnp
  import optax
  from experiments.reference import gpt_jax
  m = cfg.model
  params = gpt_jax.init(jax.random.PRNGKey(0), vocab=m.vocab_size, width=m.width,
                        layers=m.num_layers, mlp=m.mlp_dim or 4 * m.width)
  tx = optax.chain(optax.clip_by_global_norm(1.0), optax.adamw(1e-3, b1=0.9, b2=0.95))
  step = gpt_jax.make_step(tx, m.num_heads, jnp.dtype(m.dtype))
  box = {"state": (params, tx.init(params))}
  start = time.perf_counter()
  compiled = step.lower(*box["state"], tokens).compile()
  compile_s = time.perf_counter() - start

  def run(n):
    for _ in range(n):
      *state, loss = compiled(*box["state"], tokens)
      box["state"] = tuple(state)
    jax.block_until_ready(loss)

  run(2)
  return Candidate("jax", m.dtype, run, compile_s, _compiled_bytes(compiled))


# model.arch -> the module under experiments/reference/ holding its PyTorch model.
TORCH_REFERENCES = {"transformer": "gpt_torch", "lstm": "lstm_torch", "gru": "lstm_torch",
                    "cnn": "cnn_torch"}


def references_for(model_cfg, references) -> list[str]:
  """Which of `references` exist for a model: decoders of the families above (jax: GPT)."""
  if model_cfg.kind != "decoder" or model_cfg.arch not in TORCH_REFERENCES:
    return []
  return [r for r in references
          if r in ("torch", "torch_compile") or (r == "jax" and model_cfg.arch == "transformer")]


def torch_model(model_cfg):
  """The PyTorch model of a Trellis `model` config (float32 params, seeded)."""
  import importlib
  import torch
  m = model_cfg
  module = importlib.import_module(f"experiments.reference.{TORCH_REFERENCES[m.arch]}")
  torch.manual_seed(0)
  if m.arch == "transformer":
    return module, module.GPT(m.vocab_size, m.width, m.num_layers, m.num_heads,
                              m.mlp_dim or 4 * m.width)
  return module, module.from_config(m)


def torch_reference(cfg, tokens, compile_model: bool) -> Candidate:
  """The config's PyTorch reference, eager or torch.compile'd (with its parameter count)."""
  import torch
  m = cfg.model
  module, model = torch_model(m)
  step = module.make_step(model, getattr(torch, m.dtype), compile_model)
  batch = torch.from_numpy(tokens).long()
  start = time.perf_counter()
  step(batch)  # compiles, when compiling
  compile_s = time.perf_counter() - start
  run = lambda n: [step(batch) for _ in range(n)]
  run(1)
  return Candidate("torch_compile" if compile_model else "torch", m.dtype, run, compile_s,
                   num_params=sum(p.numel() for p in model.parameters()),
                   note=getattr(module, "COMPILE_NOTE", "") if compile_model else "")


def candidates_for(cfg_spec: str, overrides: list[str], dtypes,
                   references) -> tuple[list, dict]:
  """Every candidate of one config (Trellis per dtype, the references of its family beside
  it: see references_for), and facts."""
  import jax
  from research import throughput, workdir
  out, facts = [], {}
  for dtype in dtypes:
    cfg = load(cfg_spec, [*overrides, f"{presets.PREFIX}model.dtype={dtype}"])
    cfg = workdir.resolve(cfg, jax.device_count())
    batch = throughput.synthetic_batch(cfg)
    candidate, num_params = trellis_candidate(cfg, batch)
    out.append(candidate)
    facts = {"arch": f"{cfg.model.arch}/{cfg.model.kind}", "num_params": num_params,
             "batch_size": cfg.train.batch_size, "seq_len": cfg.data.seq_len,
             "flops_per_step": throughput.step_flops(cfg, batch),
             "peak_flops": cfg.train.peak_flops}
    wanted = references_for(cfg.model, references)
    if "jax" in wanted:
      out.append(jax_reference(cfg, batch["tokens"]))
    for name in ("torch", "torch_compile"):
      if name not in wanted:
        continue
      try:
        candidate = torch_reference(cfg, batch["tokens"], name == "torch_compile")
      except ImportError:
        print(f"{name}: PyTorch is not installed (pip install -e '.[bench]'); skipped")
        continue
      except Exception as e:  # torch.compile needs a C++ toolchain, absent on some hosts
        message = type(e).__name__ + (f": {str(e).strip().splitlines()[0][:200]}"
                                      if str(e).strip() else "")
        print(f"{name} ({dtype}) failed, not timed: {message}", flush=True)
        out.append(Failed(name, dtype, message))
        continue
      out.append(candidate)
      if name == "torch":
        print(f"{name} ({dtype}): {candidate.num_params:,} params, Trellis {num_params:,} "
              f"({candidate.num_params / num_params - 1:+.2%})", flush=True)
  return out, facts


def time_interleaved(candidates: list, steps: int, repeats: int) -> None:
  for _ in range(repeats):
    for c in candidates:
      if isinstance(c, Failed):
        continue
      start = time.perf_counter()
      c.run(steps)
      c.times.append((time.perf_counter() - start) / steps)


def rows_for(spec: str, candidates: list, facts: dict) -> list[dict]:
  import numpy as np
  from research import throughput
  tokens = facts["batch_size"] * facts["seq_len"]
  trellis = {c.dtype: c for c in candidates if c.name == "trellis"}
  rows = []
  for c in candidates:
    if isinstance(c, Failed):
      rows.append({"config": spec, "arch": facts["arch"], "impl": c.name, "dtype": c.dtype,
                   "reference_failed": c.error})
      continue
    step_s = float(np.median(c.times))
    peak = facts["peak_flops"] or throughput.matmul_peak_flops(c.dtype)
    tokens_per_s = tokens / step_s
    row = {"config": spec, "arch": facts["arch"], "impl": c.name, "dtype": c.dtype,
           "num_params": facts["num_params"], "batch_size": facts["batch_size"],
           "seq_len": facts["seq_len"], "step_time_s": step_s, "step_times_s": c.times,
           "tokens_per_s": tokens_per_s, "model_flops_per_step": facts["flops_per_step"],
           "mfu": facts["flops_per_step"] / step_s / peak, "matmul_peak_flops": peak,
           "compile_s": c.compile_s, "memory_bytes": c.memory_bytes}
    if c.num_params is not None:
      row["reference_num_params"] = c.num_params
    if c.note:
      row["note"] = c.note
    if c.name != "trellis":
      row["trellis_ratio"] = step_s / float(np.median(trellis[c.dtype].times))
    rows.append(row)
  return rows


def _markdown_row(r: dict) -> str:
  head = f"| {r['config']} | {r['impl']} | {r['dtype']} |"
  if "reference_failed" in r:
    return f"{head} | | | | | failed: {r['reference_failed'].replace('|', '/')} |\n"
  params = r.get("reference_num_params", r["num_params"])
  ratio = f" {r['trellis_ratio']:.2f}x " if "trellis_ratio" in r else " "
  if "note" in r:
    ratio += f"({r['note']}) "
  return (f"{head} {params / 1e6:.2f}M | {r['tokens_per_s']:,.0f} | "
          f"{r['step_time_s'] * 1e3:.1f} | {r['mfu']:.1%} | {r['compile_s']:.1f} |{ratio}|\n")


def markdown(rows: list[dict]) -> str:
  """The rows as a markdown table (configs that failed are left out; references that
  failed get a row saying why). params: each implementation's own count."""
  rows = [r for r in rows if "error" not in r]
  head = ("| config | impl | dtype | params | tokens/s | step ms | MFU | compile s | "
          "Trellis / this |\n|---|---|---|---:|---:|---:|---:|---:|---:|\n")
  return head + "".join(_markdown_row(r) for r in rows)


def default_configs() -> list[str]:
  return [f"{path}:small" for path in sorted(glob.glob("configs/pretrain/*.py"))
          if not os.path.basename(path).startswith("_")]


def set_overrides(items: list[str]) -> list[str]:
  """--set=a.b=V values as the --config.a.b=V overrides they stand for."""
  bad = next((item for item in items if "=" not in item), None)
  if bad is not None:
    raise ConfigError(f"--set={bad!r} is not a.b=VALUE")
  return [presets.PREFIX + item for item in items]


def main(argv, overrides):
  import gc
  overrides = set_overrides(_SETS.value) + overrides  # for every config alike
  rows = []
  for spec in _CONFIGS.value or default_configs():
    print(f"{spec}: compiling and warming up ...", flush=True)
    try:
      candidates, facts = candidates_for(spec, overrides, _DTYPES.value,
                                         [r for r in _REFERENCES.value if r])
    except Exception as e:  # one config that cannot run must not lose the others' figures
      message = first_line(e)
      print(f"{spec}: failed: {message}", flush=True)
      rows.append({"config": spec, "error": message})
      continue
    time_interleaved(candidates, _STEPS.value, _REPEATS.value)
    new = rows_for(spec, candidates, facts)
    print(markdown(new), flush=True)
    rows += new
    del candidates
    gc.collect()
  text = json.dumps(rows, indent=2)
  if _OUT.value:
    _write(_OUT.value, text + "\n")
  else:
    print(text)
  if _MARKDOWN.value:
    _write(_MARKDOWN.value, markdown(rows))
  written = [path for path in (_OUT.value, _MARKDOWN.value) if path]
  if written:
    print(f"wrote {' and '.join(written)}", flush=True)


def _write(path: str, text: str) -> None:
  """Writes `text` to `path`, its folder created if needed (runs/ is git-ignored)."""
  os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
  with open(path, "w") as f:
    f.write(text)


if __name__ == "__main__":
  cli.run(main)
