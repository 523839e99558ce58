"""Command line: python -m jaxmt.qa --config=configs/squad.py --workdir=DIR [--config.data.train_file=...]."""

from __future__ import annotations

import json

from absl import app, flags
from ml_collections import config_flags

from jaxmt.cli import parse_flags, setup_logging


def define_flags() -> None:
    config_flags.DEFINE_config_file("config", "configs/squad.py", "Path to a config file with get_config().")
    flags.DEFINE_string("workdir", "runs/squad", "Directory for checkpoints, logs, predictions and results.")


def main(argv: list[str]) -> None:
    del argv
    setup_logging()
    from jaxmt.downstream.qa_train import train_and_evaluate_qa
    from jaxmt.training.faults import user_facing_errors

    with user_facing_errors():
        results = train_and_evaluate_qa(flags.FLAGS.config, flags.FLAGS.workdir)
    print(json.dumps({k: v for k, v in results.items() if k != "train_loss"}, indent=2, sort_keys=True))


if __name__ == "__main__":
    define_flags()
    app.run(main, flags_parser=parse_flags)
