"""Code generation: a function's signature and docstring -> its body, scored by running it.

The built-in task (data.source=python_code_fns, research/data/code.py) is made
from the running Python's standard library. The layout is seq2seq's
(tasks/seq2seq.py): the description is the source, the body the target, on a
decoder (prefix LM, the default here) or an encoder-decoder. Bodies keep
their indentation: outputs are decoded as they are, never stripped.

Metrics, in percent:
  exact_match  outputs equal to the reference body (trailing whitespace aside)
  chrf         corpus chrF (sacrebleu) of outputs against references
  parse_rate   outputs that are a body (not empty or blank) and whose
               `description + body` parses (ast.parse)
  pass@k       on the doctest subset (examples whose docstring holds `>>>` examples
               that the reference body passes): the generated function runs against
               its own doctests in a separate process (research/execution.py: time and
               memory limits, scratch directory, no network), never in this one. With
               generate.num_samples = 1 the output is greedy and pass@1 is the share
               that passes; with n > 1 each example draws n samples at
               generate.temperature / generate.top_p and pass@k (k = 1, 10, 100 <= n) is
               the unbiased estimator of Chen et al. (2021).
  timeouts     doctest runs stopped at the time limit (counted as failed)

EM, chrF and parse rate cover the first generate.eval_examples examples
(0: all); pass@k covers every doctest example of the split.
"""

import ast
import sys

import jax
import numpy as np

from research import execution, metrics
from research.errors import ConfigError
from research.tasks import seq2seq

encode = seq2seq.encode
PASS_AT = (1, 10, 100)


def _decode(predict, encoded, tokenizer, cfg, index, samples: int) -> list[str]:
  """Bodies of the examples at `index`, `samples` each (seq2seq.decode_ids), indentation kept."""
  return [tokenizer.decode(row).rstrip()
          for row in seq2seq.decode_ids(predict, encoded, tokenizer, cfg, index, samples)]


def _same(a: str, b: str) -> bool:
  return [line.rstrip() for line in a.strip("\n").splitlines()] == \
      [line.rstrip() for line in b.strip("\n").splitlines()]


def function_text(example: dict, body: str) -> str:
  """The whole function: the description, then a body."""
  return example["source"] + "\n" + body


def evaluate(predict, encoded, tokenizer, cfg) -> dict:
  """exact_match, chrf, parse_rate, pass@k and timeouts (see the module docstring)."""
  examples, g = encoded.examples, cfg.generate
  if g.num_samples > 1 and g.temperature <= 0:
    raise ConfigError("generate.num_samples > 1 draws samples: set generate.temperature > 0")
  limit = min(g.eval_examples or len(examples), len(examples))
  outputs = _decode(predict, encoded, tokenizer, cfg, np.arange(limit), 1)
  references = [e["target"] for e in examples[:limit]]
  out = {"exact_match": 100.0 * float(np.mean([_same(o, r) for o, r in zip(outputs, references)]))
         if outputs else 0.0,
         "chrf": metrics.chrf(outputs, references),
         "parse_rate": 100.0 * float(np.mean([o.strip() != "" and _parses(function_text(e, o))
                                              for e, o in zip(examples, outputs)]))
         if outputs else 0.0,
         "examples": float(limit)}
  tested = np.asarray([i for i, e in enumerate(examples) if e.get("doctest")], np.int64)
  out["doctest_examples"] = float(len(tested))
  if not len(tested):
    return out
  n = g.num_samples
  if n == 1:
    greedy = dict(zip(range(limit), outputs))
    missing = np.asarray([i for i in tested if i not in greedy], np.int64)
    if len(missing):
      greedy.update(zip(missing.tolist(), _decode(predict, encoded, tokenizer, cfg, missing, 1)))
    bodies = [greedy[int(i)] for i in tested]
  else:
    bodies = _decode(predict, encoded, tokenizer, cfg, tested, n)
  jobs = [{"module": examples[i]["module"], "qualname": examples[i]["qualname"],
           "code": function_text(examples[i], body)}
          for i, body in zip(np.repeat(tested, n), bodies)]
  if jax.process_index() == 0:
    print(f"trellis: running {len(jobs):,} generated functions against their doctests "
          "(separate processes)", file=sys.stderr, flush=True)
  statuses = execution.run_doctests(jobs, timeout_s=g.timeout_s)
  passed = np.asarray([s == "passed" for s in statuses]).reshape(len(tested), n).sum(1)
  for k in PASS_AT:
    if k <= n:
      out[f"pass@{k}"] = 100.0 * float(np.mean([execution.pass_at_k(n, int(c), k)
                                                for c in passed]))
  out["timeouts"] = float(sum(s == "timeout" for s in statuses))
  return out


def _parses(text: str) -> bool:
  try:
    ast.parse(text)
  except (SyntaxError, ValueError):
    return False
  return True
