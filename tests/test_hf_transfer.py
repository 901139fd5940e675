"""Fine-tuning and generating from Hugging Face folders through the real commands.

The folders are random-initialised models written by `hf.export` with a tokenizer of
the family's kind (tests/test_hf_tokenizer.py's builders): a Llama decoder with a
Llama-2 style tokenizer (no mask, no pad: pad is borrowed from eos) and a T5 v1.1
encoder-decoder with a T5 Unigram tokenizer. Plumbing, not accuracy: each run must
train, evaluate and record where its weights came from.
"""

import json

import jax
import pytest

from research import config as config_lib
from research import generate, hf
from research.data import hf_tokenizer
from research.network import init_params
from test_cli import run_cli, run_cli_many
from test_finetune import FAST
from test_hf_tokenizer import llama, t5, write_folder

LLAMA = {"model.kind": "decoder", "model.position": "rope", "model.norm": "rmsnorm",
         "model.mlp": "swiglu", "model.qkv_bias": False, "model.out_bias": False,
         "model.mlp_bias": False, "model.num_kv_heads": 2, "model.tie_embeddings": False,
         "model.max_len": 64}
T5_V1_1 = {"model.kind": "encoder_decoder", "model.position": "relative", "model.norm": "rmsnorm",
           "model.mlp": "geglu", "model.qkv_bias": False, "model.out_bias": False,
           "model.mlp_bias": False, "model.scale_attention": False,
           "model.tie_embeddings": False, "model.max_len": 64}


def _hf_folder(folder, builder, model: dict):
  """A random-initialised Hugging Face folder of `model` with `builder`'s tokenizer."""
  built, tokenizer_config = builder()
  write_folder(folder / "tokenizer", built, tokenizer_config)
  tokenizer = hf_tokenizer.load_tokenizer(folder / "tokenizer")
  cfg = config_lib.default_config()
  cfg.update_from_flattened_dict({"model.num_layers": 2, "model.width": 32,
                                  "model.num_heads": 4, "model.mlp_dim": 64,
                                  "model.vocab_size": tokenizer.vocab_size, **model})
  params = jax.jit(lambda key: init_params(cfg, {}, key))(jax.random.PRNGKey(0))
  hf.export(cfg, params, folder / "model", tokenizer=tokenizer)
  return folder / "model"


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
  root = tmp_path_factory.mktemp("hf_transfer")
  decoder = _hf_folder(root / "llama", llama, LLAMA)
  seq2seq = _hf_folder(root / "t5", t5, T5_V1_1)
  results = run_cli_many({
      "classify": ("experiments.finetune", "--config=configs/finetune/mr.py:tiny",
                   f"--workdir={root / 'mr'}", f"--config.init_from={decoder}", *FAST),
      "translate": ("experiments.finetune", "--config=configs/finetune/translation.py:tiny",
                    f"--workdir={root / 'en_es'}", f"--config.init_from={seq2seq}", *FAST),
      # The encoder-decoder preset on a Llama: the source makes it a decoder, trained as a
      # prefix LM (its tokenizer has no separator: </s> separates), rows within max_len 64.
      "translate_decoder": ("experiments.finetune",
                            "--config=configs/finetune/translation.py:tiny",
                            f"--workdir={root / 'en_es_llama'}", f"--config.init_from={decoder}",
                            "--config.data.seq_len=32", "--config.data.target_len=32", *FAST),
  }, workers=2)
  return root, decoder, results


@pytest.mark.parametrize("run, workdir, fmt, metric", [
    ("classify", "mr", "hf-llama", "accuracy"), ("translate", "en_es", "hf-t5", "bleu"),
    ("translate_decoder", "en_es_llama", "hf-llama", "bleu")])
def test_finetune_from_a_hugging_face_folder(runs, run, workdir, fmt, metric):
  root, _, results = runs
  result = results[run]
  assert result.returncode == 0, result.stderr[-3000:]
  assert f"({fmt}): model.kind=" in result.stdout  # the derived model config, in one line
  out = json.loads((root / workdir / "results.json").read_text())
  assert 0 <= out["test"][metric] <= 100 and out["best_step"] == 6
  assert out["lineage"]["format"] == fmt
  saved = json.loads((root / workdir / "config.json").read_text())
  assert saved["model"]["num_layers"] == 2 and saved["model"]["width"] == 32  # the source's
  assert saved["objectives"] == ({"prefix_lm": 1.0} if run == "translate_decoder"
                                 else {"classify": 1.0} if run == "classify"
                                 else {"seq2seq": 1.0})


def test_generate_straight_from_a_hugging_face_decoder(runs):
  _, decoder, _ = runs
  result = run_cli("experiments.generate", f"--init_from={decoder}", "--prompt=the king",
                   "--max_new_tokens=5", "--beam_size=3")
  assert result.returncode == 0, result.stderr[-3000:]
  assert result.stdout.startswith("[hf] the king") and "(hf-llama)" in result.stderr
  # Greedy, in process: the same loader, five new tokens after the prompt.
  cfg, netdef, params, tokenizer = hf.load_model(str(decoder))
  text, = generate.continue_texts(cfg, netdef, params, tokenizer, ["the king"],
                                  max_new_tokens=5)
  assert isinstance(text, str)
