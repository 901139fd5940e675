"""Gated convolutional language model (Dauphin et al. 2017) pretrained with causal LM.

  python -m experiments.pretrain --config=configs/pretrain/cnn_clm.py:tiny --workdir=runs/cnn

Data and training are those of gpt_clm.py's preset of the same name; only
the model differs, and its size matches that preset's parameter count
(within a few percent). Kernels of 4 taps with dilations 1, 2, 4, ...
(`model.dilation_cycle`) reach back 21 tokens (tiny), 189 (small) and 1530
(base), covering each preset's sequence length from small up.
"""

from configs.common import derive
from configs.pretrain import gpt_clm
from research.config import with_preset

_GPT = gpt_clm.PRESETS
PRESETS = {
    "tiny": derive(_GPT["tiny"], model=dict(arch="cnn", num_layers=3, kernel_size=4,
                                            dilation_cycle=3)),
    "small": derive(_GPT["small"], model=dict(arch="cnn", num_layers=6, kernel_size=4,
                                              dilation_cycle=6)),
    "base": derive(_GPT["base"], model=dict(arch="cnn", num_layers=18, kernel_size=4,
                                            dilation_cycle=8)),
}


def get_config(preset: str = "tiny"):
  return with_preset(PRESETS, preset)
