"""Downstream evaluation: SICK entailment through the multitask trainer, and extractive QA (SQuAD format)."""

from __future__ import annotations

import collections
import json
import os
import re
import string

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import minilm_installed, read_params, sigterm_after_logging

from jaxmt.data.errors import DataError
from jaxmt.data.schema import CLASSIFICATION, REGRESSION, TaskSpec
from jaxmt.downstream import squad
from jaxmt.downstream.qa_model import NEG_INF, init_span_head, span_logits, span_loss
from jaxmt.downstream.sick import NLI_LABELS, hash_split, read_sick_split

NLI = TaskSpec("nli", CLASSIFICATION, is_pair=True, num_classes=3)
SICK_HEADER = "pair_ID\tsentence_A\tsentence_B\trelatedness_score\tentailment_judgment\n"
SUBJECTS = ["a man", "a woman", "the dog", "a child", "the cat", "a girl", "the boy", "a player"]
VERBS = ["is running", "is eating", "is sleeping", "is playing", "is jumping", "is singing"]
JUDGMENTS = {"ENTAILMENT": "{s} {v}", "CONTRADICTION": "{s} is not {w}", "NEUTRAL": "{s} {v} outside"}


def _sick_rows(n: int) -> list[tuple[str, str, str, float, str]]:
    """Pairs whose label a model can read off the hypothesis ('not' / 'outside' / neither)."""
    rows = []
    for i in range(n):
        s, v = SUBJECTS[i % len(SUBJECTS)], VERBS[(i // len(SUBJECTS)) % len(VERBS)]
        judgment = list(JUDGMENTS)[i % 3]
        hypothesis = JUDGMENTS[judgment].format(s=s, v=v, w=v.split()[-1])
        rows.append((str(1000 + i), f"{s} {v}", hypothesis, 1.0 + (i % 9) / 2, judgment))
    return rows


def write_sick(path, rows, header: str = SICK_HEADER) -> str:
    with open(path, "w") as f:
        f.write(header)
        for row in rows:
            f.write("\t".join(str(c) for c in row) + "\n")
    return str(path)


def sick_words() -> list[str]:
    words = set()
    for row in _sick_rows(48):
        words.update(row[1].split() + row[2].split())
    return sorted(words)


# ---------------------------------------------------------------------------------------------- SICK


def test_sick_split_is_deterministic_disjoint_and_covers_every_row(tmp_path):
    rows = _sick_rows(300)
    path = write_sick(tmp_path / "SICK.txt", rows)
    splits = {s: read_sick_split(NLI, path, s) for s in ("train", "dev", "test")}
    ids = [set(d.ids) for d in splits.values()]
    assert set.union(*ids) == {r[0] for r in rows} and sum(map(len, ids)) == len(rows)
    assert 0.7 < len(splits["train"]) / len(rows) < 0.9  # about 80 / 10 / 10
    # The split depends on the pair id alone: reversing the file keeps every row where it was.
    reversed_path = write_sick(tmp_path / "reversed.txt", rows[::-1])
    assert set(read_sick_split(NLI, reversed_path, "dev").ids) == ids[1]
    assert all(hash_split(r[0], (0.8, 0.1, 0.1)) == split for split, d in splits.items() for r in rows
               if r[0] in d.ids)


def test_sick_labels_map_to_the_tfds_nli_order_and_relatedness_reads_scores(tmp_path):
    rows = _sick_rows(60)
    path = write_sick(tmp_path / "SICK.txt", rows)
    data = read_sick_split(NLI, path, "train", fractions=(1.0, 0.0, 0.0))
    by_id = {r[0]: r for r in rows}
    assert NLI_LABELS == ("entailment", "neutral", "contradiction")
    for pair_id, label, a, b in zip(data.ids, data.labels, data.text_a, data.text_b):
        assert NLI_LABELS[label] == by_id[pair_id][4].lower()
        assert (a, b) == by_id[pair_id][1:3]
    assert data.labels.dtype == np.int32 and collections.Counter(data.labels.tolist()) == {0: 20, 1: 20, 2: 20}
    related = TaskSpec("relatedness", REGRESSION, is_pair=True, label_min=1.0, label_max=5.0)
    scores = read_sick_split(related, path, "train", fractions=(1.0, 0.0, 0.0))
    np.testing.assert_allclose(scores.labels, [by_id[i][3] for i in scores.ids])


def test_sick_bad_label_names_file_line_and_field(tmp_path):
    rows = _sick_rows(10)
    rows[4] = rows[4][:4] + ("MAYBE",)
    path = write_sick(tmp_path / "SICK.txt", rows)
    with pytest.raises(DataError, match=re.escape(f"{path}:6 (field 'entailment_judgment')") + ".*'MAYBE'"):
        read_sick_split(NLI, path, "train")
    skipped = read_sick_split(NLI, path, "train", fractions=(1.0, 0.0, 0.0), on_bad_row="skip")
    assert len(skipped) == 9 and skipped.skipped[0].location == f"{path}:6"


@pytest.mark.parametrize("split", ["train", "dev"])
def test_sick_without_its_label_column_is_an_error_through_the_config(tmp_path, split):
    from configs import entailment
    from jaxmt.data.sources import load_split, task_specs

    rows = _sick_rows(30)
    path = write_sick(tmp_path / "SICK.txt", [r[:4] for r in rows], header=SICK_HEADER.rsplit("\t", 1)[0] + "\n")
    config = entailment.get_config()
    config.data.sick_file = path
    with pytest.raises(DataError, match=r"SICK\.txt:1: header has no column 'entailment_judgment'"):
        load_split(config, task_specs(config)["nli"], split)


def test_sick_structural_errors(tmp_path):
    rows = _sick_rows(6)
    bad_columns = write_sick(tmp_path / "cols.txt", rows[:2] + [rows[2][:3]] + rows[3:])
    with pytest.raises(DataError, match=r"cols\.txt:4: 3 columns where the header has 5"):
        read_sick_split(NLI, bad_columns, "train")
    repeated = write_sick(tmp_path / "dup.txt", rows + [rows[0]])
    with pytest.raises(DataError, match=r"dup\.txt:8 \(field 'pair_ID'\).*repeats the one on line 2"):
        read_sick_split(NLI, repeated, "train")
    no_label = write_sick(tmp_path / "header.txt", [r[:4] for r in rows], header=SICK_HEADER.rsplit("\t", 1)[0] + "\n")
    with pytest.raises(DataError, match=r"header\.txt:1: header has no column 'entailment_judgment'"):
        read_sick_split(NLI, no_label, "train")
    with pytest.raises(DataError, match="num_classes=2"):
        read_sick_split(TaskSpec("nli", CLASSIFICATION, True, num_classes=2), write_sick(tmp_path / "ok.txt", rows),
                        "train")


def test_real_sick_file_splits_all_pairs(tmp_path):
    from conftest import SHARED_DATA

    path = SHARED_DATA / "sick" / "SICK.txt"
    if not path.exists():
        pytest.skip(f"SICK not found at {path}")
    sizes = {s: len(read_sick_split(NLI, str(path), s)) for s in ("train", "dev", "test")}
    assert sum(sizes.values()) == 9927 and 7700 < sizes["train"] < 8200


def test_entailment_config_and_tfds_nli_mapping():
    from configs import entailment
    from jaxmt.data.tfds_source import _resolve_fields

    config = entailment.get_config()
    assert config.data.source == "sick" and tuple(config.task_names) == ("nli",)
    assert (config.tasks.nli.kind, config.tasks.nli.pair, config.tasks.nli.num_classes) == ("classification", True, 3)
    mnli = entailment.get_config("mnli")
    assert mnli.data.source == "tfds" and mnli.tasks.nli.tfds.name == "glue/mnli"
    assert mnli.tasks.nli.tfds.splits.dev == "validation_matched"
    with pytest.raises(ValueError, match="unknown data"):
        entailment.get_config("squad")
    tfds = pytest.importorskip("tensorflow_datasets")
    features = {"premise": tfds.features.Text(), "hypothesis": tfds.features.Text(),
                "label": tfds.features.ClassLabel(names=["entailment", "neutral", "contradiction"])}
    for name in ("snli", "glue/mnli", "multi_nli"):
        fields = _resolve_fields(name, NLI, features, None)
        assert (fields["text_a"], fields["text_b"], fields["label"]) == ("premise", "hypothesis", "label")


def test_tiny_entailment_run_lowers_the_loss(tmp_path):
    from configs import entailment
    from jaxmt.models.pretrained import write_random_bert
    from jaxmt.training.trainer import train_and_evaluate

    model_dir = write_random_bert(tmp_path / "bert", sick_words(), seed=0)
    config = entailment.get_config()
    config.model.name = str(model_dir)
    config.data.sick_file = write_sick(tmp_path / "SICK.txt", _sick_rows(48))
    config.data.sick_split = (0.5, 0.5, 0.0)
    config.data.buckets = (16,)
    config.data.max_length = 16
    config.tasks.nli.batch_size = 16
    config.data.max_train_examples = 16
    config.optim.learning_rate = 5e-3
    config.optim.warmup_fraction = 0.0
    config.num_steps = 40
    config.log_every = 1
    config.eval_every = 0
    config.checkpoint_every = 40
    config.eval_batch_size = 32
    results = train_and_evaluate(config, str(tmp_path / "run"))
    losses = [json.loads(line)["train/loss/nli"] for line in open(tmp_path / "run" / "metrics.jsonl")
              if "train/loss/nli" in line]
    assert len(losses) == 40
    assert np.mean(losses[-3:]) < 0.7 * np.mean(losses[:3]), losses
    assert set(results["dev"]) == {"nli", "mean"}


# ---------------------------------------------------------------------------------------------- SQuAD metrics


@pytest.mark.parametrize("prediction, gold, em", [
    ("The Eiffel Tower", "eiffel tower", 1.0),  # case and the article "the"
    ("an  apple, a pear!", "apple pear", 1.0),  # articles, punctuation, repeated whitespace
    ("theatre", "atre", 0.0),  # "the" inside a word is not an article
    ("Denver Broncos.", "Denver-Broncos", 0.0),  # punctuation is deleted, not replaced by a space
])
def test_exact_match_normalisation(prediction, gold, em):
    assert squad.exact_match(prediction, gold) == em


def test_normalize_answer_matches_the_official_script():
    assert squad.normalize_answer("  The  Cat's  hat, (an) A ") == "cats hat"
    assert squad.normalize_answer("A\tquick\nfox") == "quick fox"


def test_f1_by_hand():
    # pred {denver, broncos, team} vs gold {the, denver, broncos}: 2 shared, P = 2/3, R = 2/2 after "the" is dropped.
    assert squad.f1("Denver Broncos team", "the Denver Broncos") == pytest.approx(2 * (2 / 3) * 1 / (2 / 3 + 1))
    # Repeated tokens count at most as often as in the gold: pred {a:..} -> "b b c" vs "b c d": common b, c = 2;
    # P = 2/3, R = 2/3, F1 = 2/3.
    assert squad.f1("b b c", "b c d") == pytest.approx(2 / 3)
    assert squad.f1("north", "south") == 0.0
    assert squad.f1("the", "a") == 0.0  # both normalise to nothing: 0 in the v1.1 script ...
    assert squad.f1("the", "a", version_2=True) == 1.0  # ... and 1 in v2.0's, where "" is the unanswerable gold
    assert squad.f1("the", "Paris") == 0.0 and squad.f1("the", "Paris", version_2=True) == 0.0


def test_scores_take_the_best_gold_answer_and_average_in_percent():
    examples = [
        squad.QAExample("q1", "?", "ctx", (squad.Answer("Denver Broncos", 0), squad.Answer("Broncos", 7))),
        squad.QAExample("q2", "?", "ctx", (squad.Answer("Santa Clara, California", 0),)),
        squad.QAExample("q3", "?", "ctx", (squad.Answer("1966", 0),)),
    ]
    predictions = {"q1": "broncos", "q2": "Santa Clara"}  # q3 missing: scores 0
    scores = squad.squad_scores(examples, predictions)
    # q1: EM 1 via the second gold; q2: EM 0, F1 = 2 * 1 * (2/3) / (1 + 2/3) = 0.8
    assert scores["exact_match"] == pytest.approx(100 / 3)
    assert scores["f1"] == pytest.approx(100 * (1 + 0.8) / 3)


def official_v11_scores(dataset: dict, predictions: dict[str, str]) -> dict[str, float]:
    """The official SQuAD v1.1 evaluate script (evaluate-v1.1.py), its logic kept as published."""
    def normalize_answer(s):
        def remove_articles(text):
            return re.sub(r"\b(a|an|the)\b", " ", text)

        def white_space_fix(text):
            return " ".join(text.split())

        def remove_punc(text):
            exclude = set(string.punctuation)
            return "".join(ch for ch in text if ch not in exclude)

        return white_space_fix(remove_articles(remove_punc(s.lower())))

    def f1_score(prediction, ground_truth):
        prediction_tokens = normalize_answer(prediction).split()
        ground_truth_tokens = normalize_answer(ground_truth).split()
        common = collections.Counter(prediction_tokens) & collections.Counter(ground_truth_tokens)
        num_same = sum(common.values())
        if num_same == 0:
            return 0
        precision = 1.0 * num_same / len(prediction_tokens)
        recall = 1.0 * num_same / len(ground_truth_tokens)
        return (2 * precision * recall) / (precision + recall)

    def exact_match_score(prediction, ground_truth):
        return normalize_answer(prediction) == normalize_answer(ground_truth)

    f1 = exact_match = total = 0
    for article in dataset["data"]:
        for paragraph in article["paragraphs"]:
            for qa in paragraph["qas"]:
                total += 1
                if qa["id"] not in predictions:
                    continue
                ground_truths = [x["text"] for x in qa["answers"]]
                prediction = predictions[qa["id"]]
                exact_match += max(exact_match_score(prediction, gt) for gt in ground_truths)
                f1 += max(f1_score(prediction, gt) for gt in ground_truths)
    return {"exact_match": 100.0 * exact_match / total, "f1": 100.0 * f1 / total}


def perturbed_answers(examples: list[squad.QAExample]) -> dict[str, str]:
    """Predictions that exercise every part of the metric: exact, re-cased with articles and punctuation,
    partial, another question's answer, empty, and missing."""
    out = {}
    for i, ex in enumerate(examples):
        gold = ex.answers[-1].text
        kind = i % 6
        if kind == 0:
            out[ex.id] = gold
        elif kind == 1:
            out[ex.id] = f"The {gold.upper()}, a."
        elif kind == 2:
            out[ex.id] = " ".join(gold.split()[:1] + ["extra", "words"])
        elif kind == 3:
            out[ex.id] = examples[i - 1].answers[0].text
        elif kind == 4:
            out[ex.id] = ""
    return out


def test_scores_equal_the_official_v11_script_on_real_dev_questions(shared_squad_dev, tmp_path):
    dataset = json.loads(shared_squad_dev.read_text(encoding="utf-8"))
    examples = squad.read_squad(str(shared_squad_dev))
    assert sum(len(e.answers) > 1 for e in examples) > 0.9 * len(examples)  # the official several-gold layout
    predictions = perturbed_answers(examples)
    ours, official = squad.squad_scores(examples, predictions), official_v11_scores(dataset, predictions)
    assert ours == pytest.approx(official, abs=1e-9) and 0 < ours["exact_match"] < ours["f1"] < 100
    # A gold answer that normalises to nothing (three in the official dev set are "."): EM 1, F1 0 in v1.1.
    edge = {"data": [{"paragraphs": [{"context": "It ends .", "qas": [
        {"id": "dot", "question": "?", "answers": [{"text": ".", "answer_start": 8}]}]}]}]}
    (tmp_path / "dot.json").write_text(json.dumps(edge))
    dot_examples = squad.read_squad(str(tmp_path / "dot.json"))
    for prediction in (".", "the", "It"):
        assert squad.squad_scores(dot_examples, {"dot": prediction}) == official_v11_scores(edge, {"dot": prediction})


# ---------------------------------------------------------------------------------------------- SQuAD data


ARTICLE_WORDS = ["the", "river", "flows", "past", "old", "mills", "and", "green", "fields", "while", "farmers",
                 "watch", "the", "water", "rise", "each", "spring"]


def squad_items() -> dict:
    """A tiny SQuAD v1.1 file: one long context (several windows) and two short ones."""
    filler = " ".join(ARTICLE_WORDS * 3)
    long_context = f"{filler} The bridge was built in 1879 by Thomas Telford . {filler}"
    return {"version": "1.1", "data": [
        {"title": "Bridge", "paragraphs": [{"context": long_context, "qas": [
            {"id": "b1", "question": "When was the bridge built?",
             "answers": [{"text": "1879", "answer_start": long_context.index("1879")}]},
            {"id": "b2", "question": "Who built the bridge?",
             "answers": [{"text": "Thomas Telford", "answer_start": long_context.index("Thomas")},
                         {"text": "Telford", "answer_start": long_context.index("Telford")}]},
        ]}]},
        {"title": "Colours", "paragraphs": [
            {"context": "Anna painted the door red and the fence blue.", "qas": [
                {"id": "c1", "question": "What colour is the door?", "answers": [{"text": "red", "answer_start": 22}]},
                {"id": "c2", "question": "What colour is the fence?",
                 "answers": [{"text": "blue", "answer_start": 40}]},
            ]},
            {"context": "Tom keeps a green bike and a yellow car in Oslo.", "qas": [
                {"id": "t1", "question": "Where does Tom keep the car?",
                 "answers": [{"text": "Oslo", "answer_start": 43}]},
                {"id": "t2", "question": "What colour is the bike?",
                 "answers": [{"text": "green", "answer_start": 12}]},
            ]},
        ]},
    ]}


def squad_words() -> list[str]:
    words = set()
    for article in squad_items()["data"]:
        for paragraph in article["paragraphs"]:
            words.update(re.findall(r"\w+|[^\w\s]", paragraph["context"].lower()))
            for qa in paragraph["qas"]:
                words.update(re.findall(r"\w+|[^\w\s]", qa["question"].lower()))
    return sorted(words)


@pytest.fixture(scope="module")
def qa_bert(tmp_path_factory):
    from jaxmt.models.pretrained import load_pretrained, write_random_bert

    return load_pretrained(str(write_random_bert(tmp_path_factory.mktemp("qa_bert"), squad_words(), seed=1)))


@pytest.fixture
def squad_file(tmp_path):
    path = tmp_path / "train.json"
    path.write_text(json.dumps(squad_items()))
    return str(path)


def test_read_squad_and_its_errors(tmp_path, squad_file):
    examples = squad.read_squad(squad_file)
    assert [e.id for e in examples] == ["b1", "b2", "c1", "c2", "t1", "t2"]
    assert [a.text for a in examples[1].answers] == ["Thomas Telford", "Telford"]
    items = squad_items()
    items["data"][1]["paragraphs"][0]["qas"][1]["answers"][0]["answer_start"] = 39
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps(items))
    with pytest.raises(DataError, match=re.escape("data[1].paragraphs[0].qas[1].answers[0] (field 'answer_start')")):
        squad.read_squad(str(bad))
    items = squad_items()
    items["data"][0]["paragraphs"][0]["qas"][0].update(is_impossible=True, answers=[])
    bad.write_text(json.dumps(items))
    with pytest.raises(DataError, match="unanswerable"):
        squad.read_squad(str(bad))
    assert squad.read_squad(str(bad), allow_impossible=True)[0].is_impossible
    bad.write_text('{"data": [')
    with pytest.raises(DataError, match="bad.json:1: not valid JSON"):
        squad.read_squad(str(bad))


def test_windows_map_answers_to_token_spans_and_back_to_the_exact_text(qa_bert, squad_file):
    examples = squad.read_squad(squad_file)
    feats = squad.make_features(examples, qa_bert.tokenizer, max_length=32, stride=8)
    chex.assert_shape([feats.input_ids, feats.attention_mask, feats.context_mask], (len(feats), 32))
    windows = collections.Counter(feats.example_index.tolist())
    assert windows[0] >= 3 and windows[2] == 1  # the long context needs several windows, the short ones one
    for i, ex in enumerate(examples):
        rows = np.flatnonzero(feats.example_index == i)
        with_answer = [w for w in rows if feats.start_positions[w] > 0]
        assert with_answer, f"no window of {ex.id} holds its answer"
        for w in rows:
            s, e = feats.start_positions[w], feats.end_positions[w]
            if s == 0:
                assert e == 0
                continue
            assert feats.context_mask[w, s] and feats.context_mask[w, e] and s <= e
            text = ex.context[feats.offsets[w][s][0]:feats.offsets[w][e][1]]
            assert text == ex.answers[0].text
        # Consecutive windows of one question overlap by `stride` context tokens.
        if len(rows) > 1:
            first = [o for o in feats.offsets[rows[0]] if o is not None]
            second = [o for o in feats.offsets[rows[1]] if o is not None]
            assert first[-8:] == second[:8]
    # Gold spans decode back to the gold text when the logits point at them.
    start = np.where(np.arange(32)[None] == feats.start_positions[:, None], 10.0, 0.0)
    end = np.where(np.arange(32)[None] == feats.end_positions[:, None], 10.0, 0.0)
    decoded = squad.decode_predictions(examples, feats, start, end)
    assert {k: v.text for k, v in decoded.items()} == {e.id: e.answers[0].text for e in examples}


def oracle_answers(examples, feats, max_length: int) -> dict[str, str]:
    """Decoded answers when the logits point at the gold spans."""
    start = np.where(np.arange(max_length)[None] == feats.start_positions[:, None], 10.0, 0.0)
    end = np.where(np.arange(max_length)[None] == feats.end_positions[:, None], 10.0, 0.0)
    decoded = squad.decode_predictions(examples, feats, start, end, max_answer_length=max_length)
    return {qid: span.text for qid, span in decoded.items()}


def test_questions_without_a_gold_span_are_counted_by_reason_and_left_out_of_training(qa_bert, tmp_path):
    filler = " ".join(ARTICLE_WORDS * 3)
    context = f"{filler} The bridge \u200b was built in 1879 ."
    too_long = " ".join(ARTICLE_WORDS * 2)  # 34 tokens: more than a 32-token window's context holds
    qas = [
        {"id": "lost", "question": "What is hidden?",  # a zero-width space: the tokenizer drops it
         "answers": [{"text": "\u200b", "answer_start": context.index("\u200b")}]},
        {"id": "long", "question": "What flows?", "answers": [{"text": too_long, "answer_start": 0}]},
        {"id": "second", "question": "When was the bridge built?",  # first gold unusable, the second trained on
         "answers": [{"text": too_long, "answer_start": 0}, {"text": "1879", "answer_start": context.index("1879")}]},
    ]
    path = tmp_path / "skips.json"
    path.write_text(json.dumps({"data": [{"paragraphs": [{"context": context, "qas": qas}]}]}))
    examples = squad.read_squad(str(path))
    feats = squad.make_features(examples, qa_bert.tokenizer, max_length=32, stride=8)
    assert feats.skipped == {squad.ANSWER_NOT_IN_TOKENS: ("lost",), squad.ANSWER_IN_NO_WINDOW: ("long",)}
    assert feats.skipped_counts() == {squad.ANSWER_NOT_IN_TOKENS: 1, squad.ANSWER_IN_NO_WINDOW: 1}
    assert set(feats.example_index.tolist()) == {2} and len(feats) >= 3  # only "second"'s windows are trained on
    assert (feats.start_positions > 0).sum() >= 1
    assert oracle_answers(examples, feats, 32)["second"] == "1879"
    dev = squad.make_features(examples, qa_bert.tokenizer, max_length=32, stride=8, labeled=False)
    assert set(dev.example_index.tolist()) == {0, 1, 2} and dev.skipped == feats.skipped  # scored, still counted
    assert (dev.start_positions == squad.IGNORE).all()


@pytest.mark.skipif(not minilm_installed(), reason="MiniLM not installed (its tokenizer reads the real text)")
def test_real_dev_questions_with_several_gold_answers_and_sliding_windows(shared_squad_dev):
    from jaxmt.pretraining.trainer import load_tokenizer

    tokenizer = load_tokenizer("minilm")
    examples = squad.read_squad(str(shared_squad_dev))[400:440]  # Doctor Who: long contexts and long titles
    assert all(len(e.answers) >= 2 for e in examples)
    feats = squad.make_features(examples, tokenizer, max_length=48, stride=8, max_query_length=24)
    skipped = {qid for ids in feats.skipped.values() for qid in ids}
    assert feats.skipped_counts() == {squad.ANSWER_NOT_IN_TOKENS: 0, squad.ANSWER_IN_NO_WINDOW: 1}
    kept = [e for e in examples if e.id not in skipped]
    assert set(feats.example_index.tolist()) == {i for i, e in enumerate(examples) if e.id not in skipped}
    assert len(feats) > 2 * len(kept)  # contexts run over several windows
    answers = oracle_answers(examples, feats, 48)
    assert all(answers[e.id] in [a.text for a in e.answers] for e in kept)
    assert squad.squad_scores(kept, answers) == {"exact_match": 100.0, "f1": 100.0}
    # The skipped question's answer (a 12-word title) fits a wider window, and then nothing is skipped.
    assert squad.make_features(examples, tokenizer, max_length=128, stride=32).skipped_counts()[
        squad.ANSWER_IN_NO_WINDOW] == 0


def test_span_decoding_picks_the_best_valid_span():
    offsets = [None, None, None, (0, 3), (4, 9), (10, 12), (13, 20), None]  # [CLS] q [SEP] ctx x4 [SEP]
    start = np.array([9.0, 8.0, 0.0, 1.0, 3.0, 0.5, 0.0, 7.0])  # best starts are off-context: skipped
    end = np.array([9.0, 0.0, 0.0, 4.0, 1.0, 2.0, 2.5, 9.0])  # position 3 ends before start 4: invalid
    assert squad.best_span(start, end, offsets) == (4, 6, 5.5)  # 3 + 2.5 beats 3 + 2 and 1 + 4
    assert squad.best_span(start, end, offsets, max_answer_length=2) == (4, 5, 5.0)
    assert squad.best_span(start, end, [None] * 8) is None
    context = "Ann saw Bobby at the river"
    ex = squad.QAExample("x", "?", context, (squad.Answer("Bobby", 8),))
    feats = squad.QAFeatures(*(np.zeros((2, 8), np.int32),) * 4, np.zeros(2, np.int32), np.zeros(2, np.int32),
                             np.zeros(2, np.int32), [offsets, [None, None, None, (0, 3), (4, 7), (8, 13), None, None]])
    starts = np.stack([start, np.array([0, 0, 0, 0, 0, 6.0, 0, 0])])
    ends = np.stack([end, np.array([0, 0, 0, 0, 0, 6.0, 0, 0])])
    best = squad.decode_predictions([ex], feats, starts, ends)["x"]
    assert (best.window, best.text, best.score) == (1, "Bobby", 12.0)  # the best window wins
    null = squad.decode_predictions([ex], feats, starts, ends, version_2=True, null_threshold=-20.0)["x"]
    assert null.text == ""


@pytest.mark.parametrize("context, span, expected", [
    ("the Mojave Desert", "Mo", "Mojave"),  # a span ending on a subword piece answers the whole word
    ("The plant makes 11 megawatts.", "11 mega", "11 megawatts"),  # not the trailing full stop
    ("It was jave-like", "jave", "jave"),  # a hyphen ends a word: nothing to widen
    ("Steve Smith's bat", "Smith", "Smith"),  # nor across an apostrophe (the gold answers are cut so)
    ("in (1990) and", "99", "1990"),  # widened inside the brackets, not over them
    ("rose by 20–25% a year", "0–2", "20–25"),  # an en dash is punctuation; % an ASCII symbol
    ("Köln und Zürich", "Zür", "Zürich"),  # letters beyond ASCII are word letters
    ("北京大学", "京", "京"),  # a CJK ideograph is a word of its own
    ("a b", "a b", "a b"),  # whole words stay as they are
])
def test_whole_word_span_widens_a_cut_word_to_its_word(context, span, expected):
    start = context.index(span)
    first, last = squad.whole_word_span(context, start, start + len(span))
    assert context[first:last] == expected


def test_decoded_answers_are_whole_words():
    context = "the Mojave Desert"
    offsets = [None, None, (0, 3), (4, 6), (6, 10), (11, 17), None]  # [CLS] q the mo ##jave desert [SEP]
    ex = squad.QAExample("x", "?", context, (squad.Answer("Mojave", 4),))
    feats = squad.QAFeatures(*(np.zeros((1, 7), np.int32),) * 4, np.zeros(1, np.int32), np.zeros(1, np.int32),
                             np.zeros(1, np.int32), [offsets])
    at_mo = np.eye(7, dtype=np.float32)[None, 3] * 5.0  # start and end on "mo"
    best = squad.decode_predictions([ex], feats, at_mo, at_mo)["x"]
    assert (best.text, best.start, best.end) == ("Mojave", 3, 3)
    assert squad.squad_scores([ex], {"x": best.text}) == {"exact_match": 100.0, "f1": 100.0}


def test_whole_words_keep_nearly_every_real_gold_answer(shared_squad_dev):
    """The official gold answers are whole words in the sense of whole_word_span, all but a few cut ones
    (6 of part2's 5,609 questions, e.g. the typo "h International ...")."""
    examples = squad.read_squad(str(shared_squad_dev))
    widened = {}
    for ex in examples:
        answer = ex.answers[0]
        first, last = squad.whole_word_span(ex.context, answer.start, answer.start + len(answer.text))
        if squad.max_over_gold(squad.exact_match, ex.context[first:last], [a.text for a in ex.answers]) < 1:
            widened[answer.text] = ex.context[first:last]
    assert len(examples) > 1000 and len(widened) <= 0.005 * len(examples), widened


def test_span_head_masks_non_context_positions_and_loss_is_mean_of_start_and_end():
    head = init_span_head(jax.random.PRNGKey(0), 8)
    hidden = jax.random.normal(jax.random.PRNGKey(1), (2, 5, 8))
    allowed = jnp.array([[1, 0, 1, 1, 0], [1, 1, 1, 1, 1]])
    start, end = span_logits(head, hidden, allowed)
    chex.assert_shape([start, end], (2, 5))
    assert float(start[0, 1]) == NEG_INF and float(end[0, 4]) == NEG_INF
    loss = span_loss(start, end, jnp.array([2, 3]), jnp.array([3, 4]))
    logp_s, logp_e = jax.nn.log_softmax(start), jax.nn.log_softmax(end)
    want = -0.5 * ((logp_s[0, 2] + logp_s[1, 3]) / 2 + (logp_e[0, 3] + logp_e[1, 4]) / 2)
    np.testing.assert_allclose(float(loss), float(want), rtol=1e-6)


def tiny_qa_config(qa_bert, squad_file, num_steps: int = 24, checkpoint_every: int = 12):
    from configs import squad as squad_config

    config = squad_config.get_config()
    config.model.name = str(qa_bert.path)
    config.data.train_file = config.data.dev_file = squad_file
    config.data.max_length, config.data.stride = 32, 8
    config.batch_size, config.eval_batch_size = 8, 8
    config.optim.learning_rate, config.optim.warmup_fraction = 3e-3, 0.0
    config.num_steps, config.log_every, config.eval_every, config.checkpoint_every = num_steps, 1, 0, checkpoint_every
    return config


def test_tiny_qa_run_lowers_the_loss_and_scores_dev(tmp_path, qa_bert, squad_file):
    from jaxmt.downstream.qa_train import train_and_evaluate_qa

    config = tiny_qa_config(qa_bert, squad_file)
    results = train_and_evaluate_qa(config, str(tmp_path / "qa"))
    losses = results["train_loss"]
    assert len(losses) == 24 and np.mean(losses[-4:]) < 0.6 * np.mean(losses[:4]), losses
    assert set(results["dev"]) == {"exact_match", "f1"} and 0.0 <= results["dev"]["f1"] <= 100.0
    no_skips = dict.fromkeys(squad.SKIP_REASONS, 0)
    assert results["skipped_questions"] == {"train": no_skips, "dev": no_skips}
    answers = json.loads((tmp_path / "qa" / "predictions.json").read_text())
    assert set(answers) == {"b1", "b2", "c1", "c2", "t1", "t2"}
    contexts = {e.id: e.context for e in squad.read_squad(squad_file)}
    assert all(text in contexts[qid] for qid, text in answers.items())  # answers are context substrings
    # Resuming a finished run restores the last checkpoint and trains nothing more.
    again = train_and_evaluate_qa(config, str(tmp_path / "qa"))
    assert again["resumed_from_step"] == 24 and again["train_loss"] == []


def test_qa_sigterm_saves_and_the_same_call_resumes_exactly(tmp_path, qa_bert, squad_file, monkeypatch):
    from jaxmt.downstream import qa_train
    from jaxmt.training import loop
    from jaxmt.training.faults import Preempted

    config = tiny_qa_config(qa_bert, squad_file, num_steps=8, checkpoint_every=100)
    full = qa_train.train_and_evaluate_qa(config, str(tmp_path / "full"))
    sigterm_after_logging(loop, monkeypatch, step=3)
    with pytest.raises(Preempted, match="at step 4"):  # the signal is acted on after the next step
        qa_train.train_and_evaluate_qa(config, str(tmp_path / "cut"))
    assert os.listdir(tmp_path / "cut" / "checkpoints") == ["4"]
    monkeypatch.undo()
    resumed = qa_train.train_and_evaluate_qa(config, str(tmp_path / "cut"))
    assert resumed["resumed_from_step"] == 4 and resumed["dev"] == full["dev"]
    jax.tree.map(np.testing.assert_array_equal, read_params(tmp_path / "full", 8), read_params(tmp_path / "cut", 8))
