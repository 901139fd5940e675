"""Paper-style experiments, one script each, and what their scripts share.

A SIGTERM/SIGINT stops a reproduction at the run it is in (errors.Interrupted,
its checkpoint saved; experiments.cli exits 128+signal); the same command
then resumes that run and goes on.
"""

import json
import os
import statistics


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


def force_equal(cfgs: dict, fields, reference: str = "transformer") -> list[str]:
  """Makes every config's `fields` equal to cfgs[reference]'s; names each one that differed.

  A field is a config section (compared key by key, so the list names
  "arch: section.key") or a plain value ("arch: field").
  """
  ref, forced = cfgs[reference], []
  for name, cfg in cfgs.items():
    for field in fields:
      ours, theirs = cfg[field], ref[field]
      if hasattr(ours, "to_dict"):
        ours, theirs = ours.to_dict(), theirs.to_dict()
        diff = [f"{field}.{k}" for k in sorted(set(ours) | set(theirs))
                if ours.get(k) != theirs.get(k)]
      else:
        diff = [field] if ours != theirs else []
      if diff:
        forced += [f"{name}: {d}" for d in diff]
        cfg[field] = (ref[field].copy_and_resolve_references()
                      if hasattr(ref[field], "copy_and_resolve_references") else ref[field])
  return forced


def arch_table(title: str, metric: str, archs: dict, key: str, digits: int) -> str:
  """A markdown table under `title`: per architecture its params, row[key] per seed, mean ± std."""
  lines = [title, "", f"| architecture | params | {metric} per seed | mean ± std |",
           "|---|---|---|---|"]
  for arch, row in archs.items():
    seeds = ", ".join(f"{v:.{digits}f}" for v in row[key])
    lines.append(f"| {arch} | {row['params']:,} | {seeds} | "
                 f"{row['mean']:.{digits}f} ± {row['std']:.{digits}f} |")
  return "\n".join(lines)
