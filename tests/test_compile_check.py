"""Ahead-of-time compilation for a TPU topology on this CPU host (needs the `tpu` extra)."""

import importlib.util
import json
import os
import subprocess
import sys

import pytest

from conftest import REPO

needs_libtpu = pytest.mark.skipif(
    importlib.util.find_spec("libtpu") is None,
    reason="libtpu is not installed (pip install -e '.[tpu]'); it compiles for TPUs")


def _check(tmp_path, *args):
  out = tmp_path / "check.json"
  result = subprocess.run([sys.executable, "-m", "experiments.compile_check", *args,
                           f"--out={out}"], cwd=REPO, capture_output=True, text=True,
                          timeout=300, env=dict(os.environ, PYTHONUNBUFFERED="1"))
  return result, (json.load(open(out)) if out.exists() else None)


# TPU layouts pad the minor dimension of each array to 128 lanes: the tiny
# model's width of 64 pays about a quarter more, the small one's 256 nothing.
@needs_libtpu
@pytest.mark.parametrize("preset, fsdp, padding", [("tiny", 1, 1.35), ("small", 4, 1.1)])
def test_memory_matches_the_parameter_count(tmp_path, preset, fsdp, padding):
  result, r = _check(tmp_path, f"--config=configs/pretrain/gpt_clm.py:{preset}",
                     "--topology=v5e:2x2", f"--config.mesh.fsdp={fsdp}")
  assert result.returncode == 0, result.stderr[-3000:]
  assert r["devices"] == 4 and r["mesh"] == {"data": 4 // fsdp, "fsdp": fsdp, "tensor": 1}
  assert "fits in HBM" in result.stdout
  # The state is float32 params plus Adam's two moments, split over the fsdp
  # shards; a few replicated norm scales and the batch add a little.
  state_bytes = 3 * 4 * r["num_params"] / fsdp
  assert state_bytes <= r["argument_bytes"] <= padding * state_bytes
  assert r["alias_bytes"] >= state_bytes  # the donated state is updated in place
  assert r["flops"] == pytest.approx(r["model_flops"], rel=0.2)
  assert 0 < r["mfu"] <= 1


@needs_libtpu
def test_bad_topology_is_a_one_line_error(tmp_path):
  result, _ = _check(tmp_path, "--config=configs/pretrain/gpt_clm.py:tiny", "--topology=v5e:3x3")
  lines = [line for line in result.stderr.splitlines() if line.strip()]
  assert result.returncode == 2 and len(lines) == 1, result.stderr
  assert lines[0].startswith("error: --topology='v5e:3x3'")


def test_bad_config_is_a_one_line_error(tmp_path):
  """The config loads as every entry point loads it, before any TPU is described."""
  result, _ = _check(tmp_path, "--config=configs/pretrain/gpt_clm.py:tiny", "--topology=v5e:2x2",
                     "--config.mesh.fdsp=4")
  lines = [line for line in result.stderr.splitlines() if line.strip()]
  assert result.returncode == 2 and len(lines) == 1, result.stderr
  assert lines[0].startswith("error: --config.mesh.fdsp: ") and "nearest: mesh.fsdp" in lines[0]


def test_roofline_counts_at_least_the_model_flops():
  """XLA counts a scanned body once: 12 layers under model.scan_layers look like one.

  The compute time then comes from the model's FLOPs, and MFU cannot exceed 1.
  """
  from research import throughput
  figures = {"flops": 1e9, "bytes_accessed": 1e6, "peak_flops": 1e12}
  r = throughput.roofline(figures, 12e9, tokens=4096, hbm_bytes_per_s=1e12)
  assert r["compute_time_s"] == pytest.approx(12e-3) and r["step_time_s"] == r["compute_time_s"]
  assert r["mfu"] == pytest.approx(1.0) and r["tokens_per_s"] == pytest.approx(4096 / 12e-3)
  memory_bound = throughput.roofline(dict(figures, bytes_accessed=24e9), 12e9, 4096, 1e12)
  assert memory_bound["step_time_s"] == pytest.approx(24e-3)
  assert memory_bound["mfu"] == pytest.approx(0.5)
