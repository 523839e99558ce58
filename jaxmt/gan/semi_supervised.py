"""Semi-supervised training data: a fixed labeled subset of the training set, the rest unlabeled.

The labeled subset is class-stratified and a pure function of (labels, fraction, seed): each
class keeps the first round(fraction * n_c) examples of its own seeded permutation, so the same
seed always gives the same subset, and a smaller fraction's subset lies inside a larger one's.
Batches are a pure function of the step (like `jaxmt.data.sampling`), each with a fixed number of
labeled rows drawn from the (small) labeled pool, which oversamples it relative to its share.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence

import numpy as np
from ml_collections import ConfigDict

from jaxmt.data.tokenization import EncodedSplit, bucket_length, make_batch
from jaxmt.errors import ConfigError


def stratified_labeled_subset(labels: np.ndarray, fraction: float, seed: int) -> np.ndarray:
    """Sorted indices of the labeled examples: per class round(fraction * n_c), at least one per present class."""
    if not 0.0 < fraction <= 1.0:
        raise ConfigError(f"gan.labeled_fraction = {fraction}: must be in (0, 1]")
    labels = np.asarray(labels)
    chosen = []
    for c in np.unique(labels):
        members = np.flatnonzero(labels == c)
        order = np.random.default_rng([seed, 3, int(c)]).permutation(len(members))
        keep = max(1, int(round(fraction * len(members))))
        chosen.append(members[order[:keep]])
    return np.sort(np.concatenate(chosen))


def _cycled(pool_size: int, n: int, step: int, seed: int, stream: int) -> np.ndarray:
    """Positions [n] into a pool for `step`: consecutive slices of seeded per-epoch permutations (wrapping)."""
    positions = step * n + np.arange(n)
    out = np.empty(n, dtype=np.int64)
    for epoch in np.unique(positions // pool_size):
        sel = positions // pool_size == epoch
        order = np.random.default_rng([seed, 4, stream, int(epoch)]).permutation(pool_size)
        out[sel] = order[positions[sel] % pool_size]
    return out


@dataclasses.dataclass(frozen=True)
class SemiSupervisedSampler:
    """Step -> (example indices [B], label mask [B]): `num_labeled` rows from the labeled pool, the rest unlabeled.

    With no unlabeled examples (fraction 1.0) every row is labeled.
    """

    labeled: np.ndarray  # indices into the training split
    unlabeled: np.ndarray
    batch_size: int
    num_labeled: int
    seed: int

    @classmethod
    def build(cls, num_examples: int, labeled: np.ndarray, batch_size: int, min_labeled_per_batch: int,
              seed: int) -> SemiSupervisedSampler:
        """Labeled rows a batch: the pool's natural share of the batch, raised to `min_labeled_per_batch`."""
        if not 1 <= min_labeled_per_batch <= batch_size:
            raise ConfigError(f"gan.min_labeled_per_batch = {min_labeled_per_batch}: must be in [1, batch size "
                              f"{batch_size}]")
        labeled = np.asarray(labeled, dtype=np.int64)
        unlabeled = np.setdiff1d(np.arange(num_examples), labeled)
        if len(unlabeled) == 0:
            num_labeled = batch_size
        else:
            share = int(round(batch_size * len(labeled) / num_examples))
            num_labeled = min(batch_size, max(min_labeled_per_batch, share))
        return cls(labeled=labeled, unlabeled=unlabeled, batch_size=batch_size, num_labeled=num_labeled, seed=seed)

    @property
    def labeled_per_batch(self) -> float:
        return float(self.num_labeled)

    def indices(self, step: int) -> tuple[np.ndarray, np.ndarray]:
        lab = self.labeled[_cycled(len(self.labeled), self.num_labeled, step, self.seed, 0)]
        n_unlab = self.batch_size - self.num_labeled
        unlab = (self.unlabeled[_cycled(len(self.unlabeled), n_unlab, step, self.seed, 1)] if n_unlab
                 else np.zeros(0, np.int64))
        mask = np.concatenate([np.ones(len(lab), np.float32), np.zeros(len(unlab), np.float32)])
        return np.concatenate([lab, unlab]), mask


def log2_copies(num_labeled: int, num_examples: int) -> int:
    """How often the reference GAN-BERT puts each labeled row in its training data (ganbert.py and
    ganbert-pytorch's `apply_balance`): int(log2(int(1 / rate))) for a labeled rate L / N, at least 1."""
    return max(1, int(math.log2(int(num_examples / num_labeled))))


@dataclasses.dataclass(frozen=True)
class PooledSampler:
    """Step -> (example indices [B], label mask [B]) from one pool, as the reference GAN-BERT batches: every
    unlabeled row once and every labeled row `copies` times, walked in seeded per-epoch permutations, so a
    batch's labeled share varies around copies * L / (copies * L + U) (5.7% at 1% labels, 33% at 20%)."""

    pool: np.ndarray  # indices into the training split, each labeled one `copies` times
    is_labeled: np.ndarray  # [len(pool)] bool
    batch_size: int
    copies: int
    seed: int

    @classmethod
    def build(cls, num_examples: int, labeled: np.ndarray, batch_size: int, seed: int) -> PooledSampler:
        labeled = np.asarray(labeled, dtype=np.int64)
        unlabeled = np.setdiff1d(np.arange(num_examples), labeled)
        copies = log2_copies(len(labeled), num_examples) if len(unlabeled) else 1
        pool = np.concatenate([np.tile(labeled, copies), unlabeled])
        is_labeled = np.arange(len(pool)) < copies * len(labeled)
        return cls(pool=pool, is_labeled=is_labeled, batch_size=batch_size, copies=copies, seed=seed)

    @property
    def labeled_per_batch(self) -> float:
        """The expected labeled rows a batch."""
        return self.batch_size * float(np.mean(self.is_labeled))

    def indices(self, step: int) -> tuple[np.ndarray, np.ndarray]:
        positions = _cycled(len(self.pool), self.batch_size, step, self.seed, 2)
        return self.pool[positions], self.is_labeled[positions].astype(np.float32)


def build_sampler(config: ConfigDict, num_examples: int, labeled: np.ndarray,
                  batch_size: int) -> SemiSupervisedSampler | PooledSampler:
    """`gan.labeled_copies`: 'none', a fixed `gan.min_labeled_per_batch` labeled rows a batch (at least);
    'log2', the reference's pool of copied labeled rows and unlabeled rows (`PooledSampler`)."""
    if config.gan.labeled_copies == "log2":
        return PooledSampler.build(num_examples, labeled, batch_size, config.seed)
    return SemiSupervisedSampler.build(num_examples, labeled, batch_size, config.gan.min_labeled_per_batch,
                                       config.seed)


def semi_supervised_batch(split: EncodedSplit, indices: np.ndarray, label_mask: np.ndarray,
                          buckets: Sequence[int], pad_id: int) -> dict[str, np.ndarray]:
    """`make_batch` plus `label_mask` [B]; unlabeled rows' labels are zeroed so no step can read them."""
    length = bucket_length(int(split.lengths[indices].max()), buckets)
    batch = make_batch(split, indices, length, pad_id)
    batch["labels"] = np.where(label_mask > 0, batch["labels"], 0).astype(batch["labels"].dtype)
    batch["label_mask"] = label_mask.astype(np.float32)
    return batch


def subset_split(split: EncodedSplit, indices: np.ndarray) -> EncodedSplit:
    """The encoded examples at `indices` (the baseline trains on the labeled subset alone)."""
    idx = [int(i) for i in indices]
    return EncodedSplit(data=split.data.subset(idx), input_ids=[split.input_ids[i] for i in idx],
                        token_type_ids=[split.token_type_ids[i] for i in idx], num_truncated=0)
