"""Which tasks train at each step, and which examples each draws: a pure function of the step.

Nothing here keeps an iterator position: the batch of step `s` is computed from the seed and
`s` alone, so a run resumed from a checkpoint at step `s` sees exactly the data that an
uninterrupted run would have seen.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence

import numpy as np

from jaxmt.data.tokenization import EncodedSplit, bucket_length, make_batch

SAMPLING_MODES = ("all", "round_robin", "proportional")


class TaskSampler:
    """Task schedule and per-task shuffled epochs.

    Modes: `all` (every task every step), `round_robin` (one task a step, in turn) and
    `proportional` (one task a step, drawn with probability proportional to its training
    set size).
    """

    def __init__(
        self, sizes: dict[str, int], batch_sizes: dict[str, int], mode: str, seed: int, num_steps: int
    ) -> None:
        if mode not in SAMPLING_MODES:
            raise ValueError(f"sampling mode must be one of {SAMPLING_MODES}, got {mode!r}")
        for task, size in sizes.items():
            if size < batch_sizes[task]:
                raise ValueError(f"task {task!r}: {size} training examples, fewer than its batch size")
        self.tasks = tuple(sizes)
        self.sizes, self.batch_sizes = sizes, batch_sizes
        self.mode, self.seed = mode, seed
        if mode == "proportional":
            p = np.asarray([sizes[t] for t in self.tasks], dtype=np.float64)
            rng = np.random.default_rng([seed, 1])
            self._schedule = rng.choice(len(self.tasks), size=num_steps, p=p / p.sum())
            # draws[s] = how many times the task of step s was drawn before step s.
            self._draws = np.zeros(num_steps, dtype=np.int64)
            counts = np.zeros(len(self.tasks), dtype=np.int64)
            for s, t in enumerate(self._schedule):
                self._draws[s] = counts[t]
                counts[t] += 1

    def tasks_at(self, step: int) -> tuple[str, ...]:
        if self.mode == "all":
            return self.tasks
        if self.mode == "round_robin":
            return (self.tasks[step % len(self.tasks)],)
        return (self.tasks[int(self._schedule[step])],)

    def _draw_count(self, step: int) -> int:
        if self.mode == "all":
            return step
        if self.mode == "round_robin":
            return step // len(self.tasks)
        return int(self._draws[step])

    @functools.lru_cache(maxsize=16)  # noqa: B019 - a few epochs' permutations, per sampler
    def _permutation(self, task_index: int, epoch: int) -> np.ndarray:
        return np.random.default_rng([self.seed, 2, task_index, epoch]).permutation(self.sizes[self.tasks[task_index]])

    def _positions(self, task: str, draw: int) -> np.ndarray:
        """Positions in the task's stream of shuffled epochs that its `draw`-th batch takes."""
        b = self.batch_sizes[task]
        return draw * b + np.arange(b)

    def _at(self, task_index: int, positions: np.ndarray) -> np.ndarray:
        """The example indices at stream `positions` (epoch = position // size, then that epoch's order)."""
        n = self.sizes[self.tasks[task_index]]
        if len(positions) and positions[0] // n == positions[-1] // n:  # one epoch (positions ascend): one gather
            return self._permutation(task_index, int(positions[0] // n))[positions % n].astype(np.int64)
        out = np.empty(len(positions), dtype=np.int64)
        for epoch in np.unique(positions // n):
            sel = positions // n == epoch
            out[sel] = self._permutation(task_index, int(epoch))[positions[sel] % n]
        return out

    def examples_per_step(self) -> dict[str, float]:
        """Mean examples a draw of each task holds: its batch size."""
        return {t: float(b) for t, b in self.batch_sizes.items()}

    def indices(self, task: str, step: int) -> np.ndarray:
        """The training example indices `task` uses at `step` (its k-th draw)."""
        return self._at(self.tasks.index(task), self._positions(task, self._draw_count(step)))


def train_batches(
    splits: dict[str, EncodedSplit], sampler: TaskSampler, step: int, buckets: Sequence[int], pad_id: int,
    shard: tuple[int, int] = (0, 1),
) -> dict[str, dict[str, np.ndarray]]:
    """The padded batches of `step`, one per task trained then, all padded to one common bucket.

    One bucket for all tasks of a step keeps the number of compiled train steps at the
    number of buckets (not buckets ** tasks). `shard` = (i, n): only the i-th of n equal blocks of
    each batch's rows is built (the bucket is still the whole step's).
    """
    chosen = {task: sampler.indices(task, step) for task in sampler.tasks_at(step)}
    longest = max(int(splits[t].lengths[idx].max()) for t, idx in chosen.items())
    length = bucket_length(longest, buckets)
    i, n = shard
    return {t: make_batch(splits[t], np.array_split(idx, n)[i], length, pad_id) for t, idx in chosen.items()}


def eval_batches(split: EncodedSplit, batch_size: int, buckets: Sequence[int], pad_id: int):
    """Yields (indices, batch) over a whole split, shortest examples first to cut padding.

    The last batch is filled up with masked rows so every batch has `batch_size` rows.
    """
    lengths = split.lengths
    order = np.argsort(lengths, kind="stable")
    for start in range(0, len(order), batch_size):
        idx = order[start : start + batch_size]
        length = bucket_length(int(lengths[idx].max()), buckets)
        yield idx, make_batch(split, idx, length, pad_id, num_rows=batch_size)
