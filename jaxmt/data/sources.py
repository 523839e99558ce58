"""Task specs and splits from the config, whatever the source: CS224N CSV, TFDS, SICK or demo."""

from __future__ import annotations

import logging
import os

from etils import epath
from ml_collections import ConfigDict

from jaxmt.data.csv_source import read_csv_split
from jaxmt.data.demo import DEMO_BANNER, demo_split
from jaxmt.data.errors import DataError
from jaxmt.data.schema import TaskData, TaskSpec, concatenate
from jaxmt.errors import ConfigError
from jaxmt.paths import expand_path

log = logging.getLogger(__name__)

SOURCES = ("demo", "csv", "tfds", "sick")
SPLITS = ("train", "dev", "test")
LABELED_SPLITS = ("train", "dev")  # trained on or scored: a split without labels is an error


def task_specs(config: ConfigDict) -> dict[str, TaskSpec]:
    """The specs of `config.task_names`, each from its `config.tasks.<name>` block."""
    if not config.task_names:
        raise ConfigError("config.task_names is empty: name at least one task")
    specs = {}
    for name in config.task_names:
        if name not in config.tasks:
            raise ConfigError(f"unknown task {name!r} in config.task_names; the config defines {sorted(config.tasks)}")
        task = config.tasks[name]
        try:
            specs[name] = TaskSpec(name=name, kind=task.kind, is_pair=task.pair, num_classes=task.num_classes,
                                   label_min=task.label_min, label_max=task.label_max,
                                   head=task.get("head", "linear"))  # a config.json from before heads: linear
        except ValueError as err:
            raise ConfigError(f"config.tasks.{name}: {err}") from None
    return specs


def _cap(value: int) -> int | None:
    return value if value and value > 0 else None


def load_split(config: ConfigDict, spec: TaskSpec, split: str) -> TaskData | None:
    """One split of one task, or None where the source has no such split (e.g. a Quora test file).

    Train and dev splits must carry labels, whatever the source: a `DataError` otherwise.
    """
    data = _read_split(config, spec, split)
    if data is not None and split in LABELED_SPLITS and data.labels is None:
        raise DataError(f"{data.source}: the {split} split of task {spec.name!r} has no labels; "
                        "only test splits may come without them")
    return data


def _read_split(config: ConfigDict, spec: TaskSpec, split: str) -> TaskData | None:
    if split not in SPLITS:
        raise ConfigError(f"split must be one of {SPLITS}, got {split!r}")
    data_cfg, task_cfg = config.data, config.tasks[spec.name]
    cap = _cap(data_cfg.max_train_examples if split == "train" else data_cfg.max_eval_examples)
    if data_cfg.source == "demo":
        return demo_split(spec, split, max_examples=cap)
    if data_cfg.source == "csv":
        paths = _csv_paths(config, spec.name, split)
        if not paths:
            return None
        if not epath.Path(paths[0]).exists() and split == "test":
            log.warning("%s: no test file, task %s gets no test predictions", paths[0], spec.name)
            return None
        parts = []
        for path in paths:  # each file checked on its own: an error names its file and line
            left = None if cap is None else cap - sum(len(p) for p in parts)
            if left == 0:
                break
            parts.append(read_csv_split(spec, path, split, on_bad_row=data_cfg.on_bad_row, max_examples=left))
        return concatenate(parts)
    if data_cfg.source == "tfds":
        from jaxmt.data.tfds_source import load_tfds_split

        tfds_cfg = task_cfg.tfds
        if not tfds_cfg.name:
            raise ConfigError(f"config.tasks.{spec.name}.tfds.name is empty: name a TFDS dataset, e.g. glue/sst2")
        if not tfds_cfg.splits[split]:
            return None
        fields = {k: v for k, v in tfds_cfg.fields.items() if v} or None
        data_dir = expand_path(data_cfg.tfds_data_dir, "config.data.tfds_data_dir") or None
        return load_tfds_split(spec, tfds_cfg.name, tfds_cfg.splits[split], data_dir=data_dir,
                               fields=fields, on_bad_row=data_cfg.on_bad_row, max_examples=cap,
                               require_labels=split in LABELED_SPLITS)
    if data_cfg.source == "sick":
        from jaxmt.downstream.sick import check_fractions, read_sick_split

        try:
            fractions = check_fractions(data_cfg.sick_split)
        except ValueError as err:
            raise ConfigError(f"config.data.sick_split: {err}") from None
        return read_sick_split(spec, expand_path(data_cfg.sick_file, "config.data.sick_file"), split,
                               fractions=fractions, on_bad_row=data_cfg.on_bad_row, max_examples=cap)
    raise ConfigError(f"config.data.source must be one of {SOURCES}, got {data_cfg.source!r}")


def _csv_paths(config: ConfigDict, task: str, split: str) -> list[str]:
    """The files of one split of a csv task, in data.csv_dir unless absolute: `tasks.<task>.train_files` for
    the train split when it names any (a config.json from before that field has none), else `files.<split>`."""
    task_cfg, csv_dir = config.tasks[task], expand_path(config.data.csv_dir, "config.data.csv_dir")
    names = {f"files.{split}": task_cfg.files[split]}
    if split == "train" and task_cfg.get("train_files"):
        names = {f"train_files[{i}]": name for i, name in enumerate(task_cfg.train_files)}
    return [os.path.join(csv_dir, expand_path(name, f"config.tasks.{task}.{field}"))  # a name may be absolute
            for field, name in names.items() if name]


def load_splits(config: ConfigDict, specs: dict[str, TaskSpec], split: str) -> dict[str, TaskData]:
    """`split` of every task that has it; logs what was read and what was skipped."""
    out = {}
    for name, spec in specs.items():
        data = load_split(config, spec, split)
        if data is None:
            continue
        banner = f" [{DEMO_BANNER}]" if data.is_demo else ""
        skipped = f", {len(data.skipped)} bad rows skipped" if data.skipped else ""
        log.info("%s %s: %d examples from %s%s%s", name, split, len(data), data.source, skipped, banner)
        for row in data.skipped:
            log.info("  skipped %s: %s", row.location, row.reason)
        out[name] = data
    if split == "train" and not out:
        raise DataError("no training data for any task")
    return out


def first_skipped_rows(data: dict[str, TaskData]) -> dict[str, dict[str, str]]:
    """For results.json: per task with rows left out by on_bad_row='skip', where the first one was
    (`file:line`, or `tfds:name[split]#index`) and why (`field: what is wrong`)."""
    return {task: {"location": split.skipped[0].location, "reason": split.skipped[0].reason}
            for task, split in data.items() if split.skipped}
