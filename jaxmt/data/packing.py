"""Packed batches: several examples in each row of fixed `[rows, length]` arrays, rows in groups.

Each sequence of an example (one, two siamese, three triplet) is a segment of a row: `segment_ids`
number the segments of a row from 1 (0 is padding), so a token attends only to its own segment;
`position_ids` restart at 0 in every segment; token types are the sequence's own.

The rows come in `groups` of `rows` rows, and an example lives inside one group: all its sequences
are in that group's rows, and its label, mask and `example_segments` (which segment of the group holds
each of its sequences: row-in-group * length + segment) are in that group's `max_examples` example
slots. Token arrays are [groups * rows, length], `labels` and `example_mask` [groups * max_examples] and
`example_segments` [groups, max_examples, S], so every array splits along its leading axis into whole
groups: with the groups a multiple of the data-parallel devices, a device pools, pairs, scores and
takes the losses of its own examples from its own rows, and only parameters' gradients cross devices.

Training draws take a fixed number of stream examples: a task's k-th draw takes its stream's examples
k * batch_size .. (k + 1) * batch_size - 1 (the padded sampler's draw), split evenly over the groups, so
which examples a group gets, and so any step's batch, is computed from (seed, step) alone, in constant
time, by the process whose devices hold that group. The number of groups is the config's (`data.pack_groups`,
`jaxmt.training.setup.pack_groups`), not the devices': the carry and drops are a group's, so for a fixed
count a step's examples, and its losses, are the same on any number of devices that divides it. The examples
of a group's share that its rows do not hold (first fit decreasing) are carried to the same group of the next
draw and placed in the room its own examples leave. A carried example that does not fit there either is
dropped (`PackedTaskSampler.dropped` counts them, `dropped_share` the trainer logs at start and records in
results.json). A group's rows are the fewest with which at most `data.pack_max_dropped` (MAX_DROPPED_SHARE by
default) of a task's examples are dropped (`layout_for`, from the task's own length distribution): the carry
lets rows be sized for an average draw rather than a heavy one, so fewer of their tokens are padding. The
carry is recomputed from the previous draw's own examples, never chained further back, so a draw needs no
earlier draw.

Why not grain's packers: they pack one stateful stream into rows and are resumed from a saved iterator
state; here every task draws its own examples per step, any step's batch must be computable on its own
(resumption, and each process building only its groups), and an example's sequences must share a group.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Sequence

import numpy as np

from jaxmt.data.sampling import TaskSampler, train_batches
from jaxmt.data.tokenization import EncodedSplit

# (example index, [(row, start) of each of its sequences]) in slot order: where a group's examples lie.
Placement = list[tuple[int, list[tuple[int, int]]]]
MAX_DROPPED_SHARE = 0.05  # default data.pack_max_dropped: the share of examples simulated draws may drop
SIZING_EXAMPLES = 4096  # examples the row sizing simulates, in draws of a group's share (at least 32 draws)


@dataclasses.dataclass(frozen=True)
class PackLayout:
    """The static shape of one task's packed batches: `groups` groups of `rows` rows of `length` tokens, each
    group with `max_examples` example slots. `groups` is a multiple of the data-parallel devices, so no group
    is split over devices, and is fixed by the config, so which examples a batch holds, and so the losses,
    do not depend on the number of devices."""

    rows: int  # rows of `length` tokens a group
    length: int  # tokens a row
    max_examples: int  # example slots a group
    groups: int = 1  # row groups a batch

    @property
    def array_rows(self) -> int:
        return self.groups * self.rows

    @property
    def array_examples(self) -> int:
        return self.groups * self.max_examples


def example_tokens(split: EncodedSplit) -> np.ndarray:
    """Tokens of each example over all its sequences, [N]."""
    return np.asarray([sum(len(s) for s in seqs) for seqs in split.input_ids], dtype=np.int64)


def layout_for(split: EncodedSplit, batch_size: int, length: int, groups: int = 1,
               max_dropped_share: float = MAX_DROPPED_SHARE) -> PackLayout:
    """Groups of rows for `batch_size` examples a batch, `batch_size / groups` a group, twice a group's share of
    example slots (room for carried examples), and the fewest rows (at least one example's worth) with which
    consecutive random draws of this split (`sizing_draws`), each carrying what its rows do not hold to the next
    as the sampler does, drop at most `max_dropped_share` of their examples (`simulated_drops`; 0: rows that
    hold every simulated draw, carry included, so the sampler drops almost none).

    Why from the drops and not from the rows a draw needs: rows that hold nearly every draw whole (the 0.9
    quantile, as before) are half a row too many on average, since the carry fills the rows of a light draw with
    the overflow of a heavy one; on the CS224N stream (16 a task, 128-token rows) 4/5/5 rows for sst/para/sts
    computed 37.3 tokens a trained example, 4/4/4 compute 32.5 and drop 0.0/3.6/1.3% of the examples."""
    longest = int(split.lengths.max())
    if longest > length:
        raise ValueError(f"a sequence of {longest} tokens does not fit a packed row of {length}")
    if batch_size % groups:
        raise ValueError(f"a batch of {batch_size} examples does not split into {groups} row groups")
    share = batch_size // groups
    draws = sizing_draws(split, share)
    budget = max_dropped_share * share * (len(draws) - 1)
    layout = PackLayout(rows=split.num_sequences, length=length, max_examples=2 * share, groups=groups)
    while simulated_drops(split, draws, layout, stop_above=budget) > budget:  # ends: rows for every draw drop none
        layout = dataclasses.replace(layout, rows=layout.rows + 1)
    return layout


def sizing_draws(split: EncodedSplit, share: int) -> list[np.ndarray]:
    """The random draws (seeded) of `share` examples that `layout_for` sizes a group's rows on: SIZING_EXAMPLES
    examples' worth, at least 32 draws."""
    rng = np.random.default_rng(0)
    return [rng.choice(len(split.data), share) for _ in range(max(SIZING_EXAMPLES // share, 32))]


def simulated_drops(split: EncodedSplit, draws: Sequence[np.ndarray], layout: PackLayout,
                    stop_above: float = float("inf")) -> int:
    """Examples dropped when `draws` come one after another into one group of `layout`, each placing its own
    examples, then those the draw before could not hold (the sampler's carry); counting stops once above
    `stop_above` (rows far too few are rejected after a few draws)."""
    dropped, carried = 0, None
    for own in draws:
        placed, free, left = _own_fit(split, own, layout)
        if carried is not None:
            dropped += _carry(split, placed, free, carried, layout)[1]
            if dropped > stop_above:
                break
        carried = left
    return dropped


def place(split: EncodedSplit, indices: np.ndarray, layout: PackLayout) -> tuple[list[tuple[int, int]], int]:
    """First fit of the examples at `indices`, in order, into one group's rows.

    Returns each placed sequence's (row, start) in example order and the number of examples placed: all
    of them, or those before the first that does not fit (whole) or past `max_examples`.
    """
    free = [layout.length] * layout.rows
    placed: list[tuple[int, int]] = []
    for count, index in enumerate(indices):
        if count == layout.max_examples:
            return placed, count
        spots = _fit(tuple(len(q) for q in split.input_ids[index]), free, layout.length)
        if spots is None:
            return placed, count
        placed.extend(spots)
    return placed, len(indices)


def _fit(sizes: tuple[int, ...], free: list[int], length: int) -> list[tuple[int, int]] | None:
    """First fit of one example's sequences (`sizes` tokens each) into rows with `free` tokens left (updated), or
    None (unchanged)."""
    if len(sizes) == 1:  # the common case, without the trial copy (the hot loop of batch building)
        for row, room in enumerate(free):
            if room >= sizes[0]:
                free[row] = room - sizes[0]
                return [(row, length - room)]
        return None
    trial, spots = list(free), []
    for size in sizes:
        row = next((r for r, room in enumerate(trial) if room >= size), None)
        if row is None:
            return None
        spots.append((row, length - trial[row]))
        trial[row] -= size
    free[:] = trial
    return spots


def _fit_decreasing(split: EncodedSplit, indices, free: list[int], slots: int,
                    length: int) -> tuple[Placement, list[int]]:
    """First fit decreasing (longest example first, ties in the given order: it fills rows tighter) of the examples
    at `indices` into rows with `free` room (updated), at most `slots` examples: (their placement, the example
    indices that did not fit), each in the given (stream) order."""
    indices = [int(i) for i in indices]
    sizes = [tuple(len(q) for q in split.input_ids[i]) for i in indices]
    placed, left = [], []
    for j in sorted(range(len(indices)), key=lambda j: -sum(sizes[j])):
        spots = _fit(sizes[j], free, length) if len(placed) < slots else None
        if spots is None:
            left.append(j)
        else:
            placed.append((j, spots))
    placed.sort(key=lambda p: p[0])
    return [(indices[j], spots) for j, spots in placed], [indices[j] for j in sorted(left)]


def _own_fit(split: EncodedSplit, own, layout: PackLayout) -> tuple[Placement, list[int], list[int]]:
    """A group's own examples placed first fit decreasing into its empty rows: (placement, each row's room left,
    the example indices that did not fit: what the group carries to its next draw)."""
    free = [layout.length] * layout.rows
    placed, left = _fit_decreasing(split, own, free, layout.max_examples, layout.length)
    return placed, free, left


def _carry(split: EncodedSplit, placed: Placement, free: list[int], carried: list[int],
           layout: PackLayout) -> tuple[Placement, int]:
    """`carried` examples placed first fit decreasing into the room `free` that a group's own `placed` leave (not
    changed): (the group's placement, own then carried examples; how many carried found no room)."""
    more, dropped = _fit_decreasing(split, carried, list(free), layout.max_examples - len(placed), layout.length)
    return placed + more, len(dropped)


def group_placement(split: EncodedSplit, own: np.ndarray, previous: np.ndarray | None,
                    layout: PackLayout) -> tuple[Placement, int]:
    """One group of a training draw: its `own` stream examples first (first fit decreasing into empty rows), then
    those of `previous` (the group's share of the draw before) that did not fit theirs, into the room left.

    Returns the placement (own examples, then carried ones) and how many carried examples found no room.
    """
    placed, free, _ = _own_fit(split, own, layout)
    if previous is None:
        return placed, 0
    return _carry(split, placed, free, _own_fit(split, previous, layout)[2], layout)


def pack_group(split: EncodedSplit, placement: Placement, layout: PackLayout,
               pad_id: int) -> dict[str, np.ndarray]:
    """One group's arrays: tokens [rows, length], labels and example_mask [max_examples], example_segments
    [1, max_examples, S] (row-in-group * length + segment of each sequence).

    The sequences are written in one vectorised scatter per array (flat destinations from each sequence's row,
    start and length) rather than a slice assignment a sequence: this runs for every group of every step."""
    r, n, s = layout.rows, layout.length, split.num_sequences
    used = [0] * r  # segments so far in each row
    seq_ids, seq_types, starts, sizes, numbers = [], [], [], [], []
    slot_segments = np.zeros((layout.max_examples, s), np.int32)
    for e, (index, spots) in enumerate(placement):
        for j, ((row, start), seq, seq_types_j) in enumerate(zip(spots, split.input_ids[index],
                                                                 split.token_type_ids[index])):
            used[row] += 1
            slot_segments[e, j] = row * n + used[row]
            seq_ids.append(seq)
            seq_types.append(seq_types_j)
            starts.append(row * n + start)
            sizes.append(len(seq))
            numbers.append(used[row])
    ids = np.full(r * n, pad_id, np.int32)
    types, positions, segments = (np.zeros(r * n, np.int32) for _ in range(3))
    if seq_ids:
        sizes = np.asarray(sizes)
        within = np.arange(sizes.sum()) - np.repeat(np.cumsum(sizes) - sizes, sizes)  # position in its sequence
        where = np.repeat(starts, sizes) + within
        ids[where], types[where] = np.concatenate(seq_ids), np.concatenate(seq_types)
        positions[where], segments[where] = within, np.repeat(numbers, sizes)
    indices = np.asarray([index for index, _ in placement], np.int64)
    labels = np.zeros(layout.max_examples, split.data.spec.label_dtype)
    if split.data.labels is not None:
        labels[: len(indices)] = split.data.labels[indices]
    example_mask = np.zeros(layout.max_examples, np.float32)
    example_mask[: len(indices)] = 1.0
    return {"input_ids": ids.reshape(r, n), "token_type_ids": types.reshape(r, n),
            "position_ids": positions.reshape(r, n), "segment_ids": segments.reshape(r, n),
            "example_segments": slot_segments[None], "labels": labels, "example_mask": example_mask}


def concat_groups(groups: Sequence[dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    """Groups' arrays joined along their leading axes, in order."""
    return {k: np.concatenate([g[k] for g in groups]) for k in groups[0]}


def split_in_order(split: EncodedSplit, indices: np.ndarray, layout: PackLayout) -> list[np.ndarray]:
    """The examples at `indices`, in order, filling group after group (each by `place`): per group its indices.
    Raises if they do not all fit the layout's groups."""
    parts, start = [], 0
    for _ in range(layout.groups):
        count = place(split, indices[start:], layout)[1]
        parts.append(np.asarray(indices[start:start + count]))
        start += count
    if start != len(indices):
        raise ValueError(f"{len(indices)} examples do not fit {layout}")
    return parts


def pack_batch(split: EncodedSplit, indices: np.ndarray | Sequence[np.ndarray], layout: PackLayout,
               pad_id: int) -> dict[str, np.ndarray]:
    """The packed arrays of the examples at `indices`: a flat array fills the groups in order (first fit in
    order; all must fit, see `place`), a sequence of `layout.groups` arrays gives each group its own."""
    parts = split_in_order(split, np.asarray(indices), layout) if isinstance(indices, np.ndarray) else indices
    if len(parts) != layout.groups:
        raise ValueError(f"{len(parts)} groups of examples for a layout of {layout.groups}")
    groups = []
    for part in parts:
        spots, count = place(split, part, layout)
        if count != len(part):
            raise ValueError(f"{len(part)} examples do not fit a group of {layout}")
        per_example = [len(split.input_ids[i]) for i in part]
        bounds = np.cumsum([0] + per_example)
        groups.append(pack_group(split, [(int(i), spots[bounds[k]:bounds[k + 1]]) for k, i in enumerate(part)],
                                 layout, pad_id))
    return concat_groups(groups)


class PackedTaskSampler(TaskSampler):
    """`TaskSampler` whose draws fill packed row groups: a task's k-th draw takes the stream examples of the
    padded sampler's k-th draw, a group's share each, plus the examples the group carried from draw k - 1.
    A draw is computed on its own in constant time (no placement of earlier draws)."""

    def __init__(self, splits: dict[str, EncodedSplit], layouts: dict[str, PackLayout], batch_sizes: dict[str, int],
                 mode: str, seed: int, num_steps: int) -> None:
        for task, layout in layouts.items():
            if batch_sizes[task] % layout.groups:
                raise ValueError(f"task {task!r}: a batch of {batch_sizes[task]} does not split into "
                                 f"{layout.groups} row groups")
        super().__init__({t: len(s.data) for t, s in splits.items()}, batch_sizes, mode, seed, num_steps)
        self.splits, self.layouts = splits, layouts

    def _share(self, task: str, draw: int, group: int) -> np.ndarray:
        """The stream examples of group `group`'s share of the task's `draw`-th draw."""
        share = self.batch_sizes[task] // self.layouts[task].groups
        positions = draw * self.batch_sizes[task] + group * share + np.arange(share)
        return self._at(self.tasks.index(task), positions)

    @functools.lru_cache(maxsize=1024)  # noqa: B019 - per sampler: each draw's own fit is read again by the next
    def _own_fit(self, task: str, draw: int, group: int) -> tuple[Placement, list[int], list[int]]:
        """`_own_fit` of a group's share of `task`'s `draw`-th draw (cached, never mutated: step k's carry is step
        k - 1's own overflow, so steps in order fit each share once)."""
        return _own_fit(self.splits[task], self._share(task, draw, group), self.layouts[task])

    def placements(self, task: str, step: int, groups: slice | None = None) -> list[tuple[Placement, int]]:
        """(placement, carried examples dropped) of each group in `groups` (default all) of `task` at `step`
        (`group_placement` of the group's share and its share of the draw before)."""
        draw = self._draw_count(step)
        out = []
        for g in range(self.layouts[task].groups)[groups or slice(None)]:
            placed, free, _ = self._own_fit(task, draw, g)
            carried = self._own_fit(task, draw - 1, g)[2] if draw > 0 else []
            out.append(_carry(self.splits[task], placed, free, carried, self.layouts[task]))
        return out

    def indices(self, task: str, step: int) -> np.ndarray:
        """The example indices `task` trains on at `step`, in slot order (group after group)."""
        return np.asarray([i for placement, _ in self.placements(task, step) for i, _ in placement], np.int64)

    def dropped(self, task: str, step: int) -> int:
        """Carried examples of `task` that found no room at `step` (not trained on)."""
        return sum(d for _, d in self.placements(task, step))

    def dropped_share(self, steps: int) -> dict[str, float]:
        """Each task's share of its drawn examples dropped (carried, and still without room) over steps 0 ..
        `steps` - 1: what packing costs in examples, measured once at start (placements only, no arrays)."""
        dropped, drawn = dict.fromkeys(self.tasks, 0), dict.fromkeys(self.tasks, 0)
        for step in range(steps):
            for task in self.tasks_at(step):
                dropped[task] += self.dropped(task, step)
                drawn[task] += self.batch_sizes[task]
        return {t: dropped[t] / drawn[t] for t in self.tasks if drawn[t]}

    def batch(self, task: str, step: int, pad_id: int, groups: slice | None = None) -> dict[str, np.ndarray]:
        """`task`'s packed arrays at `step`, of the groups in `groups` only (default all)."""
        return concat_groups([pack_group(self.splits[task], placement, self.layouts[task], pad_id)
                              for placement, _ in self.placements(task, step, groups)])


def train_step_batches(splits: dict[str, EncodedSplit], sampler: TaskSampler, step: int, buckets,
                       pad_id: int, shard: tuple[int, int] = (0, 1)) -> dict[str, dict[str, np.ndarray]]:
    """Step `step`'s host batch of every task it trains: packed (a `PackedTaskSampler`), else padded to the
    smallest bucket that fits all of them (`jaxmt.data.sampling.train_batches`).

    `shard` = (i, n): only the i-th of n equal blocks of the batch's leading axes (row groups, or rows of a
    padded batch) is built, the block the devices of process i of n hold."""
    i, n = shard
    if isinstance(sampler, PackedTaskSampler):
        out = {}
        for t in sampler.tasks_at(step):
            per = sampler.layouts[t].groups // n
            out[t] = sampler.batch(t, step, pad_id, slice(i * per, (i + 1) * per))
        return out
    return train_batches(splits, sampler, step, buckets, pad_id, shard)
