"""Decoder seq2seq (prefix LM): packed rows, a loss on the target alone, and evaluation that
decodes a batch of prompts exactly as each alone, for Transformer, LSTM, GRU and CNN decoders."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from research import config as config_lib
from research import finetune, generate, objectives, presets, train
from research.data.rows import prefix_rows
from research.errors import ConfigError, DataError
from research.objectives.base import Context, Pass, Vocab
from research.tasks import TASKS, seq2seq
from research.workdir import resolve

VOCAB = 96


class CharTokenizer:
  """Characters as ids (a fixed table): enough to lay out and decode rows."""
  pad_id, bos_id, eos_id, sep_id = 0, 1, 2, 3
  vocab_size, special_ids, sentinel_ids = VOCAB, (0, 1, 2, 3), ()

  def encode_batch(self, texts):
    return [[4 + ord(c) % (VOCAB - 4) for c in text] for text in texts]

  def decode(self, ids):
    return "".join(chr(32 + i) for i in ids)


def test_rows_pack_whole_examples_and_mark_only_the_targets():
  pairs = [([1, 10, 11, 3], [20, 2]), ([1, 12, 3], [21, 22, 2]), ([1, 13, 14, 15, 3], [2])]
  rows = prefix_rows(pairs, 12)
  # The first two fit one row (6 + 6 tokens); the third starts the next.
  np.testing.assert_array_equal(rows["tokens"][0], [1, 10, 11, 3, 20, 2, 1, 12, 3, 21, 22, 2])
  np.testing.assert_array_equal(rows["segment_ids"][0], [1] * 6 + [2] * 6)
  np.testing.assert_array_equal(rows["positions"][0], list(range(6)) * 2)
  np.testing.assert_array_equal(rows["target_mask"][0], [0, 0, 0, 0, 1, 1, 0, 0, 0, 1, 1, 1])
  np.testing.assert_array_equal(rows["segment_ids"][1], [1] * 6 + [0] * 6)
  np.testing.assert_array_equal(rows["target_mask"][1], [0] * 5 + [1] + [0] * 6)
  with pytest.raises(ValueError):
    prefix_rows([([1] * 10, [2] * 3)], 12)


def _cfg(arch="transformer", **data):
  cfg = config_lib.default_config()
  cfg.task = "translation"
  cfg.model.update(arch=arch, kind="decoder", num_layers=2, width=32, num_heads=4,
                   vocab_size=VOCAB, max_len=40)
  cfg.data.update(seq_len=24, target_len=16, vocab_size=VOCAB, **data)
  cfg.objectives = config_lib.ml_collections.ConfigDict({"prefix_lm": 1.0})
  cfg.train.update(batch_size=8)
  cfg.generate.eval_examples = 0
  return resolve(cfg, 1)


EXAMPLES = [{"source": s, "target": t} for s, t in [
    ("in the beginning", "en el principio"), ("and god said", "y dijo dios"),
    ("let there be light", "sea la luz"), ("and there was light", "y fue la luz"),
    ("the earth was without form and void", "la tierra estaba desordenada y vacia"),
    ("and the evening", "y la tarde"), ("and the morning", "y la mañana"),
    ("were the first day", "fueron el dia primero"), ("god saw the light", "vio dios la luz"),
    ("that it was good", "que era buena"), ("x", "y")]]


def test_the_loss_is_the_cross_entropy_of_the_target_tokens_alone():
  cfg = _cfg()
  encoded = seq2seq.encode(EXAMPLES, CharTokenizer(), cfg)
  rows = encoded.arrays
  assert rows["tokens"].shape[1] == 24 + 16 and len(rows["tokens"]) < len(EXAMPLES)
  # Every target character (cut to target_len - 1) and each </s>: what the loss counts.
  assert rows["target_mask"].sum() == sum(min(len(e["target"]), 15) + 1 for e in EXAMPLES)
  trainer = train.Trainer(cfg, devices=jax.devices()[:1])
  network = trainer.netdef.merge(trainer.init()["params"])
  batch = {k: jnp.asarray(v) for k, v in rows.items()}
  (loss_sum, count), _ = objectives.OBJECTIVES["prefix_lm"].loss(
      Pass(network, batch, None), Context(Vocab(VOCAB), cfg.objective_options.to_dict()))
  # By hand: each example alone, its target tokens' -log p given everything before
  # (right-padded into one causal pass: padding after a token changes nothing before it).
  targets = [list(t)[:15] + [2] for t in CharTokenizer().encode_batch([e["target"]
                                                                       for e in EXAMPLES])]
  sequences = [[int(i) for i in prompt if i] + target
               for prompt, target in zip(encoded.extra["prompts"]["tokens"], targets)]
  padded = np.zeros((len(sequences), 40), np.int32)
  for i, ids in enumerate(sequences):
    padded[i, :len(ids)] = ids
  logp = np.asarray(jax.nn.log_softmax(network.backbone.logits(network.backbone(
      jnp.asarray(padded)))))
  expected = -sum(logp[i, t - 1, ids[t]] for i, (ids, target) in enumerate(zip(sequences, targets))
                  for t in range(len(ids) - len(target), len(ids)))
  assert int(count) == rows["target_mask"].sum()
  np.testing.assert_allclose(float(loss_sum), expected, rtol=2e-5)


@pytest.mark.parametrize("arch", ["transformer", "lstm", "gru", "cnn"])
def test_evaluation_decodes_the_batch_as_each_prompt_alone(arch):
  cfg = _cfg(arch)
  tokenizer = CharTokenizer()
  encoded = seq2seq.encode(EXAMPLES[3:6], tokenizer, cfg)  # prompts of 3 lengths
  trainer = train.Trainer(cfg, devices=jax.devices()[:1])
  params = trainer.init()["params"]
  texts = seq2seq.decode_texts(functools.partial(trainer.predict, params), encoded, tokenizer,
                               cfg)
  merge = lambda p: trainer.netdef.merge(p).backbone
  prompts = [[int(i) for i in row if i] for row in encoded.extra["prompts"]["tokens"]]
  assert [p[0] for p in prompts] == [1] * 3 and all(p[-1] == 3 for p in prompts)
  alone = [tokenizer.decode(generate.generate(
      merge, params, [p], max_new_tokens=16, rng=jax.random.PRNGKey(0), eos_id=2,
      banned=generate.banned_ids(tokenizer))[0]).strip() for p in prompts]
  assert texts == alone and sum(map(len, texts)) >= 8, texts  # not all empty


def test_a_tokenizer_without_a_separator_separates_with_eos():
  class NoSep(CharTokenizer):
    @property
    def sep_id(self):
      raise DataError("this tokenizer has no separator token")

  prompt, = seq2seq.decoder_prompts(["ab"], NoSep(), 8)
  assert prompt == [1, 4 + ord("a") % 92, 4 + ord("b") % 92, 2]


def test_seq2seq_trains_a_decoder_with_the_prefix_lm():
  assert TASKS["translation"].objective_for("decoder") == "prefix_lm"
  assert TASKS["translation"].objective_for("encoder_decoder") == "seq2seq"
  assert TASKS["mr" if "mr" in TASKS else "classification"].objective_for("decoder") == "classify"


def test_a_row_longer_than_max_len_is_one_line_error():
  cfg = finetune.task_config(presets.load("configs/finetune/translation.py:tiny_decoder",
                                          ["--config.data.seq_len=60"]))[1]
  with pytest.raises(ConfigError) as e:
    config_lib.validate(cfg, 8)
  message = str(e.value)
  assert "\n" not in message and "model.max_len=96" in message
  assert "data.seq_len + data.target_len = 60 + 48 = 108" in message, message


@pytest.mark.parametrize("kind", ["decoder", "encoder_decoder"])
def test_cut_sources_and_targets_are_counted_in_one_line_each(kind, capsys):
  cfg = _cfg() if kind == "decoder" else None
  if cfg is None:
    cfg = config_lib.default_config()
    cfg.model.update(kind="encoder_decoder", vocab_size=VOCAB)
    cfg.data.update(seq_len=24, target_len=16)
  seq2seq.encode(EXAMPLES, CharTokenizer(), cfg)
  err = capsys.readouterr().err.strip().splitlines()
  room = 22 if kind == "decoder" else 23
  long_sources = sum(len(e["source"]) > room for e in EXAMPLES)
  long_targets = sum(len(e["target"]) > 15 for e in EXAMPLES)
  assert err == [
      f"trellis: {long_sources} of 11 sources are longer than the {room} tokens "
      + ("data.seq_len=24 leaves beside <s> and <sep>" if kind == "decoder"
         else "data.seq_len=24 leaves beside </s>") + f": cut to their first {room}",
      f"trellis: {long_targets} of 11 targets are longer than the 15 tokens "
      "data.target_len=16 leaves beside </s>: cut to their first 15"], err
