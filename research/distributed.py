"""Multi-host start-up: `jax.distributed.initialize` driven by the environment.

Trellis runs on JAX's multi-controller runtime: every host runs the same
program on its own devices, and `jax.devices()` lists the devices of all
hosts once `jax.distributed.initialize` has connected them. Which hosts form
the run is deployment knowledge, not model knowledge, so it comes from the
environment rather than the config:

  TRELLIS_COORDINATOR=host:port   explicit: the address process 0 listens on;
  TRELLIS_NUM_PROCESSES=N         with it, how many processes join,
  TRELLIS_PROCESS_ID=i            and which one this is (0 .. N-1);
  TRELLIS_LOCAL_DEVICE_IDS=0,1    optional: this process's accelerators only;
  TRELLIS_DISTRIBUTED=auto        let JAX detect the cluster (Cloud TPU pod
                                  slices, SLURM, Open MPI) and fill in the rest.

With none of these set the run is a single process, as before.
`experiments.launch` sets the explicit variables for local multi-process runs.
"""

import os

import jax

from research.errors import ConfigError

ENV_COORDINATOR = "TRELLIS_COORDINATOR"
ENV_NUM_PROCESSES = "TRELLIS_NUM_PROCESSES"
ENV_PROCESS_ID = "TRELLIS_PROCESS_ID"
ENV_LOCAL_DEVICE_IDS = "TRELLIS_LOCAL_DEVICE_IDS"
ENV_MODE = "TRELLIS_DISTRIBUTED"


def _int(environ, name: str) -> int:
  text = environ.get(name, "")
  try:
    return int(text)
  except ValueError:
    raise ConfigError(f"{name}={text!r} must be an integer (set it with "
                      f"{ENV_COORDINATOR})") from None


def initialize_args(environ=None) -> dict | None:
  """The keyword arguments for `jax.distributed.initialize`, or None for one process.

  Raises:
    ConfigError: contradictory or incomplete variables (one line, before
      anything connects or compiles).
  """
  environ = os.environ if environ is None else environ
  mode = environ.get(ENV_MODE, "").strip().lower()
  coordinator = environ.get(ENV_COORDINATOR, "").strip()
  if mode not in ("", "auto", "off"):
    raise ConfigError(f"{ENV_MODE}={mode!r} is not one of auto, off")
  if mode == "off":
    return None
  if coordinator:
    if ":" not in coordinator:
      raise ConfigError(f"{ENV_COORDINATOR}={coordinator!r} must be host:port")
    num_processes = _int(environ, ENV_NUM_PROCESSES)
    process_id = _int(environ, ENV_PROCESS_ID)
    if num_processes < 1 or not 0 <= process_id < num_processes:
      raise ConfigError(f"{ENV_PROCESS_ID}={process_id} is not in [0, {ENV_NUM_PROCESSES}="
                        f"{num_processes})")
    args = {"coordinator_address": coordinator, "num_processes": num_processes,
            "process_id": process_id}
  elif mode == "auto":
    args = {}  # JAX's cluster detection fills every field (TPU pod, SLURM, MPI)
  else:
    for name in (ENV_NUM_PROCESSES, ENV_PROCESS_ID):
      if environ.get(name):
        raise ConfigError(f"{name} is set but {ENV_COORDINATOR} is not; set both, or "
                          f"{ENV_MODE}=auto on a TPU pod or SLURM")
    return None
  ids = environ.get(ENV_LOCAL_DEVICE_IDS, "").strip()
  if ids:
    try:
      args["local_device_ids"] = [int(i) for i in ids.split(",")]
    except ValueError:
      raise ConfigError(f"{ENV_LOCAL_DEVICE_IDS}={ids!r} must be comma-separated "
                        "integers") from None
  return args


def initialize_from_env(environ=None) -> bool:
  """Connects this process to the others if the environment asks; True if it did.

  Call once, before anything touches the devices (`jax.devices()`, a jit).
  Calling it again after a successful start is a no-op.
  """
  args = initialize_args(environ)
  if args is None:
    return False
  if jax.distributed.is_initialized():
    return True
  jax.distributed.initialize(**args)
  return True
