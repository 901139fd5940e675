"""Translation and summarization with an encoder-decoder: BLEU/chrF and ROUGE.

Sources are truncated to data.seq_len tokens, targets to data.target_len - 1
plus </s>. Evaluation decodes the first generate.eval_examples examples of
the split (greedy, or beam search with generate.beam_size) and scores the
detokenised text against the references with sacrebleu or rouge-score.
"""

import functools

import numpy as np

from research import generate, metrics
from research.tasks.base import Encoded


def encode(examples: list[dict], tokenizer, cfg) -> Encoded:
  """Source rows and <s>-shifted decoder inputs / </s>-terminated targets."""
  n, s_len, t_len = len(examples), cfg.data.seq_len, cfg.data.target_len
  arrays = {name: np.zeros((n, length), np.int32) for name, length in (
      ("tokens", s_len), ("segment_ids", s_len), ("positions", s_len),
      ("decoder_tokens", t_len), ("decoder_targets", t_len), ("decoder_segment_ids", t_len))}
  sources = tokenizer.encode_batch([e["source"] for e in examples])
  targets = tokenizer.encode_batch([e["target"] for e in examples])
  for i, (src, tgt) in enumerate(zip(sources, targets)):
    src = list(src)[:s_len - 1] + [tokenizer.eos_id]
    tgt = list(tgt)[:t_len - 1]
    arrays["tokens"][i, :len(src)] = src
    arrays["segment_ids"][i, :len(src)] = 1
    arrays["positions"][i, :len(src)] = np.arange(len(src))
    arrays["decoder_tokens"][i, :len(tgt) + 1] = [tokenizer.bos_id] + tgt
    arrays["decoder_targets"][i, :len(tgt) + 1] = tgt + [tokenizer.eos_id]
    arrays["decoder_segment_ids"][i, :len(tgt) + 1] = 1
  return Encoded(arrays, examples, {})


def _translate(network, batch, **options):
  return generate.translate_rows(network.backbone, batch["tokens"], batch["segment_ids"],
                                 **options)


@functools.lru_cache(maxsize=None)
def _decoder(**options):
  """fn(network, batch) -> output tokens [B, T]: one object per setting, so it compiles once."""
  return functools.partial(_translate, **options)


def predict_texts(predict, encoded, tokenizer, cfg) -> list[str]:
  """Decoded outputs of the first generate.eval_examples examples (0: all)."""
  limit = min(cfg.generate.eval_examples or len(encoded.examples), len(encoded.examples))
  sources = {name: encoded.arrays[name][:limit] for name in ("tokens", "segment_ids")}
  decode = _decoder(max_new_tokens=cfg.data.target_len, bos_id=tokenizer.bos_id,
                    eos_id=tokenizer.eos_id, beam_size=cfg.generate.beam_size,
                    length_penalty=cfg.generate.length_penalty,
                    banned=generate.banned_ids(tokenizer))
  ids = generate.cut_at_eos(predict(decode, sources), tokenizer.eos_id)
  return [tokenizer.decode(row).strip() for row in ids]


def evaluate_translation(predict, encoded, tokenizer, cfg) -> dict:
  """Corpus BLEU and chrF (sacrebleu) of the decoded outputs."""
  outputs = predict_texts(predict, encoded, tokenizer, cfg)
  references = [e["target"] for e in encoded.examples[:len(outputs)]]
  return {"bleu": metrics.bleu(outputs, references), "chrf": metrics.chrf(outputs, references),
          "examples": float(len(outputs))}


def evaluate_summarization(predict, encoded, tokenizer, cfg) -> dict:
  """ROUGE-1/2/L F-measures (rouge-score, stemmed) of the decoded outputs."""
  outputs = predict_texts(predict, encoded, tokenizer, cfg)
  references = [e["target"] for e in encoded.examples[:len(outputs)]]
  return dict(metrics.rouge(outputs, references), examples=float(len(outputs)))
