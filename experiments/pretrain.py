"""Pretrain a model: `python -m experiments.pretrain --config=FILE:PRESET --workdir=DIR`.

Running the same command on the same workdir resumes from its latest
checkpoint. Overrides: `--config.train.steps=1000`, `--config.model.arch=lstm`,
`--config.objectives='{"mlm": 1, "nsp": 1}'`.
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
  from research import train
  cfg = cli.load_config(_CONFIG, overrides)
  results = train.pretrain(cfg, _WORKDIR.value)
  if "interrupted" in results:
    sys.exit(128 + results["interrupted"])
  import jax
  if jax.process_index() == 0:
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
  cli.run(main)
