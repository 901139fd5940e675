"""User-facing errors.

Each of these means "the user asked for something we cannot do", not a bug:
the command-line entry points print them as one line `error: ...` and exit
with status 2, without a traceback.
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
