"""Command line: python -m jaxmt.train --config=configs/pcgrad.py --workdir=DIR [--config.x.y=v]."""

from __future__ import annotations

import json
import logging

from absl import app, flags
from ml_collections import config_flags

_CONFIG = config_flags.DEFINE_config_file("config", "configs/pcgrad.py", "Path to a config file with get_config().")
_WORKDIR = flags.DEFINE_string("workdir", "runs/default", "Directory for checkpoints, logs and results.")


def main(argv: list[str]) -> None:
    del argv
    # jaxmt's own progress at INFO; libraries (Orbax, absl) only when they warn.
    logging.getLogger().setLevel(logging.WARNING)
    logging.getLogger("jaxmt").setLevel(logging.INFO)
    from jaxmt.training.trainer import train_and_evaluate

    results = train_and_evaluate(_CONFIG.value, _WORKDIR.value)
    print(json.dumps(results, indent=2, sort_keys=True))


if __name__ == "__main__":
    app.run(main)
