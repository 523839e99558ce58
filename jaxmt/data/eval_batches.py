"""Evaluation batches packed into rows sized to their examples: a few compiled shapes, little padding, short
attention blocks.

Training packs into `pack_length`-token rows (128) because a step's examples are a random draw. Evaluation
sees the whole split at once, so it can sort: each example goes to the one of a few row lengths (32, 64, 128
for pack_length 128) whose rows examples of its size fill best (`row_choice`), and each length's examples,
shortest first, are packed into batches of about `tokens` tokens (`tokens / length` rows) with up to
`max_examples` examples. Attention blocks are then mostly 32 x 32 or 64 x 64 instead of 128 x 128, as in a
length-sorted, dynamically padded PyTorch pass, with one compiled shape per row length and task instead of one
per batch. Within a length the packing is `jaxmt.data.packing`'s own (`packed_eval_batches`).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator

import numpy as np

from jaxmt.data.packing import PackLayout, packed_eval_batches
from jaxmt.data.tokenization import EncodedSplit

# A batch of 2,048 tokens (about 70 CS224N dev sentences, as many as PyTorch's batches of 64) and up to 256
# examples: on the CS224N dev sets 0.81 of the tokens computed are real, 0.75 with 4,096 (each row length's last,
# part-full batch costs more), 0.61 padded to the 32/64/128 buckets (docs/performance.md).
BATCH_TOKENS = 2048
MAX_EXAMPLES = 256


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


def _subset(split: EncodedSplit, indices: np.ndarray) -> EncodedSplit:
    rows = indices.tolist()
    return EncodedSplit(data=split.data.subset(rows), input_ids=[split.input_ids[i] for i in rows],
                        token_type_ids=[split.token_type_ids[i] for i in rows], num_truncated=0)


def sized_eval_batches(split: EncodedSplit, packing: EvalPacking, pad_id: int) -> Iterator[tuple[np.ndarray, dict]]:
    """Yields (indices into `split`, packed batch) covering every example once: each row length's examples,
    shortest first, in batches of `packing.layout(length)`; the indices are those of the batch's example slots
    with `example_mask > 0`, in slot order (`packed_eval_batches`). An example longer than every row (a siamese
    pair of two long sentences) goes to the longest rows, which hold it as training rows of that length do."""
    longest = packing.row_lengths[-1]
    if len(split.data) and int(split.lengths.max()) > longest:
        raise ValueError(f"a sequence of {int(split.lengths.max())} tokens does not fit the longest evaluation row "
                         f"({longest} tokens)")
    which = row_choice(example_sizes(split), packing.row_lengths)
    for k, length in enumerate(packing.row_lengths):
        members = np.flatnonzero(which == k)
        if len(members):
            layout = packing.layout(length, split.num_sequences)
            for idx, batch in packed_eval_batches(_subset(split, members), layout, pad_id):
                yield members[idx], batch
