"""The notebooks run top to bottom, headless, on tiny presets (nbclient, a python3 kernel).

The kernel is a subprocess started from this process's environment (conftest's
8 fake CPU devices and compilation cache) with the notebook folder as its
working directory, as Jupyter would start it; each notebook's runs go to tmp_path.
"""

import csv
import json
import os
import sys
import time
from pathlib import Path

import nbformat
import pytest
from jupyter_client import KernelManager
from jupyter_client.kernelspec import KernelSpecManager
from nbclient import NotebookClient

from conftest import REPO

NOTEBOOKS = Path(REPO) / "notebooks"
NAMES = ("quickstart.ipynb", "sweep_analysis.ipynb")


@pytest.fixture(scope="module")
def kernel_specs(tmp_path_factory) -> KernelSpecManager:
  """A `python3` kernelspec that runs this interpreter, whatever the user's Jupyter set-up.

  A user-level python3 kernelspec (~/.local/share/jupyter) would otherwise win over the
  one ipykernel installs in the venv and could start another Python.
  """
  root = tmp_path_factory.mktemp("kernels")
  (root / "python3").mkdir()
  (root / "python3" / "kernel.json").write_text(json.dumps({
      "argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
      "display_name": "Python 3", "language": "python"}))
  return KernelSpecManager(kernel_dirs=[str(root)])


def execute(name: str, kernel_specs, env: dict) -> nbformat.NotebookNode:
  """The notebook with its outputs, executed in a fresh kernel (the time goes to stdout)."""
  nb = nbformat.read(NOTEBOOKS / name, as_version=4)
  km = KernelManager(kernel_name="python3", kernel_spec_manager=kernel_specs)
  client = NotebookClient(nb, km=km, timeout=300, kernel_name="python3",
                          resources={"metadata": {"path": str(NOTEBOOKS)}})
  start = time.perf_counter()
  client.execute(env=dict(os.environ, PYTHONUNBUFFERED="1", **env))
  print(f"{name} executed in {time.perf_counter() - start:.1f}s")
  return nb


def outputs(nb, kind: str) -> list:
  """Every output of the notebook's code cells with data of MIME type `kind` (or stdout)."""
  found = []
  for cell in nb.cells:
    for out in cell.get("outputs", []):
      if kind == "stdout" and out.get("name") == "stdout":
        found.append(out["text"])
      elif kind in out.get("data", {}):
        found.append(out["data"][kind])
  return found


def setup_output(nb) -> str:
  first = next(c for c in nb.cells if c.cell_type == "code")
  return "".join(o.get("text", "") for o in first.outputs)


@pytest.mark.parametrize("name", NAMES)
def test_notebooks_are_stored_without_outputs(name):
  nb = nbformat.read(NOTEBOOKS / name, as_version=4)
  nbformat.validate(nb)
  code = [c for c in nb.cells if c.cell_type == "code"]
  assert code and all(not c.outputs and c.execution_count is None for c in code)
  assert nb.metadata.kernelspec.name == "python3"
  text = (NOTEBOOKS / name).read_text()
  assert REPO not in text  # no path of this machine


def test_quickstart_pretrains_plots_generates_and_finetunes(tmp_path, kernel_specs):
  nb = execute("quickstart.ipynb", kernel_specs, {"TRELLIS_QUICKSTART_DIR": str(tmp_path)})
  setup = setup_output(nb)
  assert sys.executable in setup and "8 cpu device(s)" in setup, setup  # this venv, conftest's env
  assert len(outputs(nb, "image/png")) == 1  # the loss curve

  with open(tmp_path / "gpt" / "metrics.jsonl") as f:
    rows = [json.loads(line) for line in f if line.strip()]
  train_loss = [r["loss"] for r in rows if r["split"] == "train"]
  eval_loss = [r["loss"] for r in rows if r["split"] == "eval"]
  assert len(train_loss) == 30 and len(eval_loss) == 3
  assert train_loss[-1] < train_loss[0] - 1.0 and eval_loss[-1] < eval_loss[0]

  stdout = "".join(outputs(nb, "stdout"))
  greedy = [line.split("greedy:", 1)[1].strip() for line in stdout.splitlines()
            if "greedy:" in line]
  assert len(greedy) == 2 and all(g not in ("''", '""') for g in greedy), stdout

  results = json.loads((tmp_path / "mr" / "results.json").read_text())
  assert results["lineage"]["source"] == str(tmp_path / "gpt") and results["lineage"]["step"] == 60
  assert results["test"]["examples"] > 0 and 0 <= results["test"]["accuracy"] <= 1
  assert f"accuracy: {results['test']['accuracy']:.4f}" in stdout


def test_sweep_analysis_runs_a_tiny_sweep_and_shows_its_tables(tmp_path, kernel_specs):
  sweep_dir = tmp_path / "sweep"
  nb = execute("sweep_analysis.ipynb", kernel_specs, {"TRELLIS_SWEEP_DIR": str(sweep_dir)})
  assert sys.executable in setup_output(nb)

  with open(sweep_dir / "summary.csv", newline="") as f:
    summary = list(csv.DictReader(f))
  assert [r["model.arch"] for r in summary] == ["transformer", "cnn"]
  assert all(r["n"] == "2" and r["missing"] == "0" for r in summary)
  with open(sweep_dir / "runs.csv", newline="") as f:
    assert [r["status"] for r in csv.DictReader(f)] == ["done"] * 4

  tables = outputs(nb, "text/markdown")
  assert len(tables) == 2, tables
  for row in summary:  # the notebook's table shows each setting with its mean
    assert any(f"| {row['model.arch']} | 2 | 0 | {float(row['mean']):.4g} ± " in t
               for t in tables), tables[0]
  assert sum(t.count("| done |") for t in tables) == 4
  # The sweep's two PNGs, then the notebook's own figure.
  assert len(outputs(nb, "image/png")) == 3
