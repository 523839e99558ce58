import numpy as np
import pytest

from jaxmt.data.csv_source import read_csv_split
from jaxmt.data.errors import DataError
from jaxmt.data.schema import DEFAULT_TASKS

SST, PARA, STS = DEFAULT_TASKS["sst"], DEFAULT_TASKS["para"], DEFAULT_TASKS["sts"]


def write(tmp_path, name, text, encoding="utf-8"):
    path = tmp_path / name
    path.write_bytes(text.encode(encoding))
    return str(path)


def test_reads_sst_rows_by_header_name(tmp_path):
    path = write(tmp_path, "sst.csv", "\tid\tsentence\tsentiment\n0\tx1\t A fine film .\t3\n1\tx2\t Awful .\t0\n")
    data = read_csv_split(SST, path, "train")
    assert data.ids == ["x1", "x2"]
    assert data.text_a == ["A fine film .", "Awful ."]
    np.testing.assert_array_equal(data.labels, [3, 0])
    assert data.labels.dtype == np.int32 and data.text_b is None


def test_malformed_test_header_with_extra_unnamed_column(tmp_path):
    path = write(tmp_path, "t.csv", "0\t\tid\tsentence\n1\t0.0\tb75\t Effective but too-tepid biopic\n")
    data = read_csv_split(SST, path, "test")
    assert data.ids == ["b75"] and data.text_a == ["Effective but too-tepid biopic"] and data.labels is None


def test_quoted_fields_crlf_and_bom(tmp_path):
    text = '\ufeff\tid\tsentence1\tsentence2\tis_duplicate\r\n0\ta\t"""Quoted"" q?"\tOther q?\t1.0\r\n'
    data = read_csv_split(PARA, write(tmp_path, "q.csv", text), "train")
    assert data.text_a == ['"Quoted" q?'] and data.text_b == ["Other q?"] and data.labels.tolist() == [1]


QUORA_EMPTY_LABEL = (
    "\tid\tsentence1\tsentence2\tis_duplicate\n"
    "1\tok1\tWhat is up?\tWhat's up?\t1.0\n"
    '2\tbad\tAny idea?\t"""Where can I find a dress?"\t\n'
    "3\tok2\tHow?\tWhy?\t0.0\n"
)


def test_empty_label_is_an_error_naming_file_line_and_field(tmp_path):
    path = write(tmp_path, "quora.csv", QUORA_EMPTY_LABEL)
    with pytest.raises(DataError, match=r"quora\.csv:3 \(field 'is_duplicate'\): empty label"):
        read_csv_split(PARA, path, "train", on_bad_row="error")


def test_empty_label_rows_are_skipped_and_reported_not_silently_dropped(tmp_path, caplog):
    path = write(tmp_path, "quora.csv", QUORA_EMPTY_LABEL)
    data = read_csv_split(PARA, path, "train", on_bad_row="skip")
    assert data.ids == ["ok1", "ok2"]
    assert len(data.skipped) == 1
    assert data.skipped[0].location.endswith("quora.csv:3") and "empty label" in data.skipped[0].reason
    assert "skipped 1 bad rows" in caplog.text


def test_score_range_for_sts(tmp_path):
    path = write(tmp_path, "sts.csv", "\tid\tsentence1\tsentence2\tsimilarity\n0\tx\ta\tb\t5.5\n1\ty\ta\tb\t4.6\n")
    data = read_csv_split(STS, path, "train", on_bad_row="skip")
    assert data.labels.tolist() == pytest.approx([4.6]) and "outside [0.0, 5.0]" in data.skipped[0].reason


def test_real_files_row_counts_and_the_two_empty_quora_labels(shared_cs224n):
    quora = read_csv_split(PARA, str(shared_cs224n / "quora-train.csv"), "train", on_bad_row="skip")
    assert len(quora) == 29721 - 2  # the shared file: 16,214 course-dev pairs + 13,507 course-train pairs
    assert [s.location.rsplit(":", 1)[1] for s in quora.skipped] == ["2050", "11401"]
    assert all("empty label" in s.reason for s in quora.skipped)
    assert len(read_csv_split(SST, str(shared_cs224n / "ids-sst-dev.csv"), "dev")) == 1101
    test = read_csv_split(SST, str(shared_cs224n / "ids-sst-test-student.csv"), "test")
    assert len(test) == 2210 and test.labels is None
    sts = read_csv_split(STS, str(shared_cs224n / "sts-dev.csv"), "dev")
    assert len(sts) == 863 and sts.labels.min() >= 0 and sts.labels.max() <= 5


@pytest.mark.parametrize("split", ["train", "dev"])
def test_a_labeled_split_without_a_label_column_names_file_and_column(tmp_path, split):
    path = write(tmp_path, "ids-sst-dev.csv", "\tid\tsentence\n0\tx1\tA fine film .\n")
    with pytest.raises(DataError, match=rf"ids-sst-dev\.csv:1: header has no label column .*'sentiment'.*{split}"):
        read_csv_split(SST, path, split)
    assert read_csv_split(SST, path, "test").labels is None  # a test file may come without labels


def test_first_skipped_row_per_task_for_results_json(tmp_path):
    from jaxmt.data.sources import first_skipped_rows

    quora = read_csv_split(PARA, write(tmp_path, "quora.csv", QUORA_EMPTY_LABEL), "train", on_bad_row="skip")
    clean = read_csv_split(SST, write(tmp_path, "sst.csv", "\tid\tsentence\tsentiment\n0\tx\tFine .\t3\n"), "train")
    assert first_skipped_rows({"para": quora, "sst": clean}) == {
        "para": {"location": f"{tmp_path}/quora.csv:3", "reason": "is_duplicate: empty label"}}


def _quora_config(tmp_path, train_files=(), **data):
    """configs/default.py reading the para task from tmp_path, with `train_files` set."""
    from configs import default

    config = default.get_config()
    config.data.source, config.data.csv_dir, config.task_names = "csv", str(tmp_path), ("para",)
    config.tasks.para.train_files = train_files
    config.data.update(data)
    return config


def test_train_files_concatenate_in_order_and_name_the_bad_rows_file_and_line(tmp_path):
    from jaxmt.data.sources import load_split

    write(tmp_path, "quora-train.csv", QUORA_EMPTY_LABEL)
    write(tmp_path, "extra.csv", "\tid\tsentence1\tsentence2\tis_duplicate\n0\te1\tA?\tB?\t1.0\n1\te2\tC?\tD?\t0.0\n")
    write(tmp_path, "quora-dev.csv", "\tid\tsentence1\tsentence2\tis_duplicate\n0\td1\tE?\tF?\t1.0\n")
    config = _quora_config(tmp_path, ("quora-train.csv", f"{tmp_path}/extra.csv"))  # a name may be absolute
    train = load_split(config, PARA, "train")
    assert train.ids == ["ok1", "ok2", "e1", "e2"] and train.labels.tolist() == [1, 0, 1, 0]
    assert train.text_b == ["What's up?", "Why?", "B?", "D?"]
    assert [s.location for s in train.skipped] == [f"{tmp_path}/quora-train.csv:3"]
    assert train.source == f"{tmp_path}/quora-train.csv + {tmp_path}/extra.csv"
    assert load_split(config, PARA, "dev").ids == ["d1"]  # other splits keep files.<split>
    assert load_split(_quora_config(tmp_path), PARA, "train").ids == ["ok1", "ok2"]  # () = files.train alone
    capped = _quora_config(tmp_path, ("quora-train.csv", "extra.csv"), max_train_examples=3)
    assert load_split(capped, PARA, "train").ids == ["ok1", "ok2", "e1"]  # the cap counts all files' rows

    config.data.on_bad_row = "error"
    config.tasks.para.train_files = ("extra.csv", "quora-train.csv")
    with pytest.raises(DataError, match=r"quora-train\.csv:3 \(field 'is_duplicate'\): empty label"):
        load_split(config, PARA, "train")
    config.tasks.para.train_files = ("extra.csv", "missing.csv")
    with pytest.raises(DataError, match=r"missing\.csv: file not found"):
        load_split(config, PARA, "train")


def test_train_files_expand_variables(tmp_path, monkeypatch):
    from jaxmt.data.sources import load_split
    from jaxmt.errors import ConfigError

    write(tmp_path, "extra.csv", "\tid\tsentence1\tsentence2\tis_duplicate\n0\te1\tA?\tB?\t1.0\n")
    monkeypatch.setenv("JAXMT_TEST_EXTRA", str(tmp_path))
    assert load_split(_quora_config("/nowhere", ("$JAXMT_TEST_EXTRA/extra.csv",)), PARA, "train").ids == ["e1"]
    monkeypatch.delenv("JAXMT_TEST_EXTRA")
    with pytest.raises(ConfigError, match=r"config\.tasks\.para\.train_files\[0\] = .*JAXMT_TEST_EXTRA is not set"):
        load_split(_quora_config("/nowhere", ("$JAXMT_TEST_EXTRA/extra.csv",)), PARA, "train")


def test_real_extra_quora_file_reads_clean(shared_cs224n):
    extra = read_csv_split(PARA, str(shared_cs224n / "quora-train-extra.csv"), "train", on_bad_row="error")
    assert len(extra) == 9250 and set(extra.labels.tolist()) == {0, 1}
    train = read_csv_split(PARA, str(shared_cs224n / "quora-train.csv"), "train", on_bad_row="skip")
    dev = read_csv_split(PARA, str(shared_cs224n / "quora-dev.csv"), "dev")
    assert not set(extra.ids) & (set(train.ids) | set(dev.ids))  # ids never collide across the files
