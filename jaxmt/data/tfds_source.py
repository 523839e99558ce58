"""Reader for TensorFlow Datasets (TFDS) splits that are already prepared on local disk.

Works without TensorFlow: TFDS >= 4.9 reads datasets prepared in the `array_record` file
format through `builder.as_data_source` (random access, numpy dicts; needs the
`array-record` package). Datasets prepared in the default `tfrecord` format need TensorFlow
to read, so they are refused with instructions to rebuild them as `array_record`.

Nothing is ever downloaded: training jobs run where there is no internet, and a silent
multi-GB download (or a GCS lookup that hangs) is worse than a clear error saying how to
prepare the data elsewhere.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator, Mapping
from typing import Any

import numpy as np

from jaxmt.data.errors import DataError
from jaxmt.data.schema import SkippedRow, TaskData, TaskSpec
from jaxmt.paths import expand_path

ON_BAD_ROW = ("error", "skip")
FIELD_KEYS = ("text_a", "text_b", "label", "id")
UNLABELED = -1  # TFDS's label for "no gold label" (GLUE test splits, SNLI rows without consensus)
_READ_CHUNK = 1024
logger = logging.getLogger(__name__)

# Feature names of common TFDS text datasets (as TFDS names them, not as the original files do).
BUILTIN_FIELDS: dict[str, dict[str, str | None]] = {
    "glue/cola": {"text_a": "sentence", "text_b": None, "label": "label"},
    "glue/sst2": {"text_a": "sentence", "text_b": None, "label": "label"},
    "glue/mrpc": {"text_a": "sentence1", "text_b": "sentence2", "label": "label"},
    "glue/qqp": {"text_a": "question1", "text_b": "question2", "label": "label"},
    "glue/stsb": {"text_a": "sentence1", "text_b": "sentence2", "label": "label"},
    "glue/mnli": {"text_a": "premise", "text_b": "hypothesis", "label": "label"},
    "glue/mnli_matched": {"text_a": "premise", "text_b": "hypothesis", "label": "label"},
    "glue/mnli_mismatched": {"text_a": "premise", "text_b": "hypothesis", "label": "label"},
    "glue/ax": {"text_a": "premise", "text_b": "hypothesis", "label": "label"},
    "glue/qnli": {"text_a": "question", "text_b": "sentence", "label": "label"},
    "glue/rte": {"text_a": "sentence1", "text_b": "sentence2", "label": "label"},
    "glue/wnli": {"text_a": "sentence1", "text_b": "sentence2", "label": "label"},
    "snli": {"text_a": "premise", "text_b": "hypothesis", "label": "label"},
    "multi_nli": {"text_a": "premise", "text_b": "hypothesis", "label": "label"},
    "imdb_reviews": {"text_a": "text", "text_b": None, "label": "label"},
    "ag_news_subset": {"text_a": "description", "text_b": None, "label": "label"},
}

# For datasets not in the table: the first of these text-feature sets the dataset has.
_COMMON_SINGLE = (("sentence",), ("text",))
_COMMON_PAIRS = (
    ("sentence1", "sentence2"),
    ("premise", "hypothesis"),
    ("question1", "question2"),
    ("question", "sentence"),
)


def _base_name(name: str) -> str:
    """`glue/sst2:2.0.0` -> `glue/sst2` (the table is keyed without versions or kwargs)."""
    base = name.split(":", 1)[0]
    return "/".join(part for part in base.split("/") if "=" not in part)


def _prepare_hint(name: str, data_dir: str) -> str:
    return (
        f"Prepare it on a machine with internet access in the array_record file format (readable "
        f"without TensorFlow): `tfds build {name} --data_dir={data_dir} --file_format=array_record` "
        f"(the tfds CLI needs TensorFlow), or in Python: `tfds.builder({name!r}, data_dir={data_dir!r}, "
        f"file_format='array_record').download_and_prepare()` (for GLUE, `import "
        f"tensorflow_datasets.text` first); or copy an already prepared "
        f"{_base_name(name)}/<version>/ directory under {data_dir}."
    )


def default_data_dir() -> str:
    return expand_path(os.environ.get("TFDS_DATA_DIR") or "~/tensorflow_datasets", "TFDS_DATA_DIR")


def open_builder(tfds: Any, name: str, data_dir: str | None) -> Any:
    """The builder of a prepared dataset, or a DataError saying how to prepare it (never downloads)."""
    where = data_dir or default_data_dir()
    try:
        # GCS lookups are disabled by default in TFDS 4.9; `try_gcs=False` keeps it that way.
        builder = tfds.builder(name, data_dir=data_dir, try_gcs=False)
    except tfds.core.registered.DatasetNotFoundError:
        raise DataError(
            f"tfds:{name}: dataset {name!r} is not prepared under {where} (no prepared copy found "
            f"there; jaxmt never downloads). {_prepare_hint(name, where)}"
        ) from None
    except (ValueError, KeyError) as err:  # e.g. an unknown config of a registered builder
        raise DataError(f"tfds:{name}: TFDS cannot open dataset {name!r} under {where}: {err}") from None
    if not builder.is_prepared():
        raise DataError(
            f"tfds:{name}: dataset {name!r} is not prepared under {where} (looked for "
            f"{builder.data_dir}; jaxmt never downloads). {_prepare_hint(name, where)}"
        )
    return builder


def _resolve_fields(
    name: str, spec: TaskSpec, features: Mapping[str, Any], fields: Mapping[str, str | None] | None
) -> dict[str, str | None]:
    """Which feature feeds text_a / text_b / label / id: the built-in table, overridden by `fields`."""
    source = f"tfds:{name}"
    if fields is not None:
        unknown = sorted(set(fields) - set(FIELD_KEYS))
        if unknown:
            raise DataError(f"{source}: unknown key(s) {unknown} in fields; allowed keys are {FIELD_KEYS}")
    mapping: dict[str, str | None] | None = None
    table = BUILTIN_FIELDS.get(_base_name(name)) or BUILTIN_FIELDS.get(_base_name(name).split("/")[0])
    if table is not None:
        mapping = dict(table)
    elif fields is None or "text_a" not in fields:
        # The spec's own kind first; finding only the other kind gives the is_pair error below.
        candidates = _COMMON_PAIRS + _COMMON_SINGLE if spec.is_pair else _COMMON_SINGLE + _COMMON_PAIRS
        found = next((c for c in candidates if all(f in features for f in c)), None)
        if found is not None:
            mapping = {"text_a": found[0], "text_b": found[1] if len(found) > 1 else None}
            mapping["label"] = "label" if "label" in features else None
    if mapping is None:
        mapping = {"text_a": None, "text_b": None, "label": "label" if "label" in features else None}
    mapping.setdefault("id", "idx" if "idx" in features else None)
    mapping.update(fields or {})

    if mapping["text_a"] is None:
        raise DataError(
            f"{source}: no built-in field mapping for this dataset; pass fields={{'text_a': ..., "
            f"'text_b': ..., 'label': ...}} naming its features {sorted(features)}"
        )
    if spec.is_pair and mapping["text_b"] is None:
        raise DataError(
            f"{source}: task {spec.name!r} takes sentence pairs but the field mapping has no text_b "
            f"(mapping {mapping}); pass fields={{'text_b': ...}} naming one of {sorted(features)}"
        )
    if not spec.is_pair and mapping["text_b"] is not None:
        raise DataError(
            f"{source}: task {spec.name!r} takes single sentences but the field mapping has "
            f"text_b={mapping['text_b']!r}; pass fields={{'text_b': None}} to read only text_a, "
            f"or declare the task with is_pair=True"
        )
    for key, feature in mapping.items():
        if feature is not None and feature not in features:
            raise DataError(
                f"{source}: {key} field {feature!r} is not a feature of this dataset "
                f"(features: {sorted(features)})"
            )
    label = mapping["label"]
    if label is not None:
        feature = features[label]
        if tuple(feature.shape) != () or not np.issubdtype(np.dtype(feature.np_dtype), np.number):
            raise DataError(
                f"{source}: label field {label!r} is not a numeric scalar "
                f"(shape {tuple(feature.shape)}, dtype {feature.np_dtype})"
            )
    return mapping


def open_split(builder: Any, name: str, split: str, where: str) -> Any:
    """Random-access reader of one split; refuses formats that would need TensorFlow."""
    try:
        return builder.as_data_source(split=split)
    except NotImplementedError:
        raise DataError(
            f"tfds:{name}[{split}]: the copy under {where} is in the {builder.info.file_format.value} "
            f"file format, which only TensorFlow can read. Rebuild it with --file_format=array_record, "
            f"or convert it (`tfds convert_format --out_file_format=array_record ...`, needs "
            f"TensorFlow). {_prepare_hint(name, where)}"
        ) from None
    except ImportError as err:
        raise DataError(
            f"tfds:{name}[{split}]: reading array_record files needs the `array-record` package "
            f"(pip install array-record): {err}"
        ) from None
    except (ValueError, KeyError) as err:
        raise DataError(
            f"tfds:{name}[{split}]: cannot read split {split!r} ({err}); splits: {sorted(builder.info.splits)}"
        ) from None


def iter_records(data_source: Any) -> Iterator[tuple[int, dict]]:
    """(index, example) in the data source's stable order, fetched in batches."""
    n = len(data_source)
    for start in range(0, n, _READ_CHUNK):
        keys = list(range(start, min(start + _READ_CHUNK, n)))
        yield from zip(keys, data_source.__getitems__(keys))


def as_text(value: Any, errors: str = "strict") -> str:
    """TFDS gives Text features as UTF-8 bytes and ids as numpy scalars."""
    if isinstance(value, np.ndarray) and value.shape == ():
        value = value.item()
    if isinstance(value, bytes):
        return value.decode("utf-8", errors=errors)
    return str(value)


def load_tfds_split(
    spec: TaskSpec,
    name: str,
    split: str,
    data_dir: str | None,
    fields: dict[str, str | None] | None = None,
    on_bad_row: str = "error",
    max_examples: int | None = None,
    require_labels: bool = False,
) -> TaskData:
    """Reads one split of a prepared TFDS dataset into `TaskData`, without TensorFlow or downloads.

    `fields` overrides the built-in feature mapping ({"text_a", "text_b", "label", "id"}; a
    value of None drops that field). A split whose labels are all -1 (GLUE test splits) gives
    `labels=None`; in a labeled split a -1 row is a bad row. Bad rows (empty or non-UTF-8 text,
    invalid labels) raise a `DataError` naming dataset, split, example index and field, or with
    `on_bad_row='skip'` are left out and listed in `TaskData.skipped`. `max_examples` stops
    reading once that many rows are kept. `require_labels` (our train and dev splits) makes a
    dataset without a label field a `DataError`, and every -1 label a bad row.
    """
    if on_bad_row not in ON_BAD_ROW:
        raise ValueError(f"on_bad_row must be one of {ON_BAD_ROW}, got {on_bad_row!r}")
    if max_examples is not None and max_examples < 1:
        raise ValueError(f"max_examples must be positive or None, got {max_examples}")
    try:
        import tensorflow_datasets as tfds
    except ImportError as err:
        raise DataError(
            f"tfds:{name}: reading TFDS datasets needs `pip install tensorflow-datasets array-record` ({err})"
        ) from None

    source = f"tfds:{name}[{split}]"
    data_dir = expand_path(data_dir or "", "tfds data_dir") or None
    where = data_dir or default_data_dir()
    builder = open_builder(tfds, name, data_dir)
    mapping = _resolve_fields(name, spec, builder.info.features, fields)
    data = open_split(builder, name, split, where)
    text_names = [mapping["text_a"]] + ([mapping["text_b"]] if spec.is_pair else [])
    label_name, id_name = mapping["label"], mapping["id"]
    if require_labels and label_name is None:
        raise DataError(
            f"{source}: no label field (the field mapping has label=None; features: "
            f"{sorted(builder.info.features)}), but this split is used for training or scoring: "
            f"name the label feature in fields={{'label': ...}}"
        )

    # Kept rows; a -1 label is provisional until the split turns out to be labeled after all.
    kept: list[tuple[int, str, list[str], float | None]] = []  # (index, id, texts, label)
    skipped: list[tuple[int, SkippedRow]] = []
    all_unlabeled = label_name is not None and not require_labels  # every label read so far is -1
    unlabeled_rows: list[int] = []  # rows left out for a -1 label

    def bad(index: int, row_id: str | None, field: str | None, reason: str) -> None:
        what = f"example #{index}" + (f" (id {row_id})" if row_id is not None else "")
        if field is not None:
            what += f", field {field!r}"
        if on_bad_row == "error":
            raise DataError(f"{source} {what}: {reason}")
        skipped.append((index, SkippedRow(location=f"{source}#{index}", reason=f"{field}: {reason}")))

    def check_label(index: int, row_id: str, value: float) -> bool:
        reason = spec.check_label(value)
        if reason is not None and value == UNLABELED:
            unlabeled_rows.append(index)
            reason += " (-1 means 'no label' in TFDS; only a split whose labels are all -1 is unlabeled)"
        if reason is not None:
            bad(index, row_id, label_name, reason)
        return reason is None

    for index, example in iter_records(data):
        row_id = f"{split}-{index}" if id_name is None else as_text(example[id_name], errors="replace")
        texts: list[str] = []
        for field in text_names:
            try:
                text = as_text(example[field]).strip()
            except UnicodeDecodeError as err:
                bad(index, row_id, field, f"text is not valid UTF-8 ({err.reason} at byte {err.start})")
                break
            if not text:
                bad(index, row_id, field, "empty text")
                break
            texts.append(text)
        if len(texts) != len(text_names):
            continue
        label: float | None = None
        if label_name is not None:
            label = float(example[label_name])
            if label != UNLABELED and all_unlabeled:
                # The split is labeled: the -1 rows kept so far are bad rows after all.
                all_unlabeled = False
                kept = [row for row in kept if check_label(row[0], row[1], UNLABELED)]
            if not all_unlabeled and not check_label(index, row_id, label):
                continue
        kept.append((index, row_id, texts, label))
        if max_examples is not None and len(kept) >= max_examples:
            break

    skipped_rows = [row for _, row in sorted(skipped, key=lambda item: item[0])]
    if not kept:
        why = ", every one labeled -1 (TFDS's 'no label'): this split carries no labels" if (
            require_labels and skipped_rows and len(unlabeled_rows) == len(skipped_rows)) else ""
        raise DataError(f"{source}: no usable rows ({len(skipped_rows)} skipped){why}")
    if skipped_rows:
        logger.warning(
            "%s: skipped %d bad rows (on_bad_row='skip'), e.g. %s: %s",
            source,
            len(skipped_rows),
            skipped_rows[0].location,
            skipped_rows[0].reason,
        )
    labels = None
    if label_name is not None and not all_unlabeled:
        labels = np.asarray([row[3] for row in kept], dtype=spec.label_dtype)
    return TaskData(
        spec=spec,
        split=split,
        source=source,
        ids=[row[1] for row in kept],
        text_a=[row[2][0] for row in kept],
        text_b=[row[2][1] for row in kept] if spec.is_pair else None,
        labels=labels,
        skipped=skipped_rows,
    )
