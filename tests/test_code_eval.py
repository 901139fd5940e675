"""The code task's scoring: exact match, parse rate and pass@k from generated bodies run in a
sandbox, greedy and sampled, with a hung sample recorded as failed."""

import numpy as np
import pytest

from research import config as config_lib
from research.data import code as code_data
from research.tasks import TASKS
from research.workdir import resolve


class Chars:
  """Every character its own id (shifted past the specials): decoding is exact."""
  pad_id, bos_id, eos_id, sep_id = 0, 1, 2, 3
  vocab_size, special_ids, sentinel_ids = 0x110000, (0, 1, 2, 3), ()

  def encode_batch(self, texts):
    return [[4 + ord(c) for c in text] for text in texts]

  def decode(self, ids):
    return "".join(chr(i - 4) for i in ids if i >= 4)


@pytest.fixture(scope="module")
def examples():
  test = code_data.code_splits()["test"]
  tested = [e for e in test if e["doctest"]]
  untested = next(e for e in test if not e["doctest"])
  return tested[:2] + [untested]


def _cfg(**generate):
  cfg = config_lib.default_config()
  cfg.task = "code"
  cfg.model.update(vocab_size=Chars.vocab_size, max_len=8192)
  cfg.data.update(seq_len=4096, target_len=2048)
  cfg.objectives = config_lib.ml_collections.ConfigDict({"prefix_lm": 1.0})
  cfg.generate.update(eval_examples=0, timeout_s=3.0, **generate)
  return resolve(cfg, 1)


def _predict(bodies):
  """A stand-in for Trainer.predict: the body chosen for each row's (example, sample)."""
  def predict(fn, rows):
    del fn
    out = [Chars().encode_batch([bodies(int(i))])[0] + [2] for i in rows["sample_id"]]
    width = max(map(len, out))
    return np.asarray([ids + [2] * (width - len(ids)) for ids in out], np.int32)
  return predict


def test_greedy_scores_count_what_passes_parses_and_matches(examples):
  cfg = _cfg()
  task = TASKS["code"]
  encoded = task.encode(examples, Chars(), cfg)
  # Example 0 gets its own body (passes its doctests), 1 a wrong one, 2 its own.
  bodies = {0: examples[0]["target"], 1: "    return None", 2: examples[2]["target"]}
  scores = task.evaluate(_predict(bodies.__getitem__), encoded, Chars(), cfg)
  assert scores["doctest_examples"] == 2 and scores["examples"] == 3
  assert scores["pass@1"] == pytest.approx(50.0)
  assert scores["exact_match"] == pytest.approx(200 / 3) and scores["parse_rate"] == 100.0
  assert scores["timeouts"] == 0


def test_sampled_pass_at_k_is_the_unbiased_estimate_and_a_hang_fails(examples):
  cfg = _cfg(num_samples=4)
  task = TASKS["code"]
  encoded = task.encode(examples, Chars(), cfg)

  def bodies(sample_id):
    example, sample = divmod(sample_id, 4)
    if sample_id < 4:  # example 0 (sample ids 0-3): 2 of 4 right
      return examples[0]["target"] if sample < 2 else "    return None"
    if sample_id == 4:  # example 1's first sample hangs
      return "    while True:\n        pass"
    return examples[example]["target"] if example != 1 else "    return None"

  scores = task.evaluate(_predict(bodies), encoded, Chars(), cfg)
  # pass@1 = mean over examples of c / n: (2/4 + 0/4) / 2.
  assert scores["pass@1"] == pytest.approx(25.0)
  assert "pass@10" not in scores and scores["timeouts"] == 1
