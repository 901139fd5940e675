"""Translation and summarization (and code generation's layout): BLEU/chrF and ROUGE.

An encoder-decoder (model.kind=encoder_decoder) reads the source, cut to
data.seq_len tokens with </s>, and decodes the target, cut to
data.target_len - 1 tokens plus </s>. A decoder (model.kind=decoder, any
family: Transformer, LSTM, GRU, causal CNN) reads both as one row
`<s> source <sep> target </s>` (objectives/prefix_lm.py): the prompt
`<s> source <sep>` holds up to data.seq_len tokens, the target as above;
training rows pack several examples (data/rows.prefix_rows). A tokenizer
without a separator (GPT-2, Llama) separates with its </s>. Sources and
targets cut to fit are counted in one printed line each.

Evaluation decodes the first generate.eval_examples examples of the split
(greedy, or beam search with generate.beam_size), prompts of different
lengths in one batch (generate.continue_rows), and scores the detokenised
text against the references with sacrebleu or rouge-score.
"""

import functools
import sys

import jax
import numpy as np

from research import generate, metrics
from research.data.rows import prefix_rows
from research.errors import DataError
from research.tasks.base import Encoded


def encode(examples: list[dict], tokenizer, cfg) -> Encoded:
  """The split's arrays for cfg.model.kind: encoder-decoder rows, or packed decoder rows."""
  if cfg.model.kind == "decoder":
    return _encode_decoder(examples, tokenizer, cfg)
  return _encode_encoder_decoder(examples, tokenizer, cfg)


def _encode_encoder_decoder(examples: list[dict], tokenizer, cfg) -> Encoded:
  """Source rows and <s>-shifted decoder inputs / </s>-terminated targets."""
  n, s_len, t_len = len(examples), cfg.data.seq_len, cfg.data.target_len
  arrays = {name: np.zeros((n, length), np.int32) for name, length in (
      ("tokens", s_len), ("segment_ids", s_len), ("positions", s_len),
      ("decoder_tokens", t_len), ("decoder_targets", t_len), ("decoder_segment_ids", t_len))}
  sources = [list(x) for x in tokenizer.encode_batch([e["source"] for e in examples])]
  say_cut(sources, s_len - 1, "sources", f"data.seq_len={s_len} leaves beside </s>")
  for i, (src, tgt) in enumerate(zip(sources, _targets(examples, tokenizer, cfg))):
    src = src[:s_len - 1] + [tokenizer.eos_id]
    tgt = tgt[:-1]  # without its </s>: the decoder reads <s> + tgt, predicts tgt + </s>
    arrays["tokens"][i, :len(src)] = src
    arrays["segment_ids"][i, :len(src)] = 1
    arrays["positions"][i, :len(src)] = np.arange(len(src))
    arrays["decoder_tokens"][i, :len(tgt) + 1] = [tokenizer.bos_id] + tgt
    arrays["decoder_targets"][i, :len(tgt) + 1] = tgt + [tokenizer.eos_id]
    arrays["decoder_segment_ids"][i, :len(tgt) + 1] = 1
  return Encoded(arrays, examples, {})


def separator_id(tokenizer) -> int:
  """The id between a decoder row's source and target: <sep>, or </s> if there is none."""
  try:
    return tokenizer.sep_id
  except DataError:  # an imported tokenizer without one (GPT-2, Llama)
    return tokenizer.eos_id


def decoder_prompts(sources: list[str], tokenizer, prompt_len: int) -> list[list[int]]:
  """`<s> source <sep>` of each source, the source cut to fit `prompt_len` tokens.

  How many were cut is said in one line.
  """
  room = prompt_len - 2
  if room < 1:
    raise DataError(f"data.seq_len={prompt_len} leaves no room for a source beside <s> and "
                    "<sep> in a decoder's prompt: raise data.seq_len")
  bos, sep = tokenizer.bos_id, separator_id(tokenizer)
  ids = [list(x) for x in tokenizer.encode_batch(sources)]
  say_cut(ids, room, "sources", f"data.seq_len={prompt_len} leaves beside <s> and <sep>")
  return [[bos, *x[:room], sep] for x in ids]


def say_cut(ids: list, room: int, what: str, why: str) -> None:
  """One line saying how many of `ids` are longer than `room` (and so are cut), if any."""
  cut = sum(len(x) > room for x in ids)
  if cut and jax.process_index() == 0:
    print(f"trellis: {cut:,} of {len(ids):,} {what} are longer than the {room} tokens {why}: "
          f"cut to their first {room}", file=sys.stderr, flush=True)


def _targets(examples, tokenizer, cfg) -> list[list[int]]:
  """Each target cut to data.target_len - 1 tokens, then </s> (the cut said in one line)."""
  t_len = cfg.data.target_len
  targets = [list(t) for t in tokenizer.encode_batch([e["target"] for e in examples])]
  say_cut(targets, t_len - 1, "targets", f"data.target_len={t_len} leaves beside </s>")
  return [t[:t_len - 1] + [tokenizer.eos_id] for t in targets]


def _encode_decoder(examples: list[dict], tokenizer, cfg) -> Encoded:
  """Packed `<s> source <sep> target </s>` rows of data.seq_len + data.target_len tokens
  (training and the loss evaluation), and the prompts alone (`extra["prompts"]`:
  right-aligned "tokens" [N, data.seq_len] and its "pad" counts, for decoding)."""
  s_len, t_len = cfg.data.seq_len, cfg.data.target_len
  prompts = decoder_prompts([e["source"] for e in examples], tokenizer, s_len)
  arrays = prefix_rows(zip(prompts, _targets(examples, tokenizer, cfg)), s_len + t_len)
  prompt, pad = generate.left_pad(prompts, width=s_len)
  return Encoded(arrays, examples, {"prompts": {"tokens": prompt, "pad": pad}})


def _decode(network, batch, *, kind: str, seed: int, **options):
  """Output tokens [B, T] of the batch's rows, row b sampling (if it samples) with the key
  of its batch["sample_id"], so a row's draw does not depend on its batch."""
  keys = jax.vmap(jax.random.fold_in, (None, 0))(jax.random.PRNGKey(seed), batch["sample_id"])
  if kind == "decoder":
    return generate.continue_rows(network.backbone, batch["tokens"], batch["pad"], keys=keys,
                                  **options)
  return generate.translate_rows(network.backbone, batch["tokens"], batch["segment_ids"],
                                 keys=keys, **options)


@functools.lru_cache(maxsize=None)
def _decoder(**options):
  """fn(network, batch) -> output tokens [B, T]: one object per setting, so it compiles once."""
  return functools.partial(_decode, **options)


def decode_ids(predict, encoded, tokenizer, cfg, index, samples: int = 1) -> list[list[int]]:
  """Output ids (cut before eos) of the examples at `index`, `samples` each, in order.

  One sample is greedy (or beam search with generate.beam_size); more are drawn
  at generate.temperature / generate.top_p, sample j of example i with the key
  fold_in(seed, i * samples + j). An encoder-decoder decodes its source rows, a
  decoder its prompts (`extra["prompts"]`).
  """
  index = np.repeat(np.asarray(index, np.int64), samples)
  if cfg.model.kind == "decoder":
    rows = {k: v[index] for k, v in encoded.extra["prompts"].items()}
  else:
    rows = {k: encoded.arrays[k][index] for k in ("tokens", "segment_ids")}
  rows["sample_id"] = (index * samples + np.tile(np.arange(samples),
                                                 len(index) // samples)).astype(np.int32)
  g = cfg.generate
  options = dict(kind=cfg.model.kind, seed=cfg.seed, max_new_tokens=cfg.data.target_len,
                 eos_id=tokenizer.eos_id, banned=generate.banned_ids(tokenizer))
  if cfg.model.kind != "decoder":
    options["bos_id"] = tokenizer.bos_id
  if samples > 1:
    options.update(temperature=g.temperature, top_p=g.top_p)
  else:
    options.update(beam_size=g.beam_size, length_penalty=g.length_penalty)
  return generate.cut_at_eos(predict(_decoder(**options), rows), tokenizer.eos_id)


def decode_texts(predict, encoded, tokenizer, cfg) -> list[str]:
  """Greedy (or beam) outputs of the first generate.eval_examples examples (0: all)."""
  limit = min(cfg.generate.eval_examples or len(encoded.examples), len(encoded.examples))
  return [tokenizer.decode(row).strip()
          for row in decode_ids(predict, encoded, tokenizer, cfg, np.arange(limit))]


def evaluate_translation(predict, encoded, tokenizer, cfg) -> dict:
  """Corpus BLEU and chrF (sacrebleu) of the decoded outputs."""
  outputs = decode_texts(predict, encoded, tokenizer, cfg)
  references = [e["target"] for e in encoded.examples[:len(outputs)]]
  return {"bleu": metrics.bleu(outputs, references), "chrf": metrics.chrf(outputs, references),
          "examples": float(len(outputs))}


def evaluate_summarization(predict, encoded, tokenizer, cfg) -> dict:
  """ROUGE-1/2/L F-measures (rouge-score, stemmed) of the decoded outputs."""
  outputs = decode_texts(predict, encoded, tokenizer, cfg)
  references = [e["target"] for e in encoded.examples[:len(outputs)]]
  return dict(metrics.rouge(outputs, references), examples=float(len(outputs)))
