"""GPT-style decoder pretrained with causal LM on the built-in Shakespeare.

  python -m experiments.pretrain --config=configs/pretrain/gpt_clm.py:tiny --workdir=runs/gpt

Presets: tiny (unit tests, seconds), small (the demo, minutes on 2 CPU
cores), base (GPT-2 small shape, 12 x 768: ~98M params with its 16k
vocabulary, bfloat16, for accelerators); tiny_code and small_code pretrain
on `python_code_train` for the code task (configs/finetune/code.py).
"""

from configs.common import PRETRAIN, PRETRAIN_DATA
from research.config import with_preset

PRESETS = {
    "tiny": dict(model=dict(num_layers=2, width=64, num_heads=4, max_len=64),
                 data=PRETRAIN_DATA["tiny"], train=PRETRAIN["tiny"]),
    "small": dict(model=dict(num_layers=4, width=256, num_heads=4, max_len=256),
                  data=PRETRAIN_DATA["small"], train=PRETRAIN["small"]),
    # Code: the standard library without the code task's held-out functions
    # (configs/finetune/code.py fine-tunes these shapes).
    "tiny_code": dict(model=dict(num_layers=2, width=64, num_heads=4, max_len=256),
                      data=dict(source="python_code_train", seq_len=128, vocab_size=512),
                      train=PRETRAIN["tiny"]),
    "small_code": dict(model=dict(num_layers=4, width=256, num_heads=4, max_len=512),
                       data=dict(source="python_code_train", seq_len=256, vocab_size=4096),
                       train=PRETRAIN["small"]),
    "base": dict(model=dict(num_layers=12, width=768, num_heads=12, max_len=1024,
                            dtype="bfloat16", dropout=0.0),
                 data=dict(seq_len=1024, vocab_size=16384), train=PRETRAIN["base"]),
}


def get_config(preset: str = "tiny"):
  return with_preset(PRESETS, preset)
