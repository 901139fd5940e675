"""The fine-tuning tasks registry: what each task trains on and how it is scored.

A `Task` (tasks/base.py) pairs a dataset kind (research.data.tasks.load_task_data)
with the objective that trains it (research.objectives), a function that turns
examples into fixed-shape arrays, and an `evaluate` that scores predictions
with research.metrics. Adding a task is one file and one line here.
"""

from research.tasks import classification, code, qa, seq2seq
from research.tasks.base import Task

TASKS = {
    "classification": Task("classification", "classify", "accuracy", classification.encode,
                           classification.evaluate),
    "qa": Task("qa", "qa", "f1", qa.encode, qa.evaluate),
    "translation": Task("translation", "seq2seq", "bleu", seq2seq.encode,
                        seq2seq.evaluate_translation, decoder_objective="prefix_lm"),
    "summarization": Task("summarization", "seq2seq", "rougeL", seq2seq.encode,
                          seq2seq.evaluate_summarization, decoder_objective="prefix_lm"),
    "code": Task("code", "seq2seq", "chrf", code.encode, code.evaluate,
                 decoder_objective="prefix_lm"),
}
