"""BBC News headline generation (article body -> headline): ROUGE-1/2/L.

  python -m experiments.finetune --config=configs/finetune/summarization.py:small --workdir=runs/bbc_sum

An encoder-decoder; init_from may name a t5_span run of the same size. The
`*_decoder` presets train a decoder as a prefix LM on packed
`<s> body <sep> headline </s>` rows (any decoder family: --config.model.arch).
"""

from configs.common import DECODER, FINETUNE, FINETUNE_TINY, T5, derive
from research.config import with_preset

PRESETS = {
    "tiny": dict(model=dict(num_layers=1, width=64, num_heads=4, max_len=128, **T5),
                 task="summarization",
                 data=dict(source="bbc_headline", seq_len=128, target_len=24, vocab_size=512),
                 generate=dict(eval_examples=16),
                 train=dict(FINETUNE, **FINETUNE_TINY, lr=3e-3)),
    "small": dict(model=dict(num_layers=3, width=256, num_heads=4, max_len=512, dropout=0.1,
                             **T5),
                  task="summarization",
                  data=dict(source="bbc_headline", seq_len=384, target_len=24, vocab_size=4096),
                  generate=dict(eval_examples=222, beam_size=4),
                  train=dict(FINETUNE, batch_size=16, steps=1500, lr=1e-3, eval_every=300,
                             checkpoint_every=300, warmup_steps=100)),
}

# The same data and schedule on a decoder: a row holds the source and the target.
PRESETS["tiny_decoder"] = derive(PRESETS["tiny"], model=dict(DECODER, max_len=160))
PRESETS["small_decoder"] = derive(PRESETS["small"], model=dict(DECODER, max_len=512))


def get_config(preset: str = "tiny"):
  return with_preset(PRESETS, preset)
