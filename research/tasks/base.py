"""The task contract: what a fine-tuning task is, and a split as the model sees it.

A task scores predictions only. Its `evaluate(predict, encoded, tokenizer,
cfg)` receives `predict(fn, arrays)`, which runs `fn(network, batch) ->
arrays` (a module-level function, so it compiles once) over every row of
`arrays` in fixed-shape batches, sharded as training is, and returns numpy
arrays of all rows from all processes: as big_vision's evaluators receive a
`predict_fn`, not the trainer.
"""

from typing import Callable, NamedTuple


class Task(NamedTuple):
  """A fine-tuning task."""
  kind: str  # the dataset kind: classification | qa | translation | summarization
  objective: str  # the OBJECTIVES entry that trains it
  metric: str  # default metric for model selection (train.best_metric)
  encode: Callable  # (examples: list[dict], tokenizer, cfg) -> Encoded
  evaluate: Callable  # (predict, encoded: Encoded, tokenizer, cfg) -> {metric: float}
  # The objective on a decoder (model.kind=decoder), where it differs: seq2seq tasks
  # train an encoder-decoder with `objective`, a decoder as a prefix LM.
  decoder_objective: str = ""

  def objective_for(self, model_kind: str) -> str:
    """The OBJECTIVES entry that trains this task on a model of `model_kind`."""
    return self.decoder_objective if model_kind == "decoder" and self.decoder_objective \
        else self.objective


class Encoded(NamedTuple):
  """A split as the model sees it: fixed-shape arrays, plus what scoring needs."""
  arrays: dict  # name -> np.ndarray [N, ...]: the batch fields
  examples: list  # the original examples (references, answers, ...)
  extra: dict  # task-specific bookkeeping (e.g. QA window offsets)
