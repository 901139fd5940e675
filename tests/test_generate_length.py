"""Generating from a real tiny run: max_new_tokens fits model.max_len (issue 19, item 1).

Unset, each prompt continues up to the room model.max_len leaves (said in one
line); set, it must fit, or one error line says which value does.
"""

import pytest

from research import generate
from research.data.tokenizer import Tokenizer
from research.errors import ConfigError
from test_cli import assert_user_error, run_cli

MAX_LEN = 64  # the gpt_clm tiny preset's model.max_len, which the README's generate command uses


@pytest.fixture(scope="module")
def gpt_run(tmp_path_factory):
  """A 2-step run of the README's first model (gpt_clm tiny on Shakespeare)."""
  from configs.pretrain import gpt_clm
  from research import train
  cfg = gpt_clm.get_config("tiny")
  assert cfg.model.max_len == MAX_LEN
  cfg.train.update(steps=2, log_every=1, eval_every=2, eval_batches=1, checkpoint_every=2)
  workdir = tmp_path_factory.mktemp("generate") / "gpt"
  train.pretrain(cfg, str(workdir))
  return workdir


def test_unset_max_new_tokens_continues_each_prompt_to_max_len(gpt_run, capsys, monkeypatch):
  prompts = ["To be", "ROMEO. What light through yonder window"]
  tokenizer = Tokenizer(gpt_run / "tokenizer.model")
  lengths = [1 + len(tokenizer.encode(text)) for text in prompts]
  asked, inner = [], generate.generate
  monkeypatch.setattr(generate, "generate", lambda *a, **kw: asked.append(
      kw["max_new_tokens"]) or inner(*a, **kw))
  _, texts = generate.generate_text(str(gpt_run), prompts)
  assert asked == [MAX_LEN - length for length in lengths] and all(texts)
  err = capsys.readouterr().err.strip().splitlines()
  assert err == [f"trellis: max_new_tokens not set: generating up to {MAX_LEN - lengths[0]}, "
                 f"{MAX_LEN - lengths[1]} tokens, the room model.max_len=64 leaves after the "
                 f"prompts' {lengths[0]}, {lengths[1]} tokens (with <s>)"], err


def test_a_max_new_tokens_that_does_not_fit_says_which_does(gpt_run):
  _, [text] = generate.generate_text(str(gpt_run), ["To be"], max_new_tokens=61)  # fits exactly
  with pytest.raises(ConfigError) as e:
    generate.generate_text(str(gpt_run), ["To be"], max_new_tokens=62)
  message = str(e.value)
  assert "\n" not in message and "model.max_len=64" in message
  assert "max_new_tokens=61 or less fits" in message, message


def test_a_prompt_that_fills_max_len_is_one_line_error(gpt_run):
  long = "To be, or not to be, that is the question " * 8
  for max_new_tokens in (None, 1):
    with pytest.raises(ConfigError, match="leaves no room in model.max_len=64") as e:
      generate.generate_text(str(gpt_run), [long], max_new_tokens=max_new_tokens)
    assert "\n" not in str(e.value)
  assert_user_error(run_cli("experiments.generate", f"--workdir={gpt_run}", "--prompt", long),
                    "leaves no room in model.max_len=64", "shorten")


def test_generation_from_a_real_run_never_samples_a_special_token(gpt_run):
  tokenizer = Tokenizer(gpt_run / "tokenizer.model")
  banned = generate.banned_ids(tokenizer)
  specials = {i for i in range(tokenizer.vocab_size)
              if tokenizer.id_to_piece(i) in ("<pad>", "<unk>", "<s>", "<mask>", "<cls>", "<sep>")
              or tokenizer.id_to_piece(i).startswith("<extra_id_")}
  assert set(banned) == specials and len(specials) == 38 and tokenizer.eos_id not in banned
  _, texts = generate.generate_text(str(gpt_run), ["To be"] * 1, max_new_tokens=40,
                                    temperature=2.0)
  assert "<extra_id_" not in texts[0] and "<mask>" not in texts[0], texts
