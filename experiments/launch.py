"""Start a multi-process run on this machine: `python -m experiments.launch ... -- ARGS`.

  python -m experiments.launch --num_processes=2 --devices_per_process=4 -- \\
      --config=configs/pretrain/gpt_clm.py:tiny --workdir=runs/gpt2x4

starts `python -m experiments.pretrain ARGS` in N processes joined through
`jax.distributed` over 127.0.0.1 (research/distributed.py), each with its own
devices: fake CPU devices by default (a multi-host test on one machine), or
`--platform=gpu` for a machine with several GPUs, process i taking GPUs
[i*D, (i+1)*D). The run behaves as on N hosts: each process reads its slice
of every batch, all save checkpoints together, process 0 logs.

Process 0's output is shown here; the others' go to files in --process_logs. If a
process fails, the others are stopped and the launcher exits with the first
failing process's status. SIGINT/SIGTERM is passed on to every process once,
so they checkpoint together and exit, as a single-process run does.
"""

import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time

from absl import flags

from experiments import cli

_NUM_PROCESSES = flags.DEFINE_integer("num_processes", 2, "processes to start")
_DEVICES = flags.DEFINE_integer("devices_per_process", 1, "devices each process owns")
_PLATFORM = flags.DEFINE_enum("platform", "cpu", ["cpu", "gpu"],
                              "cpu: fake host devices; gpu: split this machine's GPUs")
_MODULE = flags.DEFINE_string("module", "experiments.pretrain", "entry point each process runs")
_PORT = flags.DEFINE_integer("port", 0, "coordinator port on 127.0.0.1 (0: a free one)")
_LOG_DIR = flags.DEFINE_string("process_logs", "", "where processes 1.. write their output "
                               "('' = a new temporary folder)")
# After a process fails, how long the others get to fail the same way (a bad
# config fails everywhere) before they are killed.
_GRACE_S = 5.0
_TAIL_LINES = 20
# What gloo (the CPU collectives) prints on stdout once per collective group it connects:
# not for the user, so process 0's stdout is relayed without it.
GLOO_NOISE = re.compile(r"^\[Gloo\] Rank \d+ is connected to \d+ peer ranks")


def relay(source, sink) -> None:
  """Copies `source`'s lines to `sink` as they come, but gloo's connection lines."""
  for line in iter(source.readline, ""):
    if not GLOO_NOISE.match(line):
      sink.write(line)
      sink.flush()
  source.close()


def free_port() -> int:
  """A TCP port on 127.0.0.1 that nothing listens on right now."""
  with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


def process_env(base: dict, index: int, num_processes: int, devices: int, platform: str,
                port: int) -> dict:
  """The environment of process `index`: who it is, where process 0 is, its devices."""
  env = dict(base, TRELLIS_COORDINATOR=f"127.0.0.1:{port}",
             TRELLIS_NUM_PROCESSES=str(num_processes), TRELLIS_PROCESS_ID=str(index),
             PYTHONUNBUFFERED="1")
  env.pop("TRELLIS_DISTRIBUTED", None)  # the explicit variables above decide
  if platform == "cpu":
    # An inherited device count (e.g. from a test runner) would override ours.
    flags_text = re.sub(r"--xla_force_host_platform_device_count=\S+", "",
                        env.get("XLA_FLAGS", ""))
    env.update(XLA_FLAGS=flags_text.strip(), JAX_PLATFORMS="cpu",
               TRELLIS_CPU_DEVICES=str(devices))
  else:
    env["TRELLIS_LOCAL_DEVICE_IDS"] = ",".join(
        str(i) for i in range(index * devices, (index + 1) * devices))
  return env


def _tail(path: str) -> str:
  with open(path, errors="replace") as f:
    return "".join(f.readlines()[-_TAIL_LINES:])


class ProcessGroup:
  """The launched processes: started together, watched, and stopped together."""

  def __init__(self, commands_and_envs: list, log_dir: str):
    self.logs, self.procs, self.stopping, self.relays = [], [], False, []
    for index, (command, env) in enumerate(commands_and_envs):
      if index == 0:
        out = None  # process 0 speaks for the run: this terminal (stdout relayed)
      else:
        path = os.path.join(log_dir, f"process_{index}.log")
        self.logs.append(path)
        out = open(path, "w")
      # A session of their own: a terminal's Ctrl-C reaches the launcher
      # alone, which passes it on exactly once.
      self.procs.append(subprocess.Popen(command, env=env, stdin=subprocess.DEVNULL,
                                         stdout=out or subprocess.PIPE,
                                         stderr=subprocess.STDOUT if out else None,
                                         start_new_session=True, text=out is None))
      if out:
        out.close()
      else:
        self.relays.append(threading.Thread(target=relay, args=(self.procs[-1].stdout,
                                                                sys.stdout), daemon=True))
        self.relays[-1].start()

  def stop(self, signum: int) -> None:
    """Passes a stop signal on: each process checkpoints (together) and exits."""
    self.stopping = True
    self.signal_all(signum)

  def signal_all(self, signum: int) -> None:
    for proc in self.procs:
      if proc.poll() is None:
        proc.send_signal(signum)

  def wait(self) -> int:
    """Waits for all; returns 0, or the status of the first process that failed."""
    status = self._wait()
    for thread in self.relays:  # every line process 0 wrote is shown before we exit
      thread.join(timeout=10)
    return status

  def _wait(self) -> int:
    while True:
      codes = [proc.poll() for proc in self.procs]
      failed = [i for i, c in enumerate(codes) if c not in (None, 0)]
      if failed and self.stopping:  # stopped on purpose: let every save finish
        for proc in self.procs:
          proc.wait()
        return self._status(self.procs[failed[0]].returncode)
      if failed:
        return self._stop_after_failure(failed[0])
      if all(c == 0 for c in codes):
        return 0
      time.sleep(0.1)

  def _stop_after_failure(self, first: int) -> int:
    status = self.procs[first].returncode
    deadline = time.monotonic() + _GRACE_S
    while time.monotonic() < deadline and any(p.poll() is None for p in self.procs):
      time.sleep(0.1)
    # Survivors wait on collectives with a dead peer; a checkpoint they
    # started cannot complete, so they are killed rather than asked to stop.
    self.signal_all(signal.SIGKILL)
    for proc in self.procs:
      proc.wait()
    if first != 0 and self.procs[0].returncode in (0, -signal.SIGKILL):
      # Process 0's output does not explain the failure: show the one that does.
      log = self.logs[first - 1]
      print(f"process {first} exited with status {status}; the end of {log}:\n"
            f"{_tail(log)}", file=sys.stderr, end="")
    return self._status(status)

  @staticmethod
  def _status(returncode: int) -> int:
    return returncode if returncode > 0 else 128 - returncode  # -N: killed by signal N


def main(argv, overrides):
  del overrides  # launch has no --config: the processes' arguments follow `--`
  args = argv[1:]
  if _NUM_PROCESSES.value < 1 or _DEVICES.value < 1:
    cli.fail("--num_processes and --devices_per_process must be >= 1")
  port = _PORT.value or free_port()
  log_dir = _LOG_DIR.value or tempfile.mkdtemp(prefix="trellis-launch-")
  os.makedirs(log_dir, exist_ok=True)
  command = [sys.executable, "-m", _MODULE.value, *args]
  group = ProcessGroup([(command, process_env(os.environ, i, _NUM_PROCESSES.value,
                                              _DEVICES.value, _PLATFORM.value, port))
                        for i in range(_NUM_PROCESSES.value)], log_dir)

  def forward(signum, frame):
    group.stop(signum)
    signal.signal(signum, signal.SIG_DFL)  # a second signal stops the launcher itself

  for signum in (signal.SIGINT, signal.SIGTERM):
    signal.signal(signum, forward)
  sys.exit(group.wait())


if __name__ == "__main__":
  cli.run(main, distributed=False)
