"""Tokenization into ragged token-id sequences, and padding to a few bucketed lengths.

Sentences are tokenized once, without special tokens; sequences are then assembled as
`[CLS] a [SEP]` or `[CLS] a [SEP] b [SEP]` (token types 0 / 1) with longest-first
truncation. Padding happens per batch, to the smallest bucket that fits, so a batch of short
sentences does not pay for the longest one in the data set and the jitted step compiles
once per bucket.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Sequence

import numpy as np

from jaxmt.data.schema import TaskData

PAIR_MODES = ("cross", "siamese", "triplet")
SEQUENCES_PER_PAIR = {"cross": 1, "siamese": 2, "triplet": 3}  # sequences a pair example is encoded as


@dataclasses.dataclass
class EncodedSplit:
    """A tokenized split: per example, S sequences (S=1 single/cross, 2 siamese: a, b; 3 triplet: a, b, a+b)."""

    data: TaskData
    input_ids: list[tuple[np.ndarray, ...]]  # [N] of S int32 arrays, special tokens included
    token_type_ids: list[tuple[np.ndarray, ...]]
    num_truncated: int

    @property
    def num_sequences(self) -> int:
        return len(self.input_ids[0])

    def repeated(self, times: int) -> EncodedSplit:
        """The split `times` over, in order, reusing its token arrays (no second tokenization): a compile report's
        global batch on a large slice can exceed the training set, and tokenizing it again would cost minutes."""
        return EncodedSplit(
            data=self.data.subset([i % len(self.data) for i in range(times * len(self.data))]),
            input_ids=self.input_ids * times,
            token_type_ids=self.token_type_ids * times,
            num_truncated=self.num_truncated * times,
        )

    @functools.cached_property
    def lengths(self) -> np.ndarray:
        """The longest sequence of each example, [N]."""
        return np.asarray([max(len(s) for s in seqs) for seqs in self.input_ids], dtype=np.int32)


def _truncate_pair(a: list[int], b: list[int], budget: int) -> tuple[list[int], list[int]]:
    """Longest-first truncation, with the same split as Hugging Face tokenizers."""
    n1, n2 = len(a), len(b)
    if n1 + n2 <= budget:
        return a, b
    swap = n1 > n2
    if swap:
        n1, n2 = n2, n1
    n2 = n1 if n1 > budget else max(n1, budget - n1)
    if n1 + n2 > budget:
        n1 = budget // 2
        n2 = n1 + budget % 2
    if swap:
        n1, n2 = n2, n1
    return a[:n1], b[:n2]


def encode_split(data: TaskData, tokenizer, max_length: int, pair_mode: str = "cross") -> EncodedSplit:
    """Tokenizes `data` for the encoder, counting the examples that truncation shortened."""
    if pair_mode not in PAIR_MODES:
        raise ValueError(f"pair_mode must be one of {PAIR_MODES}, got {pair_mode!r}")
    cls, sep = tokenizer.cls_token_id, tokenizer.sep_token_id

    def pieces(texts: Sequence[str]) -> list[list[int]]:
        return tokenizer(list(texts), add_special_tokens=False)["input_ids"]

    a_tokens = pieces(data.text_a)
    b_tokens = pieces(data.text_b) if data.text_b is not None else None
    input_ids, token_types, truncated = [], [], 0

    def single(tokens: list[int]) -> tuple[np.ndarray, np.ndarray]:
        ids = np.asarray([cls, *tokens[: max_length - 2], sep], dtype=np.int32)
        return ids, np.zeros_like(ids)

    def joint(a: list[int], b: list[int]) -> tuple[np.ndarray, np.ndarray]:
        ta, tb = _truncate_pair(a, b, max_length - 3)
        ids = np.asarray([cls, *ta, sep, *tb, sep], dtype=np.int32)
        return ids, np.concatenate([np.zeros(len(ta) + 2, np.int32), np.ones(len(tb) + 1, np.int32)])

    for i, a in enumerate(a_tokens):
        if b_tokens is None:
            seqs = [single(a)]
            truncated += len(a) > max_length - 2
        else:
            b = b_tokens[i]
            alone = [single(a), single(b)] if pair_mode != "cross" else []
            together = [joint(a, b)] if pair_mode != "siamese" else []
            seqs = alone + together
            cut_alone = bool(alone) and (len(a) > max_length - 2 or len(b) > max_length - 2)
            cut_together = bool(together) and len(a) + len(b) > max_length - 3
            truncated += cut_alone or cut_together
        input_ids.append(tuple(s[0] for s in seqs))
        token_types.append(tuple(s[1] for s in seqs))
    return EncodedSplit(data=data, input_ids=input_ids, token_type_ids=token_types, num_truncated=truncated)


def bucket_length(length: int, buckets: Sequence[int]) -> int:
    """The smallest bucket that holds `length` tokens."""
    for bucket in sorted(buckets):
        if length <= bucket:
            return bucket
    raise ValueError(f"sequence of {length} tokens is longer than the largest bucket {max(buckets)}")


def make_batch(
    split: EncodedSplit, indices: np.ndarray, length: int, pad_id: int, num_rows: int | None = None
) -> dict[str, np.ndarray]:
    """Pads the examples at `indices` to `length` tokens (and to `num_rows` rows).

    Returns input_ids / token_type_ids / attention_mask [B, S, L] int32, labels [B] and
    example_mask [B] float32 (0 for the padding rows of a last evaluation batch).
    """
    rows = len(indices) if num_rows is None else num_rows
    s = split.num_sequences
    ids = np.full((rows, s, length), pad_id, dtype=np.int32)
    types = np.zeros((rows, s, length), dtype=np.int32)
    mask = np.zeros((rows, s, length), dtype=np.int32)
    for row, index in enumerate(indices):
        for k in range(s):
            seq = split.input_ids[index][k]
            ids[row, k, : len(seq)] = seq
            types[row, k, : len(seq)] = split.token_type_ids[index][k]
            mask[row, k, : len(seq)] = 1
    labels = np.zeros((rows,), dtype=split.data.spec.label_dtype)
    if split.data.labels is not None:
        labels[: len(indices)] = split.data.labels[indices]
    example_mask = np.zeros((rows,), dtype=np.float32)
    example_mask[: len(indices)] = 1.0
    return {
        "input_ids": ids,
        "token_type_ids": types,
        "attention_mask": mask,
        "labels": labels,
        "example_mask": example_mask,
    }
