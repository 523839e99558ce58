"""What a run's workdir holds beside its checkpoints: the config it was started with and its results.

The config is written by the run that creates the workdir, so a resumed run (or an evaluation)
reads the settings the checkpoints were trained with. A resumed run with a different config is
refused by `check_resume_config` unless only `RESUMABLE_FIELDS` changed or the change is
allowed (`config.allow_config_change`); accepted changes are appended to `config_changes.jsonl`
and config.json then holds the new config. JSON files are written through a temporary file,
so a crash never leaves half a file.
"""

from __future__ import annotations

import json
import os
import time
from typing import Any

from ml_collections import ConfigDict

from jaxmt.errors import ConfigError

CONFIG_FILE = "config.json"
RESULTS_FILE = "results.json"
CONFIG_CHANGES_FILE = "config_changes.jsonl"

# Fields a resumed run may change freely: they decide when to log, evaluate and save, how to react
# to a fault, and where the processes run, never what a training step computes or in which order
# it sees the data. (A changed mesh or process count sums in another order: equal up to rounding.)
# Not here, among others: num_steps, whose change moves the learning-rate schedule (warm-up is
# optim.warmup_fraction of num_steps and the decay ends at num_steps, so the resumed steps follow
# another curve than the first ones did) and, with sampling='proportional', the task order drawn
# for every step; data and model fields, which change what the checkpoints mean.
RESUMABLE_FIELDS = (
    "allow_config_change",
    "log_every",
    "eval_every",
    "eval_every_epochs",
    "eval_batch_size",
    "checkpoint_every",
    "keep_checkpoints",
    "on_nonfinite",
    "mesh.shape",
    "parallel.distributed",
    "parallel.coordinator_address",
    "parallel.num_processes",
    "parallel.process_id",
)
_ABSENT = object()


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
        _write_config(path, config)


def _write_config(path: str, config: ConfigDict) -> None:
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


def _flatten(tree: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(tree, dict):
        out: dict[str, Any] = {}
        for key, value in tree.items():
            out.update(_flatten(value, f"{prefix}{key}."))
        return out
    return {prefix[:-1]: tree}


def _show(value: Any) -> str:
    return "(absent)" if value is _ABSENT else repr(value) if isinstance(value, str) else json.dumps(value)


def check_resume_config(workdir: str, config: ConfigDict, allow_changes: bool) -> list[str]:
    """Compares `config` with the one WORKDIR/config.json recorded; returns the changes, one string each.

    No recorded config, or the same one: []. Changes only to `RESUMABLE_FIELDS`, or any changes
    with `allow_changes`: recorded (a line in WORKDIR/config_changes.jsonl, config.json rewritten
    to `config`) and returned. Anything else is a `ConfigError` listing every changed field, so a
    resumed run never mixes two configs silently.
    """
    path = os.path.join(workdir, CONFIG_FILE)
    if not os.path.exists(path):
        return []
    with open(path) as f:
        recorded = _flatten(json.load(f))
    current = _flatten(json.loads(config.to_json_best_effort()))
    changed = [key for key in sorted(set(recorded) | set(current))
               if recorded.get(key, _ABSENT) != current.get(key, _ABSENT)]
    changes = [f"config.{key}: {_show(recorded.get(key, _ABSENT))} -> {_show(current.get(key, _ABSENT))}"
               for key in changed]
    if not changes:
        return []
    fixed = [key for key in changed if key not in RESUMABLE_FIELDS]
    if fixed and not allow_changes:
        raise ConfigError(
            f"{path}: this workdir was trained with another config ({', '.join(changes)}); "
            f"{', '.join(fixed)} may not change on resume: use a new --workdir, or pass "
            "--config.allow_config_change=True to continue anyway (the change is recorded in "
            f"{CONFIG_CHANGES_FILE})")
    import jax

    if jax.process_index() == 0:
        with open(os.path.join(workdir, CONFIG_CHANGES_FILE), "a") as f:
            f.write(json.dumps({"time": time.strftime("%Y-%m-%dT%H:%M:%S"), "changes": changes,
                                "allowed_by": "allow_config_change" if fixed else "resumable fields"}) + "\n")
        _write_config(path, config)
    return changes
