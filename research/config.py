"""The config: defaults for every field, and the checks run before compiling.

Every config file in configs/ starts from `default_config()` and changes a few
fields per preset. `validate()` holds every semantic check, so a bad value is
reported as one `ConfigError` line before any data is read or anything is
compiled. Nothing else in the library calls `cfg.get(key, default)`: a field
that exists has its default here.

Why ~480 lines: one commented line per field and every check of them; split,
a field's default and its check would live apart.
"""

import json
import hashlib
import math
import os

import ml_collections

from research.data import sources
from research.errors import ConfigError

# Logical axis names used by parameter and activation annotations, mapped to
# mesh axes. A value is a comma-separated list of mesh axes ("" = replicated).
DEFAULT_AXIS_RULES = {
    "batch": "data,fsdp",  # the batch is split over every data-parallel axis
    "vocab": "tensor",  # embedding rows / output logits
    "embed": "fsdp",  # the model width: sharded for fsdp (ZeRO-3 style)
    "mlp": "tensor",  # MLP hidden units: Megatron-style tensor parallel
    "heads": "tensor",  # attention heads (q/k/v output, o input)
    "kv": "",  # per-head features
    "norm": "",  # norm scales and biases
    "length": "",  # sequence positions
    "layers": "",  # stacked layers (scan over layers)
    "classes": "",  # small task heads
}

# Dict fields whose keys are the user's choice: set as a whole, not merged.
OPEN_FIELDS = ("objectives",)

# Fields that name files or folders: `~` and $VARIABLES in them are expanded when a
# config is loaded (presets.load), each comma-separated glob on its own.
PATH_FIELDS = ("data.train_files", "data.eval_files", "data.test_files", "data.tokenizer",
               "data.cache_dir", "train.compilation_cache", "init_from")

# Fields that must match for a checkpoint to be restored into a run.
COMPATIBILITY_FIELDS = ("model", "data.vocab_size", "data.seq_len")
# Model fields that leave the params as they are: how the network is executed (remat,
# attention, scan_layers: one params layout either way), its compute dtype
# (params stay float32) and its regularisation (dropout rates). They are free to change
# on resume, and a fine-tuning run keeps its own values of them; every other model field
# is the architecture, fixed by the checkpoint (resume) or the source (fine-tuning).
FREE_MODEL_FIELDS = ("remat", "attention", "scan_layers", "dtype", "dropout",
                     "attention_dropout")

# Head dims cuDNN flash attention takes (jax 0.10: a multiple of 8, at most 128 before
# Hopper and 256 from Hopper on; the larger bound is checked here, cuDNN checks the rest).
CUDNN_MAX_HEAD_DIM = 256


def default_config() -> ml_collections.ConfigDict:
  """Every field Trellis knows, with its default and a comment."""
  c = ml_collections.ConfigDict()
  c.seed = 0  # seeds params, data order and every step's RNG

  c.model = m = ml_collections.ConfigDict()
  m.arch = "transformer"  # backbone family: a key of research.models.MODELS
  m.kind = "decoder"  # decoder | encoder | encoder_decoder
  m.num_layers = 2  # blocks (per stack for encoder-decoders)
  m.width = 64  # model (residual stream) width
  m.num_heads = 4  # attention heads; must divide width (unless model.head_dim is set)
  m.num_kv_heads = 0  # Transformer: key/value heads, grouped-query attention (Llama 2 70B,
  #   Mistral); must divide num_heads; 0: num_heads (multi-head attention)
  m.head_dim = 0  # Transformer: width of each attention head; 0: width // num_heads
  m.mlp_dim = 0  # MLP hidden size; 0 means 4 * width
  m.vocab_size = 0  # 0: take it from the tokenizer (data.vocab_size)
  m.max_len = 512  # longest sequence the position encoding supports
  m.position = "rope"  # rope | learned | alibi (BLOOM) | relative (T5's bucketed bias)
  m.norm = "rmsnorm"  # rmsnorm | layernorm
  m.mlp = "gelu"  # gelu | relu | swiglu (Llama) | geglu (T5 v1.1: GELU-gated)
  m.dropout = 0.0  # dropout on residual branches and attention output
  m.attention_dropout = 0.0  # Transformer: dropout on the attention probabilities (BERT's
  #   attention_probs_dropout_prob); 0 keeps the fused jax.nn.dot_product_attention
  m.dtype = "float32"  # compute dtype: float32 | bfloat16 (params stay float32)
  m.tie_embeddings = True  # output head shares the token embedding matrix
  m.rope_base = 10000.0  # RoPE frequency base
  # Transformer attention and projection variants that imported checkpoints need.
  m.relative_buckets = 32  # position=relative: T5's relative_attention_num_buckets
  m.relative_max_distance = 128  # position=relative: T5's relative_attention_max_distance
  m.sliding_window = 0  # attend only to the last N tokens (Mistral, GPT-Neo's local
  #   layers); 0: the whole context
  m.window_layers = "all"  # which layers the sliding window applies to: all | odd
  #   (GPT-Neo: layers 1, 3, ... local, 0, 2, ... global)
  m.scale_attention = True  # scores times 1/sqrt(head_dim); False: unscaled (GPT-Neo, T5)
  m.qkv_bias = True  # biases on the query/key/value projections (False: Llama, T5, GPT-Neo)
  m.out_bias = True  # bias on the attention output projection (False: Llama, Qwen2, T5)
  m.mlp_bias = True  # biases on the MLP projections (False: Llama, T5)
  m.embed_norm = False  # pre-norm stacks: a norm on the embeddings too (BLOOM's
  #   word_embeddings_layernorm); post-norm stacks always have one
  m.scale_logits = False  # hidden states times width**-0.5 before the vocabulary head
  #   (T5 v1.0: transformers' scale_decoder_outputs)
  # Encoder, recurrent and convolutional options (research/models/{transformer,rnn,cnn}.py).
  m.type_vocab_size = 2  # encoders: token-type (sentence A/B) embeddings; 0: none
  m.prenorm = True  # Transformer: norm before each residual branch; False: post-LN (BERT)
  m.residual = True  # RNN/CNN: each layer adds its output to its input
  m.rnn_hidden = 0  # LSTM/GRU state size per direction (0: width); projected back to width
  m.kernel_size = 3  # CNN: convolution window, in tokens
  m.dilation_cycle = 4  # CNN: layer i dilates by 2 ** (i % dilation_cycle); 1: no dilation
  # Numerics that imported checkpoints fix (research/hf.py; BERT: 1e-12 and exact GELU).
  m.norm_eps = 1e-6  # epsilon of every LayerNorm/RMSNorm
  m.gelu_approximate = True  # MLP GELU: tanh approximation (GPT-2) or exact erf (BERT)
  # Transformer vocabulary head (model.logits), as BERT's MLM head; set by a BERT import.
  m.vocab_transform = False  # dense + GELU + norm on the hidden states before the logits
  m.vocab_bias = False  # a learned per-token bias added to the logits
  # Memory and speed: how the same function is computed (params and results unchanged).
  m.remat = "none"  # none | minimal | full: recompute block activations in the backward
  #   (minimal keeps the weight matmuls' outputs, full only each block's input)
  m.attention = "auto"  # auto | xla | cudnn: jax.nn.dot_product_attention implementation
  #   (cudnn: flash attention; GPU and model.dtype=bfloat16 only)
  m.scan_layers = False  # Transformer: run each stack of blocks as one lax.scan over its
  #   params (always stacked on a leading "layers" axis), so compile time does not grow
  #   with num_layers; False runs the layers in a Python loop (same params, same results
  #   up to float rounding; free to change on resume)

  # Pretraining objectives and their loss weights; 0 switches one off.
  c.objectives = ml_collections.ConfigDict({"clm": 1.0})

  # Settings of the objectives (used only by the objectives that are active).
  c.objective_options = o = ml_collections.ConfigDict()
  o.mask_rate = 0.15  # mlm: share of maskable tokens chosen (BERT: 0.15)
  o.whole_word_mask = False  # mlm: choose all pieces of a word together
  o.noise_density = 0.15  # span: share of tokens corrupted (T5: 0.15)
  o.mean_span_length = 3.0  # span: mean corrupted span length (T5: 3)
  o.nsp_random_rate = 0.5  # nsp: share of pairs whose B is from another document
  o.label_smoothing = 0.0  # task losses: label smoothing of the targets
  o.pooling = "auto"  # classify: auto (encoders the first <cls> position, decoders the
  #   last real token) | mean (the average over real tokens)
  # clm/mlm/span: vocabulary cross-entropy over chunks of this many positions per row,
  # never holding the whole [batch, length, vocab] float32 logits (0: all at once).
  o.chunked_loss = 0

  c.data = d = ml_collections.ConfigDict()
  d.source = "shakespeare"  # built-in corpus name, "files", or a HF hub name
  d.train_files = ""  # glob(s), comma-separated, when source == "files"
  d.eval_files = ""  # glob(s) for eval; "" holds out documents of train
  d.text_column = "text"  # column holding the text (jsonl/csv/parquet/hub)
  d.hub_config = ""  # HF hub dataset config name (e.g. wikitext-2-raw-v1)
  d.eval_fraction = 0.05  # share of documents held out when no eval_files
  d.max_documents = 0  # use only the first N documents (0: all)
  d.seq_len = 128  # tokens per packed training row
  d.vocab_size = 1024  # SentencePiece vocabulary size to train
  d.tokenizer = ""  # path to an existing SentencePiece .model ("" trains one)
  d.tokenizer_type = "unigram"  # unigram | bpe, when training one
  d.cache_dir = ""  # where fetched data and tokenizers live ("" = default)
  # Fine-tuning data (data.source is then a built-in task dataset or "files").
  d.test_files = ""  # glob(s) of the test split, when source == "files"
  d.label_column = "label"  # classification: the label column
  d.labels = ""  # classification: comma-separated label set ("" = from the train split)
  d.source_column = "source"  # seq2seq: input text column
  d.target_column = "target"  # seq2seq: output text column
  d.question_column = "question"  # QA (SQuAD schema): question column
  d.context_column = "context"  # QA: context column
  d.answers_column = "answers"  # QA: {"text": [...], "answer_start": [...]} column
  d.doc_stride = 64  # QA: tokens between the starts of overlapping context windows
  d.max_answer_tokens = 30  # QA: longest answer span considered at prediction
  d.target_len = 32  # seq2seq: target tokens (source tokens: data.seq_len); a decoder's
  #   row holds both, packed: <s> source <sep> target </s>

  # Decoding for seq2seq evaluation (and experiments.generate's defaults).
  c.generate = g = ml_collections.ConfigDict()
  g.beam_size = 1  # 1: greedy; > 1: beam search
  g.length_penalty = 0.6  # beam search: GNMT length penalty alpha (0 = none)
  g.eval_examples = 200  # seq2seq: validation examples decoded per evaluation (0 = all)
  # Code generation's pass@k (tasks/code.py): 1 scores the greedy output; n > 1 draws n
  # samples per doctest example at this temperature and nucleus.
  g.num_samples = 1
  g.temperature = 0.8
  g.top_p = 0.95
  g.timeout_s = 10.0  # wall-clock limit of one generated function's doctest run

  c.train = t = ml_collections.ConfigDict()
  t.batch_size = 16  # global batch, in sequences
  t.microbatches = 1  # gradient accumulation steps inside one train step
  t.steps = 100  # total optimizer steps
  t.lr = 1e-3  # peak learning rate
  t.warmup_steps = 10  # linear warmup from 0 to lr
  t.schedule = "cosine"  # cosine | linear | constant (after warmup)
  t.min_lr_ratio = 0.1  # final lr as a fraction of lr (cosine/linear)
  t.weight_decay = 0.1  # AdamW decay: kernels and embedding tables only (no biases, norms)
  t.b1 = 0.9  # Adam beta1
  t.b2 = 0.95  # Adam beta2
  t.eps = 1e-8  # Adam epsilon
  t.clip_norm = 1.0  # global gradient-norm clip (0 disables)
  t.log_every = 10  # steps between train rows in metrics.jsonl
  t.eval_every = 50  # steps between evaluations (0: only at the end)
  t.eval_batches = 8  # batches per evaluation (0: the whole eval split)
  t.checkpoint_every = 50  # steps between checkpoints (0: only at the end)
  t.keep_checkpoints = 3  # how many recent checkpoints to keep
  t.peak_flops = 0.0  # FLOP/s for MFU; 0 measures the matmul peak here
  t.compilation_cache = ""  # directory of JAX's persistent compilation cache ("" = off)
  # Model selection: keep the best eval checkpoint (workdir/best) by this metric.
  t.best_metric = ""  # eval metric to select on ("" = no selection, last state wins)
  t.best_mode = "max"  # max | min: whether a larger best_metric is better
  t.patience = 0  # stop after this many evals without improvement (0 = never)
  # Transfer: which parameters learn, and how fast.
  t.freeze_backbone = False  # train only the heads
  t.freeze_layers = 0  # freeze the embeddings and the bottom k backbone layers
  t.layer_lr_decay = 1.0  # lr multiplier per layer below the top (LLRD; 1 = off)
  t.head_lr_multiplier = 1.0  # lr multiplier of task heads relative to train.lr

  c.mesh = ms = ml_collections.ConfigDict()
  ms.data = -1  # data-parallel axis size; -1 takes the remaining devices
  ms.fsdp = 1  # fully-sharded data-parallel axis size
  ms.tensor = 1  # tensor-parallel axis size
  ms.rules = ml_collections.ConfigDict(DEFAULT_AXIS_RULES)  # logical -> mesh

  c.task = ""  # fine-tuning task name ("" when pretraining)
  c.init_from = ""  # workdir/checkpoint/HF folder to start from ("" = scratch)
  return c


def _check(ok: bool, message: str) -> None:
  if not ok:
    raise ConfigError(message)


def _choice(value, allowed, name):
  _check(value in allowed, f"{name}={value!r} is not one of {', '.join(map(str, allowed))}")


def mesh_shape(cfg, num_devices: int) -> tuple[int, int, int]:
  """(data, fsdp, tensor) sizes, with data=-1 filled from the device count."""
  data, fsdp, tensor = cfg.mesh.data, cfg.mesh.fsdp, cfg.mesh.tensor
  _check(fsdp >= 1 and tensor >= 1, "mesh.fsdp and mesh.tensor must be >= 1")
  if data == -1:
    _check(num_devices % (fsdp * tensor) == 0,
           f"mesh.fsdp*mesh.tensor={fsdp * tensor} does not divide the {num_devices} devices")
    data = num_devices // (fsdp * tensor)
  _check(data >= 1, "mesh.data must be >= 1 or -1")
  _check(data * fsdp * tensor == num_devices,
         f"mesh data*fsdp*tensor = {data}*{fsdp}*{tensor} = {data * fsdp * tensor} "
         f"but there are {num_devices} devices")
  return data, fsdp, tensor


def _check_cudnn(cfg) -> None:
  """What cuDNN flash attention needs that can be known before compiling."""
  import jax  # late: the config is read before jax is set up (multi-host, test devices)
  m = cfg.model
  backend = jax.default_backend()
  _check(backend == "gpu", f"model.attention=cudnn needs a GPU, but the backend is {backend}; "
         "use auto or xla")
  _check(m.dtype == "bfloat16", f"model.attention=cudnn needs model.dtype=bfloat16, got {m.dtype}")
  head_dim = m.width // m.num_heads
  _check(head_dim % 8 == 0 and head_dim <= CUDNN_MAX_HEAD_DIM,
         f"model.attention=cudnn needs a head dim (width/num_heads) that is a multiple of 8 "
         f"and <= {CUDNN_MAX_HEAD_DIM}, got {head_dim}")
  # The packed-document mask reaches cuDNN as a bias, whose backward needs even lengths.
  _check(cfg.data.seq_len % 2 == 0,
         f"model.attention=cudnn needs an even data.seq_len, got {cfg.data.seq_len}")


def _check_scan_layers(cfg) -> None:
  """model.scan_layers=True is a Transformer option (the other stacks differ per layer)."""
  _check(cfg.model.arch == "transformer",
         f"model.scan_layers=True needs model.arch=transformer, not {cfg.model.arch}; set it False")


def validate(cfg, num_devices: int) -> None:
  """Raises ConfigError for the first invalid or contradictory value."""
  # late: the registries import jax, and the config is read before jax is set up
  from research.models import MODELS  # late: as above
  from research.objectives import OBJECTIVES  # late: as above

  m, d, t = cfg.model, cfg.data, cfg.train
  _choice(m.arch, sorted(MODELS), "model.arch")
  _choice(m.kind, MODELS[m.arch].kinds, f"model.kind for model.arch={m.arch}")
  _choice(m.position, ("rope", "learned", "alibi", "relative"), "model.position")
  _choice(m.norm, ("rmsnorm", "layernorm"), "model.norm")
  _choice(m.mlp, ("gelu", "relu", "swiglu", "geglu"), "model.mlp")
  _choice(m.window_layers, ("all", "odd"), "model.window_layers")
  _choice(m.dtype, ("float32", "bfloat16"), "model.dtype")
  for name in ("num_layers", "width", "num_heads", "max_len"):
    _check(m[name] > 0, f"model.{name} must be positive, got {m[name]}")
  _check(m.head_dim > 0 or m.width % m.num_heads == 0,
         f"model.num_heads={m.num_heads} does not divide model.width={m.width} "
         "(or set model.head_dim)")
  _check(m.num_kv_heads >= 0 and m.head_dim >= 0 and m.sliding_window >= 0,
         "model.num_kv_heads, model.head_dim and model.sliding_window must be >= 0")
  _check(m.num_heads % (m.num_kv_heads or m.num_heads) == 0,
         f"model.num_kv_heads={m.num_kv_heads} does not divide model.num_heads={m.num_heads}")
  _check(m.position != "relative" or (m.relative_buckets > 1 and m.relative_max_distance > 1),
         "model.relative_buckets and model.relative_max_distance must be > 1")
  _check(m.position != "rope" or (m.head_dim or m.width // m.num_heads) % 2 == 0,
         "model.position=rope needs an even head width (model.head_dim)")
  _check(0.0 <= m.dropout < 1.0, f"model.dropout must be in [0, 1), got {m.dropout}")
  _check(0.0 <= m.attention_dropout < 1.0,
         f"model.attention_dropout must be in [0, 1), got {m.attention_dropout}")
  _check(m.arch == "transformer" or not (m.attention_dropout or m.vocab_transform
                                         or m.vocab_bias),
         f"model.attention_dropout, vocab_transform and vocab_bias need "
         f"model.arch=transformer, not {m.arch}")
  _check(m.attention != "cudnn" or m.attention_dropout == 0,
         "model.attention=cudnn has no attention-probability dropout: set "
         "model.attention_dropout=0 or model.attention=auto")
  _check(m.norm_eps > 0, f"model.norm_eps must be positive, got {m.norm_eps}")
  for name in ("type_vocab_size", "rnn_hidden"):
    _check(m[name] >= 0, f"model.{name} must be >= 0, got {m[name]}")
  for name in ("kernel_size", "dilation_cycle"):
    _check(m[name] > 0, f"model.{name} must be positive, got {m[name]}")
  _choice(m.remat, ("none", "minimal", "full"), "model.remat")
  _choice(m.attention, ("auto", "xla", "cudnn"), "model.attention")
  if m.attention == "cudnn":
    _check_cudnn(cfg)
  _check(isinstance(m.scan_layers, bool),
         f"model.scan_layers must be True or False, got {m.scan_layers!r}")
  if m.scan_layers:
    _check_scan_layers(cfg)

  _check(len(cfg.objectives) > 0, "objectives is empty")
  for name, weight in cfg.objectives.items():
    _choice(name, sorted(OBJECTIVES), "objective")
    _check(weight >= 0, f"objectives.{name} weight must be >= 0, got {weight}")
  _check(any(w > 0 for w in cfg.objectives.values()), "every objective has weight 0")
  o = cfg.objective_options
  _check(0 < o.mask_rate < 1, f"objective_options.mask_rate must be in (0, 1), got {o.mask_rate}")
  _check(0 < o.noise_density < 1,
         f"objective_options.noise_density must be in (0, 1), got {o.noise_density}")
  _check(o.mean_span_length >= 1, "objective_options.mean_span_length must be >= 1")
  _check(0 <= o.nsp_random_rate <= 1, "objective_options.nsp_random_rate must be in [0, 1]")
  _check(o.chunked_loss >= 0, f"objective_options.chunked_loss must be >= 0, got {o.chunked_loss}")
  if cfg.objectives.get("span", 0) > 0:
    # Every Trellis tokenizer has NUM_SENTINELS sentinels.
    from research.data.tokenizer import NUM_SENTINELS  # late: loads sentencepiece
    from research.objectives import span  # late: as MODELS above
    span.check_fits(d.seq_len, o.noise_density, o.mean_span_length, NUM_SENTINELS)

  _check(d.seq_len > 1, f"data.seq_len must be > 1, got {d.seq_len}")
  _check(d.seq_len <= m.max_len,
         f"data.seq_len={d.seq_len} is above model.max_len={m.max_len}")
  # Decoder targets run positions 0 .. target_len - 1 through the position table.
  _check(m.position != "learned" or cfg.objectives.get("seq2seq", 0) == 0
         or d.target_len <= m.max_len,
         f"data.target_len={d.target_len} is above model.max_len={m.max_len} "
         "(model.position=learned); lower data.target_len or raise model.max_len")
  # A decoder's seq2seq row holds both: <s> source <sep> (data.seq_len) target </s>.
  _check(cfg.objectives.get("prefix_lm", 0) == 0 or d.seq_len + d.target_len <= m.max_len,
         f"a decoder's seq2seq row <s> source <sep> target </s> is data.seq_len + "
         f"data.target_len = {d.seq_len} + {d.target_len} = {d.seq_len + d.target_len} tokens, "
         f"above model.max_len={m.max_len}: raise model.max_len or lower data.seq_len")
  _check(d.vocab_size >= 64, f"data.vocab_size must be >= 64, got {d.vocab_size}")
  _check(0.0 < d.eval_fraction < 1.0 or d.eval_files,
         f"data.eval_fraction must be in (0, 1), got {d.eval_fraction}")
  _check(d.source != "files" or d.train_files,
         "data.source=files needs data.train_files")
  if not cfg.task:  # a pretraining source; fine-tuning ones are task datasets (data/tasks.py)
    sources.source_kind(d.source, d.hub_config)
  _choice(d.tokenizer_type, ("unigram", "bpe"), "data.tokenizer_type")
  _check(d.doc_stride > 0 and d.max_answer_tokens > 0 and d.target_len > 1,
         "data.doc_stride, data.max_answer_tokens must be positive and data.target_len > 1")
  _check(cfg.generate.beam_size >= 1, "generate.beam_size must be >= 1")
  _check(cfg.generate.eval_examples >= 0, "generate.eval_examples must be >= 0")
  _check(cfg.generate.num_samples >= 1 and cfg.generate.temperature >= 0
         and 0 < cfg.generate.top_p <= 1 and cfg.generate.timeout_s > 0,
         "need generate.num_samples >= 1, generate.temperature >= 0, "
         "0 < generate.top_p <= 1 and generate.timeout_s > 0")

  for name in ("steps", "batch_size", "microbatches", "log_every", "keep_checkpoints"):
    _check(t[name] > 0, f"train.{name} must be positive, got {t[name]}")
  for name in ("eval_every", "checkpoint_every", "warmup_steps", "eval_batches"):
    _check(t[name] >= 0, f"train.{name} must be >= 0, got {t[name]}")
  _check(t.lr > 0 and math.isfinite(t.lr), f"train.lr must be positive, got {t.lr}")
  _check(t.weight_decay >= 0, "train.weight_decay must be >= 0")
  _check(t.clip_norm >= 0, "train.clip_norm must be >= 0")
  _choice(t.schedule, ("cosine", "linear", "constant"), "train.schedule")
  _choice(t.best_mode, ("max", "min"), "train.best_mode")
  _check(t.patience >= 0 and t.freeze_layers >= 0, "train.patience and freeze_layers must be >= 0")
  _check(t.patience == 0 or t.best_metric, "train.patience needs train.best_metric")
  _check(0 < t.layer_lr_decay <= 1, f"train.layer_lr_decay must be in (0, 1], got {t.layer_lr_decay}")
  _check(t.head_lr_multiplier > 0, "train.head_lr_multiplier must be positive")
  _choice(cfg.objective_options.pooling, ("auto", "mean"), "objective_options.pooling")
  _check(0 <= cfg.objective_options.label_smoothing < 1,
         "objective_options.label_smoothing must be in [0, 1)")

  data_ax, fsdp_ax, tensor_ax = mesh_shape(cfg, num_devices)
  shards = data_ax * fsdp_ax
  _check(t.batch_size % (shards * t.microbatches) == 0,
         f"train.batch_size={t.batch_size} is not divisible by mesh data*fsdp={shards} "
         f"times train.microbatches={t.microbatches}")
  _check(m.num_heads % tensor_ax == 0,
         f"mesh.tensor={tensor_ax} does not divide model.num_heads={m.num_heads}")
  for logical, axes in cfg.mesh.rules.items():
    for axis in filter(None, axes.split(",")):
      _choice(axis, ("data", "fsdp", "tensor"), f"mesh.rules.{logical}")


def to_json(cfg) -> str:
  return json.dumps(cfg.to_dict(), indent=2, sort_keys=True)


def config_hash(cfg) -> str:
  """A short stable hash of the whole config (recorded in results and lineage)."""
  return hashlib.sha256(to_json(cfg).encode()).hexdigest()[:12]


def get_dotted(tree, dotted: str):
  """tree["a"]["b"] for dotted "a.b" (a dict or a ConfigDict; KeyError if absent)."""
  for key in dotted.split("."):
    tree = tree[key]
  return tree


def expand_path(text: str) -> str:
  """`text` with `~` and $VARIABLES expanded in each comma-separated part."""
  return ",".join(os.path.expandvars(os.path.expanduser(part.strip())) if part.strip() else part
                  for part in text.split(","))


def expand_paths(cfg) -> None:
  """Expands `~` and $VARIABLES in the config's PATH_FIELDS, in place."""
  for dotted in PATH_FIELDS:
    *parents, leaf = dotted.split(".")
    section = cfg
    for name in parents:
      section = section[name]
    if isinstance(section[leaf], str):
      section[leaf] = expand_path(section[leaf])


def check_compatible(saved: dict, cfg) -> None:
  """Raises ConfigError if a workdir's saved config cannot resume as `cfg`, naming the
  fields that differ (at most three) and nothing else."""
  new = cfg.to_dict()
  saved_model = saved.get("model") if isinstance(saved.get("model"), dict) else {}
  if saved_model:  # a run saved before a model field existed has its default
    saved = dict(saved, model={**default_config().model.to_dict(), **saved_model})
  differ = []
  for field in COMPATIBILITY_FIELDS:
    old_value, new_value = _get_or_none(saved, field), get_dotted(new, field)
    if field == "model" and isinstance(old_value, dict):
      # Free fields may differ (scan_layers too: the params layout is the same).
      differ += [(f"model.{k}", old_value.get(k), v) for k, v in new_value.items()
                 if k not in FREE_MODEL_FIELDS and old_value.get(k) != v]
    elif old_value != new_value:
      differ.append((field, old_value, new_value))
  if differ:
    more = f" (+{len(differ) - 3} more)" if len(differ) > 3 else ""
    changes = "; ".join(f"{field} was {json.dumps(old)}, now {json.dumps(value)}"
                        for field, old, value in differ[:3])
    raise ConfigError(f"the workdir holds a different run: {changes}{more}; "
                      "use a new --workdir")


def _get_or_none(tree: dict, dotted: str):
  try:
    return get_dotted(tree, dotted)
  except (KeyError, TypeError):
    return None


def with_preset(presets: dict, preset: str, cfg=None) -> ml_collections.ConfigDict:
  """`cfg` (default: `default_config()`) updated by `presets[preset]`, a nested dict."""
  if preset not in presets:
    raise ConfigError(f"unknown preset {preset!r}; choose one of {', '.join(presets)}")
  cfg = default_config() if cfg is None else cfg

  def flatten(tree, prefix=""):
    for key, value in tree.items():
      if isinstance(value, dict) and prefix + key not in OPEN_FIELDS:
        yield from flatten(value, f"{prefix}{key}.")
      else:
        yield prefix + key, value

  for key, value in flatten(presets[preset]):
    parent = cfg
    *parents, leaf = key.split(".")
    for name in parents:
      parent = parent[name]
    if leaf not in parent:
      raise ConfigError(f"preset {preset!r} sets unknown field {key}")
    parent[leaf] = ml_collections.ConfigDict(value) if key in OPEN_FIELDS else value
  return cfg
