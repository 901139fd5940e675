"""English -> Spanish translation of the KJV (Reina-Valera 1909): BLEU and chrF.

  python -m experiments.finetune --config=configs/finetune/translation.py:small --workdir=runs/en_es \
      [--config.init_from=runs/t5 --config.generate.beam_size=4]

An encoder-decoder (model.kind=encoder_decoder); init_from may name a t5_span
run of the same size. The `*_decoder` presets train a decoder instead, as a
prefix LM on packed `<s> English <sep> Spanish </s>` rows (any decoder family:
add --config.model.arch=lstm, gru or cnn; init_from may name a gpt_clm run or
a Hugging Face GPT-2/Llama). Evaluation decodes generate.eval_examples
validation verses (greedy, or beam search with generate.beam_size).
"""

from configs.common import DECODER, FINETUNE, FINETUNE_TINY, T5, derive
from research.config import with_preset

PRESETS = {
    "tiny": dict(model=dict(num_layers=1, width=64, num_heads=4, max_len=64, **T5),
                 task="translation",
                 data=dict(source="kjv_en_es", seq_len=48, target_len=48, vocab_size=512),
                 generate=dict(eval_examples=16),
                 train=dict(FINETUNE, **FINETUNE_TINY, lr=3e-3)),
    "small": dict(model=dict(num_layers=3, width=256, num_heads=4, max_len=128, dropout=0.1,
                             **T5),
                  task="translation",
                  data=dict(source="kjv_en_es", seq_len=96, target_len=96, vocab_size=4096),
                  generate=dict(eval_examples=200, beam_size=1),
                  train=dict(FINETUNE, batch_size=32, steps=2000, lr=1e-3, eval_every=500,
                             checkpoint_every=500, warmup_steps=100)),
}

# The same data and schedule on a decoder: a row holds the source and the target.
PRESETS["tiny_decoder"] = derive(PRESETS["tiny"], model=dict(DECODER, max_len=96))
PRESETS["small_decoder"] = derive(PRESETS["small"], model=dict(DECODER, max_len=192))


def get_config(preset: str = "tiny"):
  return with_preset(PRESETS, preset)
