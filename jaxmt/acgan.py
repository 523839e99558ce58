"""Command line: python -m jaxmt.acgan --config=configs/acgan.py --workdir=DIR [--config.x.y=v]

Trains AC-GAN-BERT (gan.method='acgan') or its baseline (configs/acgan_baseline.py) and prints the results.
"""

from __future__ import annotations

import json

from absl import app, flags

from jaxmt.cli import check_run_inputs, define_config_flag, parse_flags, setup_logging


def define_flags() -> None:
    define_config_flag("configs/acgan.py")
    flags.DEFINE_string("workdir", "runs/acgan", "Directory for checkpoints, logs and results.")


def main(argv: list[str]) -> None:
    del argv
    setup_logging()
    from jaxmt.errors import ConfigError
    from jaxmt.training.faults import user_facing_errors

    config = flags.FLAGS.config
    with user_facing_errors():
        if "gan" not in config:
            raise ConfigError("this config has no `gan` block: use configs/acgan.py or configs/acgan_baseline.py")
        check_run_inputs(config, flags.FLAGS.workdir)
        from jaxmt.gan.baseline import train_baseline
        from jaxmt.gan.trainer import train_gan

        train = train_baseline if config.gan.method == "baseline" else train_gan
        results = train(config, flags.FLAGS.workdir)
    print(json.dumps(results, indent=2, sort_keys=True))


def run() -> None:
    """The `jaxmt-acgan` console script (and `python -m jaxmt.acgan`)."""
    define_flags()
    app.run(main, flags_parser=parse_flags)


if __name__ == "__main__":
    run()
