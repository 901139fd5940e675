"""Sample text from a run's latest checkpoint.

  python -m experiments.generate --workdir=runs/gpt --prompt "To be" [--temperature=0.8 --top_k=50 --top_p=0.95]

Greedy decoding with --temperature=0 (the default).
"""

import os

from absl import flags

from experiments import cli

_WORKDIR = flags.DEFINE_string("workdir", None, "a pretraining run's workdir")
_PROMPT = flags.DEFINE_multi_string("prompt", [""], "prompt text (repeatable)")
_MAX_NEW = flags.DEFINE_integer("max_new_tokens", 64, "tokens to generate per prompt")
_TEMPERATURE = flags.DEFINE_float("temperature", 0.0, "0 is greedy")
_TOP_K = flags.DEFINE_integer("top_k", 0, "sample from the k most likely tokens (0: all)")
_TOP_P = flags.DEFINE_float("top_p", 1.0, "sample from the smallest set with this mass")
_SEED = flags.DEFINE_integer("seed", 0, "sampling seed")
flags.mark_flags_as_required(["workdir"])


def main(argv, overrides):
  import jax
  from research import generate, train
  from research.data.tokenizer import Tokenizer
  from research.errors import ConfigError

  cfg, netdef, params, step = train.restore_params(_WORKDIR.value)
  network = netdef.merge(params)
  if not getattr(network.backbone, "causal", False) or not hasattr(network.backbone,
                                                                     "decode_step"):
    raise ConfigError(f"model.arch={cfg.model.arch} model.kind={cfg.model.kind} cannot "
                      "generate text (it is not a decoder)")
  if _TEMPERATURE.value < 0 or not 0 < _TOP_P.value <= 1 or _TOP_K.value < 0:
    raise ConfigError("need temperature >= 0, 0 < top_p <= 1 and top_k >= 0")
  tokenizer = Tokenizer(os.path.join(_WORKDIR.value, "tokenizer.model"))
  backbone = lambda p: netdef.merge(p).backbone
  for text in _PROMPT.value:
    ids = [tokenizer.bos_id] + tokenizer.encode(text)
    if len(ids) + _MAX_NEW.value > cfg.model.max_len:
      raise ConfigError(f"prompt + max_new_tokens is above model.max_len={cfg.model.max_len}")
    new = generate.generate(backbone, params, [ids], max_new_tokens=_MAX_NEW.value,
                            rng=jax.random.PRNGKey(_SEED.value),
                            temperature=_TEMPERATURE.value, top_k=_TOP_K.value,
                            top_p=_TOP_P.value, eos_id=tokenizer.eos_id)[0]
    print(f"[step {step}] {text}{tokenizer.decode(new)}")


if __name__ == "__main__":
  cli.run(main)
