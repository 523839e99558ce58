"""Pre-training examples on the host: BERT's sentence pairs, bigram shifts and masked tokens.

Pairs are built from the tokenized corpus once per epoch (a fresh split of the documents into
segments each epoch, as BERT's `dupe_factor` does); the bigram shift and the masking are drawn for
each step's batch. Every draw comes from a numpy generator seeded by (seed, epoch) or (seed, step),
so a batch is a pure function of the config and the step: a resumed run sees the same data.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np

from jaxmt.data.errors import DataError
from jaxmt.pretraining.corpus import TokenizedCorpus

IS_NEXT, RANDOM_NEXT = 0, 1  # NSP labels: B follows A in the document | B is from another document
SWAP_UNITS = ("word", "token")


@dataclasses.dataclass(frozen=True)
class Vocabulary:
    """The token ids the example builders need from a tokenizer."""

    cls_id: int
    sep_id: int
    mask_id: int
    pad_id: int
    size: int
    special_ids: tuple[int, ...]  # never masked, swapped or drawn as a random replacement
    continuation: np.ndarray  # bool [size]: the token continues a word (a '##' WordPiece)

    @classmethod
    def from_tokenizer(cls, tokenizer: Any) -> Vocabulary:
        size = len(tokenizer)
        continuation = np.zeros(size, bool)
        for token, index in tokenizer.get_vocab().items():
            if token.startswith("##") and index < size:
                continuation[index] = True
        return cls(cls_id=tokenizer.cls_token_id, sep_id=tokenizer.sep_token_id, mask_id=tokenizer.mask_token_id,
                   pad_id=tokenizer.pad_token_id, size=size, special_ids=tuple(sorted(tokenizer.all_special_ids)),
                   continuation=continuation)

    def random_candidates(self) -> np.ndarray:
        """Ids a masked token may be replaced with (the 10% 'random token' case)."""
        candidates = np.ones(self.size, bool)
        candidates[list(self.special_ids)] = False
        return np.flatnonzero(candidates).astype(np.int32)


@dataclasses.dataclass
class Pairs:
    """Sentence-pair examples `[CLS] A [SEP] B [SEP]`, padded to one length."""

    input_ids: np.ndarray  # int32 [N, L]
    token_type_ids: np.ndarray  # int32 [N, L]: 0 for [CLS] A [SEP], 1 for B [SEP]
    attention_mask: np.ndarray  # int32 [N, L]: 1 for tokens, 0 for padding
    next_sentence_label: np.ndarray  # int32 [N]: IS_NEXT or RANDOM_NEXT

    def __len__(self) -> int:
        return len(self.next_sentence_label)

    def take(self, indices: np.ndarray) -> Pairs:
        return Pairs(*(getattr(self, f.name)[indices] for f in dataclasses.fields(self)))


def _truncate_pair(a: list[int], b: list[int], max_tokens: int, rng: np.random.Generator) -> None:
    """BERT's truncation: drop tokens from the longer segment, at its front or back at random."""
    while len(a) + len(b) > max_tokens:
        longer = a if len(a) > len(b) else b
        if rng.random() < 0.5:
            del longer[0]
        else:
            longer.pop()


def _document_pairs(corpus: TokenizedCorpus, document: int, max_tokens: int, short_seq_prob: float,
                    rng: np.random.Generator) -> list[tuple[list[int], list[int], int]]:
    """BERT's `create_instances_from_document`: fill chunks of sentences up to a target length, split each
    into A and B at a sentence boundary; half the time B is replaced by text from another document."""
    sentences = corpus.sentences(document)
    target = max_tokens if rng.random() >= short_seq_prob else int(rng.integers(2, max_tokens + 1))
    pairs, chunk, chunk_length, i = [], [], 0, 0
    while i < len(sentences):
        chunk.append(sentences[i])
        chunk_length += len(sentences[i])
        if i == len(sentences) - 1 or chunk_length >= target:
            random_next = rng.random() < 0.5
            if len(chunk) >= 2:
                a_end = int(rng.integers(1, len(chunk)))
                a = [t for s in chunk[:a_end] for t in s]
            elif random_next or len(chunk[0]) >= 2:  # one sentence: A is it (or its first part, if B follows)
                a_end = 1
                a = list(chunk[0]) if random_next else list(chunk[0][:int(rng.integers(1, len(chunk[0])))])
            else:
                chunk, chunk_length, i = [], 0, i + 1
                continue
            if random_next:
                b = _random_segment(corpus, document, max(target - len(a), 1), rng)
                i -= len(chunk) - a_end  # the unused sentences of the chunk start the next one
            elif len(chunk) >= 2:
                b = [t for s in chunk[a_end:] for t in s]
            else:
                b = list(chunk[0][len(a):])
            _truncate_pair(a, b, max_tokens, rng)
            if a and b:
                pairs.append((a, b, RANDOM_NEXT if random_next else IS_NEXT))
            chunk, chunk_length = [], 0
            target = max_tokens if rng.random() >= short_seq_prob else int(rng.integers(2, max_tokens + 1))
        i += 1
    return pairs


def _random_segment(corpus: TokenizedCorpus, document: int, length: int, rng: np.random.Generator) -> list[int]:
    """Consecutive sentences of another document (never `document`), from a random start, up to `length`."""
    other = int(rng.integers(corpus.num_documents - 1))
    other += other >= document
    sentences = corpus.sentences(other)
    start = int(rng.integers(len(sentences)))
    segment: list[int] = []
    for sentence in sentences[start:]:
        segment.extend(sentence)
        if len(segment) >= length:
            break
    return segment


def build_pairs(corpus: TokenizedCorpus, vocab: Vocabulary, max_length: int, short_seq_prob: float,
                rng: np.random.Generator) -> Pairs:
    """All sentence pairs of one pass over the corpus, shuffled, each at most `max_length` tokens."""
    if corpus.num_documents < 2:
        raise DataError(f"{corpus.source}: {corpus.num_documents} document(s); random-next pairs need at least 2")
    raw = [p for d in range(corpus.num_documents) for p in _document_pairs(corpus, d, max_length - 3,
                                                                            short_seq_prob, rng)]
    if not raw:
        raise DataError(f"{corpus.source}: no sentence pair could be built (every document too short)")
    n = len(raw)
    input_ids = np.full((n, max_length), vocab.pad_id, np.int32)
    token_type_ids = np.zeros((n, max_length), np.int32)
    attention_mask = np.zeros((n, max_length), np.int32)
    order = rng.permutation(n)
    for row, index in enumerate(order):
        a, b, _ = raw[index]
        ids = [vocab.cls_id, *a, vocab.sep_id, *b, vocab.sep_id]
        input_ids[row, :len(ids)] = ids
        token_type_ids[row, len(a) + 2:len(ids)] = 1
        attention_mask[row, :len(ids)] = 1
    labels = np.asarray([raw[i][2] for i in order], np.int32)
    return Pairs(input_ids, token_type_ids, attention_mask, labels)


class PairStream:
    """The endless stream of training pairs: epoch e is `build_pairs` with a generator seeded by (seed, e).

    Every epoch lasts the same number of steps, as many whole batches as epoch 0 holds (an epoch's pair count
    varies a little with its random segmenting: a longer one's last pairs go unused, a shorter one wraps
    around to its first), so step `step`'s batch is read from epoch `step // steps_per_epoch` alone: a run
    resumed at any step builds that epoch and epoch 0, never the ones between. A batch depends only on the
    seed and the step.
    """

    def __init__(self, corpus: TokenizedCorpus, vocab: Vocabulary, max_length: int, short_seq_prob: float,
                 seed: int) -> None:
        self.corpus, self.vocab, self.max_length, self.short_seq_prob, self.seed = (
            corpus, vocab, max_length, short_seq_prob, seed)
        self._epochs: dict[int, Pairs] = {}

    def epoch(self, index: int) -> Pairs:
        if index not in self._epochs:
            rng = np.random.default_rng([self.seed, index, 1])
            self._epochs[index] = build_pairs(self.corpus, self.vocab, self.max_length, self.short_seq_prob, rng)
            for old in [e for e in self._epochs if 0 < e < index - 1]:  # keep epoch 0 and the last two
                del self._epochs[old]
        return self._epochs[index]

    def steps_per_epoch(self, size: int) -> int:
        """Steps of `size` pairs each epoch lasts: epoch 0's whole batches (at least one)."""
        return max(1, len(self.epoch(0)) // size)

    def batch(self, step: int, size: int, rows: slice = slice(None)) -> Pairs:
        """Pairs `rows` (default all) of step `step`'s batch of `size`."""
        epoch, offset = divmod(step, self.steps_per_epoch(size))
        pairs = self.epoch(epoch)
        return pairs.take((offset * size + np.arange(size)[rows]) % len(pairs))


def _segments(token_type_row: np.ndarray, maskable_row: np.ndarray) -> list[tuple[int, int]]:
    """[start, end) of segment A and segment B (their ordinary tokens) in one example."""
    spans = []
    for segment in (0, 1):
        positions = np.flatnonzero(maskable_row & (token_type_row == segment))
        if len(positions):
            spans.append((int(positions[0]), int(positions[-1]) + 1))
    return spans


def _units(ids: np.ndarray, start: int, end: int, continuation: np.ndarray, unit: str) -> list[tuple[int, int]]:
    """The [start, end) spans of the words (or single tokens) of ids[start:end]."""
    if unit == "token":
        return [(p, p + 1) for p in range(start, end)]
    starts = [p for p in range(start, end) if p == start or not continuation[ids[p]]]
    return list(zip(starts, starts[1:] + [end]))


def shift_bigrams(input_ids: np.ndarray, token_type_ids: np.ndarray, maskable: np.ndarray, vocab: Vocabulary,
                  rng: np.random.Generator, unit: str = "word") -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """In a random half of the examples, swaps two adjacent words (or tokens) of one segment.

    Returns the new input ids, the labels (1 = swapped) and `moved` (bool [N, L]: the positions of the two
    swapped units, so masking can leave them out). A swap is drawn uniformly among the adjacent pairs of
    either segment whose contents differ (swapping equal ones would change nothing); an example with no
    such pair keeps label 0. Special tokens and padding are never moved.
    """
    if unit not in SWAP_UNITS:
        raise ValueError(f"bigram shift unit must be one of {SWAP_UNITS}, got {unit!r}")
    input_ids = input_ids.copy()
    labels = np.zeros(len(input_ids), np.int32)
    moved = np.zeros(input_ids.shape, bool)
    wanted = rng.random(len(input_ids)) < 0.5
    for row in np.flatnonzero(wanted):
        ids = input_ids[row]
        candidates = []
        for start, end in _segments(token_type_ids[row], maskable[row]):
            words = _units(ids, start, end, vocab.continuation, unit)
            candidates += [(w1, w2) for w1, w2 in zip(words, words[1:])
                           if maskable[row, w1[0]:w2[1]].all()  # no [UNK] or other special token moves
                           and not np.array_equal(ids[w1[0]:w1[1]], ids[w2[0]:w2[1]])]
        if not candidates:
            continue
        (s1, e1), (s2, e2) = candidates[int(rng.integers(len(candidates)))]
        ids[s1:e2] = np.concatenate([ids[s2:e2], ids[s1:e1]])
        labels[row] = 1
        moved[row, s1:e2] = True
    return input_ids, labels, moved


def mask_tokens(input_ids: np.ndarray, maskable: np.ndarray, vocab: Vocabulary, rng: np.random.Generator,
                rate: float = 0.15, max_predictions: int = 20) -> dict[str, np.ndarray]:
    """BERT's masked-LM corruption: `rate` of each example's ordinary tokens (at least one, at most
    `max_predictions`) are chosen; of those 80% become [MASK], 10% a random token, 10% stay.

    Returns the corrupted `input_ids` and the prediction slots: `mlm_positions`, `mlm_ids` (the original
    tokens) and `mlm_weights` (1 for a real slot, 0 for padding slots) [N, max_predictions].
    """
    n, length = input_ids.shape
    counts = np.minimum(max_predictions, np.maximum(1, np.rint(maskable.sum(1) * rate))).astype(np.int64)
    counts = np.where(maskable.any(1), counts, 0)
    scores = np.where(maskable, rng.random((n, length)), np.inf)
    order = np.argsort(scores, axis=1, kind="stable")[:, :max_predictions]
    if order.shape[1] < max_predictions:
        order = np.pad(order, ((0, 0), (0, max_predictions - order.shape[1])))
    weights = np.arange(max_predictions)[None, :] < counts[:, None]
    positions = np.where(weights, order, 0).astype(np.int32)
    rows = np.arange(n)[:, None]
    originals = np.where(weights, input_ids[rows, positions], 0).astype(np.int32)
    draw = rng.random((n, max_predictions))
    candidates = vocab.random_candidates()
    random_ids = candidates[rng.integers(len(candidates), size=(n, max_predictions))]
    replacement = np.where(draw < 0.8, vocab.mask_id, np.where(draw < 0.9, random_ids, originals))
    corrupted = input_ids.copy()
    corrupted[rows.repeat(max_predictions, 1)[weights], positions[weights]] = replacement[weights]
    return {"input_ids": corrupted, "mlm_positions": positions, "mlm_ids": originals,
            "mlm_weights": weights.astype(np.float32)}


def ordinary_tokens(input_ids: np.ndarray, attention_mask: np.ndarray, vocab: Vocabulary) -> np.ndarray:
    """bool [N, L]: the tokens a task may mask or move (not [CLS], [SEP], padding or other specials)."""
    return (attention_mask > 0) & ~np.isin(input_ids, vocab.special_ids)


def make_batch(pairs: Pairs, vocab: Vocabulary, rng: np.random.Generator, mask_rate: float, max_predictions: int,
               bigram_shift: bool, swap_unit: str = "word") -> dict[str, np.ndarray]:
    """The model's inputs and every task's targets for a batch of pairs: bigram shift (if on), then masking.

    Masking never picks a swapped token: MLM's targets are then the original text's tokens, so MLM does not
    learn to reproduce the shuffled order that the bigram-shift task asks the model to detect.
    """
    maskable = ordinary_tokens(pairs.input_ids, pairs.attention_mask, vocab)
    input_ids, bigram_labels = pairs.input_ids, np.zeros(len(pairs), np.int32)
    moved = np.zeros(input_ids.shape, bool)
    if bigram_shift:
        input_ids, bigram_labels, moved = shift_bigrams(input_ids, pairs.token_type_ids, maskable, vocab, rng,
                                                        swap_unit)
    masked = mask_tokens(input_ids, maskable & ~moved, vocab, rng, mask_rate, max_predictions)
    return {**masked, "token_type_ids": pairs.token_type_ids, "attention_mask": pairs.attention_mask,
            "nsp_labels": pairs.next_sentence_label, "bigram_labels": bigram_labels,
            "bigram_moved": moved.astype(np.int32), "example_weights": np.ones(len(pairs), np.float32)}
