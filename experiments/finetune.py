"""Fine-tune on a task: `python -m experiments.finetune --config=configs/finetune/NAME.py:PRESET --workdir=DIR`.

`--config.init_from` names the weights: a Trellis pretraining workdir, the
built-in `minilm-l6`, a Hugging Face BERT folder, or "" for a fresh network.
Running the same command on the same workdir resumes.
"""

import json
import sys

from absl import flags
from ml_collections import config_flags

from experiments import cli

_CONFIG = config_flags.DEFINE_config_file("config", None, "config file[:preset]",
                                          lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "run directory (created, or resumed)")
flags.mark_flags_as_required(["config", "workdir"])


def main(argv, overrides):
  from research import finetune
  cfg = cli.load_config(_CONFIG, overrides)
  results = finetune.finetune(cfg, _WORKDIR.value)
  if "interrupted" in results:
    sys.exit(128 + results["interrupted"])
  import jax
  if jax.process_index() == 0:
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
  cli.run(main)
