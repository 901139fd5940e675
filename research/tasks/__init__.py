"""The fine-tuning tasks registry: what each task trains on and how it is scored.

A `Task` pairs a dataset kind (research.data.tasks.load_task_data) with the
objective that trains it (research.objectives), a function that turns
examples into fixed-shape arrays, and an `evaluate` that scores predictions
with research.metrics. Adding a task is one file and one line here.
"""

from typing import Callable, NamedTuple

from research.tasks import classification, qa, seq2seq


class Task(NamedTuple):
  """A fine-tuning task."""
  kind: str  # the dataset kind: classification | qa | translation | summarization
  objective: str  # the OBJECTIVES entry that trains it
  metric: str  # default metric for model selection (train.best_metric)
  encode: Callable  # (examples: list[dict], tokenizer, cfg, backbone_kind: str) -> Encoded
  evaluate: Callable  # (trainer, params, encoded: Encoded, tokenizer, cfg) -> {metric: float}


class Encoded(NamedTuple):
  """A split as the model sees it: fixed-shape arrays, plus what scoring needs."""
  arrays: dict  # name -> np.ndarray [N, ...]: the batch fields
  examples: list  # the original examples (references, answers, ...)
  extra: dict  # task-specific bookkeeping (e.g. QA window offsets)


TASKS = {
    "classification": Task("classification", "classify", "accuracy", classification.encode,
                           classification.evaluate),
    "qa": Task("qa", "qa", "f1", qa.encode, qa.evaluate),
    "translation": Task("translation", "seq2seq", "bleu", seq2seq.encode,
                        seq2seq.evaluate_translation),
    "summarization": Task("summarization", "seq2seq", "rougeL", seq2seq.encode,
                          seq2seq.evaluate_summarization),
}
