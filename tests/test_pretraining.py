"""Hierarchical multitask pre-training: corpus reading and caching, pair building, masking, bigram shift,
layer-wise heads, NSP -> MLM transfer, config errors, and a tiny end-to-end run with export."""

from __future__ import annotations

import json

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import read_params, sigterm_after_logging, with_overrides

from jaxmt.data.errors import DataError
from jaxmt.errors import ConfigError
from jaxmt.pretraining.corpus import (
    CorpusSpec,
    TokenizedCorpus,
    load_corpus,
    read_text_documents,
    split_sentences,
)
from jaxmt.pretraining.examples import (
    IS_NEXT,
    RANDOM_NEXT,
    Pairs,
    Vocabulary,
    build_pairs,
    make_batch,
    mask_tokens,
    ordinary_tokens,
    shift_bigrams,
)
from jaxmt.pretraining.model import HierarchicalBert
from jaxmt.pretraining.step import init_params, task_losses

# Four topics, each with its own nouns, adjectives and verbs: a random next segment usually changes topic.
TOPICS = [(["river", "boat", "water", "fish"], ["wet", "blue", "deep"], ["swims", "floats", "sinks"]),
          (["king", "castle", "army", "crown"], ["royal", "brave", "old"], ["rules", "fights", "wins"]),
          (["star", "planet", "orbit", "moon"], ["bright", "far", "dark"], ["shines", "spins", "rises"]),
          (["cake", "bread", "oven", "sugar"], ["sweet", "warm", "fresh"], ["bakes", "melts", "cools"])]


def topic_sentences(topic: int, count: int = 3) -> list[str]:
    """A topic's few sentences, all from one template, so word order and topic are quick to learn."""
    nouns, adjectives, verbs = TOPICS[topic]
    return [f"the {adjectives[i % 3]} {nouns[i % 4]} {verbs[(i + 1) % 3]} the {nouns[(i + 2) % 4]} ."
            for i in range(count)]


def synthetic_corpus(num_documents: int = 12, sentences: int = 10, seed: int = 0) -> str:
    """Documents in the plain format, each on one topic: its sentences drawn from that topic's few."""
    rng = np.random.default_rng(seed)
    docs = []
    for d in range(num_documents):
        choices = topic_sentences(d % len(TOPICS))
        docs.append("\n".join(choices[int(i)] for i in rng.integers(len(choices), size=sentences)))
    return "\n\n".join(docs) + "\n"


def vocabulary_words() -> list[str]:
    return sorted({w for topic in TOPICS for words in topic for w in words} | {"the", ".", "flour", "cake", "bread"})


@pytest.fixture(scope="module")
def bert_dir(tmp_path_factory):
    from jaxmt.models.pretrained import write_random_bert

    return write_random_bert(tmp_path_factory.mktemp("pretrain_bert"), vocabulary_words(), seed=0,
                             hidden_size=32, num_hidden_layers=3, num_attention_heads=2, intermediate_size=64)


@pytest.fixture(scope="module")
def tokenizer(bert_dir):
    from jaxmt.pretraining.trainer import load_tokenizer

    return load_tokenizer(str(bert_dir))


@pytest.fixture(scope="module")
def vocab(tokenizer) -> Vocabulary:
    return Vocabulary.from_tokenizer(tokenizer)


def numbered_corpus(sentence_lengths: list[list[int]], first_id: int = 100) -> TokenizedCorpus:
    """A corpus whose every token names its sentence: sentence g (counted over documents) is all `first_id + g`."""
    tokens, sentence_starts, document_starts, g = [], [0], [0], 0
    for document in sentence_lengths:
        for length in document:
            tokens += [first_id + g] * length
            sentence_starts.append(len(tokens))
            g += 1
        document_starts.append(g)
    return TokenizedCorpus(np.asarray(tokens, np.int32), np.asarray(sentence_starts), np.asarray(document_starts), "t")


# ---------------------------------------------------------------- corpus


def test_wikitext_articles_are_documents_and_headings_are_dropped(tmp_path):
    path = tmp_path / "wiki.txt"
    path.write_text("\ufeff \n = First Title = \n \n Alpha one @-@ two . Beta <unk> ends here . \n \n"
                    " = = Section = = \n \n Gamma line .\n \n = Second = \n \n Delta . \n", encoding="utf-8")
    docs = read_text_documents(path, "auto", unk_token="[UNK]")
    assert docs == [["Alpha one-two .", "Beta [UNK] ends here .", "Gamma line ."], ["Delta ."]]


def test_plain_format_blank_lines_separate_documents(tmp_path):
    path = tmp_path / "plain.txt"
    path.write_text("One. Two!\nThree?\n\n\nFour \"quoted.\" Five.\n", encoding="utf-8")
    assert read_text_documents(path, "auto") == [["One.", "Two!", "Three?"], ["Four \"quoted.\"", "Five."]]
    assert read_text_documents(path, "plain", sentences=False) == [["One. Two!", "Three?"], ["Four \"quoted.\" Five."]]
    assert split_sentences("He met H. americanus there. Then left") == ["He met H. americanus there.", "Then left"]


class CountingTokenizer:
    """The real tokenizer, counting how often it is asked to tokenize."""

    def __init__(self, tokenizer) -> None:
        self._tokenizer, self.calls = tokenizer, 0

    def __call__(self, *args, **kwargs):
        self.calls += 1
        return self._tokenizer(*args, **kwargs)

    def __getattr__(self, name):
        return getattr(self._tokenizer, name)


def test_second_load_reads_the_cache_without_tokenizing(tmp_path, tokenizer):
    corpus_file = tmp_path / "corpus.txt"
    corpus_file.write_text(synthetic_corpus(4, 3))
    spec = CorpusSpec(files=(str(corpus_file),))
    counting = CountingTokenizer(tokenizer)
    first = load_corpus(spec, counting, tmp_path / "cache")
    assert counting.calls >= 1 and len(list((tmp_path / "cache").glob("*.npz"))) == 1
    counting.calls = 0
    second = load_corpus(spec, counting, tmp_path / "cache")
    assert counting.calls == 0
    chex.assert_trees_all_equal((first.tokens, first.sentence_starts, first.document_starts),
                                (second.tokens, second.sentence_starts, second.document_starts))
    assert first.num_documents == 4 and first.num_sentences == 12
    corpus_file.write_text(synthetic_corpus(4, 3, seed=1))  # new content: a new shard
    load_corpus(spec, counting, tmp_path / "cache")
    assert counting.calls >= 1 and len(list((tmp_path / "cache").glob("*.npz"))) == 2


def test_missing_and_empty_corpus_files_are_named(tmp_path, tokenizer):
    with pytest.raises(DataError, match="nope.txt: corpus file not found"):
        load_corpus(CorpusSpec(files=(str(tmp_path / "nope.txt"),)), tokenizer, None)
    empty = tmp_path / "empty.txt"
    empty.write_text("\n \n\n")
    with pytest.raises(DataError, match="empty.txt: the corpus holds no text"):
        load_corpus(CorpusSpec(files=(str(empty),)), tokenizer, None)


# ---------------------------------------------------------------- examples


def test_masking_statistics(vocab):
    rng = np.random.default_rng(0)
    n, length = 400, 64
    input_ids = rng.integers(10, vocab.size, size=(n, length)).astype(np.int32)
    lengths = rng.integers(20, length, size=n)
    attention = (np.arange(length)[None, :] < lengths[:, None]).astype(np.int32)
    input_ids[:, 0] = vocab.cls_id
    input_ids[np.arange(n), lengths - 1] = vocab.sep_id
    input_ids[attention == 0] = vocab.pad_id
    maskable = ordinary_tokens(input_ids, attention, vocab)
    out = mask_tokens(input_ids, maskable, vocab, rng, rate=0.15, max_predictions=20)
    chosen = out["mlm_weights"] > 0
    rows = np.broadcast_to(np.arange(n)[:, None], chosen.shape)
    positions = out["mlm_positions"][chosen]
    assert maskable[rows[chosen], positions].all(), "a special token or padding was chosen"
    assert len(set(zip(rows[chosen], positions))) == chosen.sum(), "a position was chosen twice"
    assert abs(chosen.sum() / maskable.sum() - 0.15) < 0.005  # per example round(15%), so close to 15% overall
    np.testing.assert_array_equal(out["mlm_ids"][chosen], input_ids[rows[chosen], positions])
    new = out["input_ids"][rows[chosen], positions]
    original = input_ids[rows[chosen], positions]
    as_mask = (new == vocab.mask_id).mean()
    kept = (new == original).mean()
    assert abs(as_mask - 0.8) < 0.02 and abs(kept - 0.1) < 0.015 and abs(1 - as_mask - kept - 0.1) < 0.015
    assert not np.isin(new[(new != vocab.mask_id) & (new != original)], vocab.special_ids).any()
    unchosen = np.ones_like(maskable)
    unchosen[rows[chosen], positions] = False
    np.testing.assert_array_equal(out["input_ids"][unchosen], input_ids[unchosen])


def test_nsp_pairs_balance_and_negatives_come_from_other_documents(vocab):
    rng = np.random.default_rng(1)
    lengths = [[int(x) for x in rng.integers(3, 12, size=int(rng.integers(4, 15)))] for _ in range(300)]
    corpus = numbered_corpus(lengths)
    doc_of = np.repeat(np.arange(corpus.num_documents), np.diff(corpus.document_starts))
    pairs = build_pairs(corpus, vocab, 32, 0.1, rng)
    assert len(pairs) > 500
    assert abs(pairs.next_sentence_label.mean() - 0.5) < 0.05
    for row in range(len(pairs)):
        ids, types = pairs.input_ids[row], pairs.token_type_ids[row]
        used = pairs.attention_mask[row] > 0
        a = ids[used & (types == 0)][1:-1] - 100  # sentence numbers, [CLS] and [SEP] dropped
        b = ids[used & (types == 1)][:-1] - 100
        assert ids[0] == vocab.cls_id and len(a) and len(b)
        if pairs.next_sentence_label[row] == RANDOM_NEXT:
            assert doc_of[b[0]] != doc_of[a[-1]], "a random next segment came from A's own document"
        else:
            assert pairs.next_sentence_label[row] == IS_NEXT
            assert doc_of[b[0]] == doc_of[a[-1]] and b[0] >= a[-1], "B does not continue A"
            assert np.all(np.diff(np.concatenate([a, b])) >= 0), "a true pair is out of order"


@pytest.fixture(scope="module")
def wordpiece_tokenizer(tokenizer):
    """MiniLM's tokenizer (real '##' WordPieces) where installed, else the tiny one."""
    from conftest import minilm_installed

    from jaxmt.pretraining.trainer import load_tokenizer

    return load_tokenizer("minilm") if minilm_installed() else tokenizer


@pytest.mark.parametrize("unit", ["token", "word"])
def test_bigram_shift_swaps_two_adjacent_units_of_one_segment(wordpiece_tokenizer, unit):
    tokenizer = wordpiece_tokenizer
    vocab = Vocabulary.from_tokenizer(tokenizer)
    rng = np.random.default_rng(2)
    texts = [("the big river sees the fish", "the old king holds the crown"),
             ("unbelievably glorpish orbit", "flour sugar"), ("cake", "bread")] * 60
    encoded = tokenizer([a for a, _ in texts], [b for _, b in texts], padding="max_length", max_length=24,
                        return_tensors="np")
    ids, types, attention = encoded["input_ids"], encoded["token_type_ids"], encoded["attention_mask"]
    maskable = ordinary_tokens(ids, attention, vocab)
    swapped, labels, moved = shift_bigrams(ids, types, maskable, vocab, rng, unit)
    swappable = np.arange(len(ids)) % 3 != 2
    assert 0.4 < labels[swappable].mean() < 0.6  # half of the examples that have two different words
    for row in range(len(ids)):
        changed = np.flatnonzero(swapped[row] != ids[row])
        if labels[row] == 0:
            assert len(changed) == 0 and not moved[row].any()
            continue
        assert moved[row, changed].all() and np.all(np.diff(np.flatnonzero(moved[row])) == 1)  # one span
        assert len(changed) >= 2 and maskable[row, changed].all() and len(set(types[row, changed])) == 1
        start, end = changed[0], changed[-1] + 1
        np.testing.assert_array_equal(np.sort(swapped[row, start:end]), np.sort(ids[row, start:end]))
        if unit == "token":
            assert end - start == 2 and swapped[row, start] == ids[row, start + 1]
        else:  # two whole words: no word starts or ends inside the changed span but at the swap point
            words = tokenizer.convert_ids_to_tokens(swapped[row, start:end])
            assert not words[0].startswith("##")
            text = " ".join(tokenizer.convert_ids_to_tokens(ids[row, start:end])).replace(" ##", "")
            new_text = " ".join(words).replace(" ##", "")
            assert sorted(text.split()) == sorted(new_text.split()) and len(text.split()) == 2
    # The single-word segments ("cake", "bread") have nothing to swap: never labelled as swapped.
    assert labels[2::3].sum() == 0


@pytest.mark.parametrize("unit", ["token", "word"])
def test_masked_lm_targets_are_the_original_text_never_a_swapped_position(wordpiece_tokenizer, unit):
    tokenizer = wordpiece_tokenizer
    vocab = Vocabulary.from_tokenizer(tokenizer)
    texts = [("the big river sees the fish", "the old king holds the crown"),
             ("unbelievably glorpish orbit", "flour sugar cake")] * 100
    encoded = tokenizer([a for a, _ in texts], [b for _, b in texts], padding="max_length", max_length=24,
                        return_tensors="np")
    pairs = Pairs(encoded["input_ids"].astype(np.int32), encoded["token_type_ids"].astype(np.int32),
                  encoded["attention_mask"].astype(np.int32), np.zeros(len(texts), np.int32))
    batch = make_batch(pairs, vocab, np.random.default_rng(7), 0.3, 6, True, unit)
    # The swap is drawn first from the generator, so the same seed gives the swapped positions.
    maskable = ordinary_tokens(pairs.input_ids, pairs.attention_mask, vocab)
    _, labels, moved = shift_bigrams(pairs.input_ids, pairs.token_type_ids, maskable, vocab,
                                     np.random.default_rng(7), unit)
    np.testing.assert_array_equal(batch["bigram_labels"], labels)
    np.testing.assert_array_equal(batch["bigram_moved"], moved)  # the moved-token targets of 'token_labels'
    assert labels.mean() > 0.3
    chosen = batch["mlm_weights"] > 0
    rows = np.broadcast_to(np.arange(len(texts))[:, None], chosen.shape)[chosen]
    positions = batch["mlm_positions"][chosen]
    assert not moved[rows, positions].any(), "an MLM target sits on a swapped token"
    np.testing.assert_array_equal(batch["mlm_ids"][chosen], pairs.input_ids[rows, positions])
    swapped_rows = labels == 1
    assert (chosen[swapped_rows].sum(1) >= 1).all()  # the swapped examples still have MLM targets


def test_make_batch_is_deterministic_given_the_seed(vocab):
    corpus = numbered_corpus([[5, 6, 7, 4]] * 6)
    pairs = build_pairs(corpus, vocab, 24, 0.0, np.random.default_rng(3))
    one = make_batch(pairs, vocab, np.random.default_rng([0, 5]), 0.15, 4, True, "token")
    two = make_batch(pairs, vocab, np.random.default_rng([0, 5]), 0.15, 4, True, "token")
    chex.assert_trees_all_equal(one, two)


# ---------------------------------------------------------------- model


def tiny_bert_config(num_layers: int = 3):
    from transformers import BertConfig

    return BertConfig(vocab_size=40, hidden_size=16, num_hidden_layers=num_layers, num_attention_heads=2,
                      intermediate_size=32, max_position_embeddings=32)


def random_batch(seed: int = 0, n: int = 4, length: int = 12, predictions: int = 3) -> dict:
    rng = np.random.default_rng(seed)
    return {"input_ids": rng.integers(5, 40, size=(n, length)).astype(np.int32),
            "token_type_ids": (np.arange(length)[None, :] >= length // 2).repeat(n, 0).astype(np.int32),
            "attention_mask": np.ones((n, length), np.int32),
            "mlm_positions": rng.integers(1, length, size=(n, predictions)).astype(np.int32),
            "mlm_ids": rng.integers(5, 40, size=(n, predictions)).astype(np.int32),
            "mlm_weights": np.ones((n, predictions), np.float32),
            "nsp_labels": rng.integers(0, 2, size=n).astype(np.int32),
            "bigram_labels": rng.integers(0, 2, size=n).astype(np.int32),
            "example_weights": np.ones(n, np.float32)}


def task_grads(layers: dict[str, int], transfer: str, num_layers: int = 3) -> dict[str, dict]:
    """Each task's loss gradient, alone, with respect to all params (one compiled function for all tasks)."""
    model = HierarchicalBert(tiny_bert_config(num_layers), tuple(sorted(layers.items())), transfer)
    batch = random_batch()
    params = init_params(model, jax.random.PRNGKey(0), batch)

    def grads(p):
        return {task: jax.grad(lambda q, t=task: task_losses(model.apply({"params": q}, batch), batch)[t])(p)
                for task in layers}

    return jax.jit(grads)(params)


def nonzero(tree) -> bool:
    return any(float(jnp.abs(x).max()) > 0 for x in jax.tree_util.tree_leaves(tree))


@pytest.mark.parametrize("layers", [{"bigram_shift": 1, "nsp": 2, "mlm": 3}, {"mlm": 2, "nsp": 3, "bigram_shift": 3}])
def test_a_head_trains_only_the_layers_up_to_its_own(layers):
    grads = task_grads(layers, "none")
    for task, layer in layers.items():
        encoder = grads[task]["encoder"]["layer"]
        for index in range(3):  # params of layer i+1 (1-based) live under encoder/layer/<i>
            assert nonzero(encoder[str(index)]) == (index < layer), f"{task} at layer {layer}: layer {index + 1}"
        assert nonzero(grads[task]["embeddings"])
    # Without transfer, the MLM loss never reaches the NSP side, whatever the layers.
    assert not nonzero(grads["mlm"]["pooler"]) and not nonzero(grads["mlm"]["nsp"])


@pytest.mark.parametrize("transfer", ["add_cls", "add_all", "concat"])
def test_transfer_carries_the_mlm_gradient_into_the_nsp_side(transfer):
    grads = task_grads({"nsp": 1, "mlm": 2}, transfer, num_layers=2)["mlm"]
    assert nonzero(grads["pooler"]) and nonzero(grads["transfer_projection"])
    assert not nonzero(grads["nsp"])  # the NSP classifier is not on the path, only its representation


def test_encoder_params_match_flax_bert_and_all_last_equals_its_output():
    from transformers import FlaxBertModel

    config = tiny_bert_config()
    reference = FlaxBertModel(config, seed=0)
    model = HierarchicalBert(config, (("mlm", 3), ("nsp", 3)))
    batch = random_batch(1)
    params = init_params(model, jax.random.PRNGKey(1), batch, reference.params)
    chex.assert_trees_all_equal_shapes({k: params[k] for k in reference.params}, reference.params)
    hidden = reference.module.apply({"params": reference.params}, batch["input_ids"], batch["attention_mask"],
                                    batch["token_type_ids"]).last_hidden_state
    pooled = np.tanh(hidden[:, 0] @ reference.params["pooler"]["dense"]["kernel"]
                     + reference.params["pooler"]["dense"]["bias"])
    nsp = pooled @ params["nsp"]["kernel"] + params["nsp"]["bias"]
    chex.assert_trees_all_close(model.apply({"params": params}, batch)["nsp"], nsp, atol=1e-5)


def test_mean_and_max_pooling_read_only_the_attended_tokens():
    """pooling='mean' / 'max': NSP and bigram shift read the attended tokens of their layer, not the [CLS] state."""
    from jaxmt.models.encoder import pool

    hidden = jnp.arange(2 * 3 * 2, dtype=jnp.float32).reshape(2, 3, 2)
    mask = jnp.array([[1, 1, 0], [1, 1, 1]])
    chex.assert_trees_all_close(pool(hidden, mask, "mean"), jnp.array([[1.0, 2.0], [8.0, 9.0]]))
    chex.assert_trees_all_equal(pool(hidden, mask, "max"), jnp.array([[2.0, 3.0], [10.0, 11.0]]))
    chex.assert_trees_all_equal(pool(hidden, mask, "cls"), hidden[:, 0])
    config, batch = tiny_bert_config(), random_batch(2)
    batch["attention_mask"][:, -3:] = 0  # padding the mean must leave out
    layers = (("bigram_shift", 1), ("mlm", 2), ("nsp", 2))
    cls_model, mean_model = (HierarchicalBert(config, layers, "none", pooling) for pooling in ("cls", "mean"))
    params = init_params(cls_model, jax.random.PRNGKey(0), batch)
    outputs = {m.pooling: m.apply({"params": params}, batch) for m in (cls_model, mean_model)}
    assert not np.allclose(outputs["cls"]["nsp"], outputs["mean"]["nsp"])
    chex.assert_trees_all_equal(outputs["cls"]["mlm"], outputs["mean"]["mlm"])  # MLM reads tokens either way
    # The padded positions' contents do not reach a mean-pooled head.
    changed = {**batch, "input_ids": batch["input_ids"].copy()}
    changed["input_ids"][:, -3:] = 7
    chex.assert_trees_all_close(mean_model.apply({"params": params}, changed)["nsp"], outputs["mean"]["nsp"],
                                atol=1e-6)


@pytest.mark.parametrize("reduce", ["logsumexp", "max"])
def test_token_score_head_reduces_the_attended_tokens_scores(reduce):
    """The bigram-shift token heads: the 'swapped' logit is the log-sum-exp (token_scores) or the maximum
    (token_labels) of per-token scores of the attended tokens (padding never counts), against a fixed 0."""
    from jaxmt.pretraining.model import TokenScoreClassifier

    head = TokenScoreClassifier(hidden_size=4, reduce=reduce)
    hidden = jax.random.normal(jax.random.PRNGKey(0), (2, 5, 4))
    mask = jnp.array([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1]])
    params = head.init(jax.random.PRNGKey(1), hidden, mask)
    logits, scores = head.apply(params, hidden, mask)
    chex.assert_shape((logits, scores), ((2, 2), (2, 5)))
    features = jnp.tanh(hidden @ params["params"]["dense"]["kernel"] + params["params"]["dense"]["bias"])
    chex.assert_trees_all_close(
        scores, (features @ params["params"]["scorer"]["kernel"] + params["params"]["scorer"]["bias"])[..., 0],
        atol=1e-6)
    reduced = jax.nn.logsumexp if reduce == "logsumexp" else jnp.max
    chex.assert_trees_all_close(logits[:, 1], jnp.stack([reduced(scores[0, :3]), reduced(scores[1])]), atol=1e-6)
    chex.assert_trees_all_equal(logits[:, 0], jnp.zeros(2))
    padded = hidden.at[0, 3:].set(100.0)  # the padding's contents do not reach the logits
    chex.assert_trees_all_close(head.apply(params, padded, mask)[0], logits, atol=1e-6)


@pytest.mark.parametrize("head", ["token_scores", "token_labels"])
def test_token_heads_train_bigram_shift_on_its_layer(head):
    config, batch = tiny_bert_config(), random_batch(3)
    batch["bigram_moved"] = np.zeros_like(batch["input_ids"])
    batch["bigram_moved"][batch["bigram_labels"] == 1, 4:6] = 1
    model = HierarchicalBert(config, (("bigram_shift", 1), ("mlm", 2), ("nsp", 2)), "none", "mean", head)
    params = init_params(model, jax.random.PRNGKey(0), batch)
    assert set(params["bigram_shift"]) == {"dense", "scorer"}
    outputs = model.apply({"params": params}, batch)
    assert ("bigram_shift_tokens" in outputs) == (head == "token_labels")
    losses = task_losses(outputs, batch)
    for task in [t for t in losses if t.startswith("bigram_shift")]:  # each trains layer 1 only
        grads = jax.grad(lambda p, t=task: task_losses(model.apply({"params": p}, batch), batch)[t])(params)
        assert nonzero(grads["encoder"]["layer"]["0"]) and not nonzero(grads["encoder"]["layer"]["1"]), task
    if head == "token_labels":  # the moved-token loss: logistic loss summed over an example's tokens
        scores = np.asarray(outputs["bigram_shift_tokens"], np.float64)
        labels = batch["bigram_moved"]
        expected = np.mean((np.logaddexp(0, scores) - scores * labels).sum(-1))
        np.testing.assert_allclose(losses["bigram_shift_tokens"], expected, rtol=1e-5)


def test_head_learning_rate_moves_the_heads_and_pooler_not_the_pretrained_layers():
    """With optim.head_learning_rate, the pretrained embeddings and layers follow optim.learning_rate."""
    import optax
    from ml_collections import ConfigDict

    from jaxmt.pretraining.model import PRETRAINED_SCOPES
    from jaxmt.training.optimizer import encoder_or_head, make_optimizer

    model = HierarchicalBert(tiny_bert_config(), (("bigram_shift", 1), ("mlm", 3), ("nsp", 2)), "add_cls")
    batch = random_batch()
    params = init_params(model, jax.random.PRNGKey(0), batch)
    labels = encoder_or_head(params, PRETRAINED_SCOPES)
    assert {jax.tree_util.tree_leaves(labels[k])[0] for k in ("embeddings", "encoder")} == {"encoder"}
    assert set(jax.tree_util.tree_leaves({k: v for k, v in labels.items() if k not in ("embeddings", "encoder")})) \
        == {"head"}
    config = ConfigDict(dict(seed=0, optim=dict(learning_rate=0.0, head_learning_rate=1e-2, warmup_fraction=0.0,
                                                weight_decay=0.0, clip_norm=0.0, gradient_surgery="none")))
    tx = make_optimizer(config, 10, 3, encoder_scopes=PRETRAINED_SCOPES)
    grads = jax.tree_util.tree_map(jnp.ones_like, params)
    new, opt_state = params, tx.init(params)
    for _ in range(2):  # the first step's learning rate is the warm-up's 0
        updates, opt_state = tx.update(grads, opt_state, new)
        new = optax.apply_updates(new, updates)
    for scope in params:
        moved = not jax.tree_util.tree_all(jax.tree_util.tree_map(jnp.array_equal, new[scope], params[scope]))
        assert moved == (scope not in ("embeddings", "encoder")), scope


# ---------------------------------------------------------------- config and end to end


def tiny_pretrain_config(bert_dir, corpus_file, cache_dir, **overrides):
    from configs import pretrain_hierarchical

    config = pretrain_hierarchical.get_config()
    config.data.files = (str(corpus_file),)
    config.data.cache_dir = str(cache_dir)
    config.data.max_length = 24
    config.data.heldout_fraction = 0.25
    config.data.max_eval_examples = 64
    config.model.tokenizer = str(bert_dir)
    config.model.hidden_size, config.model.num_layers, config.model.num_heads = 32, 3, 2
    config.model.intermediate_size, config.model.dropout = 64, 0.0
    config.tasks.mlm.layer, config.tasks.nsp.layer, config.tasks.bigram_shift.layer = 3, 2, 1
    config.tasks.mlm.max_predictions = 4
    config.optim.learning_rate = 1e-2
    config.batch_size, config.eval_batch_size = 16, 32
    config.num_steps, config.log_every, config.eval_every, config.checkpoint_every = 24, 8, 0, 12
    return with_overrides(config, **overrides)


@pytest.mark.parametrize("override, message", [
    ({"tasks.nsp.layer": 4}, r"config.tasks.nsp.layer = 4; the encoder has 3 layers, so expected 1..3"),
    ({"tasks.bigram_shift.layer": 0}, r"config.tasks.bigram_shift.layer = 0"),
    ({"transfer": "sideways"}, r"config.transfer = 'sideways'"),
    ({"pooling": "first"}, r"config.pooling = 'first'"),
    ({"tasks.bigram_shift.head": "tokens"}, r"config.tasks.bigram_shift.head = 'tokens'"),
    ({"tasks.nsp.layer": 3}, r"config.tasks.nsp.layer \(3\) must be below config.tasks.mlm.layer \(3\)"),
    ({"task_names": ("mlm", "bigram_shift")}, r"must include both 'nsp' and 'mlm'"),
    ({"tasks.mlm.layer": 2, "transfer": "concat"}, r"encoder layer 3 of 3 would get no loss"),
])
def test_bad_config_fails_before_compiling(tmp_path, bert_dir, override, message):
    from jaxmt.pretraining.trainer import pretrain

    corpus_file = tmp_path / "c.txt"
    corpus_file.write_text(synthetic_corpus(6, 4))
    with pytest.raises(ConfigError, match=message):
        pretrain(tiny_pretrain_config(bert_dir, corpus_file, tmp_path / "cache", **override), str(tmp_path / "w"))
    assert not (tmp_path / "w").exists()


def test_missing_corpus_file_is_named(tmp_path, bert_dir):
    from jaxmt.pretraining.trainer import pretrain

    config = tiny_pretrain_config(bert_dir, tmp_path / "absent.txt", tmp_path / "cache")
    with pytest.raises(DataError, match="absent.txt: corpus file not found"):
        pretrain(config, str(tmp_path / "w"))


@pytest.mark.parametrize("layers, num_layers, untrained", [
    ({"mlm": 4, "nsp": 4}, 6, "layers 5-6 of 6"),
    ({"bigram_shift": 1, "nsp": 2, "mlm": 3}, 4, "layer 4 of 4"),
])
def test_a_config_leaving_upper_layers_without_a_loss_is_refused(layers, num_layers, untrained):
    from jaxmt.pretraining.layer_coverage import check_every_layer_trained

    top = max(layers.values())
    with pytest.raises(ConfigError, match=rf"encoder {untrained} would get no loss \(the highest task layer is {top}"):
        check_every_layer_trained(layers, num_layers)
    check_every_layer_trained(layers, top)  # the same tasks on an encoder that ends at the top task: accepted


def test_shipped_configs_are_consistent():
    from configs import pretrain_bert, pretrain_hierarchical
    from jaxmt.pretraining.trainer import task_layers

    base, hier = pretrain_bert.get_config(), pretrain_hierarchical.get_config()
    assert task_layers(base, base.model.num_layers) == (("mlm", 4), ("nsp", 4)) and base.transfer == "none"
    assert task_layers(hier, hier.model.num_layers) == (("bigram_shift", 1), ("mlm", 4), ("nsp", 2))
    assert hier.transfer != "none"
    with pytest.raises(AttributeError):
        hier.tasks.mlm.layr = 2  # locked: a misspelt field is an error


def test_a_tiny_pretraining_run_lowers_all_three_losses(tmp_path, tokenizer, vocab):
    """The real data path (corpus, pairs, swaps, masks) and train step, on a few batches seen repeatedly."""
    import optax
    from transformers import BertConfig

    from jaxmt.pretraining.examples import PairStream
    from jaxmt.pretraining.step import init_train_state, make_train_step

    corpus_file = tmp_path / "corpus.txt"
    corpus_file.write_text(synthetic_corpus(12, 10))
    stream = PairStream(load_corpus(CorpusSpec(files=(str(corpus_file),)), tokenizer, None), vocab, 24, 0.0, seed=0)
    batches = [make_batch(stream.batch(i, 16), vocab, np.random.default_rng([0, i]), 0.15, 4, True) for i in range(4)]
    config = BertConfig(vocab_size=vocab.size, hidden_size=32, num_hidden_layers=3, num_attention_heads=2,
                        intermediate_size=64, max_position_embeddings=32, hidden_dropout_prob=0.0,
                        attention_probs_dropout_prob=0.0)
    model = HierarchicalBert(config, (("bigram_shift", 1), ("mlm", 3), ("nsp", 2)), "add_cls")
    tx = optax.adam(1e-2)
    state = init_train_state(model, tx, jax.random.PRNGKey(0), batches[0])
    train_step = jax.jit(make_train_step(model, tx, {"mlm": 1.0, "nsp": 1.0, "bigram_shift": 1.0}))
    history = []
    for step in range(100):
        state, metrics = train_step(state, batches[step % 4], jax.random.PRNGKey(1))
        history.append(jax.device_get(metrics))
    for task in ("mlm", "nsp", "bigram_shift"):
        first = np.mean([m[f"loss/{task}"] for m in history[:4]])
        last = np.mean([m[f"loss/{task}"] for m in history[-4:]])
        assert last < (0.5 if task == "mlm" else 0.85) * first, (task, first, last)  # binary tasks start at ln 2


def test_pretrain_command_evaluates_exports_and_resumes(tmp_path, bert_dir):
    from jaxmt.checkpointing.manager import Checkpoints
    from jaxmt.models.pretrained import load_pretrained
    from jaxmt.pretraining.trainer import pretrain

    corpus_file = tmp_path / "corpus.txt"
    corpus_file.write_text(synthetic_corpus(16, 12))
    workdir = tmp_path / "run"
    config = tiny_pretrain_config(bert_dir, corpus_file, tmp_path / "cache")
    results = pretrain(config, str(workdir))
    before, after = results["initial_heldout"], results["heldout"]
    assert set(after) == {f"{t}/{m}" for t in ("mlm", "nsp", "bigram_shift") for m in ("loss", "accuracy")}
    assert after["mlm/loss"] < before["mlm/loss"] - 0.5 and after["mlm/accuracy"] > before["mlm/accuracy"]
    assert json.loads((workdir / "results.json").read_text())["heldout"] == pytest.approx(after)
    logged = [json.loads(line) for line in (workdir / "metrics.jsonl").read_text().splitlines()]
    assert {"train/loss/mlm", "train/loss/nsp", "train/loss/bigram_shift"} <= set(logged[-2])

    exported = load_pretrained(str(workdir / "hf_model"))  # what every fine-tuning config's model.name loads
    assert exported.config.num_hidden_layers == 3 and exported.tokenizer.get_vocab() == load_pretrained(
        str(bert_dir)).tokenizer.get_vocab()
    checkpoints = Checkpoints(str(workdir), read_only=True)
    restored = checkpoints.latest.restore(checkpoints.latest_step())
    checkpoints.close()
    for scope in ("embeddings", "encoder", "pooler"):
        chex.assert_trees_all_close(exported.params[scope], restored["params"][scope])

    # The same command again resumes at the last step: nothing to train, the same params evaluated.
    again = pretrain(config, str(workdir))
    assert again["resumed_from_step"] == config.num_steps and again["heldout"] == pytest.approx(after, rel=1e-5)


def test_pretrain_sigterm_saves_and_the_same_call_resumes_exactly(tmp_path, bert_dir, monkeypatch):
    import os

    from jaxmt.pretraining import trainer
    from jaxmt.training import loop
    from jaxmt.training.faults import Preempted

    corpus_file = tmp_path / "corpus.txt"
    corpus_file.write_text(synthetic_corpus(16, 12))
    config = tiny_pretrain_config(bert_dir, corpus_file, tmp_path / "cache", num_steps=8, log_every=1,
                                  checkpoint_every=100)
    trainer.pretrain(config, str(tmp_path / "full"))
    sigterm_after_logging(loop, monkeypatch, step=3)
    with pytest.raises(Preempted, match="at step 4"):  # acted on after the step in flight
        trainer.pretrain(config, str(tmp_path / "cut"))
    assert os.listdir(tmp_path / "cut" / "checkpoints") == ["4"]
    monkeypatch.undo()
    assert trainer.pretrain(config, str(tmp_path / "cut"))["resumed_from_step"] == 4
    jax.tree.map(np.testing.assert_array_equal, read_params(tmp_path / "full", 8), read_params(tmp_path / "cut", 8))


PMAP_SCRIPT = """
import json, os, sys
os.environ["XLA_FLAGS"] = "--xla_force_host_platform_device_count=2"
sys.path[:0] = [{tests!r}, {root!r}]
from test_pretraining import tiny_pretrain_config
from jaxmt.pretraining.trainer import pretrain
losses = {{}}
for mode in ("jit", "pmap"):
    config = tiny_pretrain_config({bert!r}, {corpus!r}, {cache!r}, num_steps=6, log_every=1, checkpoint_every=100,
                                  **{{"parallel.mode": mode}})
    workdir = os.path.join({tmp!r}, mode)
    pretrain(config, workdir)
    rows = [json.loads(line) for line in open(os.path.join(workdir, "metrics.jsonl"))]
    losses[mode] = [r["train/loss/total"] for r in rows if "train/loss/total" in r]
print(json.dumps(losses))
"""


@pytest.mark.slow
def test_pretraining_on_the_pmap_path_gives_the_jit_losses(tmp_path, bert_dir):
    import os
    import subprocess
    import sys

    from conftest import ROOT

    corpus_file = tmp_path / "corpus.txt"
    corpus_file.write_text(synthetic_corpus(16, 12))
    script = PMAP_SCRIPT.format(tests=str(ROOT / "tests"), root=str(ROOT), bert=str(bert_dir),
                                corpus=str(corpus_file), cache=str(tmp_path / "cache"), tmp=str(tmp_path))
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=600,
                          env={**os.environ, "JAX_PLATFORMS": "cpu"})
    assert proc.returncode == 0, proc.stderr[-3000:]
    losses = json.loads(proc.stdout.strip().splitlines()[-1])
    assert len(losses["jit"]) == 6
    # pmap averages each device's mean loss (as DDP does); jit takes the mean over all masked tokens of the
    # global batch. With unequal masked-token counts per device the two weigh tokens slightly differently.
    np.testing.assert_allclose(losses["pmap"], losses["jit"], rtol=2e-3)
