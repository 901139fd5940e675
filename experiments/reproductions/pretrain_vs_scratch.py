"""Does pretraining help? An MLM-pretrained Transformer vs the same model from scratch, on MR.

  python -m experiments.reproductions.pretrain_vs_scratch --workdir=runs/pretrain_vs_scratch \
      [--seeds=0,1,2 --corpus=bbc_news --pretrain_steps=3000 --finetune_steps=400]

Pretrains bert_mlm_nsp:small with MLM alone on a built-in corpus (BBC News:
modern prose, like MR's movie reviews; Shakespeare or the KJV share too
little vocabulary with MR for a few thousand steps to help), then fine-tunes
configs/finetune/mr.py:small from it and from random initialisation with the
same tokenizer, steps, hyper-parameters and seeds, and prints the MR test
accuracy of each (best validation checkpoint) with mean and standard
deviation. Every run is resumable, so an interrupted reproduction continues.
"""

import json
import os
import statistics

from absl import flags

from experiments import cli

_WORKDIR = flags.DEFINE_string("workdir", "runs/pretrain_vs_scratch", "where the runs go")
_SEEDS = flags.DEFINE_list("seeds", ["0", "1", "2"], "fine-tuning seeds")
_CORPUS = flags.DEFINE_string("corpus", "bbc_news", "built-in corpus to pretrain on")
_PRETRAIN_STEPS = flags.DEFINE_integer("pretrain_steps", 3000, "MLM pretraining steps")
_FINETUNE_STEPS = flags.DEFINE_integer("finetune_steps", 400, "MR fine-tuning steps per run")
_PRESET = flags.DEFINE_string("preset", "small", "preset of both configs")


def main(argv, overrides):
  import ml_collections

  from configs.finetune import mr
  from configs.pretrain import bert_mlm_nsp
  from research import finetune, train

  root = _WORKDIR.value
  pre_cfg = bert_mlm_nsp.get_config(_PRESET.value)
  pre_cfg.objectives = ml_collections.ConfigDict({"mlm": 1.0})
  pre_cfg.data.source = _CORPUS.value
  pre_cfg.train.steps = _PRETRAIN_STEPS.value
  pre_cfg.train.warmup_steps = min(pre_cfg.train.warmup_steps * 4, _PRETRAIN_STEPS.value // 10)
  pre_cfg.train.eval_every = pre_cfg.train.checkpoint_every = max(_PRETRAIN_STEPS.value // 6, 1)
  pretrained = os.path.join(root, "pretrain_mlm")
  pre = train.pretrain(pre_cfg, pretrained)
  rows = {"pretrained": [], "scratch": []}
  for seed in map(int, _SEEDS.value):
    for name, init_from in (("pretrained", pretrained), ("scratch", "")):
      cfg = mr.get_config(_PRESET.value)
      cfg.seed, cfg.init_from, cfg.train.steps = seed, init_from, _FINETUNE_STEPS.value
      if not init_from:  # the same tokenizer as the pretrained run: only the weights differ
        cfg.data.tokenizer = os.path.join(pretrained, "tokenizer.model")
        cfg.data.vocab_size = pre_cfg.data.vocab_size
      result = finetune.finetune(cfg, os.path.join(root, f"mr_{name}_seed{seed}"))
      rows[name].append(result["test"]["accuracy"])
  summary = {"pretrain_mlm_eval": {k: pre[k] for k in ("mlm/accuracy", "mlm/loss") if k in pre}}
  print("\n| init | MR test accuracy per seed | mean ± std |\n|---|---|---|")
  for name, accs in rows.items():
    mean, std = statistics.mean(accs), statistics.stdev(accs) if len(accs) > 1 else 0.0
    summary[name] = {"accuracy": accs, "mean": mean, "std": std}
    print(f"| {name} | {', '.join(f'{a:.3f}' for a in accs)} | {mean:.3f} ± {std:.3f} |")
  with open(os.path.join(root, "summary.json"), "w") as f:
    json.dump(summary, f, indent=2)


if __name__ == "__main__":
  cli.run(main)
