"""Transformer vs LSTM vs gated CNN language models at equal parameters and equal tokens.

  python -m experiments.reproductions.arch_ablation [--workdir=runs/repro_arch_ablation \
      --seeds=0,1,2 --steps=200 --preset=small --corpus=shakespeare]

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
perplexity of the eval split (the floor any model must beat). The defaults
are the settings of the results table in experiments/reproductions/README.md.
Every run is resumable, so an interrupted reproduction continues, and a
finished one is reported from its results.json (nothing is compiled); a
workdir made with other settings is refused with one line (see
experiments/reproductions/__init__.py). The table also goes to
WORKDIR/summary.md and the numbers to WORKDIR/summary.json.
"""


from absl import flags

from experiments import cli, reproductions
from research import sweep

# Architecture -> its config module in configs/pretrain.
ARCHS = {"transformer": "gpt_clm", "lstm": "lstm_clm", "cnn": "cnn_clm"}
# Fields that must agree between the architectures' configs for the comparison to be fair.
SHARED = ("data", "train", "objectives", "objective_options", "mesh")
# The config fields a run's config.json is checked for, and the flags that set them.
FLAGS = {"train.steps": "--steps", "data.source": "--corpus"}
DEFAULTS = {"workdir": "runs/repro_arch_ablation", "seeds": ["0", "1", "2"], "steps": 200,
            "preset": "small", "corpus": "shakespeare"}


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
  with mean, std and 95% interval (sweep.summarize), and the tokens seen and
  unigram perplexity they share. A finished run is read from its
  results.json; a workdir made with other settings raises a ConfigError
  before anything runs.
  """
  seeds = [int(s) for s in seeds]
  cfgs, forced = configs(preset, steps, corpus)
  reproductions.check_workdir(
      workdir, "arch_ablation",
      {"preset": preset, "steps": steps, "seeds": seeds, "corpus": corpus},
      [(reproductions.run_dir(workdir, arch, seed), cfg, FLAGS)
       for arch, cfg in cfgs.items() for seed in seeds])
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
      run = reproductions.run_dir(workdir, arch, seed)
      result = reproductions.run_or_report(reproductions.pretrain, cfg, run, "perplexity")
      row["params"] = result["num_params"]
      row["perplexity"].append(sweep.read_metric(result, "perplexity"))
      row["loss"].append(sweep.read_metric(result, "loss"))
      summary["unigram_perplexity"] = sweep.read_metric(result, "unigram_perplexity")
    row.update(reproductions.spread(row["perplexity"]))
    summary["archs"][arch] = row
  reproductions.write_summary(workdir, summary, table(summary))
  return summary




def define_flags(flag_values=flags.FLAGS) -> None:
  """The command line (defined only when run as a script, so tests can import run)."""
  d, fv = DEFAULTS, {"flag_values": flag_values}
  flags.DEFINE_string("workdir", d["workdir"], "where the runs go", **fv)
  flags.DEFINE_list("seeds", d["seeds"], "seeds (params, data order, dropout)", **fv)
  flags.DEFINE_integer("steps", d["steps"], "training steps per run", **fv)
  flags.DEFINE_string("preset", d["preset"], "preset of gpt_clm, lstm_clm and cnn_clm", **fv)
  flags.DEFINE_string("corpus", d["corpus"], "built-in corpus (data.source)", **fv)


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
