"""Command line: python -m jaxmt.qa --config=configs/squad.py --workdir=DIR [--config.data.train_file=...]."""

from __future__ import annotations

import json

from absl import app, flags

from jaxmt.cli import check_run_inputs, define_config_flag, parse_flags, setup_logging


def define_flags() -> None:
    define_config_flag("configs/squad.py")
    flags.DEFINE_string("workdir", "runs/squad", "Directory for checkpoints, logs, predictions and results.")


def main(argv: list[str]) -> None:
    del argv
    setup_logging()
    from jaxmt.training.faults import user_facing_errors

    with user_facing_errors():
        check_run_inputs(flags.FLAGS.config, flags.FLAGS.workdir)
        from jaxmt.downstream.qa_train import train_and_evaluate_qa

        results = train_and_evaluate_qa(flags.FLAGS.config, flags.FLAGS.workdir)
    print(json.dumps({k: v for k, v in results.items() if k != "train_loss"}, indent=2, sort_keys=True))


def run() -> None:
    """The `jaxmt-qa` console script (and `python -m jaxmt.qa`)."""
    define_flags()
    app.run(main, flags_parser=parse_flags)


if __name__ == "__main__":
    run()
