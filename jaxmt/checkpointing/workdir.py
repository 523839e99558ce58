"""What a run's workdir holds beside its checkpoints: the config it was started with and its results.

The config is written by the run that creates the workdir, so a resumed run (or an evaluation)
reads the settings the checkpoints were trained with. A resumed run with a different config is
refused by `check_resume_config` unless only `RESUMABLE_FIELDS` changed or the change is
allowed (`config.allow_config_change`); accepted changes are appended to `config_changes.jsonl`
and config.json then holds the new config. JSON files are written through a temporary file,
so a crash never leaves half a file.

A workdir is any `etils.epath` path: a local folder, or `gs://...` on a pod (every read and write here goes through
epath). `has_trained` tells a workdir that holds training (checkpoints, results) from one that only holds the
config of a start that failed while loading, which the next start replaces (`jaxmt.training.loop.prepare_workdir`).
"""

from __future__ import annotations

import fnmatch
import json
import os
import time
from typing import Any

from etils import epath
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
    "data.prefetch",
    "compilation_cache",
    "profile_steps",
    "mesh.shape",
    "parallel.distributed",
    "parallel.coordinator_address",
    "parallel.num_processes",
    "parallel.process_id",
)
# Fields added after workdirs were first recorded, with their configs/ defaults, under which a step computes what
# it computed before the field existed (remat: up to rounding). A recorded config.json without one of them resumes
# as unchanged while the field holds this value; `*` matches a task's name.
ADDED_FIELDS = {
    "compilation_cache": "auto",
    "data.pack_groups": 0,
    "data.prefetch": 2,
    "model.attention_implementation": "default",
    "model.remat_policy": "full",
    "num_epochs": 0.0,
    "optim.accumulation_steps": 1,
    "profile_steps": [0, 0],
    "tasks.*.train_files": [],
}
_ABSENT = object()


def _model_dtype_here(name: Any) -> Any:
    """The compute dtype `model.dtype` resolves to on this backend ('auto': float32 on CPU, bfloat16 elsewhere)."""
    from jaxmt.models.options import DTYPES, compute_dtype  # imports jax: only when a resume compares dtypes

    return compute_dtype(name) if name in {"auto", *DTYPES} else name


# Fields whose value may be a choice made on the machine ('auto'): a recorded and a current value train alike
# where they resolve to the same thing here, as float32 and 'auto' do on CPU.
RESOLVED_FIELDS = {"model.dtype": _model_dtype_here}


def write_text(path: str | os.PathLike, text: str) -> None:
    """Writes `text` atomically: a temporary file, then a rename (on object stores an upload is atomic anyway)."""
    path = epath.Path(path)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    tmp.replace(path)


def write_json(path: str | os.PathLike, payload: dict) -> None:
    """Writes `payload` atomically."""
    write_text(path, json.dumps(payload, indent=2, sort_keys=True))


def write_run_config(workdir: str | os.PathLike, config: ConfigDict, replace: bool = False) -> None:
    """Records `config` in a new workdir; a workdir that has one keeps it unless `replace`."""
    epath.Path(workdir).mkdir(parents=True, exist_ok=True)
    path = epath.Path(workdir) / CONFIG_FILE
    if replace or not path.exists():
        _write_config(path, config)


def _write_config(path: epath.Path, config: ConfigDict) -> None:
    write_text(path, config.to_json_best_effort(indent=2, sort_keys=True))


def read_run_config(workdir: str | os.PathLike) -> ConfigDict:
    """The config a workdir's run was started with."""
    path = epath.Path(workdir) / CONFIG_FILE
    if not path.exists():
        raise FileNotFoundError(f"{path}: not found; is {workdir} a jaxmt training workdir?")
    return ConfigDict(json.loads(path.read_text()))


def has_trained(workdir: str | os.PathLike) -> bool:
    """Whether the workdir holds anything a run trained: a checkpoint (latest or best) or results.json.

    Orbax names a finished checkpoint by its step (`checkpoints/200`); a save cut short leaves only a temporary
    folder, which counts as nothing trained, as Orbax itself ignores it on restore."""
    root = epath.Path(workdir)
    if (root / RESULTS_FILE).exists():
        return True
    for folder in ("checkpoints", "best"):
        if (root / folder).is_dir() and any(p.name.isdigit() for p in (root / folder).iterdir()):
            return True
    return False


def _flatten(tree: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(tree, dict):
        out: dict[str, Any] = {}
        for key, value in tree.items():
            out.update(_flatten(value, f"{prefix}{key}."))
        return out
    return {prefix[:-1]: tree}


def _same(key: str, recorded: Any, current: Any) -> bool:
    """Whether a field's recorded and current values train alike: equal; absent from an older config.json and now
    its `ADDED_FIELDS` default; or, for a `RESOLVED_FIELDS` field, both resolving to the same value here."""
    if recorded == current:
        return True
    if recorded is _ABSENT:
        return any(fnmatch.fnmatchcase(key, field) and current == default for field, default in ADDED_FIELDS.items())
    resolve = RESOLVED_FIELDS.get(key)
    return resolve is not None and current is not _ABSENT and resolve(recorded) == resolve(current)


def _show(value: Any) -> str:
    return "(absent)" if value is _ABSENT else repr(value) if isinstance(value, str) else json.dumps(value)


def check_resume_config(workdir: str, config: ConfigDict, allow_changes: bool) -> list[str]:
    """Compares `config` with the one WORKDIR/config.json recorded; returns the changes, one string each.

    No recorded config, or the same one: []. Changes only to `RESUMABLE_FIELDS`, or any changes
    with `allow_changes`: recorded (a line in WORKDIR/config_changes.jsonl, config.json rewritten
    to `config`) and returned. Anything else is a `ConfigError` listing every changed field, so a
    resumed run never mixes two configs silently.
    """
    path = epath.Path(workdir) / CONFIG_FILE
    if not path.exists():
        return []
    recorded = _flatten(json.loads(path.read_text()))
    current = _flatten(json.loads(config.to_json_best_effort()))
    changed = [key for key in sorted(set(recorded) | set(current))
               if not _same(key, recorded.get(key, _ABSENT), current.get(key, _ABSENT))]
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
        log_file = epath.Path(workdir) / CONFIG_CHANGES_FILE  # appended by a read and a rewrite: GCS cannot append
        earlier = log_file.read_text() if log_file.exists() else ""
        write_text(log_file, earlier + json.dumps({
            "time": time.strftime("%Y-%m-%dT%H:%M:%S"), "changes": changes,
            "allowed_by": "allow_config_change" if fixed else "resumable fields"}) + "\n")
        _write_config(path, config)
    return changes
