"""Evaluation batches packed into rows sized to their examples: a few compiled shapes, little padding, short
attention blocks.

Training packs into `pack_length`-token rows (128) because a step's examples are a random draw. Evaluation
sees the whole split at once, so it can sort: each example goes to the shortest of a few row lengths (32, 64,
128 for pack_length 128) that holds it, and each length's examples, shortest first, are packed into batches of
about `tokens` tokens (`tokens / length` rows) with up to `max_examples` examples. On the CS224N dev sets 70%
of the examples fit 32 tokens, so most attention blocks are 32 x 32 instead of 128 x 128, as in a
length-sorted, dynamically padded PyTorch pass, but with one compiled shape per row length and task instead
of one per batch. Within a length the packing is `jaxmt.data.packing`'s own (`packed_eval_batches`).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator

import numpy as np

from jaxmt.data.packing import PackLayout, packed_eval_batches
from jaxmt.data.tokenization import EncodedSplit

# The defaults measured best on the CS224N dev sets with MiniLM on a 2-core CPU (benchmarks/real_stream.py
# --only=eval, docs/performance.md): a batch of 4,096 tokens, up to 256 examples.
BATCH_TOKENS = 4096
MAX_EXAMPLES = 256


@dataclasses.dataclass(frozen=True)
class EvalPacking:
    """How a split is cut into packed evaluation batches: one `PackLayout` per row length."""

    row_lengths: tuple[int, ...]  # increasing; an example goes to the shortest that holds all its tokens
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


def _subset(split: EncodedSplit, indices: np.ndarray) -> EncodedSplit:
    rows = indices.tolist()
    return EncodedSplit(data=split.data.subset(rows), input_ids=[split.input_ids[i] for i in rows],
                        token_type_ids=[split.token_type_ids[i] for i in rows], num_truncated=0)


def sized_eval_batches(split: EncodedSplit, packing: EvalPacking, pad_id: int) -> Iterator[tuple[np.ndarray, dict]]:
    """Yields (indices into `split`, packed batch) covering every example once: each row length's examples,
    shortest first, in batches of `packing.layout(length)`; the indices are those of the batch's example slots
    with `example_mask > 0`, in slot order (`packed_eval_batches`). An example longer than every row (a siamese pair of
    two long sentences) goes to the longest rows, which hold it as training rows of that length do."""
    longest = packing.row_lengths[-1]
    if len(split.data) and int(split.lengths.max()) > longest:
        raise ValueError(f"a sequence of {int(split.lengths.max())} tokens does not fit the longest evaluation row "
                         f"({longest} tokens)")
    lengths = np.asarray(packing.row_lengths)
    which = np.minimum(np.searchsorted(lengths, example_sizes(split)), len(lengths) - 1)  # shortest row that holds it
    for k, length in enumerate(packing.row_lengths):
        members = np.flatnonzero(which == k)
        if len(members):
            layout = packing.layout(length, split.num_sequences)
            for idx, batch in packed_eval_batches(_subset(split, members), layout, pad_id):
                yield members[idx], batch
