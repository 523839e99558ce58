"""What a run's workdir holds beside its checkpoints: the config it was started with and its results.

The config is written once, by the run that creates the workdir, so a resumed run (or an
evaluation) reads the settings the checkpoints were trained with. JSON files are written
through a temporary file, so a crash never leaves half a file.
"""

from __future__ import annotations

import json
import os

from ml_collections import ConfigDict

CONFIG_FILE = "config.json"
RESULTS_FILE = "results.json"


def write_json(path: str, payload: dict) -> None:
    """Writes `payload` atomically (a temporary file, then a rename)."""
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        json.dump(payload, f, indent=2, sort_keys=True)
    os.replace(tmp, path)


def write_run_config(workdir: str, config: ConfigDict) -> None:
    """Records `config` in a new workdir; a workdir that has one keeps it."""
    os.makedirs(workdir, exist_ok=True)
    path = os.path.join(workdir, CONFIG_FILE)
    if not os.path.exists(path):
        tmp = path + ".tmp"
        with open(tmp, "w") as f:
            f.write(config.to_json_best_effort(indent=2, sort_keys=True))
        os.replace(tmp, path)


def read_run_config(workdir: str) -> ConfigDict:
    """The config a workdir's run was started with."""
    path = os.path.join(workdir, CONFIG_FILE)
    if not os.path.exists(path):
        raise FileNotFoundError(f"{path}: not found; is {workdir} a jaxmt training workdir?")
    with open(path) as f:
        return ConfigDict(json.load(f))
