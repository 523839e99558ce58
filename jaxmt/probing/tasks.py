"""Probing tasks from plain text (SentEval-style, no parse trees needed): sentences and labels.

Sentences come from a WikiText-style corpus (` = Title = ` headings, one paragraph a line, blank
lines, a byte-order mark), split with a simple regex. Each task is balanced over its classes and
split into train / test by a seeded permutation, so every model probed on the same corpus and seed
sees exactly the same examples.

- bigram_shift: two adjacent words swapped in half the sentences (is the word order intact?)
- sentence_length: the number of words, in bins of about equal size
- word_content: which of N mid-frequency words the sentence holds (sentences holding exactly one)
- odd_man_out: one word replaced by a random word of similar corpus frequency in half the sentences
- coordination_inversion: the two clauses around a single ", and" / ", but" swapped in half the sentences
"""

from __future__ import annotations

import collections
import dataclasses
import re
from collections.abc import Callable, Sequence

import numpy as np

from jaxmt.data.errors import DataError
from jaxmt.paths import expand_path, open_text

HEADING = re.compile(r"^\s*=.*=\s*$")
SENTENCE_END = re.compile(r"(?<=[.!?])\s+(?=[A-Z\"'(])")
DETOKENIZE = ((" @-@ ", "-"), (" @,@ ", ","), (" @.@ ", "."), ("<unk>", "[UNK]"))
CONJUNCTIONS = (", and ", ", but ")
TASK_NAMES = ("bigram_shift", "sentence_length", "word_content", "odd_man_out", "coordination_inversion")


@dataclasses.dataclass
class ProbingTask:
    """One probing task's examples; `train` / `test` index into them."""

    name: str
    sentences: list[str]
    labels: np.ndarray  # [N] int32 in 0..num_classes-1
    class_names: tuple[str, ...]
    train: np.ndarray
    test: np.ndarray

    @property
    def num_classes(self) -> int:
        return len(self.class_names)


def read_corpus_sentences(path: str, min_words: int = 5, max_words: int = 40) -> list[str]:
    """Sentences of the corpus's paragraphs (headings skipped), with `min_words`..`max_words` words.

    WikiText's `<unk>` becomes `[UNK]`, which BERT tokenizers read as their own unknown token (not as
    the pieces of a made-up word), and its `@-@` style joins are undone.
    """
    path = expand_path(path, "--corpus")
    try:
        with open_text(path) as f:  # any epath path: gs://... too
            lines = f.read().splitlines()
    except FileNotFoundError:
        raise DataError(f"{path}: corpus file not found") from None
    except UnicodeDecodeError as err:
        raise DataError(f"{path}: not valid UTF-8 ({err.reason} at byte {err.start})") from None
    sentences, seen = [], set()
    for line in lines:
        line = line.strip()
        if not line or HEADING.match(line):
            continue
        for old, new in DETOKENIZE:
            line = line.replace(old, new)
        for sentence in SENTENCE_END.split(line):
            sentence = " ".join(sentence.split())
            n = len(sentence.split())
            if not min_words <= n <= max_words or sentence in seen:
                continue
            seen.add(sentence)
            sentences.append(sentence)
    if not sentences:
        raise DataError(f"{path}: no sentences of {min_words}..{max_words} words in the corpus")
    return sentences


def _balanced(name: str, sentences: list[str], labels: list[int], class_names: Sequence[str], max_examples: int,
              rng: np.random.Generator, test_fraction: float) -> ProbingTask:
    """The same number of examples of every class (at most `max_examples` in all), split stratified."""
    labels_arr = np.asarray(labels, np.int64)
    k = len(class_names)
    counts = np.bincount(labels_arr, minlength=k)
    per_class = min(int(counts.min()), max_examples // k)
    if per_class < 2:
        raise DataError(f"probing task {name}: too few sentences for a class ({dict(zip(class_names, counts))}); "
                        "use a larger corpus")
    keep, train, test = [], [], []
    n_test = max(1, int(round(per_class * test_fraction)))
    for c in range(k):
        chosen = rng.permutation(np.flatnonzero(labels_arr == c))[:per_class]
        test.extend(range(len(keep), len(keep) + n_test))
        train.extend(range(len(keep) + n_test, len(keep) + per_class))
        keep.extend(chosen.tolist())
    return ProbingTask(name, [sentences[i] for i in keep], labels_arr[keep].astype(np.int32), tuple(class_names),
                       train=rng.permutation(np.asarray(train)), test=np.asarray(test))


def _flip_half(sentences: list[str], rng: np.random.Generator,
               change: Callable[[list[str], np.random.Generator], list[str] | None]) -> tuple[list[str], list[int]]:
    """Half the sentences (a random half) changed by `change` (label 1), the rest as they are (label 0)."""
    out, labels = [], []
    for sentence in sentences:
        if rng.random() < 0.5:
            changed = change(sentence.split(), rng)
            if changed is None:
                continue
            out.append(" ".join(changed))
            labels.append(1)
        else:
            out.append(sentence)
            labels.append(0)
    return out, labels


def bigram_shift(sentences: list[str], rng: np.random.Generator, max_examples: int, test_fraction: float = 0.2
                 ) -> ProbingTask:
    def swap(words: list[str], rng: np.random.Generator) -> list[str] | None:
        spots = [i for i in range(len(words) - 1) if words[i].lower() != words[i + 1].lower()]
        if not spots:
            return None
        i = int(rng.choice(spots))
        return words[:i] + [words[i + 1], words[i]] + words[i + 2:]

    out, labels = _flip_half(sentences, rng, swap)
    return _balanced("bigram_shift", out, labels, ("original", "swapped"), max_examples, rng, test_fraction)


def sentence_length(sentences: list[str], rng: np.random.Generator, max_examples: int, num_bins: int = 6,
                    test_fraction: float = 0.2) -> ProbingTask:
    lengths = np.asarray([len(s.split()) for s in sentences])
    edges = np.unique(np.quantile(lengths, np.linspace(0, 1, num_bins + 1)[1:-1]).round().astype(int))
    labels = np.searchsorted(edges, lengths, side="right")
    bounds = [int(lengths.min()), *edges.tolist(), int(lengths.max()) + 1]
    names = [f"{lo}-{hi - 1}" for lo, hi in zip(bounds[:-1], bounds[1:])]
    return _balanced("sentence_length", sentences, labels.tolist(), names, max_examples, rng, test_fraction)


def word_frequencies(sentences: list[str]) -> collections.Counter:
    return collections.Counter(w.lower() for s in sentences for w in s.split())


def word_content(sentences: list[str], rng: np.random.Generator, max_examples: int, num_words: int = 10,
                 test_fraction: float = 0.2) -> ProbingTask:
    """Targets: the `num_words` alphabetic words (3+ letters) of middle frequency held by the most
    sentences; examples: the sentences holding exactly one target (SentEval picks from a mid-frequency
    band for the same reason: frequent words are in every sentence, rare ones in too few)."""
    counts = word_frequencies(sentences)
    ranked = [w for w, _ in counts.most_common() if w.isalpha() and len(w) >= 3]
    band = set(ranked[len(ranked) // 100: len(ranked) // 10] or ranked)  # skip the top 1 %, keep the next 9 %
    words_of = [{w.lower() for w in s.split()} for s in sentences]
    holders = collections.Counter(w for words in words_of for w in words & band)
    chosen: list[str] = []  # greedily, skipping words that mostly share sentences with one already chosen
    for word, count in holders.most_common():
        shared = sum(1 for words in words_of if word in words and words & set(chosen))
        if shared <= count // 5:
            chosen.append(word)
        if len(chosen) == num_words:
            break
    targets = sorted(chosen)
    index = {w: i for i, w in enumerate(targets)}
    out, labels = [], []
    for s, words in zip(sentences, words_of):
        hits = words & index.keys()
        if len(hits) == 1:
            out.append(s)
            labels.append(index[next(iter(hits))])
    return _balanced("word_content", out, labels, tuple(targets), max_examples, rng, test_fraction)


def odd_man_out(sentences: list[str], rng: np.random.Generator, max_examples: int, test_fraction: float = 0.2
                ) -> ProbingTask:
    """One alphabetic word swapped for another alphabetic word within a factor ~2 of its corpus frequency."""
    counts = word_frequencies(sentences)
    vocab = sorted((w for w in counts if w.isalpha()), key=lambda w: (counts[w], w))
    freq = np.asarray([counts[w] for w in vocab])

    def replace(words: list[str], rng: np.random.Generator) -> list[str] | None:
        spots = [i for i, w in enumerate(words) if w.isalpha() and i > 0]
        if not spots:
            return None
        i = int(rng.choice(spots))
        f = counts[words[i].lower()]
        lo, hi = np.searchsorted(freq, f / 2, side="left"), np.searchsorted(freq, f * 2, side="right")
        options = [w for w in vocab[lo:hi] if w != words[i].lower()]
        if not options:
            return None
        return words[:i] + [str(rng.choice(options))] + words[i + 1:]

    out, labels = _flip_half(sentences, rng, replace)
    return _balanced("odd_man_out", out, labels, ("original", "replaced"), max_examples, rng, test_fraction)


def coordination_inversion(sentences: list[str], rng: np.random.Generator, max_examples: int,
                           test_fraction: float = 0.2) -> ProbingTask:
    """Sentences with exactly one ", and" / ", but" splitting them into two clauses of 3+ words each."""
    usable = []
    for s in sentences:
        body, end = (s[:-2], s[-2:]) if s.endswith(" .") else (s, "")
        hits = [(c, body.find(c)) for c in CONJUNCTIONS if body.count(c) == 1]
        if len(hits) != 1 or sum(body.count(c) for c in CONJUNCTIONS) != 1:
            continue
        conj, at = hits[0]
        first, second = body[:at].rstrip(), body[at + len(conj):].strip()
        join = body[len(first):at] + conj  # keeps WikiText's space before the comma
        if len(first.split()) >= 3 and len(second.split()) >= 3:
            usable.append((first, join, second, end))
    out, labels = [], []
    for first, join, second, end in usable:
        if rng.random() < 0.5:
            out.append(f"{second[0].upper()}{second[1:]}{join}{first[0].lower()}{first[1:]}{end}")
            labels.append(1)
        else:
            out.append(f"{first}{join}{second}{end}")
            labels.append(0)
    return _balanced("coordination_inversion", out, labels, ("original", "inverted"), max_examples, rng,
                     test_fraction)


BUILDERS = {
    "bigram_shift": bigram_shift,
    "sentence_length": sentence_length,
    "word_content": word_content,
    "odd_man_out": odd_man_out,
    "coordination_inversion": coordination_inversion,
}


def build_tasks(sentences: list[str], names: Sequence[str] = TASK_NAMES, max_examples: int = 1000,
                seed: int = 0) -> dict[str, ProbingTask]:
    """The probing tasks `names`, each balanced, at most `max_examples` sentences, its own seeded stream."""
    unknown = sorted(set(names) - set(BUILDERS))
    if unknown:
        raise ValueError(f"unknown probing task(s) {unknown}; known: {sorted(BUILDERS)}")
    return {name: BUILDERS[name](sentences, np.random.default_rng([seed, i]), max_examples)
            for i, name in enumerate(TASK_NAMES) if name in names}
