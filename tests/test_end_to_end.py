"""The commands a user types, on the real built-in corpora."""

import json
import os

from conftest import REPO
from test_cli import run_cli, assert_user_error

TINY = "--config=configs/pretrain/gpt_clm.py:tiny"


def _rows(workdir):
  with open(os.path.join(workdir, "metrics.jsonl")) as f:
    return [json.loads(line) for line in f]


def test_pretrain_on_shakespeare_then_generate(tmp_path):
  workdir = tmp_path / "gpt"
  result = run_cli("experiments.pretrain", TINY, f"--workdir={workdir}")
  assert result.returncode == 0, result.stderr[-3000:]
  for name in ("config.json", "metrics.jsonl", "results.json", "tokenizer.model"):
    assert (workdir / name).exists(), name
  rows = _rows(workdir)
  train = [r for r in rows if r["split"] == "train"]
  assert train[-1]["loss"] < train[0]["loss"] - 0.5  # the loss falls on real text
  assert all(r["tokens_per_s"] > 0 and 0 < r["mfu"] < 1 for r in train)
  results = json.loads((workdir / "results.json").read_text())
  assert 1 < results["perplexity"] < 512 and results["num_params"] > 0
  assert os.listdir(workdir / "checkpoints") and os.listdir(workdir / "tb")

  out = run_cli("experiments.generate", f"--workdir={workdir}", "--prompt=To be",
                "--max_new_tokens=8", "--temperature=0.8", "--top_k=20", "--top_p=0.9")
  assert out.returncode == 0, out.stderr[-3000:]
  assert out.stdout.startswith("[step 30] To be") and len(out.stdout.strip()) > len("[step 30] To be")

  # Running the finished command again resumes, does no training, and re-reports.
  again = run_cli("experiments.pretrain", TINY, f"--workdir={workdir}")
  assert again.returncode == 0, again.stderr[-3000:]
  assert json.loads((workdir / "results.json").read_text())["loss"] == results["loss"]
  assert len(_rows(workdir)) == len(rows)


def test_kjv_and_python_code_corpora_pack_for_training():
  from configs.pretrain import gpt_clm
  from research.data import pipeline
  for source in ("kjv", "python_code"):
    cfg = gpt_clm.get_config("tiny")
    cfg.data.source = source
    data = pipeline.load_pretraining_data(cfg)
    examples = data.examples
    assert len(examples.train["tokens"]) > 100 and len(examples.eval["tokens"]) > 5
    assert 1 < examples.unigram_perplexity < cfg.data.vocab_size
    text = data.tokenizer.decode(examples.train["tokens"][0])
    assert len(text) > 50  # real text went in


def test_own_files(tmp_path):
  corpus = tmp_path / "corpus"
  corpus.mkdir()
  sources = sorted(os.path.join(REPO, "research", f) for f in os.listdir(
      os.path.join(REPO, "research")) if f.endswith(".py"))
  text = "".join(open(f).read() for f in sources)  # ~100k characters of real text
  chunk = len(text) // 120
  for i in range(12):
    (corpus / f"doc{i}.jsonl").write_text("\n".join(
        json.dumps({"body": text[(i * 10 + j) * chunk:(i * 10 + j + 1) * chunk]})
        for j in range(10)))
  result = run_cli("experiments.pretrain", TINY, f"--workdir={tmp_path / 'run'}",
                   "--config.data.source=files", f"--config.data.train_files={corpus}/*.jsonl",
                   "--config.data.text_column=body",
                   "--config.train.steps=4", "--config.train.batch_size=8")
  assert result.returncode == 0, result.stderr[-3000:]
  assert_user_error(run_cli("experiments.pretrain", TINY, f"--workdir={tmp_path / 'bad'}",
                            "--config.data.source=files",
                            f"--config.data.train_files={corpus}/*.jsonl"), "text")
