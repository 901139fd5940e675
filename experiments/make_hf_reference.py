"""Writes tests/data/minilm_reference.npz: transformers' own outputs for MiniLM-L6.

  pip install -e ".[parity]"     # torch==2.13.0 (CPU) and transformers 5.x
  python -m experiments.make_hf_reference [--out=tests/data/minilm_reference.npz]

The built-in `minilm-l6` (fetched and cached by research.hf.fetch_minilm) is
run through transformers' PyTorch `BertModel` and `BertTokenizerFast`, so
tests/test_hf.py can check Trellis' import against them without torch or
transformers installed. Regenerate it when the sentences below change, or to
recheck against a newer transformers; the values should not move by more
than float32 noise (~1e-6).

The file (no pickled objects; np.load without allow_pickle reads it):
  model_texts        [3] str: the model inputs (one is a sentence pair "a\\tb")
  input_ids, token_type_ids, attention_mask   [3, T] int32, right-padded
  last_hidden_state  [3, T, 384] float32
  pooler_output      [3, 384] float32
  tokenizer_texts    [N] str: tricky texts (accents, CJK, punctuation, unknown chars)
  tokenizer_ids      concatenated ids of each text, without [CLS]/[SEP]
  tokenizer_lengths  [N] int32: how many ids each text has
  versions           str: transformers and torch versions used
"""

import os

import numpy as np
from absl import app, flags

_OUT = flags.DEFINE_string("out", os.path.join("tests", "data", "minilm_reference.npz"),
                           "where to write the reference file")

# Sentence A/B pairs are tab-separated; lengths differ so rows are padded.
MODEL_TEXTS = (
    "The quick brown fox jumps over the lazy dog.",
    "A gripping, beautifully shot film.\tThe plot, however, is thin.",
    "Tokyo is big!",
)
TOKENIZER_TEXTS = (
    "Hello, WORLD! Don't stop-believing...",
    "Café naïve résumé Ångström",
    "東京は大きい and 北京",
    "unaffordable antidisestablishmentarianism",
    "emoji 🙂 and \u00a0non-breaking\tspace\nnewline",
    "[MASK] is a special [SEP] token",
    "",
    "3.14159 + 2,718 = $5.86 (approx.)",
)


def main(argv):
  del argv
  import torch
  import transformers

  from research import hf

  folder = str(hf.fetch_minilm())
  tokenizer = transformers.BertTokenizerFast.from_pretrained(folder)
  model = transformers.BertModel.from_pretrained(folder).eval()
  pairs = [t.split("\t") for t in MODEL_TEXTS]
  rows = [tokenizer(*pair) for pair in pairs]  # [CLS] a [SEP] (b [SEP])
  width = max(len(r["input_ids"]) for r in rows)

  def pad(key):
    return np.array([r[key] + [0] * (width - len(r[key])) for r in rows], np.int32)

  inputs = {k: pad(k) for k in ("input_ids", "token_type_ids", "attention_mask")}
  with torch.no_grad():
    out = model(**{k: torch.from_numpy(v.astype(np.int64)) for k, v in inputs.items()})
  ids = [tokenizer(t, add_special_tokens=False)["input_ids"] for t in TOKENIZER_TEXTS]
  np.savez_compressed(
      _OUT.value, model_texts=np.array(MODEL_TEXTS), **inputs,
      last_hidden_state=out.last_hidden_state.numpy().astype(np.float32),
      pooler_output=out.pooler_output.numpy().astype(np.float32),
      tokenizer_texts=np.array(TOKENIZER_TEXTS),
      tokenizer_ids=np.array([i for row in ids for i in row], np.int32),
      tokenizer_lengths=np.array([len(row) for row in ids], np.int32),
      versions=np.array(f"transformers {transformers.__version__}, torch {torch.__version__}"))
  print(f"wrote {_OUT.value} ({os.path.getsize(_OUT.value):,} bytes), "
        f"input shape {inputs['input_ids'].shape}")


if __name__ == "__main__":
  app.run(main)
