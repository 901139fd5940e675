"""Paper-style experiments, one script each, and what their scripts share."""

import json
import os
import statistics


def finished(results: dict) -> dict:
  """The results of a run that ran to its end; a SIGTERM/SIGINT (checkpoint saved) stops here.

  The same command then resumes the interrupted run and goes on.
  """
  if "interrupted" in results:
    raise SystemExit(128 + results["interrupted"])
  return results


def mean_std(values: list[float]) -> tuple[float, float]:
  """Mean and sample standard deviation (0 for a single value)."""
  return statistics.mean(values), statistics.stdev(values) if len(values) > 1 else 0.0


def write_summary(workdir: str, summary: dict, markdown: str, name: str = "summary") -> None:
  """WORKDIR/<name>.json and its table WORKDIR/<name>.md."""
  os.makedirs(workdir, exist_ok=True)
  with open(os.path.join(workdir, f"{name}.json"), "w") as f:
    json.dump(summary, f, indent=2)
  with open(os.path.join(workdir, f"{name}.md"), "w") as f:
    f.write(markdown + "\n")
