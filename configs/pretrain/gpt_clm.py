"""GPT-style decoder pretrained with causal LM on the built-in Shakespeare.

  python -m experiments.pretrain --config=configs/pretrain/gpt_clm.py:tiny --workdir=runs/gpt

Presets: tiny (unit tests, seconds), small (the demo, minutes on 2 CPU
cores), base (GPT-2 small shape, 12 x 768: ~98M params with its 16k
vocabulary, bfloat16, for accelerators).
"""

from configs.common import PRETRAIN, PRETRAIN_DATA
from research.config import with_preset

PRESETS = {
    "tiny": dict(model=dict(num_layers=2, width=64, num_heads=4, max_len=64),
                 data=PRETRAIN_DATA["tiny"], train=PRETRAIN["tiny"]),
    "small": dict(model=dict(num_layers=4, width=256, num_heads=4, max_len=256),
                  data=PRETRAIN_DATA["small"], train=PRETRAIN["small"]),
    "base": dict(model=dict(num_layers=12, width=768, num_heads=12, max_len=1024,
                            dtype="bfloat16", dropout=0.0),
                 data=dict(seq_len=1024, vocab_size=16384), train=PRETRAIN["base"]),
}


def get_config(preset: str = "tiny"):
  return with_preset(PRESETS, preset)
