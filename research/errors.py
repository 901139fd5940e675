"""User-facing errors, and the interruption of a run.

Each TrellisError means "the user asked for something we cannot do", not a
bug: the command-line entry points print them as one line `error: ...` and
exit with status 2, without a traceback. `Interrupted` is not an error: a
run stopped by a signal after saving its work; the entry points exit with
128 + the signal's number, as a process killed by it would.
"""


class TrellisError(Exception):
  """Base class of the errors a user can fix without reading our code."""


class ConfigError(TrellisError):
  """A config value is invalid, or two values contradict each other."""


class DataError(TrellisError):
  """Data is missing, empty, malformed, or does not match what was promised."""


class CheckpointError(TrellisError):
  """A checkpoint is missing, corrupt, or does not fit the model asked for."""


class TrainingError(TrellisError):
  """Training cannot go on (for example the loss became NaN or Inf)."""


class Interrupted(Exception):
  """SIGTERM/SIGINT stopped training at `step`, whose checkpoint is saved; rerunning resumes."""

  def __init__(self, signum: int, step: int):
    super().__init__(f"signal {signum}: saved step {step}; run the same command to resume")
    self.signum, self.step = signum, step


def first_line(e: BaseException) -> str:
  """An exception's message cut to its first line (its type's name if it has none)."""
  text = str(e).strip()
  return text.splitlines()[0] if text else type(e).__name__


def few(names, shown: int = 5) -> str:
  """The first `shown` of `names`, sorted, and how many more: a list an error line can hold."""
  names = sorted(names)
  more = f" (+{len(names) - shown} more)" if len(names) > shown else ""
  return ", ".join(names[:shown]) + more
