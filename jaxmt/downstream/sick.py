"""Reader for the SICK corpus (Marelli et al. 2014): sentence pairs, entailment labels, relatedness.

The file is tab separated with a header (`pair_ID, sentence_A, sentence_B, relatedness_score,
entailment_judgment`). Copies without a `SemEval_set` column carry no split, so train/dev/test
are drawn from a hash of (seed, pair_ID): every row lands in the same split whatever the row
order of the file, and adding rows never moves the old ones.

Labels follow TFDS's SNLI / MNLI order (entailment 0, neutral 1, contradiction 2), so a model
fine-tuned on SICK and one fine-tuned on `snli` or `glue/mnli` read their logits the same way.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Sequence
from functools import partial

import numpy as np

from jaxmt.data.csv_source import read_tsv_rows
from jaxmt.data.errors import DataError, location
from jaxmt.data.schema import CLASSIFICATION, REGRESSION, SkippedRow, TaskData, TaskSpec, row_texts
from jaxmt.paths import absolute

log = logging.getLogger(__name__)

NLI_LABELS = ("entailment", "neutral", "contradiction")  # class id = index (TFDS snli / glue/mnli order)
ID_COLUMN, TEXT_COLUMNS = "pair_ID", ("sentence_A", "sentence_B")
ENTAILMENT_COLUMN, RELATEDNESS_COLUMN = "entailment_judgment", "relatedness_score"
SEMEVAL_COLUMN = "SemEval_set"  # present in the full distribution: TRAIN / TRIAL / TEST
SEMEVAL_SPLITS = {"TRAIN": "train", "TRIAL": "dev", "TEST": "test"}
SPLITS = ("train", "dev", "test")
ON_BAD_ROW = ("error", "skip")


def hash_split(pair_id: str, fractions: Sequence[float], seed: int = 0) -> str:
    """The split of one pair: a uniform number from sha256(seed, id), cut at the cumulative fractions."""
    digest = hashlib.sha256(f"{seed}:{pair_id}".encode()).digest()
    u = int.from_bytes(digest[:8], "big") / 2.0**64
    bounds = np.cumsum(np.asarray(fractions, dtype=np.float64) / float(np.sum(fractions)))
    return SPLITS[min(int(np.searchsorted(bounds, u, side="right")), len(SPLITS) - 1)]


def check_fractions(fractions: Sequence[float]) -> tuple[float, float, float]:
    fractions = tuple(float(f) for f in fractions)
    if len(fractions) != 3 or any(f < 0 for f in fractions) or fractions[0] <= 0:
        raise ValueError(f"SICK split fractions must be three shares (train, dev, test) >= 0 with train > 0, "
                         f"got {fractions}")
    return fractions


def read_sick_split(
    spec: TaskSpec,
    path: str,
    split: str,
    fractions: Sequence[float] = (0.8, 0.1, 0.1),
    seed: int = 0,
    on_bad_row: str = "error",
    max_examples: int | None = None,
) -> TaskData:
    """One split of SICK as `TaskData` for a pair task.

    A classification task (num_classes 3) reads `entailment_judgment`; a regression task reads
    `relatedness_score` (1..5). Unknown labels, unreadable scores, empty sentences, wrong column
    counts and repeated pair ids raise a `DataError` naming file, line and field, or with
    `on_bad_row='skip'` are left out and listed in `TaskData.skipped`.
    """
    if on_bad_row not in ON_BAD_ROW:
        raise ValueError(f"on_bad_row must be one of {ON_BAD_ROW}, got {on_bad_row!r}")
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    fractions = check_fractions(fractions)
    if not spec.is_pair:
        raise DataError(f"{path}: SICK holds sentence pairs, but task {spec.name!r} is declared single-sentence")
    if spec.kind == CLASSIFICATION:
        if spec.num_classes != len(NLI_LABELS):
            raise DataError(f"{path}: SICK entailment has {len(NLI_LABELS)} classes {NLI_LABELS}, but task "
                            f"{spec.name!r} declares num_classes={spec.num_classes}")
        label_name = ENTAILMENT_COLUMN
    elif spec.kind == REGRESSION:
        label_name = RELATEDNESS_COLUMN
    else:
        raise DataError(f"{path}: task {spec.name!r} is {spec.kind!r}; SICK serves 3-way entailment "
                        "(classification) or relatedness (regression)")

    rows = read_tsv_rows(path)
    _, header = next(rows)
    header = [h.strip() for h in header]
    for name in (ID_COLUMN, *TEXT_COLUMNS, label_name):
        if name not in header:
            raise DataError(f"{location(path, 1)}: header has no column {name!r} (header columns: "
                            f"{[h for h in header if h]}); is this the SICK file?")
    col = {name: header.index(name) for name in (ID_COLUMN, *TEXT_COLUMNS, label_name)}
    semeval = header.index(SEMEVAL_COLUMN) if SEMEVAL_COLUMN in header else None

    ids: list[str] = []
    text_a: list[str] = []
    text_b: list[str] = []
    labels: list[float] = []
    skipped: list[SkippedRow] = []
    seen: dict[str, int] = {}

    def bad(line: int, field: str | None, reason: str) -> None:
        if on_bad_row == "error":
            raise DataError(f"{location(path, line, field)}: {reason}")
        skipped.append(SkippedRow(location=f"{path}:{line}", reason=f"{field}: {reason}" if field else reason))

    for line, cells in rows:
        if not any(c.strip() for c in cells):
            continue
        if len(cells) != len(header):
            bad(line, None, f"{len(cells)} columns where the header has {len(header)}")
            continue
        pair_id = cells[col[ID_COLUMN]].strip()
        if not pair_id:
            bad(line, ID_COLUMN, "empty pair id")
            continue
        if pair_id in seen:
            bad(line, ID_COLUMN, f"pair id {pair_id!r} repeats the one on line {seen[pair_id]}")
            continue
        seen[pair_id] = line
        if semeval is not None:
            raw_set = cells[semeval].strip()
            if raw_set not in SEMEVAL_SPLITS:
                bad(line, SEMEVAL_COLUMN, f"unknown set {raw_set!r}; expected one of {sorted(SEMEVAL_SPLITS)}")
                continue
            row_split = SEMEVAL_SPLITS[raw_set]
        else:
            row_split = hash_split(pair_id, fractions, seed)
        raw_label = cells[col[label_name]].strip()
        if label_name == ENTAILMENT_COLUMN:
            if raw_label.lower() not in NLI_LABELS:
                bad(line, label_name, f"unknown label {raw_label!r}; expected one of "
                                      f"{[name.upper() for name in NLI_LABELS]}")
                continue
            value = float(NLI_LABELS.index(raw_label.lower()))
        else:
            value, reason = spec.parse_label(raw_label, what="score")
            if reason:
                bad(line, label_name, reason)
                continue
        texts = row_texts(cells, col, TEXT_COLUMNS, partial(bad, line))
        if texts is None:
            continue
        if row_split != split or (max_examples is not None and len(ids) >= max_examples):
            continue  # rows of other splits are still checked: a bad row fails every split alike
        ids.append(pair_id)
        text_a.append(texts[0])
        text_b.append(texts[1])
        labels.append(value)

    if not ids:
        raise DataError(f"{path}: no usable rows in split {split!r} ({len(skipped)} bad rows skipped)")
    if skipped:
        log.warning("%s: skipped %d bad rows (on_bad_row='skip'), e.g. %s: %s",
                    path, len(skipped), skipped[0].location, skipped[0].reason)
    return TaskData(
        spec=spec,
        split=split,
        source=f"{absolute(path)}[{split}]",
        ids=ids,
        text_a=text_a,
        text_b=text_b,
        labels=np.asarray(labels, dtype=spec.label_dtype),
        skipped=skipped,
    )
