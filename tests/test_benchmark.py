"""The benchmark script runs end to end (one step; timings are not checked), and its
PyTorch references are the Trellis models they stand beside: same size, same function."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from conftest import REPO

LSTM, CNN = "configs/pretrain/lstm_clm.py", "configs/pretrain/cnn_clm.py"


def run_benchmark(tmp_path, *args):
  out, table = tmp_path / "bench" / "bench.json", tmp_path / "bench" / "bench.md"  # made
  result = subprocess.run(
      [sys.executable, "-m", "experiments.benchmark", "--steps=1", "--repeats=1",
       f"--out={out}", f"--markdown={table}", *args],
      cwd=REPO, capture_output=True, text=True, timeout=300,
      env=dict(os.environ, TRELLIS_CPU_DEVICES="1", XLA_FLAGS=""))
  assert result.returncode == 0, result.stderr[-3000:]
  return json.load(open(out)), table.read_text(), result.stdout


def test_benchmark_writes_json_and_markdown(tmp_path):
  rows, table, _ = run_benchmark(
      tmp_path, "--config=configs/pretrain/gpt_clm.py:tiny", "--dtypes=float32",
      "--references=jax", "--set=train.batch_size=8")
  assert [(r["impl"], r["dtype"]) for r in rows] == [("trellis", "float32"), ("jax", "float32")]
  for r in rows:
    assert r["tokens_per_s"] > 0 and 0 < r["mfu"] < 1 and r["memory_bytes"] > 0
    assert r["num_params"] == rows[0]["num_params"] and r["batch_size"] == 8
    # The train rows' formula (research/throughput.step_flops), for every implementation.
    assert r["model_flops_per_step"] == model_flops("configs/pretrain/gpt_clm.py:tiny",
                                                    **{"train.batch_size": 8})
    assert r["mfu"] == pytest.approx(
        r["model_flops_per_step"] / r["step_time_s"] / r["matmul_peak_flops"])
  assert rows[1]["trellis_ratio"] > 0
  assert table.count("\n") == 4  # header, rule, two rows


def test_by_default_the_benchmark_writes_under_runs():
  """The README's command wrote bench.json and bench.md into the repository root."""
  from absl import flags

  from experiments import benchmark  # noqa: F401  (defines the flags)
  for name in ("out", "markdown"):
    assert flags.FLAGS[name].default.startswith("runs/bench/"), name


def config_args(overrides: dict) -> list[str]:
  """{dotted: value} as the --config.dotted=value overrides of a command line."""
  return [f"--config.{key}={value}" for key, value in overrides.items()]


def model_flops(spec: str, **overrides) -> float:
  import jax
  from experiments import benchmark
  from research import throughput
  from research.workdir import resolve
  cfg = resolve(benchmark.load(spec, config_args(overrides)), jax.device_count())
  return throughput.step_flops(cfg, throughput.synthetic_batch(cfg))


def test_set_is_a_config_override():
  """--set=a.b=V is --config.a.b=V, parsed as every entry point parses it; no preset: small."""
  from experiments import benchmark
  from research import presets
  overrides = benchmark.set_overrides(["train.batch_size=8", "model.tie_embeddings=false"])
  cfg = benchmark.load("configs/pretrain/gpt_clm.py", overrides)
  assert cfg.to_dict() == presets.load("configs/pretrain/gpt_clm.py:small", [
      "--config.train.batch_size=8", "--config.model.tie_embeddings=false"]).to_dict()
  assert cfg.train.batch_size == 8 and cfg.model.tie_embeddings is False


def model_config(spec: str, **overrides):
  import jax
  from experiments import benchmark
  from research.workdir import resolve
  return resolve(benchmark.load(spec, config_args(overrides)), jax.device_count()).model


def trellis_model(m):
  from flax import nnx
  from research.models import MODELS
  return MODELS[m.arch](m, rngs=nnx.Rngs(0))


def torch_layout_params(m) -> int:
  """The parameters of experiments/reference/{lstm,cnn}_torch.py's model for config `m`,
  from the documented shapes of nn.LSTM/nn.GRU (weight_ih [G*H, in], weight_hh [G*H, H],
  bias_ih, bias_hh [G*H]), nn.Conv1d (weight [out, in, k], bias [out]) and nn.Linear."""
  width, hidden = m.width, m.rnn_hidden or m.width
  norm = width * (1 if m.norm == "rmsnorm" else 2)
  if m.arch == "cnn":
    layer = norm + m.kernel_size * width * 2 * width + 2 * width
  else:
    gates = {"lstm": 4, "gru": 3}[m.arch]
    layer = norm + gates * hidden * (width + hidden + 2)
    layer += (hidden * width + width) if hidden != width else 0
  head = 0 if m.tie_embeddings else width * m.vocab_size
  return m.vocab_size * width + m.num_layers * layer + norm + head


# (config, overrides, largest |reference / Trellis - 1|): the small presets the benchmark
# times, and the options the references follow (state projection, LayerNorm, untied head).
SIZES = [(f"{LSTM}:small", {}, 0.01), (f"{LSTM}:gru_small", {}, 0.0), (f"{CNN}:small", {}, 0.0),
         (f"{LSTM}:tiny", {"model.rnn_hidden": 96, "model.norm": "layernorm",
                           "model.tie_embeddings": False}, 0.01),
         (f"{CNN}:tiny", {"model.norm": "layernorm", "model.tie_embeddings": False}, 0.0)]


@pytest.mark.parametrize("spec,overrides,tolerance", SIZES)
def test_reference_sizes_match_trellis(spec, overrides, tolerance):
  """No PyTorch needed: the reference layout's count against Trellis' own."""
  import jax
  from flax import nnx
  m = model_config(spec, **overrides)
  trellis = sum(x.size for x in jax.tree.leaves(
      nnx.state(nnx.eval_shape(lambda: trellis_model(m)), nnx.Param)))
  reference = torch_layout_params(m)
  assert abs(reference / trellis - 1) <= tolerance, (spec, reference, trellis)
  if m.arch == "lstm":  # nn.LSTM's second bias vector is the whole difference
    assert reference - trellis == m.num_layers * 4 * (m.rnn_hidden or m.width)


def test_references_are_chosen_per_family_and_failures_get_a_row(monkeypatch):
  """No PyTorch needed: which references each family gets, and a failed one's row."""
  from experiments import benchmark
  everything = ["jax", "torch", "torch_compile"]
  assert benchmark.references_for(model_config("configs/pretrain/gpt_clm.py:tiny"),
                                  everything) == everything
  for spec in (f"{LSTM}:tiny", f"{LSTM}:gru_tiny", f"{CNN}:tiny"):
    assert benchmark.references_for(model_config(spec), everything) == ["torch", "torch_compile"]
  assert benchmark.references_for(model_config("configs/pretrain/bilstm_mlm.py:tiny"),
                                  everything) == []  # encoders have none

  def reference(cfg, tokens, compile_model):  # stands in for PyTorch; its compiler fails
    if compile_model:
      raise RuntimeError("BackendCompilerFailed: no | compiler\nmore")
    return benchmark.Candidate("torch", cfg.model.dtype, lambda n: None, 0.1, num_params=7,
                               note="a caveat")

  monkeypatch.setattr(benchmark, "torch_reference", reference)
  monkeypatch.setattr(benchmark, "trellis_candidate", lambda cfg, batch: (
      benchmark.Candidate("trellis", cfg.model.dtype, lambda n: None, 1.0), 5))
  candidates, facts = benchmark.candidates_for(
      f"{LSTM}:tiny", ["--config.train.peak_flops=1e11"], ["float32"], everything)
  benchmark.time_interleaved(candidates, 1, 1)
  rows = benchmark.rows_for("x.py:tiny", candidates, facts)
  assert [(r["impl"], r.get("reference_num_params")) for r in rows] == [
      ("trellis", None), ("torch", 7), ("torch_compile", None)]
  assert rows[2] == {"config": "x.py:tiny", "arch": "lstm/decoder", "impl": "torch_compile",
                     "dtype": "float32",
                     "reference_failed": "RuntimeError: BackendCompilerFailed: no | compiler"}
  lines = benchmark.markdown(rows).splitlines()
  assert lines[3].startswith("| x.py:tiny | torch | float32 | 0.00M |")
  assert lines[3].endswith("x (a caveat) |") and rows[1]["note"] == "a caveat"
  assert lines[4] == ("| x.py:tiny | torch_compile | float32 | | | | | | failed: RuntimeError: "
                      "BackendCompilerFailed: no / compiler |")


def copy_into_torch(model, reference, m):
  """Trellis' parameters, in PyTorch's layouts, loaded into the reference."""
  import torch
  t = lambda a: torch.from_numpy(np.array(a[...], np.float32))
  with torch.no_grad():
    reference.embed.weight.copy_(t(model.embed.embedding))
    reference.norm.weight.copy_(t(model.final_norm.scale))
    for block, ref in zip(model.blocks, reference.blocks):
      ref.norm.weight.copy_(t(block.norm.scale))
      if m.arch == "cnn":  # [tap, in, (value, gate), out] -> [(value, gate) * out, in, tap]
        k, d = block.kernel.shape[:2]
        ref.conv.weight.copy_(t(block.kernel).reshape(k, d, -1).permute(2, 1, 0))
        ref.conv.bias.copy_(t(block.bias).flatten())
        continue
      cell = block.forward  # kernels [in, gate, hidden] -> [gate * hidden, in]
      ref.rnn.weight_ih_l0.copy_(t(cell.input_kernel).flatten(1).T)
      ref.rnn.weight_hh_l0.copy_(t(cell.recurrent_kernel).flatten(1).T)
      ref.rnn.bias_ih_l0.copy_(t(cell.bias).flatten())
      ref.rnn.bias_hh_l0.copy_(t(cell.recurrent_bias).flatten() if m.arch == "gru" else 0.0)


@pytest.mark.parametrize("spec", [f"{LSTM}:tiny", f"{LSTM}:gru_tiny", f"{CNN}:tiny"])
def test_torch_reference_computes_the_trellis_model(spec):
  """With Trellis' weights, the PyTorch reference gives Trellis' loss (float32)."""
  torch = pytest.importorskip("torch", reason="the PyTorch references need the bench extra")
  import optax
  from experiments import benchmark
  m = model_config(spec)
  model = trellis_model(m)
  module, reference = benchmark.torch_model(m)
  assert sum(p.numel() for p in reference.parameters()) == torch_layout_params(m)
  copy_into_torch(model, reference, m)
  tokens = np.random.default_rng(0).integers(4, m.vocab_size, (2, 24)).astype(np.int32)
  hidden = model(tokens)
  expected = optax.softmax_cross_entropy_with_integer_labels(
      model.logits(hidden[:, :-1]), tokens[:, 1:]).mean()
  with torch.no_grad():
    loss = reference(torch.from_numpy(tokens).long())
  np.testing.assert_allclose(loss.item(), float(expected), rtol=1e-5)
  assert module.make_step  # what the benchmark trains it with


@pytest.mark.parametrize("spec", [f"{LSTM}:tiny", f"{CNN}:tiny"])
def test_torch_reference_trains_in_bfloat16(spec):
  """The benchmark's PyTorch candidate at tiny size: autocast steps that lower the loss."""
  pytest.importorskip("torch", reason="the PyTorch references need the bench extra")
  from experiments import benchmark
  from research.workdir import resolve
  cfg = resolve(benchmark.load(spec, ["--config.model.dtype=bfloat16"]), 1)
  m = cfg.model
  tokens = np.tile(np.arange(4, 20, dtype=np.int32), (4, 1))  # a pattern to learn
  candidate = benchmark.torch_reference(cfg, tokens, compile_model=False)
  assert (candidate.name, candidate.dtype) == ("torch", "bfloat16")
  assert candidate.num_params == torch_layout_params(m)
  losses = [loss.item() for loss in candidate.run(3)]
  assert np.isfinite(losses).all() and losses[-1] < losses[0]
