"""SQuAD-format extractive QA: reading the JSON, windows over long contexts, span decoding, EM / F1.

Contexts longer than the encoder's window are cut into overlapping windows (the fast tokenizer's
`return_overflowing_tokens` with `stride` tokens of overlap); each window is one training row whose
gold span is the answer's tokens when the answer lies wholly inside it and [CLS] (position 0)
otherwise. The gold answer trained on is the first of a question's answers that some window holds;
a question with none is skipped from training and counted by reason (`SKIP_REASONS`). Predictions
take the best-scoring valid span over all windows of a question and map it back to the context's
characters through the tokenizer's offsets, so the answer text is an exact substring of the context
(never a detokenized approximation), widened to whole words (`whole_word_span`): a span that starts or
ends on a subword piece answers with the whole word ("Mojave", not "Mo").

`exact_match` and `f1` follow the official SQuAD evaluation scripts: lowercase, drop punctuation and
the articles a / an / the, collapse whitespace, then the maximum over gold answers. The two scripts
differ in one case, an F1 where prediction and gold both normalise to nothing: 0 in v1.1, 1 in v2.0.
"""

from __future__ import annotations

import collections
import dataclasses
import json
import re
import string
import unicodedata
from collections.abc import Sequence

import numpy as np
from etils import epath

from jaxmt.data.errors import DataError
from jaxmt.paths import expand_path

IGNORE = -1  # gold position of a window with no labels (evaluation rows)
# Why a question has no gold token span: its answer's characters are not covered by the context's tokens
# (the tokenizer dropped them), or the answer is longer than any window holds whole (no stride window has it).
ANSWER_NOT_IN_TOKENS, ANSWER_IN_NO_WINDOW = "answer_not_found_after_tokenization", "answer_in_no_window"
SKIP_REASONS = (ANSWER_NOT_IN_TOKENS, ANSWER_IN_NO_WINDOW)


@dataclasses.dataclass(frozen=True)
class Answer:
    text: str
    start: int  # character offset in the context


@dataclasses.dataclass(frozen=True)
class QAExample:
    """One question on one context; `answers` is empty for a SQuAD v2 unanswerable question."""

    id: str
    question: str
    context: str
    answers: tuple[Answer, ...]
    is_impossible: bool = False
    title: str = ""


# ---------------------------------------------------------------------------------------------- reading


def read_squad(path: str, allow_impossible: bool = False, max_examples: int | None = None) -> list[QAExample]:
    """The questions of a SQuAD v1.1 / v2.0 JSON file, checked: each error names file and JSON path.

    Every answer must be the context's text at its `answer_start`; v2 unanswerable questions
    (`is_impossible: true`) are refused unless `allow_impossible`.
    """
    path = expand_path(path, "SQuAD file")
    try:
        payload = json.loads(epath.Path(path).read_bytes().decode("utf-8-sig"))  # any epath path: gs://... too
    except FileNotFoundError:
        raise DataError(f"{path}: file not found") from None
    except UnicodeDecodeError as err:
        raise DataError(f"{path}: not valid UTF-8 ({err.reason} at byte {err.start})") from None
    except json.JSONDecodeError as err:
        raise DataError(f"{path}:{err.lineno}: not valid JSON ({err.msg}, column {err.colno})") from None

    def need(node: object, key: str, kind: type, where: str):
        if not isinstance(node, dict) or key not in node:
            raise DataError(f"{path}: {where}: missing field {key!r}")
        value = node[key]
        kinds = kind if isinstance(kind, tuple) else (kind,)
        if not isinstance(value, kinds) or isinstance(value, bool):
            wanted = " or ".join(k.__name__ for k in kinds)
            raise DataError(f"{path}: {where} (field {key!r}): expected {wanted}, got {type(value).__name__}")
        return value

    examples: list[QAExample] = []
    seen: set[str] = set()
    for a, article in enumerate(need(payload, "data", list, "top level")):
        title = article.get("title", "") if isinstance(article, dict) else ""
        for p, paragraph in enumerate(need(article, "paragraphs", list, f"data[{a}]")):
            where_p = f"data[{a}].paragraphs[{p}]"
            context = need(paragraph, "context", str, where_p)
            if not context.strip():
                raise DataError(f"{path}: {where_p} (field 'context'): empty context")
            for q, qa in enumerate(need(paragraph, "qas", list, where_p)):
                where = f"{where_p}.qas[{q}]"
                qid = str(need(qa, "id", (str, int), where))
                question = need(qa, "question", str, where).strip()
                if not question:
                    raise DataError(f"{path}: {where} (field 'question'): empty question")
                if qid in seen:
                    raise DataError(f"{path}: {where} (field 'id'): question id {qid!r} appears twice")
                seen.add(qid)
                impossible = bool(qa.get("is_impossible", False))
                if impossible and not allow_impossible:
                    raise DataError(f"{path}: {where}: an unanswerable (SQuAD v2) question; set "
                                    "config.data.version_2_with_negative=True to train and score them")
                answers = []
                for k, ans in enumerate(need(qa, "answers", list, where)):
                    where_a = f"{where}.answers[{k}]"
                    text = need(ans, "text", str, where_a)
                    start = need(ans, "answer_start", int, where_a)
                    if not text.strip():
                        raise DataError(f"{path}: {where_a} (field 'text'): empty answer")
                    if context[start:start + len(text)] != text:
                        raise DataError(f"{path}: {where_a} (field 'answer_start'): the context at {start} reads "
                                        f"{context[start:start + len(text)]!r}, not the answer {text!r}")
                    answers.append(Answer(text=text, start=start))
                if not answers and not impossible:
                    raise DataError(f"{path}: {where} (field 'answers'): no answer for an answerable question")
                examples.append(QAExample(id=qid, question=question, context=context, answers=tuple(answers),
                                          is_impossible=impossible, title=title))
                if max_examples is not None and len(examples) >= max_examples:
                    return examples
    if not examples:
        raise DataError(f"{path}: no questions")
    return examples


# ---------------------------------------------------------------------------------------------- windows


@dataclasses.dataclass
class QAFeatures:
    """Windows of the tokenized examples: one row per window, all padded to `max_length`."""

    input_ids: np.ndarray  # [W, L] int32
    token_type_ids: np.ndarray  # [W, L]
    attention_mask: np.ndarray  # [W, L]
    context_mask: np.ndarray  # [W, L] 1 on context tokens (where an answer may start or end)
    start_positions: np.ndarray  # [W] gold start token (0 = [CLS]: no answer in this window; IGNORE: unlabeled)
    end_positions: np.ndarray  # [W]
    example_index: np.ndarray  # [W] which example each window belongs to
    offsets: list[list[tuple[int, int] | None]]  # per window, per token: its context characters (None off-context)
    # reason -> ids of the questions no window gives a gold span: left out of labeled features; kept in
    # unlabeled ones (the official metric scores every question), where they are an upper bound's loss
    skipped: dict[str, tuple[str, ...]] = dataclasses.field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.example_index)

    def skipped_counts(self) -> dict[str, int]:
        """Questions without a gold span, by reason (every reason present, zeros included)."""
        return {reason: len(self.skipped.get(reason, ())) for reason in SKIP_REASONS}

    def take(self, rows: np.ndarray) -> dict[str, np.ndarray]:
        """The model's batch for windows `rows`."""
        return {k: getattr(self, k)[rows] for k in ("input_ids", "token_type_ids", "attention_mask", "context_mask",
                                                    "start_positions", "end_positions")}


_OUTSIDE, _NOT_IN_TOKENS = "outside", "not_in_tokens"


def _answer_tokens(starts: np.ndarray, ends: np.ndarray, positions: np.ndarray, context: str,
                   answer: Answer) -> tuple[int, int] | str:
    """The first and last window position of `answer`'s tokens, given the window's context tokens
    (their character `starts`, `ends` and window `positions`); `_OUTSIDE` when the answer is not wholly in the
    window; `_NOT_IN_TOKENS` when it is, but the tokens over it do not hold its text (characters dropped)."""
    a_start, a_end = answer.start, answer.start + len(answer.text)
    if not len(starts) or starts[0] > a_start or ends[-1] < a_end:
        return _OUTSIDE
    inside = np.flatnonzero((ends > a_start) & (starts < a_end))
    if not len(inside):
        return _NOT_IN_TOKENS
    covered = context[starts[inside[0]]:ends[inside[-1]]]
    if " ".join(answer.text.split()) not in " ".join(covered.split()):
        return _NOT_IN_TOKENS
    return int(positions[inside[0]]), int(positions[inside[-1]])


def make_features(examples: Sequence[QAExample], tokenizer, max_length: int, stride: int,
                  max_query_length: int = 64, labeled: bool = True) -> QAFeatures:
    """Question + context windows of `max_length` tokens overlapping by `stride` tokens.

    Questions are cut to `max_query_length` tokens first, so every window has room for context.
    Each question's gold answer is its first answer that some window holds whole; with `labeled`, a
    window's gold span is that answer's tokens, or [CLS] when it is not wholly inside the window (and for
    unanswerable questions), and questions with no such answer are left out (`QAFeatures.skipped`).
    """
    if stride >= max_length:
        raise ValueError(f"stride ({stride}) must be smaller than max_length ({max_length})")
    questions, longest = [], 0
    for ex in examples:
        ids = tokenizer(ex.question, add_special_tokens=False)["input_ids"]
        if len(ids) > max_query_length:  # only the question's first tokens: decoded text is fine, no offsets needed
            ids = ids[:max_query_length]
            questions.append(tokenizer.decode(ids))
        else:
            questions.append(ex.question)
        longest = max(longest, len(ids))
    if max_length - longest - 3 <= stride:
        raise ValueError(f"max_length {max_length} leaves at most stride={stride} context tokens after a question of "
                         f"{longest} tokens: raise max_length or lower stride / max_query_length")
    enc = tokenizer(questions, [ex.context for ex in examples], truncation="only_second", max_length=max_length,
                    stride=stride, return_overflowing_tokens=True, return_offsets_mapping=True,
                    padding="max_length")
    n = len(enc["input_ids"])
    context_mask = np.zeros((n, max_length), np.int32)
    example_index = np.asarray(enc["overflow_to_sample_mapping"], np.int32)
    offsets: list[list[tuple[int, int] | None]] = []
    # spans[w][k]: answer k of window w's question in window w (a token span, _OUTSIDE or _NOT_IN_TOKENS)
    spans: list[list[tuple[int, int] | str]] = []
    for w in range(n):
        window_offsets = [tuple(o) if s == 1 else None for o, s in zip(enc["offset_mapping"][w], enc.sequence_ids(w))]
        offsets.append(window_offsets)
        context_mask[w] = [o is not None for o in window_offsets]
        positions = np.flatnonzero(context_mask[w])
        starts, ends = (np.asarray([window_offsets[i][j] for i in positions]) for j in (0, 1))
        ex = examples[example_index[w]]
        spans.append([_answer_tokens(starts, ends, positions, ex.context, a) for a in ex.answers])
    windows = collections.defaultdict(list)
    for w, i in enumerate(example_index):
        windows[int(i)].append(w)
    gold: dict[int, int] = {}  # example -> the answer trained on
    skipped: dict[str, list[str]] = {reason: [] for reason in SKIP_REASONS}
    for i, ex in enumerate(examples):
        held = [k for k in range(len(ex.answers)) if any(isinstance(spans[w][k], tuple) for w in windows[i])]
        if held:
            gold[i] = held[0]
        elif ex.answers:
            lost = any(_NOT_IN_TOKENS in spans[w] for w in windows[i])
            skipped[ANSWER_NOT_IN_TOKENS if lost else ANSWER_IN_NO_WINDOW].append(ex.id)
    starts = np.full(n, IGNORE, np.int32)
    ends = np.full(n, IGNORE, np.int32)
    if labeled:
        for w, i in enumerate(example_index):
            span = spans[w][gold[i]] if i in gold else _OUTSIDE
            starts[w], ends[w] = span if isinstance(span, tuple) else (0, 0)
    token_type_ids = enc.get("token_type_ids") or [[0] * max_length for _ in range(n)]
    keep = np.arange(n)
    if labeled:  # a skipped question's windows would all teach "no answer here": left out
        dropped = {i for i, ex in enumerate(examples) if ex.answers and i not in gold}
        keep = np.asarray([w for w, i in enumerate(example_index) if int(i) not in dropped], np.int64)
    return QAFeatures(
        input_ids=np.asarray(enc["input_ids"], np.int32)[keep],
        token_type_ids=np.asarray(token_type_ids, np.int32)[keep],
        attention_mask=np.asarray(enc["attention_mask"], np.int32)[keep],
        context_mask=context_mask[keep],
        start_positions=starts[keep],
        end_positions=ends[keep],
        example_index=example_index[keep],
        offsets=[offsets[w] for w in keep],
        skipped={reason: tuple(ids) for reason, ids in skipped.items()},
    )


# ---------------------------------------------------------------------------------------------- decoding


@dataclasses.dataclass(frozen=True)
class SpanPrediction:
    text: str
    score: float
    window: int  # -1: the null answer (SQuAD v2)
    start: int  # token positions in that window
    end: int


def best_span(start_logits: np.ndarray, end_logits: np.ndarray, offsets: Sequence[tuple[int, int] | None],
              n_best: int = 20, max_answer_length: int = 30) -> tuple[int, int, float] | None:
    """The highest start+end logit span of one window: start and end on context tokens, end >= start,
    at most `max_answer_length` tokens; candidates are the top `n_best` starts and ends. None: no valid span."""
    best = None
    for s in np.argsort(start_logits)[::-1][:n_best]:
        if offsets[s] is None:
            continue
        for e in np.argsort(end_logits)[::-1][:n_best]:
            if offsets[e] is None or e < s or e - s + 1 > max_answer_length:
                continue
            score = float(start_logits[s] + end_logits[e])
            if best is None or score > best[2]:
                best = (int(s), int(e), score)
    return best


def _in_word(char: str) -> bool:
    """Whether `char` belongs to a word that a span may not cut: not whitespace, not punctuation (ASCII
    symbols count as punctuation) and not a CJK ideograph (a word of its own). BERT's basic tokenizer splits
    text into words the same way before WordPiece cuts them into subword pieces."""
    if char.isspace() or unicodedata.category(char).startswith("P") or "CJK" in unicodedata.name(char, ""):
        return False
    return char.isalnum() or not char.isascii()


def whole_word_span(context: str, start: int, end: int) -> tuple[int, int]:
    """The characters [start, end) widened to the whole words that hold the first and last of them.

    A word is a run of `_in_word` characters, so a span is never widened over whitespace or punctuation:
    "Smith" of "Smith's" stays "Smith", as the official answers are annotated. Of the 10,570 questions of the
    SQuAD v1.1 dev set (the shared part1 + part2), widening the first gold answer to whitespace-separated words
    would make 196 of them miss every gold answer (e.g. "Gold" of "Gold's", "Riverside" of
    "Bernardino-Riverside"); widening to these words, 26 (gold answers that are cut words themselves:
    "h International ...", "gold" of "golden").
    """
    while 0 < start < end and _in_word(context[start - 1]) and _in_word(context[start]):
        start -= 1
    while start < end < len(context) and _in_word(context[end - 1]) and _in_word(context[end]):
        end += 1
    return start, end


def decode_predictions(examples: Sequence[QAExample], features: QAFeatures, start_logits: np.ndarray,
                       end_logits: np.ndarray, n_best: int = 20, max_answer_length: int = 30,
                       version_2: bool = False, null_threshold: float = 0.0) -> dict[str, SpanPrediction]:
    """Question id -> the best span over all its windows, as the context's characters of its whole words.

    With `version_2`, a question answers "" when its best null score ([CLS] start + end, the
    lowest over its windows) beats the best span by more than `null_threshold`.
    """
    windows = collections.defaultdict(list)
    for w, i in enumerate(features.example_index):
        windows[int(i)].append(w)
    out = {}
    for i, ex in enumerate(examples):
        best, null = SpanPrediction("", -np.inf, -1, 0, 0), np.inf
        for w in windows[i]:
            null = min(null, float(start_logits[w, 0] + end_logits[w, 0]))
            span = best_span(start_logits[w], end_logits[w], features.offsets[w], n_best, max_answer_length)
            if span is not None and span[2] > best.score:
                s, e, score = span
                first, last = whole_word_span(ex.context, features.offsets[w][s][0], features.offsets[w][e][1])
                text = ex.context[first:last]
                best = SpanPrediction(text, score, w, s, e)
        if version_2 and (best.window < 0 or null - best.score > null_threshold):
            best = SpanPrediction("", null, -1, 0, 0)
        out[ex.id] = best
    return out


# ---------------------------------------------------------------------------------------------- metrics


def normalize_answer(text: str) -> str:
    """The official SQuAD normalisation: lowercase, no punctuation, no articles, single spaces."""
    text = text.lower()
    text = "".join(ch for ch in text if ch not in set(string.punctuation))
    text = re.sub(r"\b(a|an|the)\b", " ", text)
    return " ".join(text.split())


def exact_match(prediction: str, gold: str) -> float:
    return float(normalize_answer(prediction) == normalize_answer(gold))


def f1(prediction: str, gold: str, version_2: bool = False) -> float:
    """Token-level F1 of the normalised answers (bag of words, counts clipped). When both normalise to
    nothing: 0 as the v1.1 script, 1 with `version_2` (the v2.0 script, where "" is the unanswerable gold)."""
    pred_tokens, gold_tokens = normalize_answer(prediction).split(), normalize_answer(gold).split()
    if version_2 and (not pred_tokens or not gold_tokens):
        return float(pred_tokens == gold_tokens)
    common = collections.Counter(pred_tokens) & collections.Counter(gold_tokens)
    same = sum(common.values())
    if same == 0:
        return 0.0
    precision, recall = same / len(pred_tokens), same / len(gold_tokens)
    return 2 * precision * recall / (precision + recall)


def max_over_gold(metric, prediction: str, golds: Sequence[str]) -> float:
    """A metric against the best-matching gold answer; an unanswerable question's gold is ""."""
    return max(metric(prediction, g) for g in (golds or [""]))


def squad_scores(examples: Sequence[QAExample], predictions: dict[str, str],
                 version_2: bool = False) -> dict[str, float]:
    """Exact match and F1 in percent over `examples` (a missing prediction scores 0), as the official
    v1.1 script (v2.0 with `version_2`)."""
    em = f1_sum = 0.0
    for ex in examples:
        if ex.id not in predictions:
            continue
        golds = [a.text for a in ex.answers]
        em += max_over_gold(exact_match, predictions[ex.id], golds)
        f1_sum += max_over_gold(lambda p, g: f1(p, g, version_2), predictions[ex.id], golds)
    n = max(len(examples), 1)
    return {"exact_match": 100.0 * em / n, "f1": 100.0 * f1_sum / n}
