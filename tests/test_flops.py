"""MFU's inputs: every architecture's FLOP formula against XLA's own count of the train
step, and the peak a run's train rows divide by (that of its compute dtype)."""

import json
import os

import jax
import pytest

from conftest import tiny_config
from research import objectives, throughput, train
from research.workdir import resolve
from research.config import default_config
from research.models import MODELS

# Per family, the largest 1 - formula / XLA. XLA also counts what model FLOPs leave
# out: elementwise work (norms, softmax, activations, gates, residuals), the embedding
# gradient's scatter-add and the AdamW update (~20 FLOPs per parameter per step). Measured
# on CPU at the sizes below: 2.2-4.7% for Transformers and CNNs, 10.5-14.4% for LSTM/GRU,
# whose gate arithmetic XLA's fusion duplicates into several fused kernels (the HLO
# before optimisation counts 4-6%). The formula must also never exceed XLA's count.
TOLERANCE = {"transformer": 0.07, "cnn": 0.07, "lstm": 0.2, "gru": 0.2}
NUM_LABELS = 3

_SMALL = {"model.width": 128, "model.num_heads": 2, "model.num_layers": 2, "model.max_len": 64,
          "data.seq_len": 32, "data.vocab_size": 256, "train.batch_size": 8}
# (arch, kind, objective, overrides): every registry entry, with a vocabulary objective
# and without one; seq2seq has a target length unlike the source's (summarization).
CASES = [
    ("transformer", "decoder", "clm", {}),
    ("transformer", "decoder", "classify", {}),
    ("transformer", "decoder", "clm", {"model.scan_layers": True, "train.microbatches": 2}),
    ("transformer", "encoder", "mlm", {}),
    ("transformer", "encoder", "mlm", {"model.vocab_transform": True, "model.vocab_bias": True}),
    ("transformer", "encoder", "classify", {"model.prenorm": False, "model.position": "learned",
                                            "model.norm": "layernorm"}),
    ("transformer", "encoder", "qa", {}),
    ("transformer", "encoder", "nsp", {}),
    ("transformer", "encoder_decoder", "span", {"model.mlp": "swiglu"}),
    ("transformer", "encoder_decoder", "seq2seq", {"data.seq_len": 64, "data.target_len": 16}),
    ("transformer", "encoder_decoder", "classify", {}),
    # Recurrences at 16 tokens: their unrolled steps compile in seconds, not a minute.
    ("lstm", "decoder", "clm", {"data.seq_len": 16}),
    ("lstm", "encoder", "classify", {"data.seq_len": 16, "model.rnn_hidden": 96}),
    ("gru", "decoder", "classify", {"data.seq_len": 16}),
    ("gru", "encoder", "mlm", {"data.seq_len": 16}),
    ("cnn", "decoder", "clm", {}),
    ("transformer", "decoder", "prefix_lm", {"data.seq_len": 48, "data.target_len": 16}),
    ("cnn", "encoder", "classify", {}),
]


def case_config(arch, kind, objective, overrides):
  cfg = default_config()
  cfg.update_from_flattened_dict({"model.arch": arch, "model.kind": kind, **_SMALL, **overrides})
  cfg.objectives = {objective: 1.0}
  return resolve(cfg, 1)


def batch_shapes(cfg) -> dict:
  return {name: jax.ShapeDtypeStruct(a.shape, a.dtype)
          for name, a in throughput.synthetic_batch(cfg, num_labels=NUM_LABELS).items()}


def heads(cfg) -> dict:
  return objectives.heads(cfg.objectives, NUM_LABELS)


def lowered_step(cfg):
  return train.Trainer(cfg, heads=heads(cfg), devices=jax.devices()[:1]).lower(batch_shapes(cfg))


def xla_flops(analysed) -> float:
  cost = analysed.cost_analysis()
  return float((cost[0] if isinstance(cost, (list, tuple)) else cost)["flops"])


@pytest.fixture
def unrolled_scans(monkeypatch):
  """Every lax.scan traced while it is active is unrolled into straight-line HLO.

  XLA's cost analysis counts a while loop's body once, whatever its trip count (a
  10-step scan of a matmul counts as one matmul): the recurrences, model.scan_layers
  and train.microbatches would be undercounted. Unrolled, the step computes the same
  thing and XLA counts every iteration.
  """
  scan = jax.lax.scan

  def unrolled(f, init, xs=None, length=None, **kwargs):
    kwargs.pop("unroll", None)
    return scan(f, init, xs, length, unroll=True, **kwargs)

  monkeypatch.setattr(jax.lax, "scan", unrolled)


def _id(case):
  arch, kind, objective, overrides = case
  return "-".join([arch, kind, objective] + [k.split(".")[-1] for k in overrides])


@pytest.mark.parametrize("case", CASES, ids=_id)
def test_formula_matches_xla_cost_analysis(case, unrolled_scans):
  """Formula / XLA's count of the compiled train step in [1 - TOLERANCE, 1]."""
  cfg = case_config(*case)
  ratio = (throughput.step_flops(cfg, batch_shapes(cfg), heads(cfg))
           / xla_flops(lowered_step(cfg).compile()))
  print(f"{_id(case)}: formula / XLA = {ratio:.3f}")
  assert 1 - TOLERANCE[case[0]] <= ratio <= 1.0, ratio


def test_cases_cover_every_registry_entry_and_objective():
  """A new architecture or objective must join CASES (its FLOPs are then checked)."""
  covered = {(arch, kind) for arch, kind, _, _ in CASES}
  assert covered == {(arch, kind) for arch in MODELS for kind in MODELS[arch].kinds}
  assert {objective for _, _, objective, _ in CASES} == set(objectives.OBJECTIVES)
  for arch in MODELS:  # with and without a vocabulary head
    assert {objectives.OBJECTIVES[o].vocab_logits for a, _, o, _ in CASES
            if a == arch} == {True, False}


def test_no_vocabulary_head_no_embedding_flops():
  """Classification: the embedding table is a gather, so vocab size changes nothing."""
  small, large = (case_config("transformer", "encoder", "classify", {"data.vocab_size": v})
                  for v in (256, 30522))
  assert (throughput.step_flops(small, batch_shapes(small), heads(small))
          == throughput.step_flops(large, batch_shapes(large), heads(large)))


def test_bfloat16_train_rows_divide_by_the_bfloat16_peak(tmp_path, synthetic_data, monkeypatch):
  """A bf16 run's train-row MFU uses matmul_peak_flops("bfloat16"), as the benchmark does."""
  peaks = {"float32": 1e9, "bfloat16": 4e9}
  asked = []

  def fake_peak(dtype_name="float32"):
    asked.append(dtype_name)
    return peaks[dtype_name]

  monkeypatch.setattr(throughput, "matmul_peak_flops", fake_peak)
  cfg = tiny_config(**{"model.dtype": "bfloat16", "train.peak_flops": 0.0, "train.steps": 2,
                       "train.eval_every": 0, "train.checkpoint_every": 0})
  train.train_and_evaluate(train.Trainer(resolve(cfg, jax.device_count())), str(tmp_path),
                           synthetic_data())
  assert asked and set(asked) == {"bfloat16"}
  rows = [json.loads(line) for line in open(os.path.join(tmp_path, "metrics.jsonl"))]
  row = next(r for r in rows if r.get("split") == "train")
  resolved = resolve(cfg, jax.device_count())
  flops = throughput.step_flops(resolved, batch_shapes(resolved))
  assert row["mfu"] == pytest.approx(flops / row["step_time_s"] / peaks["bfloat16"], rel=1e-3)
