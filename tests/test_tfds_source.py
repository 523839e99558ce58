"""Tests of the TFDS reader on tiny datasets prepared locally (no internet, no TensorFlow).

The builders skip TFDS registration, so `tfds.builder(name, data_dir=...)` finds them only
through their prepared files: the same path a real prepared GLUE copy takes when TFDS's GLUE
module is not imported.
"""

from __future__ import annotations

import json
import re
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest

from jaxmt.data.errors import DataError
from jaxmt.data.schema import BINARY, CLASSIFICATION, REGRESSION, TaskSpec
from jaxmt.data.tfds_source import load_tfds_split

tfds = pytest.importorskip("tensorflow_datasets")
pytest.importorskip("array_record")

PAIRS = "jaxmt_tiny_pairs"
SST = "jaxmt_tiny_sst"
PAIR_FIELDS = {"text_a": "question1", "text_b": "question2", "label": "label"}
PARA = TaskSpec("para", BINARY, is_pair=True)
STS = TaskSpec("sts", REGRESSION, is_pair=True, label_min=0.0, label_max=5.0)
SST_SPEC = TaskSpec("sst", CLASSIFICATION, is_pair=False, num_classes=5)
BAD_TEXT_ID, BAD_CLASS_ID, UNLABELED_ID, BAD_SCORE_ID = 5, 11, 17, 7


def _pair_row(idx: int, label: int, score: float) -> dict:
    return {
        "idx": idx,
        "question1": f"first question {idx}",
        "question2": f"second question {idx}",
        "label": label,
        "score": score,
    }


class JaxmtTinyPairs(tfds.core.GeneratorBasedBuilder, skip_registration=True):
    """GLUE-like pair dataset (QQP feature names) with bad rows in train and a -1 test split."""

    VERSION = tfds.core.Version("1.0.0")

    def _info(self) -> tfds.core.DatasetInfo:
        return tfds.core.DatasetInfo(
            builder=self,
            features=tfds.features.FeaturesDict(
                {
                    "idx": np.int32,
                    "question1": tfds.features.Text(),
                    "question2": tfds.features.Text(),
                    "label": tfds.features.ClassLabel(num_classes=3),
                    "score": np.float32,
                }
            ),
        )

    def _split_generators(self, dl_manager):
        train = []
        for idx in range(24):
            row = _pair_row(idx, idx % 2, float(idx % 6))
            if idx == BAD_TEXT_ID:
                row["question2"] = "   "
            if idx == BAD_CLASS_ID:
                row["label"] = 2  # a valid ClassLabel, but not a binary label
            if idx == UNLABELED_ID:
                row["label"] = -1  # a "no gold label" row inside a labeled split (as in SNLI)
            if idx == BAD_SCORE_ID:
                row["score"] = 9.0
            train.append(row)
        validation = [_pair_row(idx, idx % 2, float(idx % 6)) for idx in range(100, 108)]
        test = [_pair_row(idx, -1, -1.0) for idx in range(200, 206)]
        return {
            "train": self._generate_examples(train),
            "validation": self._generate_examples(validation),
            "test": self._generate_examples(test),
        }

    def _generate_examples(self, rows):
        for row in rows:
            yield row["idx"], row


class JaxmtTinySst(tfds.core.GeneratorBasedBuilder, skip_registration=True):
    """GLUE-SST-like single-sentence dataset without an `idx` feature."""

    VERSION = tfds.core.Version("1.0.0")

    def _info(self) -> tfds.core.DatasetInfo:
        return tfds.core.DatasetInfo(
            builder=self,
            features=tfds.features.FeaturesDict(
                {"sentence": tfds.features.Text(), "label": tfds.features.ClassLabel(num_classes=5)}
            ),
            disable_shuffling=True,  # records stay in generation order, so indices are predictable
        )

    def _split_generators(self, dl_manager):
        return {
            "train": self._generate_examples(20, lambda k: k % 5),
            "test": self._generate_examples(5, lambda k: -1),
            # Looks unlabeled for the first rows, then turns out to be labeled.
            "mixed": self._generate_examples(8, lambda k: -1 if k < 3 else k % 5),
        }

    def _generate_examples(self, n, label_of):
        for k in range(n):
            yield k, {"sentence": f"sentence number {k}", "label": label_of(k)}


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory: pytest.TempPathFactory) -> str:
    root = tmp_path_factory.mktemp("tfds")
    config = tfds.download.DownloadConfig(try_download_gcs=False)
    for cls in (JaxmtTinyPairs, JaxmtTinySst):
        cls(data_dir=str(root), file_format="array_record").download_and_prepare(download_config=config)
    return str(root)


def test_pairs_validation_maps_fields_ids_and_labels(data_dir: str) -> None:
    data = load_tfds_split(PARA, PAIRS, "validation", data_dir, fields=PAIR_FIELDS)
    assert data.source == f"tfds:{PAIRS}[validation]"
    assert data.split == "validation" and data.spec is PARA and not data.skipped
    assert sorted(data.ids) == [str(i) for i in range(100, 108)]  # from the `idx` feature
    assert data.labels is not None and data.labels.dtype == np.int32
    for row_id, a, b, label in zip(data.ids, data.text_a, data.text_b, data.labels):
        assert (a, b, label) == (f"first question {row_id}", f"second question {row_id}", int(row_id) % 2)
    assert "tensorflow" not in sys.modules


def test_all_minus_one_test_split_has_no_labels(data_dir: str) -> None:
    data = load_tfds_split(PARA, PAIRS, "test", data_dir, fields=PAIR_FIELDS)
    assert data.labels is None and len(data) == 6 and not data.skipped
    scores = load_tfds_split(STS, PAIRS, "test", data_dir, fields={**PAIR_FIELDS, "label": "score"})
    assert scores.labels is None
    sst = load_tfds_split(SST_SPEC, SST, "test", data_dir)
    assert sst.labels is None and sst.text_b is None and len(sst) == 5


def test_minus_one_rows_in_a_labeled_split_are_bad_rows(data_dir: str) -> None:
    with pytest.raises(DataError, match=r"\[mixed\] example #0 \(id mixed-0\), field 'label': .*all -1"):
        load_tfds_split(SST_SPEC, SST, "mixed", data_dir)
    data = load_tfds_split(SST_SPEC, SST, "mixed", data_dir, on_bad_row="skip")
    assert data.ids == [f"mixed-{k}" for k in range(3, 8)]
    assert [s.location for s in data.skipped] == [f"tfds:{SST}[mixed]#{k}" for k in range(3)]
    assert data.labels is not None and list(data.labels) == [k % 5 for k in range(3, 8)]
    # Capped before the first real label, the rows read look like an unlabeled split.
    assert load_tfds_split(SST_SPEC, SST, "mixed", data_dir, max_examples=3).labels is None


def test_bad_row_raises_naming_dataset_split_index_and_field(data_dir: str) -> None:
    with pytest.raises(DataError) as info:
        load_tfds_split(PARA, PAIRS, "train", data_dir, fields=PAIR_FIELDS)
    assert re.search(
        rf"tfds:{PAIRS}\[train\] example #\d+ \(id ({BAD_TEXT_ID}|{BAD_CLASS_ID}|{UNLABELED_ID})\), "
        r"field '(question2|label)'",
        str(info.value),
    ), str(info.value)
    # Without labels the empty sentence is the only bad row, so the message is exact.
    with pytest.raises(DataError, match=rf"\(id {BAD_TEXT_ID}\), field 'question2': empty text"):
        load_tfds_split(PARA, PAIRS, "train", data_dir, fields={**PAIR_FIELDS, "label": None})


def test_skip_leaves_bad_rows_out_and_records_them(data_dir: str) -> None:
    data = load_tfds_split(PARA, PAIRS, "train", data_dir, fields=PAIR_FIELDS, on_bad_row="skip")
    bad_ids = {BAD_TEXT_ID, BAD_CLASS_ID, UNLABELED_ID}
    assert len(data) == 24 - len(bad_ids)
    assert not bad_ids & {int(i) for i in data.ids}
    assert data.labels is not None and np.array_equal(data.labels, [int(i) % 2 for i in data.ids])
    assert len(data.skipped) == 3
    indices = [int(s.location.rsplit("#", 1)[1]) for s in data.skipped]
    assert indices == sorted(indices)
    assert all(s.location.startswith(f"tfds:{PAIRS}[train]#") for s in data.skipped)
    reasons = sorted(s.reason for s in data.skipped)
    assert reasons[0].startswith("label: class label -1 is outside 0..1")
    assert reasons[1] == "label: class label 2 is outside 0..1"
    assert reasons[2] == "question2: empty text"


def test_regression_label_from_another_field(data_dir: str) -> None:
    fields = {**PAIR_FIELDS, "label": "score"}
    data = load_tfds_split(STS, PAIRS, "train", data_dir, fields=fields, on_bad_row="skip")
    assert {int(i) for i in data.ids} == set(range(24)) - {BAD_TEXT_ID, BAD_SCORE_ID}
    assert data.labels is not None and data.labels.dtype == np.float32
    np.testing.assert_allclose(data.labels, [int(i) % 6 for i in data.ids])
    assert any("score 9.0 is outside [0.0, 5.0]" in s.reason for s in data.skipped)


def test_single_sentence_ids_and_common_field_names(data_dir: str) -> None:
    explicit = load_tfds_split(
        SST_SPEC, SST, "train", data_dir, fields={"text_a": "sentence", "label": "label"}
    )
    guessed = load_tfds_split(SST_SPEC, SST, "train", data_dir)  # `sentence`/`label` found by name
    assert explicit.ids == guessed.ids == [f"train-{k}" for k in range(20)]  # no `idx` feature
    assert explicit.text_a == guessed.text_a == [f"sentence number {k}" for k in range(20)]
    assert explicit.text_b is None and explicit.labels is not None
    assert list(explicit.labels) == [k % 5 for k in range(20)]


def test_max_examples_reads_the_first_rows(data_dir: str) -> None:
    full = load_tfds_split(PARA, PAIRS, "train", data_dir, fields=PAIR_FIELDS, on_bad_row="skip")
    first = load_tfds_split(
        PARA, PAIRS, "train", data_dir, fields=PAIR_FIELDS, on_bad_row="skip", max_examples=5
    )
    assert len(first) == 5 and first.ids == full.ids[:5] and first.text_b == full.text_b[:5]
    assert np.array_equal(first.labels, full.labels[:5])


def test_field_mapping_errors(data_dir: str) -> None:
    with pytest.raises(DataError, match="takes sentence pairs but the field mapping has no text_b"):
        load_tfds_split(PARA, SST, "train", data_dir)
    with pytest.raises(DataError, match="takes single sentences .* text_b='question2'"):
        load_tfds_split(SST_SPEC, PAIRS, "train", data_dir, fields=PAIR_FIELDS)
    with pytest.raises(DataError, match=r"text_b field 'nope' is not a feature .*'question1'"):
        load_tfds_split(PARA, PAIRS, "train", data_dir, fields={**PAIR_FIELDS, "text_b": "nope"})
    with pytest.raises(DataError, match="label field 'question1' is not a numeric scalar"):
        load_tfds_split(PARA, PAIRS, "train", data_dir, fields={**PAIR_FIELDS, "label": "question1"})
    with pytest.raises(DataError, match="unknown key"):
        load_tfds_split(PARA, PAIRS, "train", data_dir, fields={**PAIR_FIELDS, "sentence": "x"})
    with pytest.raises(DataError, match=r"cannot read split 'dev'.*'validation'"):
        load_tfds_split(PARA, PAIRS, "dev", data_dir, fields=PAIR_FIELDS)


def test_not_prepared_dataset_says_how_to_prepare(tmp_path: Path) -> None:
    with pytest.raises(DataError, match=r"'jaxmt_tiny_never_built' is not prepared under .*tfds build"):
        load_tfds_split(SST_SPEC, "jaxmt_tiny_never_built", "train", str(tmp_path))
    # A builder TFDS knows but that was never prepared there: still no download attempt.
    with pytest.raises(DataError, match=r"'imdb_reviews' is not prepared under .*file_format=array_record"):
        load_tfds_split(TaskSpec("imdb", BINARY, is_pair=False), "imdb_reviews", "train", str(tmp_path))
    assert not any(tmp_path.iterdir())


def test_glue_layout_uses_the_builtin_field_table(tmp_path: Path) -> None:
    """TFDS's own GLUE builder (features, config dirs), fed in-memory rows instead of downloads."""
    glue = pytest.importorskip("tensorflow_datasets.text.glue")

    class OfflineGlue(glue.Glue, skip_registration=True):
        name = "glue"

        def _split_generators(self, dl_manager):
            config = self.builder_config

            def rows(n: int, labeled: bool):
                for i in range(n):
                    label = (float(i % 6) if config.name == "stsb" else i % 2) if labeled else -1
                    yield i, {"idx": i, "label": label, **{f: f"{f} {i}" for f in config.text_features}}

            return {"train": rows(6, True), "test": rows(3, False)}

    config = tfds.download.DownloadConfig(try_download_gcs=False)
    for name in ("sst2", "qqp", "stsb"):
        builder = OfflineGlue(config=name, data_dir=str(tmp_path), file_format="array_record")
        builder.download_and_prepare(download_config=config)
    sst2 = load_tfds_split(TaskSpec("sst2", BINARY, is_pair=False), "glue/sst2", "train", str(tmp_path))
    assert sst2.text_a == [f"sentence {i}" for i in map(int, sst2.ids)] and sst2.text_b is None
    qqp = load_tfds_split(PARA, "glue/qqp", "train", str(tmp_path))
    assert qqp.text_b == [f"question2 {i}" for i in map(int, qqp.ids)]
    assert list(qqp.labels) == [int(i) % 2 for i in qqp.ids]
    stsb = load_tfds_split(STS, "glue/stsb:2.0.0", "train", str(tmp_path))
    assert stsb.text_a == [f"sentence1 {i}" for i in map(int, stsb.ids)]
    np.testing.assert_allclose(stsb.labels, [int(i) % 6 for i in stsb.ids])
    assert load_tfds_split(STS, "glue/stsb", "test", str(tmp_path)).labels is None


def test_tfrecord_copy_is_refused_with_instructions(data_dir: str, tmp_path: Path) -> None:
    shutil.copytree(Path(data_dir) / SST, tmp_path / SST)
    info_path = tmp_path / SST / "1.0.0" / "dataset_info.json"
    info = json.loads(info_path.read_text())
    info["fileFormat"] = "tfrecord"
    info_path.write_text(json.dumps(info))
    with pytest.raises(DataError, match="tfrecord file format, which only TensorFlow can read"):
        load_tfds_split(SST_SPEC, SST, "train", str(tmp_path))


def test_config_with_source_tfds_reads_each_split_through_the_task_block(data_dir: str) -> None:
    from configs import default
    from jaxmt.data.sources import load_split, task_specs

    config = default.get_config()
    config.data.source = "tfds"
    config.data.tfds_data_dir = data_dir
    config.task_names = ("para",)
    config.tasks.para.tfds.name = PAIRS
    config.tasks.para.tfds.fields.update(PAIR_FIELDS)
    spec = task_specs(config)["para"]
    train = load_split(config, spec, "train")  # data.on_bad_row defaults to skip: counted, not silent
    assert len(train) == 24 - 3 and len(train.skipped) == 3  # empty text, class 2, label -1
    dev = load_split(config, spec, "dev")  # our "dev" is the dataset's "validation"
    assert dev.source == f"tfds:{PAIRS}[validation]" and len(dev) == 8
    assert load_split(config, spec, "test").labels is None
    config.tasks.para.tfds.splits.test = ""
    assert load_split(config, spec, "test") is None


def test_train_and_dev_splits_need_labels_test_splits_do_not(data_dir: str) -> None:
    with pytest.raises(DataError, match=rf"tfds:{SST}\[train\]: no label field .*'sentence'"):
        load_tfds_split(SST_SPEC, SST, "train", data_dir, fields={"label": None}, require_labels=True)
    with pytest.raises(DataError, match=r"\(6 skipped\), every one labeled -1 .* carries no labels"):
        load_tfds_split(PARA, PAIRS, "test", data_dir, fields=PAIR_FIELDS, on_bad_row="skip", require_labels=True)
    assert load_tfds_split(PARA, PAIRS, "test", data_dir, fields=PAIR_FIELDS).labels is None

    from configs import default
    from jaxmt.data.sources import load_split, task_specs

    config = default.get_config()
    config.data.source, config.data.tfds_data_dir, config.task_names = "tfds", data_dir, ("para",)
    config.tasks.para.tfds.name = PAIRS
    config.tasks.para.tfds.fields.update(PAIR_FIELDS)
    config.tasks.para.tfds.splits.dev = "test"  # a dev split that is really the unlabeled test split
    with pytest.raises(DataError, match=r"tfds:jaxmt_tiny_pairs\[test\]: no usable rows .* carries no labels"):
        load_split(config, task_specs(config)["para"], "dev")
