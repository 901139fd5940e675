"""GPT-style decoder pretrained with causal LM on the built-in Shakespeare.

  python -m experiments.pretrain --config=configs/pretrain/gpt_clm.py:tiny --workdir=runs/gpt

Presets: tiny (unit tests, seconds), small (the demo, minutes on 2 CPU
cores), base (GPT-2 small shape, 12 x 768: ~98M params with its 16k
vocabulary, bfloat16, for accelerators).
"""

from research.config import with_preset

PRESETS = {
    "tiny": dict(model=dict(num_layers=2, width=64, num_heads=4, max_len=64),
                 data=dict(seq_len=64, vocab_size=512),
                 train=dict(batch_size=16, steps=30, lr=3e-3, warmup_steps=5, log_every=5,
                            eval_every=15, eval_batches=2, checkpoint_every=15)),
    "small": dict(model=dict(num_layers=4, width=256, num_heads=4, max_len=256),
                  data=dict(seq_len=128, vocab_size=2048),
                  train=dict(batch_size=16, steps=300, lr=2e-3, warmup_steps=30, log_every=10,
                             eval_every=100, eval_batches=16, checkpoint_every=100)),
    "base": dict(model=dict(num_layers=12, width=768, num_heads=12, max_len=1024,
                            dtype="bfloat16", dropout=0.0),
                 data=dict(seq_len=1024, vocab_size=16384),
                 train=dict(batch_size=64, steps=20000, lr=6e-4, warmup_steps=1000,
                            log_every=50, eval_every=1000, eval_batches=32,
                            checkpoint_every=1000)),
}


def get_config(preset: str = "tiny"):
  return with_preset(PRESETS, preset)
