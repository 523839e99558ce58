"""Command line: python -m jaxmt.pretrain --config=configs/pretrain_hierarchical.py --workdir=DIR [--config.x.y=v]

Pre-trains BERT with masked LM, NSP and bigram shift at configurable encoder layers, prints the held-out
results and leaves the encoder in DIR/hf_model/ for fine-tuning (--config.model.name=DIR/hf_model).
"""

from __future__ import annotations

import json

from absl import app, flags

from jaxmt.cli import check_run_inputs, define_config_flag, parse_flags, setup_logging


def define_flags() -> None:
    define_config_flag("configs/pretrain_hierarchical.py")
    flags.DEFINE_string("workdir", "runs/pretrain", "Directory for checkpoints, logs, results and the exported model.")


def main(argv: list[str]) -> None:
    del argv
    setup_logging()
    from jaxmt.errors import ConfigError
    from jaxmt.training.faults import user_facing_errors

    config = flags.FLAGS.config
    with user_facing_errors():
        if "transfer" not in config or "task_names" not in config:
            raise ConfigError("this is not a pre-training config: use configs/pretrain_bert.py or "
                              "configs/pretrain_hierarchical.py")
        check_run_inputs(config, flags.FLAGS.workdir)
        from jaxmt.pretraining.trainer import pretrain

        results = pretrain(config, flags.FLAGS.workdir)
    print(json.dumps(results, indent=2, sort_keys=True))


def run() -> None:
    """The `jaxmt-pretrain` console script (and `python -m jaxmt.pretrain`)."""
    define_flags()
    app.run(main, flags_parser=parse_flags)


if __name__ == "__main__":
    run()
