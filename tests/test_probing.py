"""Probing: task construction from plain text, per-layer features, linear probes, and the report."""

from __future__ import annotations

import collections
import csv
import itertools

import chex
import numpy as np
import pytest

from jaxmt.probing import tasks as T
from jaxmt.probing.linear_probe import LayerFeatures, ProbeConfig, majority_accuracy, probe_layers

SYLLABLES = ["".join(p) for p in itertools.product("bdgklmnprst", "aeiou")]
VOCAB = sorted({a + b for a, b in itertools.product(SYLLABLES, SYLLABLES[:8])})  # 440 letters-only words


def synthetic_sentences(n: int = 900, seed: int = 0) -> list[str]:
    """Random sentences of 5..30 words; about a third are two clauses joined by ', and' / ', but'."""
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        words = list(rng.choice(VOCAB, size=int(rng.integers(5, 31))))
        words[0] = words[0].capitalize()
        if i % 3 == 0 and len(words) >= 8:
            at = len(words) // 2
            words = words[:at] + [",", "and" if i % 2 else "but"] + words[at:]
        out.append(" ".join(words) + " .")
    return out


def write_corpus(path, sentences: list[str]) -> str:
    lines = ["\ufeff", " = Title = ", ""]
    for i in range(0, len(sentences), 6):
        lines += [" = = Section = = " if i % 30 == 0 else "", " " + " ".join(sentences[i:i + 6]) + " ", ""]
    path.write_text("\n".join(lines), encoding="utf-8")
    return str(path)


def test_corpus_reader_skips_headings_splits_sentences_and_cleans_wikitext(tmp_path):
    path = tmp_path / "wiki.txt"
    path.write_text("\ufeff = Storm = \n\n = = History = = \n The storm hit the coast in 1999 . It was "
                    "a well @-@ known <unk> event . Short one .\n\n Costs rose to 1 @,@ 000 dollars ! Then it "
                    "ended quietly that year .\n", encoding="utf-8")
    assert T.read_corpus_sentences(str(path)) == [
        "The storm hit the coast in 1999 .",
        "It was a well-known [UNK] event .",
        "Costs rose to 1,000 dollars !",
        "Then it ended quietly that year .",
    ]  # "Short one ." has fewer than 5 words


def _source_of(sentence: str, originals: set[tuple[str, ...]]) -> bool:
    return tuple(sentence.split()) in originals


def test_bigram_shift_and_odd_man_out_change_exactly_what_their_label_says():
    sentences = synthetic_sentences()
    originals = {tuple(s.split()) for s in sentences}
    shift = T.bigram_shift(sentences, np.random.default_rng(0), max_examples=400)
    assert collections.Counter(shift.labels.tolist()) == {0: 200, 1: 200}
    by_words = collections.defaultdict(list)
    for s in sentences:
        by_words[tuple(sorted(s.split()))].append(s.split())
    for sentence, label in zip(shift.sentences, shift.labels):
        if label == 0:
            assert _source_of(sentence, originals)
            continue
        words = sentence.split()
        source = next(o for o in by_words[tuple(sorted(words))] if o != words)
        diff = [i for i, (a, b) in enumerate(zip(words, source)) if a != b]
        assert len(diff) == 2 and diff[1] == diff[0] + 1 and words[diff[0]] == source[diff[1]]
    somo = T.odd_man_out(sentences, np.random.default_rng(1), max_examples=400)
    assert collections.Counter(somo.labels.tolist()) == {0: 200, 1: 200}
    by_length = collections.defaultdict(list)
    for s in sentences:
        by_length[len(s.split())].append(s.split())
    for sentence, label in zip(somo.sentences, somo.labels):
        words = sentence.split()
        best = min(sum(a != b for a, b in zip(words, o)) for o in by_length[len(words)])
        assert best == label  # label 1: exactly one word differs from its source sentence


def test_sentence_length_word_content_and_coordination_labels():
    sentences = synthetic_sentences()
    length = T.sentence_length(sentences, np.random.default_rng(0), max_examples=600)
    assert length.num_classes == 6 and len(set(collections.Counter(length.labels.tolist()).values())) == 1
    for sentence, label in zip(length.sentences, length.labels):
        lo, hi = map(int, length.class_names[label].split("-"))
        assert lo <= len(sentence.split()) <= hi

    content = T.word_content(sentences, np.random.default_rng(0), max_examples=400, num_words=4)
    assert content.num_classes >= 2 and len(set(collections.Counter(content.labels.tolist()).values())) == 1
    targets = set(content.class_names)
    for sentence, label in zip(content.sentences, content.labels):
        present = {w.lower() for w in sentence.split()} & targets
        assert present == {content.class_names[label]}

    coord = T.coordination_inversion(sentences, np.random.default_rng(0), max_examples=400)
    assert collections.Counter(coord.labels.tolist())[0] == collections.Counter(coord.labels.tolist())[1] > 50
    lowered = {s.lower() for s in sentences}
    for sentence, label in zip(coord.sentences, coord.labels):
        body, conj = sentence[:-2], " , and " if " , and " in sentence else " , but "
        first, second = body.split(conj)
        restored = f"{second}{conj}{first} ." if label == 1 else sentence
        assert restored.lower() in lowered


def test_tasks_are_deterministic_and_train_test_disjoint_and_stratified():
    sentences = synthetic_sentences()
    a = T.build_tasks(sentences, max_examples=300, seed=3)
    b = T.build_tasks(sentences, max_examples=300, seed=3)
    assert list(a) == list(T.TASK_NAMES)
    for name, task in a.items():
        assert task.sentences == b[name].sentences and np.array_equal(task.train, b[name].train)
        assert not set(task.train) & set(task.test)
        assert len(task.train) + len(task.test) == len(task.sentences) <= 300
        test_counts = np.bincount(task.labels[task.test], minlength=task.num_classes)
        assert len(set(test_counts.tolist())) == 1  # every class equally represented in the test set
    assert T.build_tasks(sentences, max_examples=300, seed=4)["bigram_shift"].sentences != a["bigram_shift"].sentences
    with pytest.raises(ValueError, match="unknown probing task"):
        T.build_tasks(sentences, ["tree_depth"])


def test_probe_learns_a_linearly_encoded_label_and_not_noise():
    rng = np.random.default_rng(0)
    n, h = 240, 16
    labels = np.repeat(np.arange(3), n // 3).astype(np.int32)
    noise = rng.normal(size=(n, h)).astype(np.float32)
    signal = noise.copy()
    signal[:, :3] += 4.0 * np.eye(3, dtype=np.float32)[labels]  # the class is readable from 3 dimensions
    perm = rng.permutation(n)
    task = T.ProbingTask("toy", [""] * n, labels, ("a", "b", "c"), train=perm[:180], test=perm[180:])
    accs = probe_layers(np.stack([noise, signal]), task, ProbeConfig(steps=200))
    chex.assert_shape(accs, (2,))
    assert accs[1] > 0.95 and accs[0] < 0.6, accs
    assert 0.2 <= majority_accuracy(task) <= 0.5


@pytest.fixture(scope="module")
def tiny_berts(tmp_path_factory):
    from jaxmt.models.pretrained import load_pretrained, write_random_bert

    words = VOCAB + ["and", "but", ",", "."]
    return {name: load_pretrained(str(write_random_bert(tmp_path_factory.mktemp(name), words, seed=seed,
                                                        num_hidden_layers=layers)))
            for name, seed, layers in (("base", 0, 2), ("deep", 1, 3))}


def test_layer_features_are_mean_pooled_hidden_states_independent_of_batching(tiny_berts):
    from transformers import FlaxBertModel

    bert = tiny_berts["base"]
    sentences = synthetic_sentences(7)
    features = LayerFeatures(bert, max_length=48, batch_size=4)(sentences)
    chex.assert_shape(features, (3, 7, 32))  # embeddings + 2 layers
    enc = bert.tokenizer(sentences[3], return_tensors="np")
    out = FlaxBertModel(bert.config, _do_init=False)(enc["input_ids"], params=bert.params, output_hidden_states=True)
    want = np.stack([np.asarray(h[0]).mean(axis=0) for h in out.hidden_states])
    np.testing.assert_allclose(features[:, 3], want, atol=1e-4)
    alone = LayerFeatures(bert, max_length=48, batch_size=4)(sentences[3:4])
    np.testing.assert_allclose(alone[:, 0], features[:, 3], atol=1e-4)


def test_probe_cli_writes_a_layer_by_task_table_and_heatmap(tmp_path, tiny_berts):
    from jaxmt.probe import parse_models, run_probing

    corpus = write_corpus(tmp_path / "corpus.txt", synthetic_sentences())
    models = parse_models([f"base={tiny_berts['base'].path}", f"deep={tiny_berts['deep'].path}"])
    summary = run_probing(models, corpus, str(tmp_path / "out"), list(T.TASK_NAMES), max_sentences=200, seed=0,
                          max_length=48, batch_size=64, probe_steps=50, l2=1e-3)
    layers = {"base": 3, "deep": 4}
    for model, by_task in summary["accuracy"].items():
        assert set(by_task) == set(T.TASK_NAMES)
        assert all(len(accs) == layers[model] and all(0 <= a <= 1 for a in accs) for accs in by_task.values())
    with open(summary["files"]["csv"]) as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == (3 + 4) * len(T.TASK_NAMES) + len(T.TASK_NAMES)  # + the majority-class rows
    markdown = open(summary["files"]["markdown"]).read()
    assert "### base" in markdown and "### deep" in markdown and "| layer 3 |" in markdown
    png = open(summary["files"]["heatmap"], "rb").read()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 5000
    with pytest.raises(ValueError, match="used twice"):
        parse_models(["a=x", "a=y"])


def test_probe_says_whether_its_corpus_was_in_a_models_pretraining(tmp_path):
    from ml_collections import ConfigDict

    from jaxmt.checkpointing.workdir import write_run_config
    from jaxmt.probe import seen_in_pretraining

    seen, unseen = tmp_path / "train.txt", tmp_path / "valid.txt"
    seen.write_text("a\n")
    unseen.write_text("b\n")
    run = tmp_path / "pretrain_run"
    write_run_config(str(run), ConfigDict({"data": {"files": (str(seen),)}}))
    (run / "hf_model").mkdir()
    assert seen_in_pretraining(str(run / "hf_model"), str(seen)) is True
    assert seen_in_pretraining(str(run / "hf_model"), str(unseen)) is False
    moved = tmp_path / "elsewhere"
    moved.mkdir()
    (moved / "train.txt").write_text("a\n")  # recorded path gone: matched by name
    write_run_config(str(tmp_path / "old_run"), ConfigDict({"data": {"files": ("/gone/train.txt",)}}))
    assert seen_in_pretraining(str(tmp_path / "old_run" / "hf_model"), str(moved / "train.txt")) is True
    assert seen_in_pretraining(str(tmp_path / "no_run" / "hf_model"), str(seen)) is None  # e.g. a hub model


def test_probe_on_embeddings_of_a_tiny_bert_reads_word_content(tiny_berts):
    """Mean-pooled word embeddings hold which target word a sentence contains: far above chance."""
    sentences = synthetic_sentences(1500, seed=1)
    task = T.word_content(sentences, np.random.default_rng(0), max_examples=400, num_words=4)
    features = LayerFeatures(tiny_berts["base"], max_length=48)(task.sentences)
    accs = probe_layers(features, task, ProbeConfig(steps=200))
    assert accs[0] > majority_accuracy(task) + 0.2, (accs, majority_accuracy(task))
