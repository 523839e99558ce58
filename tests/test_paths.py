"""Every path field of every config expands `~` and environment variables, through jaxmt.paths.expand_path."""

import fnmatch
import importlib.util
import json
import os

import pytest
from conftest import ROOT

from jaxmt.errors import ConfigError
from jaxmt.paths import PATH_FIELDS, expand_path

VAR = "JAXMT_TEST_PATHS"


def load_config(relative: str):
    """configs/NAME.py's get_config(), imported as a module of the configs package (its relative imports)."""
    return importlib.import_module(relative.removesuffix(".py").replace("/", ".")).get_config()


def test_expand_path_home_variables_and_unset_variables(monkeypatch, tmp_path):
    monkeypatch.setenv(VAR, str(tmp_path))
    monkeypatch.setenv("HOME", "/home/someone")
    assert expand_path(f"${VAR}/a") == expand_path(f"${{{VAR}}}/a") == f"{tmp_path}/a"
    assert expand_path("~/data") == "/home/someone/data"
    assert expand_path("") == "" and expand_path("minilm") == "minilm"
    monkeypatch.delenv(VAR)
    with pytest.raises(ConfigError, match=rf"config.data.csv_dir = '\${VAR}/x': environment variable {VAR} is not set"):
        expand_path(f"${VAR}/x", "config.data.csv_dir")


def _leaves(config, prefix=""):
    for key, value in config.items():
        if hasattr(value, "items"):
            yield from _leaves(value, f"{prefix}{key}.")
        else:
            yield f"{prefix}{key}", value


def test_path_fields_list_every_path_field_of_every_config():
    """A new field that holds a path must be listed in PATH_FIELDS (and so be read through expand_path)."""
    listed = [field for fields in PATH_FIELDS.values() for field in fields]
    dataset_names = ("tasks.*.tfds.*", "data.tfds_name")  # TFDS names such as glue/sst2, not paths
    for config_file in sorted(p.relative_to(ROOT).as_posix() for p in (ROOT / "configs").glob("*.py")):
        if config_file.endswith("__init__.py"):
            continue
        for field, value in _leaves(load_config(config_file)):
            values = value if isinstance(value, (tuple, list)) else (value,)
            looks_like_path = any(isinstance(v, str) and ("/" in v or v.endswith((".txt", ".json", ".csv")))
                                  for v in values)
            if any(fnmatch.fnmatch(field, pattern) for pattern in dataset_names):
                continue
            if looks_like_path or field.endswith(("_dir", "_file", ".files", "init_from", "tokenizer")):
                assert any(fnmatch.fnmatch(field, pattern) for pattern in listed), (
                    f"{config_file}: {field} = {value!r} looks like a path: add it to PATH_FIELDS")


def _write_cs224n(folder):
    folder.mkdir()
    (folder / "ids-sst-dev.csv").write_text("\tid\tsentence\tsentiment\n0\ta\tA fine film .\t3\n")


def _sick(path):
    path.write_text("pair_ID\tsentence_A\tsentence_B\trelatedness_score\tentailment_judgment\n"
                    + "".join(f"{i}\ta man runs {i}\ta man walks\t3.0\tNEUTRAL\n" for i in range(40)))


def test_each_path_field_is_read_expanded(monkeypatch, tmp_path, tiny_bert_dir):
    from jaxmt.data.errors import DataError
    from jaxmt.data.sources import load_split, task_specs
    from jaxmt.downstream.squad import read_squad
    from jaxmt.models.pretrained import resolve_model_dir
    from jaxmt.pretraining.corpus import CorpusSpec, check_corpus_spec, load_corpus
    from jaxmt.pretraining.trainer import load_tokenizer
    from jaxmt.probing.tasks import read_corpus_sentences

    monkeypatch.setenv(VAR, str(tmp_path))
    here = f"${VAR}"
    default = load_config("configs/default.py")
    _write_cs224n(tmp_path / "cs224n")
    default.data.source, default.data.csv_dir, default.task_names = "csv", f"{here}/cs224n", ("sst",)
    assert load_split(default, task_specs(default)["sst"], "dev").ids == ["a"]  # data.csv_dir
    default.data.csv_dir, default.tasks.sst.files.dev = "/nonexistent", f"{here}/cs224n/ids-sst-dev.csv"
    assert load_split(default, task_specs(default)["sst"], "dev").ids == ["a"]  # tasks.*.files.*

    _sick(tmp_path / "SICK.txt")
    nli = load_config("configs/entailment.py")
    nli.data.sick_file = f"{here}/SICK.txt"
    assert len(load_split(nli, task_specs(nli)["nli"], "train")) > 0  # data.sick_file

    default.data.source, default.data.tfds_data_dir = "tfds", f"{here}/tfds"
    default.tasks.sst.tfds.name = "jaxmt_never_prepared"
    with pytest.raises(DataError, match=f"not prepared under {tmp_path}/tfds"):  # data.tfds_data_dir
        load_split(default, task_specs(default)["sst"], "train")

    os.symlink(tiny_bert_dir, tmp_path / "bert")
    assert resolve_model_dir(f"{here}/bert") == tmp_path / "bert"  # model.name, model.init_from
    assert load_tokenizer(f"{here}/bert").cls_token == "[CLS]"  # model.tokenizer

    answer = {"text": "a man", "answer_start": 0}
    squad = {"data": [{"title": "t", "paragraphs": [{"context": "a man runs .", "qas": [
        {"id": "q", "question": "who runs ?", "answers": [answer]}]}]}]}
    (tmp_path / "squad.json").write_text(json.dumps(squad))
    assert [q.id for q in read_squad(f"{here}/squad.json")] == ["q"]  # data.train_file, data.dev_file

    text = "".join(f"Sentence number {i} is here. Another one follows it now.\n\n" for i in range(6))
    (tmp_path / "corpus.txt").write_text(text)
    pretrain = load_config("configs/pretrain_bert.py")
    pretrain.data.files, pretrain.data.cache_dir = (f"{here}/corpus.txt",), f"{here}/cache"
    spec = CorpusSpec.from_config(pretrain.data)
    check_corpus_spec(spec)  # data.files
    load_corpus(spec, load_tokenizer(str(tiny_bert_dir)), pretrain.data.cache_dir)
    assert list((tmp_path / "cache").glob("*.npz"))  # data.cache_dir
    assert read_corpus_sentences(f"{here}/corpus.txt")  # jaxmt.probe --corpus
