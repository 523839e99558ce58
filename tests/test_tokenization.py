import chex
import numpy as np
import pytest

from jaxmt.data.schema import DEFAULT_TASKS, TaskData
from jaxmt.data.tokenization import _truncate_pair, bucket_length, encode_split, make_batch


def pair_data(a, b, labels=None):
    return TaskData(spec=DEFAULT_TASKS["sts"], split="dev", source="test", ids=[str(i) for i in range(len(a))],
                    text_a=a, text_b=b, labels=np.asarray(labels or [1.0] * len(a), np.float32))


def test_cross_pairs_match_the_tokenizers_own_pair_encoding(tiny_bert):
    tok = tiny_bert.tokenizer
    a = ["a man is playing a guitar .", "a dog is eating an apple in a park ."]
    b = ["a woman is holding a book .", "a cat ."]
    enc = encode_split(pair_data(a, b), tok, max_length=64, pair_mode="cross")
    ref = tok(a, b)
    for i in range(2):
        np.testing.assert_array_equal(enc.input_ids[i][0], ref["input_ids"][i])
        np.testing.assert_array_equal(enc.token_type_ids[i][0], ref["token_type_ids"][i])
    ids = enc.input_ids[0][0]
    assert ids[0] == tok.cls_token_id and ids[-1] == tok.sep_token_id
    assert list(ids).count(tok.sep_token_id) == 2
    assert enc.num_truncated == 0


def test_truncation_is_longest_first_like_hugging_face_and_is_counted(tiny_bert):
    tok = tiny_bert.tokenizer
    a = ["a man is playing a guitar on a stage in the snow by a river .", "a cat ."]
    b = ["a dog .", "a woman is holding a book in the kitchen on a beach in a park ."]
    enc = encode_split(pair_data(a, b), tok, max_length=10, pair_mode="cross")
    ref = tok(a, b, truncation="longest_first", max_length=10)
    for i in range(2):
        np.testing.assert_array_equal(enc.input_ids[i][0], ref["input_ids"][i])
    assert enc.num_truncated == 2
    for la, lb, budget in [(10, 10, 15), (12, 3, 9), (3, 12, 9), (20, 9, 10), (9, 20, 10), (5, 5, 20)]:
        ta, tb = _truncate_pair(list(range(la)), list(range(lb)), budget)
        types = tok(" ".join(["a"] * la), " ".join(["cat"] * lb), truncation="longest_first",
                    max_length=budget + 3)["token_type_ids"]
        assert len(ta) + len(tb) <= budget
        assert (len(ta), len(tb)) == (types.count(0) - 2, types.count(1) - 1), (la, lb, budget)


def test_siamese_encodes_each_sentence_alone(tiny_bert):
    enc = encode_split(pair_data(["a man ."], ["a woman is eating ."]), tiny_bert.tokenizer, 32, "siamese")
    assert enc.num_sequences == 2
    assert all(t.sum() == 0 for t in enc.token_type_ids[0])
    assert len(enc.input_ids[0][0]) == 5 and len(enc.input_ids[0][1]) == 7  # [CLS] ... [SEP]


def test_single_sentence_truncation_counts(tiny_bert):
    data = TaskData(spec=DEFAULT_TASKS["sst"], split="train", source="t", ids=["0", "1"],
                    text_a=["good " * 40, "good ."], text_b=None, labels=np.asarray([3, 3], np.int32))
    enc = encode_split(data, tiny_bert.tokenizer, max_length=16)
    assert enc.num_truncated == 1
    assert len(enc.input_ids[0][0]) == 16
    np.testing.assert_array_equal(enc.lengths, [16, 4])


def test_a_repeated_split_equals_encoding_the_repeated_rows(tiny_bert):
    """The compile report repeats a small training set once tokenized; it must equal tokenizing the repeat."""
    a = ["a man is playing a guitar on a stage in the snow by a river .", "a cat ."]
    b = ["a dog .", "a woman is holding a book ."]
    enc = encode_split(pair_data(a, b, [1.0, 4.0]), tiny_bert.tokenizer, max_length=12, pair_mode="triplet")
    twice = encode_split(pair_data(a * 3, b * 3, [1.0, 4.0] * 3), tiny_bert.tokenizer, 12, "triplet")
    got = enc.repeated(3)
    assert enc.num_truncated == 2 and got.num_truncated == twice.num_truncated == 6 and len(got.data) == 6
    np.testing.assert_array_equal(got.data.labels, twice.data.labels)
    np.testing.assert_array_equal(got.lengths, twice.lengths)
    for mine, theirs in zip(got.input_ids + got.token_type_ids, twice.input_ids + twice.token_type_ids):
        chex.assert_trees_all_equal(mine, theirs)


def test_buckets_and_batches(tiny_bert):
    assert bucket_length(5, (16, 32)) == 16
    assert bucket_length(16, (16, 32)) == 16
    assert bucket_length(17, (16, 32)) == 32
    with pytest.raises(ValueError, match="longer than the largest bucket"):
        bucket_length(40, (16, 32))
    enc = encode_split(pair_data(["a man ."] * 3, ["a dog ."] * 3, [1.0, 2.0, 3.0]), tiny_bert.tokenizer, 32, "cross")
    batch = make_batch(enc, np.asarray([2, 0]), length=16, pad_id=0, num_rows=4)
    chex.assert_shape([batch["input_ids"], batch["token_type_ids"], batch["attention_mask"]], (4, 1, 16))
    chex.assert_type([batch["input_ids"], batch["attention_mask"]], np.int32)
    chex.assert_type([batch["labels"], batch["example_mask"]], np.float32)
    np.testing.assert_array_equal(batch["labels"], [3.0, 1.0, 0.0, 0.0])
    np.testing.assert_array_equal(batch["example_mask"], [1, 1, 0, 0])
    assert batch["attention_mask"][0, 0].sum() == len(enc.input_ids[2][0])
    assert batch["input_ids"][2:].sum() == 0


def test_triplet_pairs_are_each_sentence_alone_then_both_jointly(tiny_bert):
    tok = tiny_bert.tokenizer
    data = TaskData(spec=DEFAULT_TASKS["sts"], split="train", source="test", ids=["p0"], text_a=["the cat"],
                    text_b=["a dog runs"], labels=np.asarray([3.0], np.float32))
    triplet = encode_split(data, tok, 16, "triplet")
    siamese = encode_split(data, tok, 16, "siamese")
    cross = encode_split(data, tok, 16, "cross")
    assert triplet.num_sequences == 3
    for got, want in zip(triplet.input_ids[0], siamese.input_ids[0] + cross.input_ids[0]):
        np.testing.assert_array_equal(got, want)
    np.testing.assert_array_equal(triplet.token_type_ids[0][2], cross.token_type_ids[0][0])
