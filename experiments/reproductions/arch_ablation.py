"""Transformer vs LSTM vs gated CNN language models at equal parameters and equal tokens.

  python -m experiments.reproductions.arch_ablation --workdir=runs/arch_ablation \
      [--seeds=0,1,2 --steps=300 --preset=small --corpus=shakespeare]

Pretrains the `--preset` presets of configs/pretrain/gpt_clm.py (Transformer
decoder), lstm_clm.py (LSTM) and cnn_clm.py (gated dilated CNN, Dauphin et
al. 2017) with causal LM on a built-in corpus, each for `--steps` steps per
seed. The presets are sized to the same parameter count (within a few
percent); their data and training settings (tokenizer, vocabulary, sequence
length, batch, learning rate, schedule) are checked to agree and forced to
the Transformer's where they do not, so every model sees the same tokens in
the same order for a given seed. Prints, per architecture, the parameter
count, the eval perplexity of each seed on the whole held-out split, and
their mean ± std, beside the tokens seen and the add-one unigram
perplexity of the eval split (the floor any model must beat). Every run is
resumable, so an interrupted reproduction continues; the table also goes to
WORKDIR/summary.md and the numbers to WORKDIR/summary.json.
"""

import os

from absl import flags

from experiments import cli, reproductions

# Architecture -> its config module in configs/pretrain.
ARCHS = {"transformer": "gpt_clm", "lstm": "lstm_clm", "cnn": "cnn_clm"}
# Fields that must agree between the architectures' configs for the comparison to be fair.
SHARED = ("data", "train", "objectives", "objective_options", "mesh")


def configs(preset: str, steps: int, corpus: str) -> tuple[dict, list[str]]:
  """Each architecture's config at `preset`, and the shared fields that had to be forced.

  Data and training fields come from the Transformer's config; a field the
  other presets set differently is overwritten and named in the list.
  """
  import importlib

  cfgs = {arch: importlib.import_module(f"configs.pretrain.{name}").get_config(preset)
          for arch, name in ARCHS.items()}
  forced = reproductions.force_equal(cfgs, SHARED)
  for cfg in cfgs.values():  # then the reproduction's own settings, the same for all
    t = cfg.train
    cfg.data.source = corpus
    t.steps = steps
    t.warmup_steps = min(t.warmup_steps, max(steps // 10, 1))
    t.eval_every = 0  # one evaluation, at the end
    t.eval_batches = 0  # over the whole eval split
    t.checkpoint_every = max(steps // 2, 1)  # half way and at the end: enough to resume
  return cfgs, forced


def table(summary: dict) -> str:
  """The markdown table of a summary: one row per architecture."""
  title = (f"Eval perplexity on {summary['corpus']} ({summary['preset']} presets, "
           f"{summary['steps']} steps = {summary['tokens_seen']:,} tokens per run; "
           f"unigram perplexity {summary['unigram_perplexity']:.1f})")
  return reproductions.arch_table(title, "eval perplexity", summary["archs"], "perplexity", 2)


def run(workdir: str, seeds, steps: int, preset: str = "small",
        corpus: str = "shakespeare") -> dict:
  """Trains every architecture for every seed in WORKDIR/<arch>_seed<seed>; the summary.

  The summary (also WORKDIR/summary.json, and its table WORKDIR/summary.md)
  holds per architecture the parameter count and eval perplexity per seed
  with mean and std, and the tokens seen and unigram perplexity they share.
  """
  from research import train

  seeds = [int(s) for s in seeds]
  cfgs, forced = configs(preset, steps, corpus)
  t, d = cfgs["transformer"].train, cfgs["transformer"].data
  summary = {"corpus": corpus, "preset": preset, "steps": steps, "seeds": seeds,
             "batch_size": t.batch_size, "seq_len": d.seq_len, "vocab_size": d.vocab_size,
             "tokens_seen": steps * t.batch_size * d.seq_len, "forced_equal": forced,
             "unigram_perplexity": None, "archs": {}}
  for arch, cfg in cfgs.items():
    row = {"config": f"configs/pretrain/{ARCHS[arch]}.py:{preset}", "params": None,
           "perplexity": [], "loss": []}
    for seed in seeds:
      cfg.seed = seed
      run_dir = os.path.join(workdir, f"{arch}_seed{seed}")
      result = train.pretrain(cfg, run_dir)
      row["params"] = result["num_params"]
      row["perplexity"].append(result["perplexity"])
      row["loss"].append(result["loss"])
      summary["unigram_perplexity"] = result["unigram_perplexity"]
    row["mean"], row["std"] = reproductions.mean_std(row["perplexity"])
    summary["archs"][arch] = row
  reproductions.write_summary(workdir, summary, table(summary))
  return summary


def define_flags() -> None:
  """The command line (defined only when run as a script, so tests can import run)."""
  flags.DEFINE_string("workdir", "runs/arch_ablation", "where the runs go")
  flags.DEFINE_list("seeds", ["0", "1", "2"], "seeds (params, data order, dropout)")
  flags.DEFINE_integer("steps", 300, "training steps per run")
  flags.DEFINE_string("preset", "small", "preset of gpt_clm, lstm_clm and cnn_clm")
  flags.DEFINE_string("corpus", "shakespeare", "built-in corpus (data.source)")


def main(argv, overrides):
  del argv, overrides
  f = flags.FLAGS
  summary = run(f.workdir, f.seeds, f.steps, f.preset, f.corpus)
  if summary["forced_equal"]:
    print("forced equal to the Transformer's config: " + "; ".join(summary["forced_equal"]))
  print("\n" + table(summary))


if __name__ == "__main__":
  define_flags()
  cli.run(main)
