"""Where metrics go: metrics.jsonl, TensorBoard (tensorboardX), and nothing else."""

import json
import os

from tensorboardX import SummaryWriter


def _row(line: str) -> dict | None:
  """A line's row; None for a blank line or one a kill cut short."""
  try:
    return json.loads(line) if line.strip() else None
  except json.JSONDecodeError:
    return None


class MetricLog:
  """Appends one JSON row per event to metrics.jsonl and mirrors scalars to tb/.

  On resume, rows past the restored step (logged by a run killed before its
  next checkpoint) are dropped, and so is a last line a kill cut short, so
  the log reads as one uninterrupted run. Only process 0 writes. A failed
  write raises OSError naming metrics.jsonl.
  """

  def __init__(self, workdir: str, resume_step: int, enabled: bool = True):
    self.enabled = enabled
    self.path = os.path.join(workdir, "metrics.jsonl")
    if not enabled:
      return
    if os.path.exists(self.path):
      with open(self.path) as f:
        rows = [line for line in f if (_row(line) or {}).get("step", resume_step + 1)
                <= resume_step]
      temporary = f"{self.path}.tmp"
      with open(temporary, "w") as f:  # replaced whole: a kill now keeps the old log
        f.writelines(rows)
      os.replace(temporary, self.path)
    self.tb = SummaryWriter(os.path.join(workdir, "tb"), purge_step=resume_step + 1)

  @staticmethod
  def read(workdir: str, split: str | None = None) -> list[dict]:
    """The rows of a run's metrics.jsonl (of one `split` if given); [] if it has none yet."""
    path = os.path.join(workdir, "metrics.jsonl")
    if not os.path.exists(path):
      return []
    with open(path) as f:
      rows = [row for row in map(_row, f) if row is not None]
    return [r for r in rows if split is None or r.get("split") == split]

  def write(self, step: int, split: str, values: dict) -> None:
    if not self.enabled:
      return
    row = {"step": int(step), "split": split, **values}
    try:
      with open(self.path, "a") as f:
        f.write(json.dumps(row) + "\n")
    except OSError as e:
      raise OSError(e.errno, e.strerror, self.path) from e
    for name, value in values.items():
      if isinstance(value, (int, float)):
        self.tb.add_scalar(f"{split}/{name}", value, step)
    self.tb.flush()

  def close(self) -> None:
    if self.enabled:
      self.tb.close()
