"""What each Hugging Face family module provides, and the config.json reading they share.

A `Family` maps one or more `model_type`s onto the Trellis Transformer:
  to_model(config.json) -> dotted `model.*` overrides (a switch Trellis lacks
      is a CheckpointError naming it, never an approximation);
  needs(model cfg) -> {model field: value} the family's layout requires, which
      export checks (`mismatches`) before writing anything;
  from_model(model cfg) -> config.json of a Trellis model that meets `needs`;
  specs(model cfg) -> the `folder.Tensor`s of its checkpoint (base-model names,
      without `prefix`);
  prefix: what the task classes (XForCausalLM) put before the base model's names;
  head: the name of the untied output head's weight (no prefix), "" if none;
  known(name) -> True for tensors that are not weights (buffers) or are copies.
"""

from typing import Callable, NamedTuple

from research.errors import CheckpointError


class Family(NamedTuple):
  name: str  # the model_type export writes
  model_types: tuple[str, ...]  # the model_types it imports
  architecture: str  # the transformers class export names in config.json
  to_model: Callable
  needs: Callable
  from_model: Callable
  specs: Callable
  prefix: str
  head: str = "lm_head.weight"
  known: Callable = lambda name: False


def require(config: dict, key: str, family: str):
  """config[key], or a CheckpointError naming the field a config.json lacks."""
  if config.get(key) is None:
    raise CheckpointError(f"{family} config.json lacks {key!r}")
  return config[key]


def refuse(config: dict, family: str, **allowed) -> None:
  """A CheckpointError naming the first field whose value Trellis does not model.

  `allowed`: field -> the values Trellis computes exactly (a field absent from
  config.json takes transformers' default, the first allowed value).
  """
  for key, values in allowed.items():
    value = config.get(key, values[0])
    if value not in values:
      raise CheckpointError(f"{family} {key}={value!r} is not supported by Trellis "
                            f"(it computes {key}={values[0]!r} only)" if len(values) == 1 else
                            f"{family} {key}={value!r} is not supported by Trellis "
                            f"(one of {', '.join(repr(v) for v in values)})")


def mismatches(model_cfg, needs: dict) -> list[str]:
  """`model.field=value` of every need the model does not meet."""
  return [f"model.{k}={v!r} (not {model_cfg[k]!r})" for k, v in needs.items()
          if model_cfg[k] != v]


# hidden_act / activation_function -> (model.mlp, model.gelu_approximate).
ACTIVATIONS = {"gelu": ("gelu", False), "gelu_new": ("gelu", True),
               "gelu_pytorch_tanh": ("gelu", True), "gelu_fast": ("gelu", True),
               "relu": ("relu", False)}


def activation(config: dict, key: str, family: str, default: str) -> dict:
  """The model.mlp and model.gelu_approximate overrides of an ungated activation field."""
  act = config.get(key) or default
  if act not in ACTIVATIONS:
    raise CheckpointError(f"{family} {key}={act!r} is not supported by Trellis "
                          f"(one of {', '.join(ACTIVATIONS)})")
  mlp, approximate = ACTIVATIONS[act]
  return {"model.mlp": mlp, "model.gelu_approximate": approximate}
