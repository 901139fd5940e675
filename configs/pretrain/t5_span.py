"""T5-style encoder-decoder pretrained with span corruption on the built-in Shakespeare.

  python -m experiments.pretrain --config=configs/pretrain/t5_span.py:tiny --workdir=runs/t5

15% of the tokens, in spans of mean length 3, are replaced by sentinels in
the encoder input; the decoder predicts the spans (objective_options.*).
`model.num_layers` is per stack.
"""

from research.config import with_preset

_T5 = dict(kind="encoder_decoder", position="rope", norm="rmsnorm", mlp="swiglu")

PRESETS = {
    "tiny": dict(model=dict(num_layers=1, width=64, num_heads=4, max_len=64, **_T5),
                 objectives={"span": 1.0},
                 data=dict(seq_len=64, vocab_size=512),
                 train=dict(batch_size=16, steps=30, lr=3e-3, warmup_steps=5, log_every=5,
                            eval_every=15, eval_batches=2, checkpoint_every=15)),
    "small": dict(model=dict(num_layers=2, width=256, num_heads=4, max_len=128, **_T5),
                  objectives={"span": 1.0},
                  data=dict(seq_len=128, vocab_size=2048),
                  train=dict(batch_size=16, steps=300, lr=1e-3, warmup_steps=30, log_every=10,
                             eval_every=100, eval_batches=16, checkpoint_every=100)),
    "base": dict(model=dict(num_layers=12, width=768, num_heads=12, max_len=512,
                            dtype="bfloat16", **_T5),
                 objectives={"span": 1.0},
                 data=dict(seq_len=512, vocab_size=16384),
                 train=dict(batch_size=128, steps=20000, lr=1e-3, warmup_steps=1000,
                            log_every=50, eval_every=1000, eval_batches=32,
                            checkpoint_every=1000)),
}


def get_config(preset: str = "tiny"):
  return with_preset(PRESETS, preset)
