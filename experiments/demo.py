"""The main job, end to end: `make demo` runs `python -m experiments.demo`.

Pretrains the `small` GPT on the built-in Shakespeare (fetched and cached on
first use), evaluates it against a unigram baseline, prints generated
samples, then fine-tunes that checkpoint on MR sentence polarity and prints
a results table. Resumable: run it again and it continues (or just reports,
if it had finished).
"""

from absl import flags

from experiments import cli

_WORKDIR = flags.DEFINE_string("workdir", "runs/demo", "where the demo's runs go")
_PRESET = flags.DEFINE_string("preset", "small", "gpt_clm preset to pretrain")


def table(rows: list[tuple[str, str]]) -> str:
  """A two-column markdown table."""
  width = max(len(k) for k, _ in rows)
  lines = [f"| {'metric':<{width}} | value |", f"|{'-' * (width + 2)}|-------|"]
  return "\n".join(lines + [f"| {k:<{width}} | {v} |" for k, v in rows])


def main(argv, overrides):
  import os

  from configs.finetune import mr
  from configs.pretrain import gpt_clm
  from research import finetune, generate, train
  from research.metric_log import MetricLog

  workdir = os.path.join(_WORKDIR.value, "gpt_clm")
  results = train.pretrain(gpt_clm.get_config(_PRESET.value), workdir)
  prompts = ["ROMEO.", "To be, or not to be"]
  _, greedy = generate.generate_text(workdir, prompts, max_new_tokens=48)
  _, sampled = generate.generate_text(workdir, prompts, max_new_tokens=48, temperature=0.8,
                                      top_p=0.95)
  for prompt, g, s in zip(prompts, greedy, sampled):
    for how, text in (("greedy", g), ("sampled, temperature 0.8, top-p 0.95", s)):
      print(f"\n--- {how} ---\n{prompt}{text}")

  # Transfer: the pretrained decoder, pooled at its last token, classifies MR.
  mr_cfg = mr.get_config(_PRESET.value)
  mr_cfg.model.kind, mr_cfg.init_from = "decoder", workdir
  mr_cfg.train.steps = 300
  mr_dir = os.path.join(_WORKDIR.value, "mr")
  mr_results = finetune.finetune(mr_cfg, mr_dir)
  speeds = [r["tokens_per_s"] for r in MetricLog.read(workdir, "train")]
  print("\nPretraining: GPT (causal LM) on Shakespeare; then fine-tuning on MR\n")
  print(table([
      ("parameters", f"{results['num_params']:,}"),
      ("steps", str(results["step"])),
      ("eval loss", f"{results['loss']:.3f}"),
      ("eval perplexity", f"{results['perplexity']:.1f}"),
      ("unigram perplexity (same tokenizer)", f"{results['unigram_perplexity']:.1f}"),
      ("eval next-token accuracy", f"{results['accuracy']:.1%}"),
      ("train tokens/s (median)", f"{sorted(speeds)[len(speeds) // 2]:,.0f}" if speeds else "-"),
      ("MR test accuracy (fine-tuned, best validation checkpoint)",
       f"{mr_results['test']['accuracy']:.1%}"),
      ("MR test macro-F1", f"{mr_results['test']['macro_f1']:.3f}"),
  ]))
  print(f"\nEverything is in {workdir} and {mr_dir}: metrics.jsonl, tb/, checkpoints/, "
        "results.json")


if __name__ == "__main__":
  cli.run(main)
