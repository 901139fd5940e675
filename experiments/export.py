"""Write a Trellis run as a Hugging Face model folder: `python -m experiments.export --workdir=RUN --out=DIR`.

The run's latest checkpoint is written as the Hugging Face family its model config has
(research/hf: decoders as GPT-2, GPT-Neo, BLOOM, GPT-NeoX, Llama, Mistral or
Qwen2; encoders as BERT; encoder-decoders as T5), with its tokenizer, so
`transformers.AutoModel*.from_pretrained(DIR)` loads it and gives the same
logits. A config no family has is refused, naming the fields, before
anything is written. --pooler_head names a pooled head whose layer becomes
BERT's pooler.
"""

from absl import flags

from experiments import cli

_WORKDIR = flags.DEFINE_string("workdir", None, "a Trellis run's workdir")
_OUT = flags.DEFINE_string("out", None, "the folder to write (created)")
_POOLER = flags.DEFINE_string("pooler_head", None, "encoders: the pooled head exported as "
                              "BERT's pooler (e.g. cls)")
flags.mark_flags_as_required(["workdir", "out"])


def main(argv, overrides):
  from research import hf
  from research.data.hf_tokenizer import load_tokenizer
  from research.workdir import restore_params
  cfg, _, params, step = restore_params(_WORKDIR.value)
  hf.export(cfg, params, _OUT.value, tokenizer=load_tokenizer(_WORKDIR.value),
            pooler_head=_POOLER.value)
  print(f"exported step {step} of {_WORKDIR.value} to {_OUT.value}")


if __name__ == "__main__":
  cli.run(main)
