"""BBC News topic (5 classes): classification, accuracy and macro-F1.

  python -m experiments.finetune --config=configs/finetune/bbc_topic.py:small --workdir=runs/bbc \
      --config.init_from=runs/bert            # a Trellis MLM run (same preset size)
  python -m experiments.finetune --config=configs/finetune/bbc_topic.py:minilm --workdir=runs/bbc_minilm

Presets: tiny (tests), small (the Transformer encoder of bert_mlm_nsp:small,
from scratch unless init_from names a run), minilm (the built-in MiniLM-L6).
The built-in set is 2,225 articles (headline + body) with fixed splits.
"""

from configs.common import BERT_ENCODER, CLASSIFY, FINETUNE_TINY, MINILM
from research.config import with_preset

PRESETS = {
    "tiny": dict(model=dict(num_layers=2, width=64, num_heads=4, max_len=128, **BERT_ENCODER),
                 task="classification", data=dict(source="bbc_topic", seq_len=128, vocab_size=512),
                 train=dict(CLASSIFY, **FINETUNE_TINY, lr=1e-3)),
    "small": dict(model=dict(num_layers=4, width=256, num_heads=4, max_len=128, dropout=0.1,
                             **BERT_ENCODER),
                  task="classification", data=dict(source="bbc_topic", seq_len=128, vocab_size=2048),
                  train=dict(CLASSIFY, batch_size=32, steps=400, lr=5e-4, eval_every=50,
                             checkpoint_every=50)),
    "minilm": dict(model=MINILM, task="classification", init_from="minilm-l6",
                   data=dict(source="bbc_topic", seq_len=256),
                   train=dict(CLASSIFY, batch_size=32, steps=300, lr=5e-5, eval_every=50,
                              checkpoint_every=50, weight_decay=0.01)),
}


def get_config(preset: str = "tiny"):
  return with_preset(PRESETS, preset)
