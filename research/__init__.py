"""Trellis: one functional, sharded training loop for language models."""

import os


def _quiet_tpu_runtime_without_tpus() -> None:
  """Keeps an installed but idle libtpu (the `tpu` extra) from warning at every start.

  Without TPU chips, jax still tries the TPU runtime: libtpu prints warnings
  about the missing TPU metadata (`E0000 ... INVALID_ARGUMENT` lines), and
  takes a machine-wide lock that makes a second process (e.g.
  experiments.compile_check) fail. Naming a placeholder host keeps it quiet
  and the lock is not needed where there is no chip to guard; on a TPU VM
  (chips present) nothing is set. It runs here, where every use of Trellis
  (entry points, notebooks, `import research`) passes before jax picks a backend.
  """
  from jax._src import hardware_utils  # the check jax itself makes before loading libtpu
  if hardware_utils.num_available_tpu_chips_and_device_id()[0] == 0:
    os.environ.setdefault("TPU_ACCELERATOR_TYPE", "v5litepod-4")
    os.environ.setdefault("TPU_WORKER_HOSTNAMES", "localhost")
    os.environ.setdefault("ALLOW_MULTIPLE_LIBTPU_LOAD", "1")


_quiet_tpu_runtime_without_tpus()
