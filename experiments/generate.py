"""Sample text from a run's latest checkpoint.

  python -m experiments.generate --workdir=runs/gpt --prompt "To be" [--temperature=0.8 --top_k=50 --top_p=0.95]

Greedy decoding with --temperature=0 (the default); the model's own
incremental state (KV cache, ...) makes each new token one small step.
Without --max_new_tokens each prompt continues up to model.max_len tokens;
special tokens (<mask>, <extra_id_N>, ...) are never generated.
"""

from absl import flags

from experiments import cli

_WORKDIR = flags.DEFINE_string("workdir", None, "a pretraining run's workdir")
_PROMPT = flags.DEFINE_multi_string("prompt", [""], "prompt text (repeatable)")
_MAX_NEW = flags.DEFINE_integer("max_new_tokens", None, "tokens to generate per prompt "
                                "(default: the room model.max_len leaves after the prompt)")
_TEMPERATURE = flags.DEFINE_float("temperature", 0.0, "0 is greedy")
_TOP_K = flags.DEFINE_integer("top_k", 0, "sample from the k most likely tokens (0: all)")
_TOP_P = flags.DEFINE_float("top_p", 1.0, "sample from the smallest set with this mass")
_SEED = flags.DEFINE_integer("seed", 0, "sampling seed")
flags.mark_flags_as_required(["workdir"])


def main(argv, overrides):
  from research.generate import generate_text
  step, texts = generate_text(_WORKDIR.value, _PROMPT.value, max_new_tokens=_MAX_NEW.value,
                              temperature=_TEMPERATURE.value, top_k=_TOP_K.value,
                              top_p=_TOP_P.value, seed=_SEED.value)
  for prompt, text in zip(_PROMPT.value, texts):
    print(f"[step {step}] {prompt}{text}")


if __name__ == "__main__":
  cli.run(main)
