"""An embedded demo data set, generated deterministically, so jaxmt runs with no data at all.

The sentences are templated English with a signal a small model picks up in a few hundred
steps: sentiment adjectives graded 0..4 (sst), the same request worded two ways (para) and
scenes that share 0..4 of their slots (sts). It is NOT real data: every log line and result
that comes from it says "DEMO DATA".
"""

from __future__ import annotations

import numpy as np

from jaxmt.data.errors import DataError
from jaxmt.data.schema import TaskData, TaskSpec

DEMO_BANNER = "DEMO DATA (generated, not a benchmark)"
SPLIT_SIZES = {"train": 2400, "dev": 400, "test": 200}

_SENTIMENT = (
    ("terrible", "awful", "dreadful", "unbearable"),
    ("dull", "weak", "disappointing", "tiresome"),
    ("ordinary", "average", "passable", "uneven"),
    ("good", "nice", "enjoyable", "likable"),
    ("wonderful", "brilliant", "superb", "magnificent"),
)
_FILM_NOUNS = ("movie", "film", "story", "script", "cast", "soundtrack", "ending", "director")
_FILM_TAILS = ("", " from start to finish", " in every scene", " , honestly", " for most of its length")
_FILM_TEMPLATES = (
    "the {noun} was {adj}{tail} .",
    "i found the {noun} {adj}{tail} .",
    "{adj} , that is the word for this {noun}{tail} .",
    "all in all a {adj} {noun}{tail} .",
)

_ACTIONS = (  # (verb, synonym) pairs for paraphrased requests
    ("learn", "study"), ("fix", "repair"), ("buy", "purchase"), ("clean", "wash"),
    ("improve", "get better at"), ("start", "begin"), ("sell", "get rid of"), ("cook", "prepare"),
)
_OBJECTS = (
    "python", "a bike", "my car", "a guitar", "the piano", "an old laptop", "a garden", "fresh bread",
    "a used phone", "french", "the kitchen", "a small business",
)
_QUESTION_TEMPLATES = (
    "how do i {verb} {obj} ?",
    "what is the best way to {verb} {obj} ?",
    "how can someone {verb} {obj} quickly ?",
    "what should i know before i {verb} {obj} ?",
)

_SUBJECTS = ("a man", "a woman", "a child", "a dog", "an old man", "a girl", "a chef", "a cat")
_VERBS = ("is playing", "is eating", "is holding", "is painting", "is watching", "is carrying")
_THINGS = ("a guitar", "an apple", "a ball", "a book", "a flag", "a box", "a kite", "a bowl")
_PLACES = ("in a park", "on a beach", "in the kitchen", "on a stage", "in the snow", "by a river")


def _choice(rng: np.random.Generator, items: tuple) -> str:
    return items[int(rng.integers(len(items)))]


def _sst_example(rng: np.random.Generator) -> tuple[str, None, int]:
    label = int(rng.integers(5))
    sentence = _choice(rng, _FILM_TEMPLATES).format(
        noun=_choice(rng, _FILM_NOUNS), adj=_choice(rng, _SENTIMENT[label]), tail=_choice(rng, _FILM_TAILS)
    )
    return sentence, None, label


def _para_example(rng: np.random.Generator) -> tuple[str, str, int]:
    action = _ACTIONS[int(rng.integers(len(_ACTIONS)))]
    obj = _choice(rng, _OBJECTS)
    first, second = rng.choice(len(_QUESTION_TEMPLATES), size=2, replace=False)
    question = _QUESTION_TEMPLATES[first].format(verb=action[0], obj=obj)
    label = int(rng.integers(2))
    if label:  # the same request, reworded and with the verb's synonym
        other = _QUESTION_TEMPLATES[second].format(verb=action[1], obj=obj)
    elif rng.random() < 0.5:  # a different object: shares most words but asks something else
        other_obj = _choice(rng, tuple(o for o in _OBJECTS if o != obj))
        other = _QUESTION_TEMPLATES[second].format(verb=_choice(rng, action), obj=other_obj)
    else:  # a different action on the same object
        other_action = _ACTIONS[(_ACTIONS.index(action) + 1 + int(rng.integers(len(_ACTIONS) - 1))) % len(_ACTIONS)]
        other = _QUESTION_TEMPLATES[second].format(verb=_choice(rng, other_action), obj=obj)
    return question, other, label


def _sts_example(rng: np.random.Generator) -> tuple[str, str, float]:
    slots = (_SUBJECTS, _VERBS, _THINGS, _PLACES)
    first = [_choice(rng, s) for s in slots]
    shared = int(rng.integers(len(slots) + 1))
    keep = set(rng.choice(len(slots), size=shared, replace=False).tolist())
    second = [
        first[k] if k in keep else _choice(rng, tuple(x for x in slots[k] if x != first[k]))
        for k in range(len(slots))
    ]
    score = 5.0 * shared / len(slots) + float(rng.normal(0.0, 0.15))
    return " ".join(first) + " .", " ".join(second) + " .", float(np.clip(score, 0.0, 5.0))


_GENERATORS = {"sst": _sst_example, "para": _para_example, "sts": _sts_example}


def demo_split(spec: TaskSpec, split: str, max_examples: int | None = None) -> TaskData:
    """The demo rows of one task and split; the same on every machine and every call."""
    if spec.name not in _GENERATORS:
        raise DataError(f"no demo data for task {spec.name!r}: demo data exists for {sorted(_GENERATORS)}")
    if split not in SPLIT_SIZES:
        raise DataError(f"demo data has splits {sorted(SPLIT_SIZES)}, not {split!r}")
    seed = [7, list(_GENERATORS).index(spec.name), list(SPLIT_SIZES).index(split)]
    rng = np.random.default_rng(seed)
    size = SPLIT_SIZES[split] if max_examples is None else min(max_examples, SPLIT_SIZES[split])
    rows = [_GENERATORS[spec.name](rng) for _ in range(size)]
    return TaskData(
        spec=spec,
        split=split,
        source=f"demo:{spec.name}[{split}]",
        ids=[f"demo-{spec.name}-{split}-{i}" for i in range(size)],
        text_a=[r[0] for r in rows],
        text_b=[r[1] for r in rows] if spec.is_pair else None,
        labels=None if split == "test" else np.asarray([r[2] for r in rows], dtype=spec.label_dtype),
        is_demo=True,
    )
