"""Task specifications and the in-memory form of a data split.

Every data source (CS224N CSV files, TFDS, the embedded demo set) produces the same
`TaskData`, so tokenization, batching and evaluation never care where rows came from.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping, Sequence

import numpy as np

CLASSIFICATION = "classification"  # K-way softmax, metric accuracy
BINARY = "binary"  # one logit with a sigmoid, metric accuracy
REGRESSION = "regression"  # a bounded score, metric Pearson r
TASK_KINDS = (CLASSIFICATION, BINARY, REGRESSION)
LINEAR = "linear"  # a linear layer over the (pair's combined) features
COSINE = "cosine"  # the cosine of the two sentences' features, scaled to the score range
HEADS = (LINEAR, COSINE)


@dataclasses.dataclass(frozen=True)
class TaskSpec:
    """What a task predicts; the model and the losses are built from this alone."""

    name: str
    kind: str
    is_pair: bool
    num_classes: int = 1
    label_min: float = 0.0  # regression only: the score range
    label_max: float = 5.0
    head: str = LINEAR  # linear | cosine (regression pairs only: the cosine of u and v; jaxmt.models.heads)

    def __post_init__(self) -> None:
        if self.kind not in TASK_KINDS:
            raise ValueError(f"task {self.name!r}: kind must be one of {TASK_KINDS}, got {self.kind!r}")
        if self.kind == CLASSIFICATION and self.num_classes < 2:
            raise ValueError(f"task {self.name!r}: a classification task needs num_classes >= 2")
        if self.head not in HEADS:
            raise ValueError(f"task {self.name!r}: head must be one of {HEADS}, got {self.head!r}")
        if self.head == COSINE and not (self.kind == REGRESSION and self.is_pair):
            raise ValueError(f"task {self.name!r}: head 'cosine' scores sentence pairs; it needs kind "
                             f"'regression' and pair=True, not kind {self.kind!r} with pair={self.is_pair}")

    @property
    def metric_name(self) -> str:
        return "pearson" if self.kind == REGRESSION else "accuracy"

    @property
    def output_dim(self) -> int:
        return self.num_classes if self.kind == CLASSIFICATION else 1

    @property
    def label_dtype(self) -> type:
        return np.float32 if self.kind == REGRESSION else np.int32

    def check_label(self, value: float) -> str | None:
        """Returns why `value` is not a valid label for this task, or None when it is."""
        if not np.isfinite(value):
            return f"label {value!r} is not a finite number"
        if self.kind == REGRESSION:
            if not self.label_min <= value <= self.label_max:
                return f"score {value!r} is outside [{self.label_min}, {self.label_max}]"
            return None
        if value != int(value):
            return f"class label {value!r} is not an integer"
        upper = 2 if self.kind == BINARY else self.num_classes
        if not 0 <= value < upper:
            return f"class label {int(value)} is outside 0..{upper - 1}"
        return None

    def parse_label(self, raw: str, what: str = "label") -> tuple[float | None, str | None]:
        """(value, None) for a valid label written as `raw`, else (None, why not): not a number, or out of range."""
        try:
            value = float(raw)
        except ValueError:
            return None, f"{what} {raw!r} is not a number"
        reason = self.check_label(value)
        return (None, reason) if reason else (value, None)


# The three tasks of the CS224N multitask project; other tasks are declared in the config.
DEFAULT_TASKS = {
    "sst": TaskSpec("sst", CLASSIFICATION, is_pair=False, num_classes=5),
    "para": TaskSpec("para", BINARY, is_pair=True),
    "sts": TaskSpec("sts", REGRESSION, is_pair=True, label_min=0.0, label_max=5.0),
}


@dataclasses.dataclass
class SkippedRow:
    """A row left out under `on_bad_row='skip'` (or an unlabeled training row), kept for the report."""

    location: str  # "file:line"
    reason: str


@dataclasses.dataclass
class TaskData:
    """One split of one task: raw text, ids and (except for test files) labels."""

    spec: TaskSpec
    split: str
    source: str  # human-readable origin: a path, "tfds:glue/sst2[validation]", "demo"
    ids: list[str]
    text_a: list[str]
    text_b: list[str] | None  # None for single-sentence tasks
    labels: np.ndarray | None  # [N] int32 / float32; None when the split has no labels
    skipped: list[SkippedRow] = dataclasses.field(default_factory=list)
    is_demo: bool = False

    def __post_init__(self) -> None:
        n = len(self.ids)
        if len(self.text_a) != n or (self.text_b is not None and len(self.text_b) != n):
            raise ValueError(f"{self.source}: ids and texts have different lengths")
        if self.labels is not None and len(self.labels) != n:
            raise ValueError(f"{self.source}: {len(self.labels)} labels for {n} rows")
        if self.spec.is_pair and self.text_b is None:
            raise ValueError(f"{self.source}: task {self.spec.name!r} needs sentence pairs")

    def __len__(self) -> int:
        return len(self.ids)

    def subset(self, indices: Sequence[int]) -> TaskData:
        """The rows at `indices`, in that order (used to cap a split for quick runs)."""
        idx = list(indices)
        return dataclasses.replace(
            self,
            ids=[self.ids[i] for i in idx],
            text_a=[self.text_a[i] for i in idx],
            text_b=None if self.text_b is None else [self.text_b[i] for i in idx],
            labels=None if self.labels is None else self.labels[np.asarray(idx, dtype=np.int64)],
        )


def concatenate(parts: Sequence[TaskData]) -> TaskData:
    """One split made of several files' rows, in the order given (a task with several training files).

    Each part was read and checked on its own, so its errors and skipped rows name its own file and line.
    """
    if len(parts) == 1:
        return parts[0]
    first = parts[0]
    if any(p.spec != first.spec or p.split != first.split for p in parts):
        raise ValueError(f"cannot concatenate splits of different tasks or splits: {[p.source for p in parts]}")
    if len({p.labels is None for p in parts}) > 1:
        raise ValueError(f"some files have labels, some not: {[p.source for p in parts]}")
    return TaskData(
        spec=first.spec,
        split=first.split,
        source=" + ".join(p.source for p in parts),
        ids=[i for p in parts for i in p.ids],
        text_a=[t for p in parts for t in p.text_a],
        text_b=None if first.text_b is None else [t for p in parts for t in p.text_b],
        labels=None if first.labels is None else np.concatenate([p.labels for p in parts]),
        skipped=[row for p in parts for row in p.skipped],
        is_demo=any(p.is_demo for p in parts),
    )


def row_texts(cells: Sequence[str], columns: Mapping[str, int], names: Sequence[str],
              bad: Callable[[str, str], None]) -> list[str] | None:
    """A row's stripped texts of the columns `names`; None, after `bad(field, reason)` names the first empty
    one, when a sentence is missing (the CSV and SICK readers skip or refuse such rows alike)."""
    texts = [cells[columns[name]].strip() for name in names]
    empty = next((name for name, text in zip(names, texts) if not text), None)
    if empty is not None:
        bad(empty, "empty sentence")
        return None
    return texts
