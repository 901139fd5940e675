"""The main job, end to end: `make demo` runs `python -m experiments.demo`.

Pretrains the `small` GPT on the built-in Shakespeare (fetched and cached on
first use), evaluates it against a unigram baseline, prints a results table
and generated samples. Resumable: run it again and it continues (or just
reports, if it had finished).
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
  import json
  import os

  from configs.pretrain import gpt_clm
  from research import generate, train

  workdir = os.path.join(_WORKDIR.value, "gpt_clm")
  results = train.pretrain(gpt_clm.get_config(_PRESET.value), workdir)
  if "interrupted" in results:
    raise SystemExit(128 + results["interrupted"])
  with open(os.path.join(workdir, "metrics.jsonl")) as f:
    speeds = [r["tokens_per_s"] for r in map(json.loads, f) if r["split"] == "train"]
  print("\nPretraining: GPT (causal LM) on Shakespeare\n")
  print(table([
      ("parameters", f"{results['num_params']:,}"),
      ("steps", str(results["step"])),
      ("eval loss", f"{results['loss']:.3f}"),
      ("eval perplexity", f"{results['perplexity']:.1f}"),
      ("unigram perplexity (same tokenizer)", f"{results['unigram_perplexity']:.1f}"),
      ("eval next-token accuracy", f"{results['accuracy']:.1%}"),
      ("train tokens/s (median)", f"{sorted(speeds)[len(speeds) // 2]:,.0f}" if speeds else "-"),
  ]))
  prompts = ["ROMEO.", "To be, or not to be"]
  _, greedy = generate.generate_text(workdir, prompts, max_new_tokens=48)
  _, sampled = generate.generate_text(workdir, prompts, max_new_tokens=48, temperature=0.8,
                                      top_p=0.95)
  for prompt, g, s in zip(prompts, greedy, sampled):
    for how, text in (("greedy", g), ("sampled, temperature 0.8, top-p 0.95", s)):
      print(f"\n--- {how} ---\n{prompt}{text}")
  print(f"\nEverything is in {workdir}: metrics.jsonl, tb/, checkpoints/, results.json")


if __name__ == "__main__":
  cli.run(main)
