"""Fine-tune on a task: `python -m experiments.finetune --config=configs/finetune/NAME.py:PRESET --workdir=DIR`.

`--config.init_from` names the weights: a Trellis pretraining workdir, the
built-in `minilm-l6`, a Hugging Face folder of any family research/hf imports
(GPT-2, GPT-Neo, BLOOM, GPT-NeoX, Llama, Mistral, Qwen2, T5, BERT, RoBERTa), or
"" for a fresh network.
Running the same command on the same workdir resumes.
"""

from experiments import cli

_CONFIG, _WORKDIR = cli.define_run_flags()


def main(argv, overrides):
  from research import finetune
  cli.run_training(finetune.finetune, _CONFIG, _WORKDIR, overrides)


if __name__ == "__main__":
  cli.run(main)
