"""Translation and summarization with an encoder-decoder: BLEU/chrF and ROUGE.

Sources are truncated to data.seq_len tokens, targets to data.target_len - 1
plus </s>. Evaluation decodes the first generate.eval_examples examples of
the split (greedy, or beam search with generate.beam_size) and scores the
detokenised text against the references with sacrebleu or rouge-score.
"""

import numpy as np

from research import generate, metrics


def encode(examples: list[dict], tokenizer, cfg, backbone_kind: str):
  """Source rows and <s>-shifted decoder inputs / </s>-terminated targets."""
  from research.tasks import Encoded
  del backbone_kind
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


def predict(trainer, params, encoded, tokenizer, cfg) -> list[str]:
  """Decoded outputs of the first generate.eval_examples examples (0: all)."""
  limit = cfg.generate.eval_examples or len(encoded.examples)
  merge = trainer.backbone_merge
  outputs = []
  batch = cfg.train.batch_size
  for start in range(0, min(limit, len(encoded.examples)), batch):
    stop = min(start + batch, limit)
    ids = generate.translate(
        merge, params, encoded.arrays["tokens"][start:stop],
        encoded.arrays["segment_ids"][start:stop], max_new_tokens=cfg.data.target_len,
        bos_id=tokenizer.bos_id, eos_id=tokenizer.eos_id, beam_size=cfg.generate.beam_size,
        length_penalty=cfg.generate.length_penalty)
    outputs.extend(tokenizer.decode(row).strip() for row in ids)
  return outputs


def evaluate_translation(trainer, params, encoded, tokenizer, cfg) -> dict:
  """Corpus BLEU and chrF (sacrebleu) of the decoded outputs."""
  outputs = predict(trainer, params, encoded, tokenizer, cfg)
  references = [e["target"] for e in encoded.examples[:len(outputs)]]
  return {"bleu": metrics.bleu(outputs, references), "chrf": metrics.chrf(outputs, references),
          "examples": float(len(outputs))}


def evaluate_summarization(trainer, params, encoded, tokenizer, cfg) -> dict:
  """ROUGE-1/2/L F-measures (rouge-score, stemmed) of the decoded outputs."""
  outputs = predict(trainer, params, encoded, tokenizer, cfg)
  references = [e["target"] for e in encoded.examples[:len(outputs)]]
  return dict(metrics.rouge(outputs, references), examples=float(len(outputs)))
