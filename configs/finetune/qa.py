"""Extractive QA (SQuAD v1.1 format): start/end head, sliding windows, EM and F1.

  python -m experiments.finetune --config=configs/finetune/qa.py:small --workdir=runs/qa \
      [--config.init_from=runs/bert | --config.data.source=files --config.data.train_files=train.json ...]

The built-in `squad_builtin` is a cloze-style set made from the KJV (see the
README); any SQuAD-format json/jsonl works through data.source=files.
"""

from configs.common import BERT_ENCODER, FINETUNE, FINETUNE_TINY, MINILM
from research.config import with_preset

PRESETS = {
    "tiny": dict(model=dict(num_layers=2, width=64, num_heads=4, max_len=128, **BERT_ENCODER),
                 task="qa", data=dict(source="squad_builtin", seq_len=128, vocab_size=512,
                                      doc_stride=48),
                 train=dict(FINETUNE, **FINETUNE_TINY, lr=1e-3)),
    "small": dict(model=dict(num_layers=4, width=256, num_heads=4, max_len=256, dropout=0.1,
                             **BERT_ENCODER),
                  task="qa", data=dict(source="squad_builtin", seq_len=192, vocab_size=2048),
                  train=dict(FINETUNE, batch_size=32, steps=600, lr=5e-4, eval_every=100,
                             checkpoint_every=100, warmup_steps=30)),
    "minilm": dict(model=MINILM, task="qa", init_from="minilm-l6",
                   data=dict(source="squad_builtin", seq_len=192),
                   train=dict(FINETUNE, batch_size=32, steps=600, lr=5e-5, eval_every=100,
                              checkpoint_every=100, warmup_steps=30, weight_decay=0.01)),
}


def get_config(preset: str = "tiny"):
  return with_preset(PRESETS, preset)
