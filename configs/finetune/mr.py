"""Sentence polarity (MR, Pang & Lee): classification, accuracy and macro-F1.

  python -m experiments.finetune --config=configs/finetune/mr.py:small --workdir=runs/mr \
      --config.init_from=runs/bert            # a Trellis MLM run (same preset size)
  python -m experiments.finetune --config=configs/finetune/mr.py:minilm --workdir=runs/mr_minilm

Presets: tiny (tests), small (the Transformer encoder of bert_mlm_nsp:small,
from scratch unless init_from names a run), minilm (the built-in MiniLM-L6);
lstm_tiny/lstm_small and cnn_tiny/cnn_small: a bidirectional LSTM and a gated
CNN encoder with the data and training of tiny/small and about their size.
The built-in MR set is 4,000 sentences with fixed train/validation/test splits.
"""

from configs.common import BERT_ENCODER, CLASSIFY, FINETUNE_TINY, MINILM, derive
from research.config import with_preset

PRESETS = {
    "tiny": dict(model=dict(num_layers=2, width=64, num_heads=4, max_len=64, **BERT_ENCODER),
                 task="classification", data=dict(source="mr", seq_len=64, vocab_size=512),
                 train=dict(CLASSIFY, **FINETUNE_TINY, lr=1e-3)),
    "small": dict(model=dict(num_layers=4, width=256, num_heads=4, max_len=128, dropout=0.1,
                             **BERT_ENCODER),
                  task="classification", data=dict(source="mr", seq_len=64, vocab_size=2048),
                  train=dict(CLASSIFY, batch_size=32, steps=400, lr=5e-4, eval_every=50,
                             checkpoint_every=50)),
    "minilm": dict(model=MINILM, task="classification", init_from="minilm-l6",
                   data=dict(source="mr", seq_len=64),
                   train=dict(CLASSIFY, batch_size=32, steps=400, lr=1e-4, eval_every=50,
                              checkpoint_every=50, weight_decay=0.01)),
}

# The tiny and small Transformer encoders' counterparts of about the same parameter
# count (experiments/reproductions/kim_mr.py), with the same data, tokenizer settings
# and training: a bidirectional LSTM (state projected back to the width) and a
# non-causal gated dilated CNN whose first position, the one the classifier pools,
# sees the whole sentence at small (126 tokens to its right).
PRESETS.update(
    lstm_tiny=derive(PRESETS["tiny"], model=dict(arch="lstm", num_layers=2, rnn_hidden=48)),
    cnn_tiny=derive(PRESETS["tiny"], model=dict(arch="cnn", num_layers=3, kernel_size=4,
                                                dilation_cycle=3)),
    lstm_small=derive(PRESETS["small"], model=dict(arch="lstm", num_layers=3, rnn_hidden=240)),
    cnn_small=derive(PRESETS["small"], model=dict(arch="cnn", num_layers=6, kernel_size=4,
                                                  dilation_cycle=6)),
)


def get_config(preset: str = "tiny"):
  return with_preset(PRESETS, preset)
