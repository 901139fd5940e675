"""A sandbox that scores generated functions by their docstring's doctests, and pass@k.

`run_doctests(jobs)` runs each job in a fresh Python subprocess: this file,
run as a script. The child imports the job's module, compiles the job's
`code` (a whole function: decorators, `def`, docstring, body) in a copy of
the module's globals, installs the function where `qualname` points (a
module attribute, or an attribute of the class `Outer.Inner` for
`Outer.Inner.method`, compiled inside a class of that name so private names
are mangled and `super()` works), then runs the examples of the docstring of
the first top-level `def` of that name in `code` (the prompt's docstring
when the code is prompt + completion) with doctest, in the module's globals
(plus its top-level package under its own name, as examples often write
`textwrap.shorten(...)` without importing it).

Each job gets one of:

  passed      every example passed (at least one ran);
  failed      an example failed or raised, the docstring has no example, the
              code defines no function of that name, or compiling or
              installing it raised;
  timeout     the wall-clock limit (timeout_s) or the CPU limit ran out;
  crashed     the child ended without reporting: killed by a signal, out of
              memory outside Python's reach, `os._exit` before the doctests
              finished, or the module itself failed to import;
  unparsable  the code does not compile (checked here, no subprocess).

Passing is a result line that the child writes to a pipe of its own after
the doctests ran, carrying a per-job random token: a zero exit status alone
proves nothing (a completion may call `os._exit(0)`).

Limits and guards, set in the child before the module is imported:
RLIMIT_AS (memory_mb), RLIMIT_CPU (timeout_s + 1), RLIMIT_FSIZE (1 MiB),
RLIMIT_CORE 0; a fresh scratch working directory (also HOME and TMPDIR),
removed afterwards; an environment of PATH, LANG, HOME, TMPDIR and
PYTHONHASHSEED=0 only (no proxies or credentials; the fixed hash seed keeps
doctests that print sets stable, which is why the interpreter runs with
-s -P rather than -I, whose -E would drop it; with the environment built
from nothing -E has nothing left to ignore). After the module is imported and
before the candidate runs, the child replaces socket creation and name
lookup by functions that raise; disables os.system, os.popen, os.exec*,
os.spawn*, os.fork, os.kill, subprocess.Popen, shutil.rmtree/move/chown,
os.chdir; and refuses, with PermissionError, opening a file for writing and
creating, removing, renaming or changing a path outside the scratch folder.

These are guards in the style of OpenAI human-eval's `reliability_guard`,
which stop a well-meaning but buggy completion from harming the machine;
they are NOT a security boundary. Code that wants out can get out (ctypes,
a module that kept a reference to the real socket, ...); run completions of
an untrusted model in a container or VM as well.
"""

import ast
import concurrent.futures
import json
import math
import os
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile

STATUSES = ("passed", "failed", "timeout", "crashed", "unparsable")
FILE_SIZE_LIMIT = 1 << 20  # bytes a child may write to one file
_PROGRESS_FROM = 50  # jobs; fewer run without a progress bar
# No user site-packages, no bytecode written, no script folder on sys.path (-P, 3.11+).
_FLAGS = ("-s", "-B", "-P") if sys.version_info >= (3, 11) else ("-s", "-B")


def pass_at_k(n: int, c: int, k: int) -> float:
  """The unbiased pass@k estimate from n samples of which c passed (Chen et al. 2021).

  1 - C(n-c, k) / C(n, k), computed as the paper's product so it never forms
  a large binomial coefficient.
  """
  if not 0 <= c <= n or not 1 <= k <= n:
    raise ValueError(f"pass_at_k needs 0 <= c <= n and 1 <= k <= n, got n={n}, c={c}, k={k}")
  if n - c < k:
    return 1.0
  return 1.0 - math.prod(1.0 - k / i for i in range(n - c + 1, n + 1))


def run_doctests(jobs: list[dict], *, timeout_s: float = 10.0, memory_mb: int = 1024,
                 workers: int = 2) -> list[str]:
  """Runs each job's doctests in its own sandboxed subprocess; one status per job.

  Args:
    jobs: dicts with "module" (import name), "qualname" ("func" or
      "Class.method") and "code" (the whole function's source text).
    timeout_s: wall-clock limit of one job, interpreter start included.
    memory_mb: address-space limit of one job.
    workers: jobs run at once (threads, each waiting on one subprocess).

  Returns:
    For each job, in order, one of STATUSES (see the module docstring).
  """
  def one(job):
    return _run_job(job, timeout_s, memory_mb)[0]

  with concurrent.futures.ThreadPoolExecutor(max(1, workers)) as pool:
    results = pool.map(one, jobs)
    if len(jobs) >= _PROGRESS_FROM:
      try:
        from tqdm import tqdm  # optional: only a progress bar
        results = tqdm(results, total=len(jobs), desc="doctests", unit="job", leave=False)
      except ImportError:
        pass
    return list(results)


def _check_code(code: str, name: str) -> str | None:
  """"unparsable" or "failed" when `code` cannot be a candidate for `name`, else None."""
  try:
    tree = compile(code, "<candidate>", "exec", ast.PyCF_ONLY_AST, dont_inherit=True)
    compile(tree, "<candidate>", "exec", dont_inherit=True)
  except (SyntaxError, ValueError, RecursionError, MemoryError, OverflowError):
    return "unparsable"
  if not any(isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node.name == name
             for node in tree.body):
    return "failed"
  return None


def _run_job(job: dict, timeout_s: float, memory_mb: int) -> tuple[str, str]:
  """(status, the child's output, cut to its end) of one job."""
  early = _check_code(job["code"], job["qualname"].rpartition(".")[2])
  if early:
    return early, ""
  token = secrets.token_hex(16)
  home = tempfile.mkdtemp(prefix="trellis-sandbox-")
  scratch = os.path.join(home, "scratch")
  os.mkdir(scratch)
  read_end, write_end = os.pipe()
  try:
    with open(os.path.join(home, "output.txt"), "w+b") as output:
      request = {"module": job["module"], "qualname": job["qualname"], "code": job["code"],
                 "token": token, "result_fd": write_end, "scratch": scratch,
                 "memory_mb": memory_mb, "cpu_s": math.ceil(timeout_s) + 1}
      env = {"PATH": "/usr/bin:/bin", "LANG": "C.UTF-8", "HOME": scratch, "TMPDIR": scratch,
             "PYTHONHASHSEED": "0"}
      process = subprocess.Popen(
          [sys.executable, *_FLAGS, os.path.abspath(__file__)], cwd=scratch, env=env,
          stdin=subprocess.PIPE, stdout=output, stderr=subprocess.STDOUT,
          pass_fds=(write_end,), start_new_session=True)
      os.close(write_end)
      write_end = -1
      timed_out = False
      try:
        process.communicate(json.dumps(request).encode(), timeout=timeout_s)
      except subprocess.TimeoutExpired:
        timed_out = True
      finally:
        _kill_group(process)
      os.set_blocking(read_end, False)
      try:
        reported = os.read(read_end, 1 << 16).decode(errors="replace")
      except BlockingIOError:  # a leftover grandchild holds the pipe open, silent
        reported = ""
      output.seek(max(0, output.seek(0, os.SEEK_END) - 4000))
      tail = output.read().decode(errors="replace")
  finally:
    os.close(read_end)
    if write_end >= 0:
      os.close(write_end)
    shutil.rmtree(home, ignore_errors=True)
  if timed_out or process.returncode == -signal.SIGXCPU:
    return "timeout", tail
  return _status(reported, token, process.returncode), tail


def _kill_group(process: subprocess.Popen) -> None:
  """Kills the child and anything it started (its own session), then reaps it."""
  try:
    os.killpg(process.pid, signal.SIGKILL)
  except (ProcessLookupError, PermissionError):
    pass
  process.wait()


def _status(reported: str, token: str, returncode: int) -> str:
  """The status a child's result line and exit status stand for."""
  for line in reported.splitlines():
    try:
      result = json.loads(line)
    except json.JSONDecodeError:
      continue
    if not isinstance(result, dict) or result.get("token") != token:
      continue
    if result.get("error") == "import":
      return "crashed"
    ok = (result.get("error") is None and result.get("failed") == 0
          and (result.get("attempted") or 0) > 0 and returncode == 0)
    return "passed" if ok else "failed"
  return "crashed"


# The child: everything below runs in the sandboxed subprocess (this file as a
# script, standard library only).


def _set_limits(memory_mb: int, cpu_s: int) -> None:
  import resource  # pylint: disable=import-outside-toplevel  (Unix only, the child only)
  for limit, value in ((resource.RLIMIT_AS, memory_mb << 20), (resource.RLIMIT_CPU, cpu_s),
                       (resource.RLIMIT_FSIZE, FILE_SIZE_LIMIT), (resource.RLIMIT_CORE, 0)):
    # CPU: SIGXCPU (reported as a timeout) at the soft limit, SIGKILL a second later.
    resource.setrlimit(limit, (value, value + (limit == resource.RLIMIT_CPU)))
  # Past the file size limit a write fails with EFBIG instead of killing the child.
  signal.signal(signal.SIGXFSZ, signal.SIG_IGN)


def _refuse(what: str):
  def refused(*args, **kwargs):
    raise PermissionError(f"{what} is disabled in the doctest sandbox")
  return refused


def _install_guards(scratch: str) -> None:
  """Network, process and file-system guards (see the module docstring)."""
  import builtins  # pylint: disable=import-outside-toplevel
  import io  # pylint: disable=import-outside-toplevel
  import socket  # pylint: disable=import-outside-toplevel
  import _socket  # pylint: disable=import-outside-toplevel

  for module in (socket, _socket):
    for name in ("socket", "socketpair", "fromfd", "create_connection", "create_server",
                 "getaddrinfo", "gethostbyname", "gethostbyname_ex", "gethostbyaddr"):
      if hasattr(module, name):
        setattr(module, name, _refuse(f"socket.{name} (network access)"))
  for name in ("system", "popen", "fork", "forkpty", "kill", "killpg", "chdir", "fchdir",
               "chroot", "setuid", "putenv", "unsetenv", "posix_spawn", "posix_spawnp",
               "execl", "execle", "execlp", "execlpe", "execv", "execve", "execvp", "execvpe",
               "spawnl", "spawnle", "spawnlp", "spawnlpe", "spawnv", "spawnve", "spawnvp",
               "spawnvpe"):
    if hasattr(os, name):
      setattr(os, name, _refuse(f"os.{name}"))
  subprocess.Popen = _refuse("subprocess")
  for name in ("rmtree", "move", "chown"):
    setattr(shutil, name, _refuse(f"shutil.{name}"))

  root = os.path.realpath(scratch) + os.sep

  def inside(path) -> bool:
    if isinstance(path, int):  # an open file descriptor: already allowed when opened
      return True
    return os.path.realpath(os.fsdecode(os.fspath(path))).startswith(root)

  def checked(function, what: str, paths: int = 1):
    def guarded(*args, **kwargs):
      if kwargs.get("dir_fd") is not None or kwargs.get("src_dir_fd") is not None \
          or kwargs.get("dst_dir_fd") is not None or not all(map(inside, args[:paths])):
        raise PermissionError(f"{what} outside the sandbox's scratch folder is refused")
      return function(*args, **kwargs)
    return guarded

  for name, paths in (("remove", 1), ("unlink", 1), ("rmdir", 1), ("removedirs", 1),
                      ("mkdir", 1), ("makedirs", 1), ("rename", 2), ("renames", 2),
                      ("replace", 2), ("truncate", 1), ("chmod", 1), ("chown", 1),
                      ("lchown", 1), ("link", 2), ("symlink", 2), ("utime", 1),
                      ("mkfifo", 1), ("mknod", 1)):
    if hasattr(os, name):
      setattr(os, name, checked(getattr(os, name), f"os.{name}", paths))

  real_open, real_os_open = builtins.open, os.open
  write_flags = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_APPEND | os.O_TRUNC

  def guarded_open(file, mode="r", *args, **kwargs):
    if isinstance(mode, str) and set(mode) & set("wax+") and not inside(file):
      raise PermissionError(f"writing {file!r} outside the sandbox's scratch folder is refused")
    return real_open(file, mode, *args, **kwargs)

  def guarded_os_open(path, flags, *args, **kwargs):
    if flags & write_flags and (kwargs.get("dir_fd") is not None or not inside(path)):
      raise PermissionError(f"writing {path!r} outside the sandbox's scratch folder is refused")
    return real_os_open(path, flags, *args, **kwargs)

  builtins.open = io.open = guarded_open
  os.open = guarded_os_open


_MISSING = object()


class _ClassBody:
  """A metaclass stand-in: the class body runs in a copy of `cls`'s namespace and
  the statement yields that namespace, so a method compiles as if in `cls`."""

  def __init__(self, cls):
    self.cls = cls

  def __prepare__(self, name, bases, **kwargs):
    return dict(vars(self.cls))

  def __call__(self, name, bases, namespace, **kwargs):
    return namespace


def _install(module, qualname: str, code: str) -> str:
  """Compiles `code` and puts its function at `qualname`; returns its docstring."""
  *owners, name = qualname.split(".")
  tree = ast.parse(code)
  function = next(node for node in tree.body
                  if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef))
                  and node.name == name)
  docstring = ast.get_docstring(function, clean=False) or ""
  namespace = dict(vars(module))
  if not owners:
    exec(compile(tree, f"<{module.__name__}:{qualname}>", "exec"), namespace)  # pylint: disable=exec-used
    setattr(module, name, namespace[name])
    return docstring
  cls = module
  for owner in owners:
    cls = getattr(cls, owner)
  namespace["__trellis_class_body__"] = _ClassBody(cls)
  shadowed = namespace.get(owners[-1], _MISSING)  # the class statement rebinds the name
  wrapper = ast.ClassDef(name=owners[-1], bases=[], decorator_list=[], body=tree.body,
                         keywords=[ast.keyword("metaclass",
                                               ast.Name("__trellis_class_body__", ast.Load()))])
  tree = ast.fix_missing_locations(ast.Module(body=[wrapper], type_ignores=[]))
  exec(compile(tree, f"<{module.__name__}:{qualname}>", "exec"), namespace)  # pylint: disable=exec-used
  body = namespace.pop(owners[-1])
  del namespace["__trellis_class_body__"]
  if shadowed is not _MISSING:  # the functions' globals must see the module's own value
    namespace[owners[-1]] = shadowed
  if "__classcell__" in body:  # the function uses super() or __class__
    body["__classcell__"].cell_contents = cls
  setattr(cls, name, body[name])
  return docstring


def _child_main() -> None:
  """Runs one job read from stdin; writes its result line to the job's pipe."""
  import doctest  # pylint: disable=import-outside-toplevel
  import importlib  # pylint: disable=import-outside-toplevel

  request = json.loads(sys.stdin.read())
  devnull = os.open(os.devnull, os.O_RDONLY)
  os.dup2(devnull, 0)
  result_fd, token = request["result_fd"], request["token"]

  def report(**result) -> None:
    try:
      sys.stdout.flush()
    except OSError:  # past the file size limit
      pass
    os.write(result_fd, (json.dumps({"token": token, **result}) + "\n").encode())
    os._exit(0)  # pylint: disable=protected-access  (threads a candidate left must not hang us)

  _set_limits(request["memory_mb"], request["cpu_s"])
  try:
    module = importlib.import_module(request["module"])
  except BaseException as e:  # pylint: disable=broad-except
    print(f"import {request['module']}: {type(e).__name__}: {e}")
    report(error="import")
  _install_guards(request["scratch"])
  try:
    docstring = _install(module, request["qualname"], request["code"])
  except BaseException as e:  # pylint: disable=broad-except
    print(f"install {request['qualname']}: {type(e).__name__}: {e}")
    report(error="install")
  name = f"{request['module']}.{request['qualname']}"
  package = request["module"].partition(".")[0]
  # Examples often call through the module's name ("textwrap.shorten(...)") unimported.
  globs = {package: sys.modules[package], **vars(module)}
  test = doctest.DocTestParser().get_doctest(docstring, globs, name, None, 0)
  stdout = sys.stdout

  def out(text: str) -> None:  # a failure report past the file size limit is cut, not fatal
    try:
      stdout.write(text)
    except OSError:
      pass

  failed, attempted = doctest.DocTestRunner(verbose=False).run(test, out=out, clear_globs=False)
  report(failed=failed, attempted=attempted)


if __name__ == "__main__":
  if not getattr(sys.flags, "safe_path", False):  # Python 3.10: no -P
    sys.path.pop(0)  # this file's folder, research/, is not an import root
  _child_main()
