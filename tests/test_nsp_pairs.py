"""NSP pairs have a random B at exactly objective_options.nsp_random_rate.

Short documents (KJV chapters, BBC articles) once let segment A swallow the
rest of a document and forced a random B: up to 67% random pairs at rate 0.5,
so always answering "random" beat chance. The share is checked on every
built-in corpus (real documents, a small SentencePiece tokenizer) and on a
synthetic corpus of headline-sized documents, within 3 standard errors.
"""

import numpy as np
import pytest

from research import config
from research.data import pairs, sources, tokenizer
from research.objectives.base import Vocab

VOCAB = Vocab(size=512)
# Documents per corpus: enough pairs to see a 2-point bias, small enough to encode fast.
MAX_DOCUMENTS = {"shakespeare": 4, "kjv": 1189, "python_code": 80, "bbc_news": 2225}


def _within_3_sigma(labels: np.ndarray, rate: float) -> tuple[bool, str]:
  share = 1.0 - labels.mean()
  sigma = np.sqrt(rate * (1.0 - rate) / len(labels))
  return abs(share - rate) <= 3 * sigma, f"random share {share:.4f} of {len(labels)} pairs, " \
      f"rate {rate} +- {3 * sigma:.4f}"


@pytest.fixture(scope="module")
def small_tokenizer(tmp_path_factory):
  docs = [doc for name in sources.BUILTIN_CORPORA for doc in
          sources.corpus_documents(name)[:MAX_DOCUMENTS[name]][:40]]
  data = config.default_config().data
  data.update(dict(vocab_size=512, cache_dir=str(tmp_path_factory.mktemp("tokenizer"))))
  return tokenizer.load_or_train_tokenizer(docs, data)


@pytest.mark.parametrize("corpus", sources.BUILTIN_CORPORA)
def test_random_share_is_the_rate_on_every_builtin_corpus(corpus, small_tokenizer):
  docs = sources.corpus_documents(corpus)[:MAX_DOCUMENTS[corpus]]
  encoded = pairs.encode_sentences(small_tokenizer, docs)
  for seq_len in (128, 512):
    for rate in (0.5, 0.3):
      labels = pairs.build_pairs(encoded, seq_len, small_tokenizer, seed=seq_len,
                                 random_rate=rate)["nsp_label"]
      ok, message = _within_3_sigma(labels, rate)
      assert ok, f"{corpus} seq_len={seq_len}: {message}"


def _headline_corpus(seed: int) -> list[list[np.ndarray]]:
  """News-like documents: 1-6 sentences of 4-60 tokens (many one-sentence documents).

  Token ids are unique across the corpus, so where a segment came from is checkable.
  """
  rng = np.random.default_rng(seed)
  lengths = [rng.integers(4, 61, rng.integers(1, 7)) for _ in range(3000)]
  ids = iter(range(100, 100 + sum(int(n.sum()) for n in lengths)))
  return [[np.array([next(ids) for _ in range(n)], np.int32) for n in doc] for doc in lengths]


@pytest.mark.parametrize("rate", (0.5, 0.2, 0.8))
def test_random_share_is_the_rate_on_short_documents(rate):
  labels = pairs.build_pairs(_headline_corpus(1), 96, VOCAB, seed=2, random_rate=rate)["nsp_label"]
  ok, message = _within_3_sigma(labels, rate)
  assert ok, message


def test_segment_a_never_reaches_a_document_end_except_when_every_b_is_random():
  # Had A reached the end of its document only in random pairs, A's extent would give
  # the label away; the sentence ids below are unique, so A's last one is checkable.
  docs = _headline_corpus(3)
  last_ids = {int(doc[-1][-1]) for doc in docs}
  ends = {}
  for rate in (0.5, 1.0):
    out = pairs.build_pairs(docs, 96, VOCAB, seed=4, random_rate=rate)
    # A's last token sits before the <sep> that precedes B's first token type 1.
    a_last = [row[np.flatnonzero(types == 1)[0] - 2]
              for row, types in zip(out["tokens"], out["token_type_ids"])]
    ends[rate] = np.mean([int(x) in last_ids for x in a_last])
  assert ends[0.5] == 0.0
  assert ends[1.0] > 0.0  # with no true B needed, lone last sentences are used too
