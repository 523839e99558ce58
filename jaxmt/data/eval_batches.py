"""Evaluation batches packed into rows sized to their examples: a few compiled shapes, little padding, short
attention blocks.

Training packs a random draw into `pack_length`-token rows (128). Evaluation sees the whole split at once, so it
can sort: each example goes to the one of a few row lengths (32, 64, 128 for pack_length 128) whose rows
examples of its size fill best (`row_choice`), and each length's examples are packed first fit decreasing
(longest first; a shorter one fills the room a longer one leaves) into batches of about `tokens` tokens
(`tokens / length` rows a batch) with up to `max_examples` examples. A length's last batch, part full, takes
half or a quarter of the rows when its examples fit them (`RUNGS`). Attention blocks are then mostly 32 x 32 or
64 x 64 instead of 128 x 128, as in a length-sorted, dynamically padded PyTorch pass, with a few compiled shapes
per row length and task instead of one per batch.

Why not `jaxmt.data.packing`'s training placement: a training draw is packed in stream order, a group's
examples fixed by the step; here any example may go into any batch, which is what lets the shorter ones fill
the gaps of the longer ones (0.85 of the computed tokens real on the CS224N dev sets, 0.81 filling rows in
length order).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator

import numpy as np

from jaxmt.data.packing import PackLayout, Placement, concat_groups, pack_group
from jaxmt.data.tokenization import EncodedSplit

# A batch of 2,048 tokens (about 70 CS224N dev sentences, as many as PyTorch's batches of 64) and up to 256
# examples (docs/performance.md, "Evaluation: rows sized to the examples").
BATCH_TOKENS = 2048
MAX_EXAMPLES = 256
RUNGS = 3  # a length's last batch may take 1/2 or 1/4 of the rows: at most 3 shapes a row length and task


@dataclasses.dataclass(frozen=True)
class EvalPacking:
    """How a split is cut into packed evaluation batches: one `PackLayout` per row length."""

    row_lengths: tuple[int, ...]  # increasing; an example goes to the one its size fills best (`row_choice`)
    tokens: int = BATCH_TOKENS  # tokens a batch (rows x row length), over all its row groups
    max_examples: int = MAX_EXAMPLES  # examples a batch holds at most, over all its row groups
    groups: int = 1  # row groups a batch (`PackLayout.groups`: a multiple of the data-parallel devices)

    def layout(self, length: int, sequences: int = 1) -> PackLayout:
        """The batches of `length`-token rows, for examples of `sequences` sequences (a group holds one whole)."""
        return PackLayout(rows=max(self.tokens // (length * self.groups), sequences), length=length,
                          max_examples=max(self.max_examples // self.groups, 1), groups=self.groups)


def eval_packing(length: int, groups: int = 1) -> EvalPacking:
    """Sized-row evaluation where packed rows are `length` tokens long (`data.pack_length`): rows of a quarter, a
    half and the whole of it (32 / 64 / 128 for 128), in `groups` row groups (the data-parallel devices)."""
    return EvalPacking(row_lengths=tuple(sorted({max(length // 4, 1), max(length // 2, 1), length})), groups=groups)


def example_sizes(split: EncodedSplit) -> np.ndarray:
    """Tokens of each example over all its sequences, [N]: a row of this length holds the whole example."""
    return np.asarray([sum(len(s) for s in seqs) for seqs in split.input_ids], np.int64)


def row_choice(sizes: np.ndarray, row_lengths: tuple[int, ...]) -> np.ndarray:
    """For each example size, the index of the row length whose rows it fills best when rows hold examples of
    about its size (floor(row / size) of them: a 20-token sentence fills 32-token rows to 0.62, 64-token rows to
    0.94), the shortest of equals; sizes longer than every row take the longest."""
    lengths = np.asarray(row_lengths)[None, :]
    size = np.maximum(sizes[:, None], 1)
    filled = np.where(size <= lengths, (lengths // size) * size / lengths, -1.0)
    filled[:, -1] = np.maximum(filled[:, -1], 0.0)  # what no row holds goes to the longest
    return np.argmax(filled - 1e-9 * np.arange(lengths.shape[1]), axis=1)  # ties: the shortest row


def fit_choice(split: EncodedSplit, row_lengths: tuple[int, ...]) -> np.ndarray:
    """For each example, the index of the shortest row length that holds its longest sequence (the longest row
    for longer ones): about one sequence a row, as dynamic padding computes; an alternative to `row_choice`
    that benchmarks/eval_layout_cost.py and real_stream.py's --fit_rows compare (more tokens, less attention)."""
    return np.minimum(np.searchsorted(np.asarray(row_lengths), split.lengths), len(row_lengths) - 1)


def fill_group(split: EncodedSplit, pending: list[int], layout: PackLayout) -> tuple[Placement, list[int]]:
    """First fit decreasing of the examples `pending` (indices, longest first) into one group's empty rows, at
    most `layout.max_examples` of them: (their placement in slot order, the indices left, still longest first).

    Each sequence goes to the first row with room, so the rows used are always the first ones."""
    free = np.full(layout.rows, layout.length, np.int64)
    placed: Placement = []
    left: list[int] = []
    for index in pending:
        sizes = [len(q) for q in split.input_ids[index]]
        if len(placed) == layout.max_examples or max(sizes) > free.max():
            left.append(index)
            continue
        trial, spots = free.copy(), []
        for size in sizes:
            row = int(np.argmax(trial >= size))
            if trial[row] < size:
                break
            spots.append((row, layout.length - int(trial[row])))
            trial[row] -= size
        if len(spots) == len(sizes):
            free = trial
            placed.append((index, spots))
        else:
            left.append(index)
    return placed, left


def _rows_used(placement: Placement) -> int:
    return 1 + max((row for _, spots in placement for row, _ in spots), default=0)


def length_batches(split: EncodedSplit, indices: np.ndarray, layout: PackLayout,
                   pad_id: int) -> Iterator[tuple[np.ndarray, dict]]:
    """Yields (indices, packed batch) covering the examples at `indices` once, in batches of `layout` filled
    group by group (`fill_group`); a batch whose examples fit the first half or quarter of every group's rows
    gets that many rows (`RUNGS`)."""
    pending = sorted((int(i) for i in indices), key=lambda i: -sum(len(q) for q in split.input_ids[i]))
    while pending:
        groups = []
        for _ in range(layout.groups):
            placement, pending = fill_group(split, pending, layout)
            groups.append(placement)
        if not any(groups):
            raise ValueError(f"an example of {split.data.spec.name} does not fit {layout}")
        rows, used = layout.rows, max(_rows_used(g) for g in groups)
        for _ in range(RUNGS - 1):
            if used <= rows // 2 and rows // 2 >= split.num_sequences:
                rows //= 2
        sized = dataclasses.replace(layout, rows=rows)
        yield (np.asarray([i for g in groups for i, _ in g], np.int64),
               concat_groups([pack_group(split, g, sized, pad_id) for g in groups]))


def sized_eval_batches(split: EncodedSplit, packing: EvalPacking, pad_id: int,
                       which: np.ndarray | None = None) -> Iterator[tuple[np.ndarray, dict]]:
    """Yields (indices into `split`, packed batch) covering every example once: each row length's examples in
    batches of `packing.layout(length)` (`length_batches`); the indices are those of the batch's example slots
    with `example_mask > 0`, in slot order. An example longer than every row (a siamese pair of two long
    sentences) goes to the longest rows, which hold it as training rows of that length do. `which` (index of a
    row length per example) overrides `row_choice` (e.g. `fit_choice`)."""
    longest = packing.row_lengths[-1]
    if len(split.data) and int(split.lengths.max()) > longest:
        raise ValueError(f"a sequence of {int(split.lengths.max())} tokens does not fit the longest evaluation row "
                         f"({longest} tokens)")
    which = row_choice(example_sizes(split), packing.row_lengths) if which is None else which
    for k, length in enumerate(packing.row_lengths):
        members = np.flatnonzero(which == k)
        if len(members):
            yield from length_batches(split, members, packing.layout(length, split.num_sequences), pad_id)
