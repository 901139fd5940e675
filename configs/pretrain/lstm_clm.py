"""LSTM (or GRU) language model pretrained with causal LM on the built-in Shakespeare.

  python -m experiments.pretrain --config=configs/pretrain/lstm_clm.py:tiny --workdir=runs/lstm
  python -m experiments.pretrain --config=configs/pretrain/lstm_clm.py:gru_small --workdir=runs/gru

Data and training are those of gpt_clm.py's preset of the same name; only
the model differs, and its size matches that preset's parameter count
(within a few percent), so the two compare like with like. `gru_*` presets
are the GRU of the same size (more layers: a GRU layer has 3 gates, not 4).
`base` is a 4-layer LSTM of 1920 cells projected to width 768 (Jozefowicz
et al. 2016 style): wide recurrences suit accelerators better than deep ones.
"""

from configs.common import derive
from configs.pretrain import gpt_clm
from research.config import with_preset

_GPT = gpt_clm.PRESETS
PRESETS = {
    "tiny": derive(_GPT["tiny"], model=dict(arch="lstm", num_layers=3)),
    "small": derive(_GPT["small"], model=dict(arch="lstm", num_layers=6)),
    "base": derive(_GPT["base"], model=dict(arch="lstm", num_layers=4, rnn_hidden=1920)),
    "gru_tiny": derive(_GPT["tiny"], model=dict(arch="gru", num_layers=4)),
    "gru_small": derive(_GPT["small"], model=dict(arch="gru", num_layers=8)),
    "gru_base": derive(_GPT["base"], model=dict(arch="gru", num_layers=5, rnn_hidden=1920)),
}


def get_config(preset: str = "tiny"):
  return with_preset(PRESETS, preset)
