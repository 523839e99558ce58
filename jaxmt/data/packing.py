"""Packed batches: several examples in each row of a fixed `[rows, length]` array.

Each sequence of an example (one, or two for siamese pairs) is a segment of a row: `segment_ids`
number the segments of a row from 1 (0 is padding), so a token attends only to its own segment;
`position_ids` restart at 0 in every segment; token types are the sequence's own. The per-example
arrays (`labels`, `example_mask`, and `example_segments` [E, S], the flat index `row * length +
segment` of each of an example's sequences) have a fixed size E too, so a task's batches always
have one shape and the train step compiles once.

Training batches are token budgets, as TPU training stacks pack: a task's k-th draw takes the next
examples of its shuffled stream, in order, for as long as they fit the rows (first fit) and E
allows; `rows` is set so that `batch_size` examples fit on average. Which examples a draw takes is
computed once for the whole run from the seed, so the batch of any step is a pure function of
(seed, step), as with padded batches, and a resumed run sees the same data.

Why not grain's packers: they pack one stateful stream into rows and are resumed from a saved
iterator state; here every task draws its own examples per step and any step's batch must be
computable on its own (resumption, and each process building only its rows), which a 60-line
first-fit over a step's examples gives directly.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np

from jaxmt.data.sampling import TaskSampler, train_batches
from jaxmt.data.tokenization import EncodedSplit


@dataclasses.dataclass(frozen=True)
class PackLayout:
    """The static shape of one task's packed batches.

    Examples are placed in `rows` rows and at most `max_examples` a batch; the arrays are then padded with
    empty rows and masked examples to a multiple of `multiple` (the data-parallel devices), so which
    examples a batch holds, and so the losses, do not depend on the number of devices.
    """

    rows: int  # rows of `length` tokens that examples are placed in
    length: int  # tokens a row
    max_examples: int  # examples a batch holds at most
    multiple: int = 1  # array rows and examples are rounded up to this

    @property
    def array_rows(self) -> int:
        return -(-self.rows // self.multiple) * self.multiple

    @property
    def array_examples(self) -> int:
        return -(-self.max_examples // self.multiple) * self.multiple


def example_tokens(split: EncodedSplit) -> np.ndarray:
    """Tokens of each example over all its sequences, [N]."""
    return np.asarray([sum(len(s) for s in seqs) for seqs in split.input_ids], dtype=np.int64)


def layout_for(split: EncodedSplit, batch_size: int, length: int, multiple: int = 1) -> PackLayout:
    """Rows for `batch_size` examples of this split's mean size (at least one example's worth), at most twice
    `batch_size` examples; arrays padded to `multiple` (the data-parallel devices)."""
    longest = int(split.lengths.max())
    if longest > length:
        raise ValueError(f"a sequence of {longest} tokens does not fit a packed row of {length}")
    rows = max(math.ceil(batch_size * float(example_tokens(split).mean()) / length), split.num_sequences)
    return PackLayout(rows=rows, length=length, max_examples=2 * batch_size, multiple=multiple)


def place(split: EncodedSplit, indices: np.ndarray, layout: PackLayout) -> tuple[list[tuple[int, int]], int]:
    """First fit of the examples at `indices`, in order, into the layout's rows.

    Returns each placed sequence's (row, start) in example order and the number of examples placed: all
    of them, or those before the first that does not fit (whole) or past `max_examples`.
    """
    free = [layout.length] * layout.rows
    placed: list[tuple[int, int]] = []
    for count, index in enumerate(indices):
        if count == layout.max_examples:
            return placed, count
        spots = []
        for seq in split.input_ids[index]:
            row = next((r for r in range(layout.rows) if free[r] >= len(seq)), None)
            if row is None:
                return placed, count
            spots.append((row, layout.length - free[row]))
            free[row] -= len(seq)
        placed.extend(spots)
    return placed, len(indices)


def pack_batch(split: EncodedSplit, indices: np.ndarray, layout: PackLayout, pad_id: int) -> dict[str, np.ndarray]:
    """The packed arrays of the examples at `indices` (all must fit: see `place`)."""
    placed, count = place(split, indices, layout)
    if count != len(indices):
        raise ValueError(f"{len(indices)} examples do not fit {layout}")
    r, n, s = layout.array_rows, layout.length, split.num_sequences
    ids = np.full((r, n), pad_id, np.int32)
    types = np.zeros((r, n), np.int32)
    positions = np.zeros((r, n), np.int32)
    segments = np.zeros((r, n), np.int32)
    used = np.zeros(r, np.int32)  # segments so far in each row
    example_segments = np.zeros((layout.array_examples, s), np.int32)
    k = 0
    for e, index in enumerate(indices):
        for j, (seq, seq_types) in enumerate(zip(split.input_ids[index], split.token_type_ids[index])):
            row, start = placed[k]
            k += 1
            used[row] += 1
            stop = start + len(seq)
            ids[row, start:stop], types[row, start:stop] = seq, seq_types
            positions[row, start:stop] = np.arange(len(seq))
            segments[row, start:stop] = used[row]
            example_segments[e, j] = row * n + used[row]
    labels = np.zeros(layout.array_examples, split.data.spec.label_dtype)
    if split.data.labels is not None:
        labels[: len(indices)] = split.data.labels[indices]
    example_mask = np.zeros(layout.array_examples, np.float32)
    example_mask[: len(indices)] = 1.0
    return {"input_ids": ids, "token_type_ids": types, "position_ids": positions, "segment_ids": segments,
            "example_segments": example_segments, "labels": labels, "example_mask": example_mask}


class PackedTaskSampler(TaskSampler):
    """`TaskSampler` whose draws are token budgets: a task's k-th draw takes the next examples of its
    stream that fit its `PackLayout`; the draws' stream positions are computed once for `num_steps`."""

    def __init__(self, splits: dict[str, EncodedSplit], layouts: dict[str, PackLayout], mode: str, seed: int,
                 num_steps: int) -> None:
        super().__init__({t: len(s.data) for t, s in splits.items()}, {t: 1 for t in splits}, mode, seed, num_steps)
        self.layouts = layouts
        draws = {t: 0 for t in self.tasks}
        for step in range(num_steps):
            for task in self.tasks_at(step):
                draws[task] += 1
        self._starts = {}
        for i, task in enumerate(self.tasks):
            starts, position = [0], 0
            for _ in range(draws[task]):
                ahead = self._stream(i, position, layouts[task].max_examples)
                position += place(splits[task], ahead, layouts[task])[1]
                starts.append(position)
            self._starts[task] = np.asarray(starts, np.int64)

    def _stream(self, task_index: int, start: int, count: int) -> np.ndarray:
        """Example indices at stream positions start .. start + count - 1 (one shuffled epoch after another)."""
        return self._at(task_index, start + np.arange(count))

    def _positions(self, task: str, draw: int) -> np.ndarray:
        starts = self._starts[task]
        return np.arange(starts[draw], starts[draw + 1])

    def examples_per_step(self) -> dict[str, float]:
        """Mean examples a draw of each task holds."""
        return {t: float(np.mean(np.diff(s))) for t, s in self._starts.items()}


def train_step_batches(splits: dict[str, EncodedSplit], sampler: TaskSampler, step: int, buckets,
                       pad_id: int) -> dict[str, dict[str, np.ndarray]]:
    """Step `step`'s host batch of every task it trains: packed (a `PackedTaskSampler`), else padded to the
    smallest bucket that fits all of them (`jaxmt.data.sampling.train_batches`)."""
    if isinstance(sampler, PackedTaskSampler):
        return {t: pack_batch(splits[t], sampler.indices(t, step), sampler.layouts[t], pad_id)
                for t in sampler.tasks_at(step)}
    return train_batches(splits, sampler, step, buckets, pad_id)


def packed_eval_batches(split: EncodedSplit, layout: PackLayout, pad_id: int):
    """Yields (indices, packed batch) over a whole split, shortest examples first (as the padded path)."""
    order = np.argsort(split.lengths, kind="stable")
    start = 0
    while start < len(order):
        count = place(split, order[start:start + layout.max_examples], layout)[1]
        idx = order[start:start + count]
        yield idx, pack_batch(split, idx, layout, pad_id)
        start += count
