"""Bidirectional LSTM encoder pretrained with masked LM (BERT's 80/10/10) on Shakespeare.

  python -m experiments.pretrain --config=configs/pretrain/bilstm_mlm.py:tiny --workdir=runs/bilstm

Data and training are those of gpt_clm.py's preset of the same name, the
objective MLM on packed documents. Layers and cells (per direction) give the
parameter count of that preset within 4% (tiny 132,288; small 3,605,696;
base 101,092,608), so it compares with bert_mlm_nsp (MLM alone:
--config.objectives='{"mlm": 1}') like with like.
"""

from configs.common import derive
from configs.pretrain import gpt_clm
from research.config import with_preset

_GPT = gpt_clm.PRESETS
PRESETS = {
    "tiny": derive(_GPT["tiny"], model=dict(arch="lstm", kind="encoder", num_layers=2,
                                            rnn_hidden=48), objectives={"mlm": 1.0}),
    "small": derive(_GPT["small"], model=dict(arch="lstm", kind="encoder", num_layers=3,
                                              rnn_hidden=232), objectives={"mlm": 1.0}),
    "base": derive(_GPT["base"], model=dict(arch="lstm", kind="encoder", num_layers=2,
                                            rnn_hidden=1920), objectives={"mlm": 1.0}),
}


def get_config(preset: str = "tiny"):
  return with_preset(PRESETS, preset)
