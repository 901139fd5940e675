"""What the preset files share: model blocks, training schedules, and `derive`.

A preset is a nested dict of the fields it changes from research/config.py's
defaults (`with_preset` applies it). One preset is derived from another with
`derive(base, **changes)`: nested dicts merge key by key, so a preset names
only what it changes, e.g. the LSTM of the GPT's data and training:

  derive(gpt_clm.PRESETS["tiny"], model=dict(arch="lstm", num_layers=3))
"""

from research.config import OPEN_FIELDS

# Model blocks. BERT: an encoder with learned positions, LayerNorm and GELU;
# T5: an encoder-decoder with RoPE, RMSNorm and SwiGLU.
BERT_ENCODER = dict(kind="encoder", position="learned", norm="layernorm", mlp="gelu")
T5 = dict(kind="encoder_decoder", position="rope", norm="rmsnorm", mlp="swiglu")
# A decoder of the same blocks (seq2seq presets' `*_decoder`: a prefix LM).
DECODER = dict(T5, kind="decoder")
# The built-in MiniLM-L6 (init_from="minilm-l6"): its shape, fixed by the checkpoint.
MINILM = dict(num_layers=6, width=384, num_heads=12, max_len=512, dropout=0.1, **BERT_ENCODER)

# Pretraining runs by size: tiny (unit tests, seconds), small (minutes on 2 CPU cores),
# base (accelerators). Files change the learning rate (and base's batch) to suit a model.
PRETRAIN = {
    "tiny": dict(batch_size=16, steps=30, lr=3e-3, warmup_steps=5, log_every=5,
                 eval_every=15, eval_batches=2, checkpoint_every=15),
    "small": dict(batch_size=16, steps=300, lr=2e-3, warmup_steps=30, log_every=10,
                  eval_every=100, eval_batches=16, checkpoint_every=100),
    "base": dict(batch_size=64, steps=20000, lr=6e-4, warmup_steps=1000, log_every=50,
                 eval_every=1000, eval_batches=32, checkpoint_every=1000),
}
# Pretraining data by size: tokens per row and SentencePiece vocabulary.
PRETRAIN_DATA = {"tiny": dict(seq_len=64, vocab_size=512),
                 "small": dict(seq_len=128, vocab_size=2048)}

# Fine-tuning: a linear decay to 0, early stopping after 3 evaluations without gain.
FINETUNE = dict(log_every=10, schedule="linear", min_lr_ratio=0.0, patience=3)
# Classification evaluates the whole validation split, after a longer warmup.
CLASSIFY = dict(FINETUNE, eval_batches=0, warmup_steps=20)
# Every fine-tuning file's tiny run (tests): 20 steps, no early stopping.
FINETUNE_TINY = dict(batch_size=16, steps=20, eval_every=10, checkpoint_every=10,
                     warmup_steps=2, patience=0)


def derive(base: dict, **changes) -> dict:
  """A copy of preset `base` with `changes`: sections merge key by key; a value, or an
  open field (`objectives`, whose keys are the user's choice), replaces the old one."""
  return _merge(base, changes, "")


def _merge(base: dict, changes: dict, prefix: str) -> dict:
  out = dict(base)
  for key, value in changes.items():
    field = prefix + key
    if isinstance(value, dict) and isinstance(out.get(key), dict) and field not in OPEN_FIELDS:
      out[key] = _merge(out[key], value, f"{field}.")
    else:
      out[key] = value
  return out
