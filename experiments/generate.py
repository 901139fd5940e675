"""Sample text from a run's latest checkpoint, or straight from a Hugging Face decoder.

  python -m experiments.generate --workdir=runs/gpt --prompt "To be" [--temperature=0.8 --top_k=50 --top_p=0.95]
  python -m experiments.generate --init_from=PATH --prompt "To be" [--beam_size=4]

PATH is a Hugging Face folder (config.json, model.safetensors, tokenizer files)
of a decoder family research/hf imports (GPT-2, GPT-Neo, BLOOM, GPT-NeoX,
Llama, Mistral, Qwen2): no training run first. Greedy decoding with
--temperature=0 (the default), or beam search with --beam_size > 1; the
model's own incremental state (KV cache, ...) makes each new token one small step.
Without --max_new_tokens each prompt continues up to model.max_len tokens;
special tokens (<mask>, <extra_id_N>, ...) are never generated.
"""

from absl import flags

from experiments import cli

_WORKDIR = flags.DEFINE_string("workdir", None, "a pretraining run's workdir")
_INIT_FROM = flags.DEFINE_string("init_from", None, "a Hugging Face decoder's folder (instead "
                                 "of --workdir)")
_BEAM = flags.DEFINE_integer("beam_size", 1, "beams to search (1: sample, or greedy)")
_PROMPT = flags.DEFINE_multi_string("prompt", [""], "prompt text (repeatable)")
_MAX_NEW = flags.DEFINE_integer("max_new_tokens", None, "tokens to generate per prompt "
                                "(default: the room model.max_len leaves after the prompt)")
_TEMPERATURE = flags.DEFINE_float("temperature", 0.0, "0 is greedy")
_TOP_K = flags.DEFINE_integer("top_k", 0, "sample from the k most likely tokens (0: all)")
_TOP_P = flags.DEFINE_float("top_p", 1.0, "sample from the smallest set with this mass")
_SEED = flags.DEFINE_integer("seed", 0, "sampling seed")
flags.mark_flags_as_mutual_exclusive(["workdir", "init_from"], required=True)


def main(argv, overrides):
  from research import generate, hf
  options = dict(max_new_tokens=_MAX_NEW.value, temperature=_TEMPERATURE.value,
                 top_k=_TOP_K.value, top_p=_TOP_P.value, seed=_SEED.value,
                 beam_size=_BEAM.value)
  if _INIT_FROM.value:
    texts = generate.continue_texts(*hf.load_model(_INIT_FROM.value), _PROMPT.value, **options)
    tag = "hf"
  else:
    step, texts = generate.generate_text(_WORKDIR.value, _PROMPT.value, **options)
    tag = f"step {step}"
  for prompt, text in zip(_PROMPT.value, texts):
    print(f"[{tag}] {prompt}{text}")


if __name__ == "__main__":
  cli.run(main)
