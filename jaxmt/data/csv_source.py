"""Reader for the CS224N minBERT CSV files (tab separated, unnamed index column, header).

Columns are found by their header names, not their positions: the course's
`ids-sst-test-student.csv` has a malformed header (`0<TAB><TAB>id<TAB>sentence`) with an
extra unnamed column, and reading by name handles it without a special case.
"""

from __future__ import annotations

import csv
import logging
import os
from collections.abc import Iterator
from functools import partial

import numpy as np
from etils import epath

from jaxmt.data.errors import DataError, location
from jaxmt.data.schema import SkippedRow, TaskData, TaskSpec, row_texts
from jaxmt.paths import is_local

log = logging.getLogger(__name__)

# Column names of the course's files, by task kind.
LABEL_COLUMNS = ("sentiment", "is_duplicate", "similarity", "label")
LABELED_SPLITS = ("train", "dev")  # splits that must carry labels; test files may have none
SINGLE_TEXT_COLUMNS = ("sentence",)
PAIR_TEXT_COLUMNS = ("sentence1", "sentence2")
ON_BAD_ROW = ("error", "skip")


def read_tsv_rows(path: str) -> Iterator[tuple[int, list[str]]]:
    """Yields (line number, cells); line numbers are 1-based physical lines of the file."""
    try:
        raw = epath.Path(path).read_bytes()  # any epath path: gs://... too
    except FileNotFoundError:
        raise DataError(f"{path}: file not found") from None
    except OSError as err:
        raise DataError(f"{path}: cannot read file ({err.strerror})") from None
    try:
        text = raw.decode("utf-8-sig")  # tolerates a byte-order mark
    except UnicodeDecodeError as err:
        line = raw[: err.start].count(b"\n") + 1
        raise DataError(f"{location(path, line)}: not valid UTF-8 (byte {raw[err.start]:#04x})") from None
    if not text.strip():
        raise DataError(f"{path}: file is empty")
    reader = csv.reader(text.splitlines(keepends=True), delimiter="\t", strict=True)
    previous_line = 0
    try:
        for cells in reader:
            yield previous_line + 1, cells
            previous_line = reader.line_num
    except csv.Error as err:
        raise DataError(
            f"{location(path, previous_line + 1)}: unreadable row ({err}); a quote that never closes?"
        ) from None


def _column_index(header: list[str], names: tuple[str, ...], path: str) -> dict[str, int]:
    index = {}
    for name in names:
        if name not in header:
            raise DataError(
                f"{location(path, 1)}: header has no column {name!r} (header columns: "
                f"{[h for h in header if h]})"
            )
        index[name] = header.index(name)
    return index


def read_csv_split(
    spec: TaskSpec, path: str, split: str, on_bad_row: str = "error", max_examples: int | None = None
) -> TaskData:
    """Reads one CS224N file into `TaskData`; test files (no label column) give `labels=None`.

    A train or dev file without a label column is a `DataError`: training on zeros or scoring
    against them would look like a run that works. Rows whose label is empty (two rows of
    `quora-train.csv`) or invalid, and rows with an empty sentence, raise a `DataError` naming
    file, line and field, or with `on_bad_row='skip'` are left out and listed in
    `TaskData.skipped` (and logged).
    """
    if on_bad_row not in ON_BAD_ROW:
        raise ValueError(f"on_bad_row must be one of {ON_BAD_ROW}, got {on_bad_row!r}")
    rows = read_tsv_rows(path)
    _, header = next(rows)
    header = [h.strip() for h in header]
    text_names = PAIR_TEXT_COLUMNS if spec.is_pair else SINGLE_TEXT_COLUMNS
    columns = _column_index(header, ("id", *text_names), path)
    label_name = next((name for name in LABEL_COLUMNS if name in header), None)
    if label_name is None and split in LABELED_SPLITS:
        raise DataError(
            f"{location(path, 1)}: header has no label column (one of {list(LABEL_COLUMNS)}), which the "
            f"{split} split of task {spec.name!r} needs (header columns: {[h for h in header if h]})"
        )
    if label_name is not None:
        columns[label_name] = header.index(label_name)

    ids: list[str] = []
    texts: list[list[str]] = [[] for _ in text_names]
    labels: list[float] = []
    skipped: list[SkippedRow] = []

    def bad(line: int, field: str | None, reason: str) -> None:
        where = location(path, line, field)
        if on_bad_row == "error":
            raise DataError(f"{where}: {reason}")
        skipped.append(SkippedRow(location=f"{path}:{line}", reason=f"{field}: {reason}" if field else reason))

    for line, cells in rows:
        if not any(c.strip() for c in cells):
            continue  # blank line, e.g. a trailing newline in an edited file
        if len(cells) != len(header):
            bad(line, None, f"{len(cells)} columns where the header has {len(header)}")
            continue
        if label_name is not None:
            raw_label = cells[columns[label_name]].strip()
            if not raw_label:
                bad(line, label_name, "empty label")
                continue
            value, reason = spec.parse_label(raw_label)
            if reason:
                bad(line, label_name, reason)
                continue
        row = row_texts(cells, columns, text_names, partial(bad, line))
        if row is None:
            continue
        if label_name is not None:
            labels.append(value)
        ids.append(cells[columns["id"]].strip())
        for column, text in zip(texts, row):
            column.append(text)
        if max_examples is not None and len(ids) >= max_examples:
            break

    if not ids:
        raise DataError(f"{path}: no usable rows ({len(skipped)} skipped)")
    if skipped:
        log.warning(
            "%s: skipped %d bad rows (on_bad_row='skip'), e.g. %s: %s",
            path, len(skipped), skipped[0].location, skipped[0].reason,
        )
    return TaskData(
        spec=spec,
        split=split,
        source=os.path.abspath(path) if is_local(path) else path,
        ids=ids,
        text_a=texts[0],
        text_b=texts[1] if spec.is_pair else None,
        labels=None if label_name is None else np.asarray(labels, dtype=spec.label_dtype),
        skipped=skipped,
    )
