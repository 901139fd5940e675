"""BERT-style encoder pretrained with masked LM + next-sentence prediction.

  python -m experiments.pretrain --config=configs/pretrain/bert_mlm_nsp.py:tiny --workdir=runs/bert

Sentence pairs come from the lines of the built-in Shakespeare: half true
continuations, half from another play. MLM alone (packed documents):
`--config.objectives='{"mlm": 1}'`.
"""

from configs.common import BERT_ENCODER, PRETRAIN, PRETRAIN_DATA
from research.config import with_preset

PRESETS = {
    "tiny": dict(model=dict(num_layers=2, width=64, num_heads=4, max_len=64, **BERT_ENCODER),
                 objectives={"mlm": 1.0, "nsp": 1.0},
                 data=PRETRAIN_DATA["tiny"], train=PRETRAIN["tiny"]),
    "small": dict(model=dict(num_layers=4, width=256, num_heads=4, max_len=128, **BERT_ENCODER),
                  objectives={"mlm": 1.0, "nsp": 1.0},
                  data=PRETRAIN_DATA["small"], train=dict(PRETRAIN["small"], lr=1e-3)),
    "base": dict(model=dict(num_layers=12, width=768, num_heads=12, max_len=512,
                            dtype="bfloat16", **BERT_ENCODER),
                 objectives={"mlm": 1.0, "nsp": 1.0},
                 data=dict(seq_len=512, vocab_size=16384),
                 train=dict(PRETRAIN["base"], batch_size=128, lr=1e-4)),
}


def get_config(preset: str = "tiny"):
  return with_preset(PRESETS, preset)
