"""The library's imports are a stack: at the top of each file, no cycles, each module importable.

Entry points -> finetune -> tasks, hf -> train, generate -> workdir, throughput
-> network -> objectives, data, optim, sharding, checkpoint -> models, metrics,
execution -> config, errors. A function-level import of research code hides an edge of
this graph, so it is allowed only with a comment saying why (`# late: ...`
or `# why: ...`, e.g. the config is read before jax is set up).
"""

import ast
import os
import pathlib
import subprocess
import sys

from conftest import REPO

ROOT = pathlib.Path(REPO) / "research"
# Top to bottom; a module imports from its own layer or below (the longest prefix places it).
LAYERS = [
    ("research.finetune", "research.sweep"),
    ("research.tasks", "research.hf"),
    ("research.train", "research.generate"),
    ("research.workdir", "research.throughput"),
    ("research.network",),
    ("research.objectives", "research.data", "research.optim", "research.sharding",
     "research.checkpoint", "research.metric_log", "research.distributed"),
    ("research.models", "research.metrics", "research.execution"),
    ("research.presets", "research.config", "research.data.sources",
     "research.data.archives", "research.lock",
     "research.errors", "research"),
]
LATE_REASONS = ("# late:", "# why:")


def _modules() -> dict[str, pathlib.Path]:
  """Dotted module name -> file, for every module of research/."""
  out = {}
  for path in sorted(ROOT.rglob("*.py")):
    parts = path.relative_to(ROOT.parent).with_suffix("").parts
    out[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
  return out


MODULES = _modules()


def _imports(path: pathlib.Path):
  """(imported research module, line, at top level) for each import statement of a file."""
  tree = ast.parse(path.read_text(), str(path))
  nested = set()  # the statements inside a function or class
  for node in ast.walk(tree):
    if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef, ast.Lambda)):
      nested.update(id(n) for n in ast.walk(node) if n is not node)
  for node in ast.walk(tree):
    if isinstance(node, ast.Import):
      names = [a.name for a in node.names]
    elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
      # `from research.x import y` imports research.x.y when y is a module.
      names = [f"{node.module}.{a.name}" if f"{node.module}.{a.name}" in MODULES
               else node.module for a in node.names]
    else:
      continue
    for name in names:
      if name == "research" or name.startswith("research."):
        yield name, node.lineno, id(node) not in nested


def _layer(module: str) -> int:
  best = max((p for layer in LAYERS for p in layer if module == p or module.startswith(p + ".")),
             key=len)
  return next(i for i, layer in enumerate(LAYERS) if best in layer)


def test_function_level_imports_of_research_say_why():
  hidden = []
  for module, path in MODULES.items():
    lines = path.read_text().splitlines()
    for name, line, top_level in _imports(path):
      if not top_level and not any(r in lines[line - 1] for r in LATE_REASONS):
        hidden.append(f"{path.relative_to(REPO)}:{line} imports {name}")
  assert not hidden, "function-level imports without a '# late:' reason:\n" + "\n".join(hidden)


def test_the_module_graph_has_no_cycle():
  """Every import, top level or not: a late import must not hide a cycle either."""
  graph = {m: sorted({n for n, _, _ in _imports(p) if n != m}) for m, p in MODULES.items()}
  state, path = {}, []

  def visit(module):
    state[module] = "open"
    path.append(module)
    for dep in graph.get(module, ()):
      if state.get(dep) == "open":
        raise AssertionError("import cycle: " + " -> ".join(path[path.index(dep):] + [dep]))
      if dep not in state:
        visit(dep)
    path.pop()
    state[module] = "done"

  for module in graph:
    if module not in state:
      visit(module)


def test_top_level_imports_go_down_the_stack():
  upward = [f"{m} (layer {_layer(m)}) imports {n} (layer {_layer(n)})"
            for m, p in MODULES.items() for n, _, top in _imports(p)
            if top and _layer(n) < _layer(m)]
  assert not upward, "\n".join(upward)


def test_every_module_imports_on_its_own():
  """Each module first in a fresh set of research modules (third-party ones stay loaded)."""
  script = (
      "import importlib, sys\n"
      "failed = []\n"
      f"for name in {sorted(MODULES)!r}:\n"
      "  for key in [k for k in sys.modules if k == 'research' or k.startswith('research.')]:\n"
      "    del sys.modules[key]\n"
      "  try:\n"
      "    importlib.import_module(name)\n"
      "  except Exception as e:\n"
      "    failed.append(f'{name}: {type(e).__name__}: {e}')\n"
      "print('\\n'.join(failed))\n"
      "sys.exit(1 if failed else 0)\n")
  result = subprocess.run([sys.executable, "-c", script], cwd=REPO, capture_output=True,
                          text=True, timeout=300, env=dict(os.environ, JAX_PLATFORMS="cpu"))
  assert result.returncode == 0, result.stdout + result.stderr[-2000:]
