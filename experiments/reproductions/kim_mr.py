"""Sentence classification in the style of Kim (2014): CNN vs LSTM vs Transformer on MR.

  python -m experiments.reproductions.kim_mr [--workdir=runs/repro_kim_mr \
      --seeds=0,1,2 --steps=300 --preset=small]

Trains three encoders of about the same parameter count from random
initialisation (Kim's "CNN-rand" setting: no pretrained word vectors) on the
built-in MR sentence-polarity set: configs/finetune/mr.py's `cnn_<preset>`
(a non-causal gated dilated CNN), `lstm_<preset>` (a bidirectional LSTM) and
`<preset>` (a Transformer encoder). They share the tokenizer (trained on
MR's train split), the splits, the batch, the optimizer and the schedule;
only the backbone differs. Every run trains all `--steps` steps (the
presets' early stopping is switched off, so every architecture sees the
same sentences), keeps its best validation checkpoint and reports that
checkpoint's test accuracy; the script prints per
architecture the parameter count, the test accuracy of each seed and their
mean ± std, beside the majority-class accuracy of the test split. The built-in MR
is a 4,000-sentence subset of Pang & Lee's 10,662 with fixed 80/10/10 splits,
so Kim's 76.1% for CNN-rand (10-fold cross-validation on the full set) is a
reference, not a like-for-like target. The defaults are the settings of the
results table in experiments/reproductions/README.md. Every run is resumable,
and a finished one is reported from its results.json (nothing is compiled);
a workdir made with other settings is refused with one line (see
experiments/reproductions/__init__.py). The table also goes to
WORKDIR/summary.md and the numbers to WORKDIR/summary.json.
"""

import collections

from absl import flags

from experiments import cli, reproductions
from research import sweep

# Architecture -> its configs/finetune/mr.py preset, "{}" standing for --preset.
ARCHS = {"cnn": "cnn_{}", "lstm": "lstm_{}", "transformer": "{}"}
SHARED = ("data", "train", "objective_options", "task", "init_from")
# The config fields a run's config.json is checked for, and the flags that set them.
FLAGS = {"train.steps": "--steps"}
DEFAULTS = {"workdir": "runs/repro_kim_mr", "seeds": ["0", "1", "2"], "steps": 300,
            "preset": "small"}


def configs(preset: str, steps: int) -> tuple[dict, list[str]]:
  """Each architecture's config, and the shared fields that had to be forced to agree."""
  from configs.finetune import mr

  cfgs = {arch: mr.get_config(name.format(preset)) for arch, name in ARCHS.items()}
  forced = reproductions.force_equal(cfgs, SHARED)
  for cfg in cfgs.values():
    t = cfg.train
    t.steps = steps
    t.warmup_steps = min(t.warmup_steps, max(steps // 10, 1))
    t.eval_every = min(t.eval_every, steps)
    t.checkpoint_every = max(steps // 2, 1)  # half way and at the end: enough to resume
    t.patience = 0  # every run trains all its steps: the same sentences for every backbone
  return cfgs, forced


def majority_accuracy(data_cfg, split: str = "test") -> float:
  """Accuracy of always predicting the split's most frequent label."""
  from research.data.tasks import load_task_data
  labels = [e["label"] for e in load_task_data("classification", data_cfg).splits[split]]
  return collections.Counter(labels).most_common(1)[0][1] / len(labels)


def table(summary: dict) -> str:
  """The markdown table of a summary: one row per architecture."""
  title = (f"MR test accuracy, best validation checkpoint ({summary['preset']} presets, "
           f"{summary['steps']} steps of batch {summary['batch_size']}; "
           f"majority class {summary['majority_test_accuracy']:.3f})")
  return reproductions.arch_table(title, "test accuracy", summary["archs"], "test_accuracy", 3)


def run(workdir: str, seeds, steps: int, preset: str = "small") -> dict:
  """Trains every architecture for every seed in WORKDIR/<arch>_seed<seed>; the summary.

  The summary (also WORKDIR/summary.json, and its table WORKDIR/summary.md)
  holds per architecture the parameter count and, per seed, the test
  accuracy of the best validation checkpoint, its validation accuracy and
  step, with the test accuracies' mean, std and 95% interval (sweep.summarize).
  A finished run is read from its results.json; a workdir made with other
  settings raises a ConfigError before anything runs.
  """
  seeds = [int(s) for s in seeds]
  cfgs, forced = configs(preset, steps)
  reproductions.check_workdir(
      workdir, "kim_mr", {"preset": preset, "steps": steps, "seeds": seeds},
      [(reproductions.run_dir(workdir, arch, seed), cfg, FLAGS)
       for arch, cfg in cfgs.items() for seed in seeds])
  reference = cfgs["transformer"]
  summary = {"preset": preset, "steps": steps, "seeds": seeds,
             "batch_size": reference.train.batch_size, "seq_len": reference.data.seq_len,
             "majority_test_accuracy": majority_accuracy(reference.data),
             "forced_equal": forced, "archs": {}}
  for arch, cfg in cfgs.items():
    row = {"config": f"configs/finetune/mr.py:{ARCHS[arch].format(preset)}", "params": None,
           "test_accuracy": [], "validation_accuracy": [], "best_step": [], "steps_run": []}
    for seed in seeds:
      cfg.seed = seed
      run = reproductions.run_dir(workdir, arch, seed)
      result = reproductions.run_or_report(reproductions.finetune, cfg, run, "test/accuracy")
      row["params"] = result["num_params"]
      row["test_accuracy"].append(sweep.read_metric(result, "test/accuracy"))
      row["validation_accuracy"].append(sweep.read_metric(result, "best_value"))
      row["best_step"].append(result["best_step"])
      row["steps_run"].append(result["step"])
    row.update(reproductions.spread(row["test_accuracy"]))
    summary["archs"][arch] = row
  reproductions.write_summary(workdir, summary, table(summary))
  return summary




def define_flags(flag_values=flags.FLAGS) -> None:
  """The command line (defined only when run as a script, so tests can import run)."""
  d, fv = DEFAULTS, {"flag_values": flag_values}
  flags.DEFINE_string("workdir", d["workdir"], "where the runs go", **fv)
  flags.DEFINE_list("seeds", d["seeds"], "seeds (params, data order, dropout)", **fv)
  flags.DEFINE_integer("steps", d["steps"], "training steps per run", **fv)
  flags.DEFINE_string("preset", d["preset"], "tiny or small (configs/finetune/mr.py)", **fv)


def main(argv, overrides):
  del argv, overrides
  f = flags.FLAGS
  summary = run(f.workdir, f.seeds, f.steps, f.preset)
  if summary["forced_equal"]:
    print("forced equal to the Transformer's config: " + "; ".join(summary["forced_equal"]))
  print("\n" + table(summary))


if __name__ == "__main__":
  define_flags()
  cli.run(main)
