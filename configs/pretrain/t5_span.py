"""T5-style encoder-decoder pretrained with span corruption on the built-in Shakespeare.

  python -m experiments.pretrain --config=configs/pretrain/t5_span.py:tiny --workdir=runs/t5

15% of the tokens, in spans of mean length 3, are replaced by sentinels in
the encoder input; the decoder predicts the spans (objective_options.*).
`model.num_layers` is per stack.
"""

from configs.common import PRETRAIN, PRETRAIN_DATA, T5
from research.config import with_preset

PRESETS = {
    "tiny": dict(model=dict(num_layers=1, width=64, num_heads=4, max_len=64, **T5),
                 objectives={"span": 1.0},
                 data=PRETRAIN_DATA["tiny"], train=PRETRAIN["tiny"]),
    "small": dict(model=dict(num_layers=2, width=256, num_heads=4, max_len=128, **T5),
                  objectives={"span": 1.0},
                  data=PRETRAIN_DATA["small"], train=dict(PRETRAIN["small"], lr=1e-3)),
    "base": dict(model=dict(num_layers=12, width=768, num_heads=12, max_len=512,
                            dtype="bfloat16", **T5),
                 objectives={"span": 1.0},
                 data=dict(seq_len=512, vocab_size=16384),
                 train=dict(PRETRAIN["base"], batch_size=128, lr=1e-3)),
}


def get_config(preset: str = "tiny"):
  return with_preset(PRESETS, preset)
