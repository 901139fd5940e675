"""The benchmark script runs end to end on the tiny GPT (one step; timings are not checked)."""

import json
import os
import subprocess
import sys

from conftest import REPO


def test_benchmark_writes_json_and_markdown(tmp_path):
  out, table = tmp_path / "bench.json", tmp_path / "bench.md"
  result = subprocess.run(
      [sys.executable, "-m", "experiments.benchmark", "--config=configs/pretrain/gpt_clm.py:tiny",
       "--steps=1", "--repeats=1", "--dtypes=float32", "--references=jax",
       "--set=train.batch_size=8", f"--out={out}", f"--markdown={table}"],
      cwd=REPO, capture_output=True, text=True, timeout=300,
      env=dict(os.environ, TRELLIS_CPU_DEVICES="1", XLA_FLAGS=""))
  assert result.returncode == 0, result.stderr[-3000:]
  rows = json.load(open(out))
  assert [(r["impl"], r["dtype"]) for r in rows] == [("trellis", "float32"), ("jax", "float32")]
  for r in rows:
    assert r["tokens_per_s"] > 0 and 0 < r["mfu"] < 1 and r["memory_bytes"] > 0
    assert r["num_params"] == rows[0]["num_params"] and r["batch_size"] == 8
  assert rows[1]["trellis_ratio"] > 0
  assert table.read_text().count("\n") == 4  # header, rule, two rows
