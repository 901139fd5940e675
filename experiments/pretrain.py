"""Pretrain a model: `python -m experiments.pretrain --config=FILE:PRESET --workdir=DIR`.

Running the same command on the same workdir resumes from its latest
checkpoint. Overrides: `--config.train.steps=1000`, `--config.model.arch=lstm`,
`--config.objectives='{"mlm": 1, "nsp": 1}'`.
"""

from experiments import cli

_CONFIG, _WORKDIR = cli.define_run_flags()


def main(argv, overrides):
  from research import train
  cli.run_training(train.pretrain, _CONFIG, _WORKDIR, overrides)


if __name__ == "__main__":
  cli.run(main)
