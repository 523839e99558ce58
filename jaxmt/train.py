"""Command line: python -m jaxmt.train --config=configs/pcgrad.py --workdir=DIR [--config.x.y=v]."""

from __future__ import annotations

import json

from absl import app, flags
from ml_collections import config_flags

from jaxmt.cli import parse_flags, setup_logging


def define_flags() -> None:
    config_flags.DEFINE_config_file("config", "configs/pcgrad.py", "Path to a config file with get_config().")
    flags.DEFINE_string("workdir", "runs/default", "Directory for checkpoints, logs and results.")


def main(argv: list[str]) -> None:
    del argv
    setup_logging()
    from jaxmt.training.faults import user_facing_errors
    from jaxmt.training.trainer import train_and_evaluate

    with user_facing_errors():
        results = train_and_evaluate(flags.FLAGS.config, flags.FLAGS.workdir)
    print(json.dumps(results, indent=2, sort_keys=True))


if __name__ == "__main__":
    define_flags()
    app.run(main, flags_parser=parse_flags)
