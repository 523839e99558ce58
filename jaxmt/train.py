"""Command line: python -m jaxmt.train --config=configs/pcgrad.py --workdir=DIR [--config.x.y=v]."""

from __future__ import annotations

import json

from absl import app, flags

from jaxmt.cli import check_run_inputs, define_config_flag, parse_flags, setup_logging


def define_flags() -> None:
    define_config_flag("configs/pcgrad.py")
    flags.DEFINE_string("workdir", "runs/default", "Directory for checkpoints, logs and results.")


def main(argv: list[str]) -> None:
    del argv
    setup_logging()
    from jaxmt.training.faults import user_facing_errors

    with user_facing_errors():
        check_run_inputs(flags.FLAGS.config, flags.FLAGS.workdir)
        from jaxmt.training.trainer import train_and_evaluate

        results = train_and_evaluate(flags.FLAGS.config, flags.FLAGS.workdir)
    print(json.dumps(results, indent=2, sort_keys=True))


def run() -> None:
    """The `jaxmt-train` console script (and `python -m jaxmt.train`)."""
    define_flags()
    app.run(main, flags_parser=parse_flags)


if __name__ == "__main__":
    run()
