"""Code generation from the standard library: a function's signature and docstring -> its body.

  python -m experiments.finetune --config=configs/finetune/code.py:small --workdir=runs/code \
      [--config.init_from=runs/gpt_code --config.generate.num_samples=10]

The task (data.source=python_code_fns) and its metrics, pass@k by running the
doctests in a sandbox, are described in research/tasks/code.py and the
README. A decoder fine-tuned as a prefix LM on packed
`<s> description <sep> body </s>` rows; --config.model.arch=lstm, gru or cnn
trains another decoder family, --config.model.kind=encoder_decoder an
encoder-decoder. init_from may name a gpt_clm run of the same shape pretrained
on `python_code_train` (configs/pretrain/gpt_clm.py:small_code), the standard
library without the task's validation and test functions.
"""

from configs.common import FINETUNE, FINETUNE_TINY
from research.config import with_preset

PRESETS = {
    "tiny": dict(model=dict(num_layers=2, width=64, num_heads=4, max_len=256),
                 task="code",
                 data=dict(source="python_code_fns", seq_len=96, target_len=48, vocab_size=512),
                 generate=dict(eval_examples=8, timeout_s=5.0),
                 train=dict(FINETUNE, **FINETUNE_TINY, lr=3e-3)),
    # The shape of gpt_clm's small_code, so a run of it is an init_from.
    "small": dict(model=dict(num_layers=4, width=256, num_heads=4, max_len=512, dropout=0.1),
                  task="code",
                  data=dict(source="python_code_fns", seq_len=256, target_len=192,
                            vocab_size=4096),
                  generate=dict(eval_examples=100),
                  train=dict(FINETUNE, batch_size=16, steps=600, lr=1e-3, eval_every=200,
                             checkpoint_every=200, warmup_steps=30)),
}


def get_config(preset: str = "tiny"):
  return with_preset(PRESETS, preset)
