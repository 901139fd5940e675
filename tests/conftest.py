"""Eight fake CPU devices for every test, set before jax is imported."""

import os
import signal
import sys
import tempfile

os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "")
                           + " --xla_force_host_platform_device_count=8")
os.environ.setdefault("JAX_PLATFORMS", "cpu")
# Many tests compile the same step (a run and its resumption, each mesh...):
# a persistent compilation cache, shared with the CLI subprocesses, pays once.
os.environ.setdefault("JAX_COMPILATION_CACHE_DIR",
                      os.path.join(tempfile.gettempdir(), "trellis-test-jax-cache"))
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0")
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES", "0")
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import numpy as np  # noqa: E402
import pytest  # noqa: E402

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def synthetic_examples(n: int, seq_len: int, vocab: int, seed: int) -> dict:
  """Packed rows with two documents each and a learnable pattern."""
  rng = np.random.default_rng(seed)
  tokens = rng.integers(4, vocab, (n, seq_len)).astype(np.int32)
  tokens[:, 1::2] = tokens[:, 0::2] % 7 + 4  # every odd token follows from its predecessor
  half = seq_len // 2
  segments = np.where(np.arange(seq_len) < half, 1, 2).astype(np.int32)
  positions = np.where(np.arange(seq_len) < half, np.arange(seq_len),
                       np.arange(seq_len) - half).astype(np.int32)
  return {"tokens": tokens, "segment_ids": np.tile(segments, (n, 1)),
          "positions": np.tile(positions, (n, 1))}


@pytest.fixture
def synthetic_data():
  """A TrainData of synthetic rows (no tokenizer), for fast loop tests."""
  from research.data.pipeline import TrainData

  def make(seq_len=32, vocab=128, n_train=128, n_eval=32):
    return TrainData(train=synthetic_examples(n_train, seq_len, vocab, 0),
                     eval=synthetic_examples(n_eval, seq_len, vocab, 1),
                     unigram_perplexity=float(vocab))
  return make


def tiny_config(**overrides):
  """The gpt_clm tiny preset, shrunk further, with dotted-key overrides."""
  from configs.pretrain import gpt_clm
  cfg = gpt_clm.get_config("tiny")
  cfg.update_from_flattened_dict({"model.max_len": 32, "data.seq_len": 32,
                                  "data.vocab_size": 128, "train.steps": 12,
                                  "train.log_every": 2, "train.eval_every": 6,
                                  "train.checkpoint_every": 6, "train.warmup_steps": 2,
                                  "train.peak_flops": 1e11, **overrides})
  return cfg


class SignalAt:
  """A train iterator that sends SIGTERM to this process when batch `at` is taken.

  Wrapping pipeline.train_iterator with it interrupts a run at a known step,
  so SIGTERM-then-resume can be compared with the uninterrupted run.
  """

  def __init__(self, inner, at):
    self.inner, self.at, self.taken = inner, at, 0

  def __next__(self):
    self.taken += 1
    if self.taken == self.at:
      os.kill(os.getpid(), signal.SIGTERM)
    return next(self.inner)

  def get_state(self):
    return self.inner.get_state()

  def set_state(self, state):
    self.inner.set_state(state)
