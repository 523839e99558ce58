"""A start that fails while loading (a bad data path, a bad row, an unset $VAR) leaves its config.json behind but
trains nothing, so it must not bind the workdir: the corrected start of every trainer takes its new config and
trains (`jaxmt.training.loop.prepare_workdir`). A workdir that holds a checkpoint still refuses another config."""

import json

import pytest
from conftest import tiny_config, with_overrides
from test_acgan import gan_config
from test_downstream import qa_bert, squad_file, tiny_qa_config  # noqa: F401 (fixtures)
from test_pretraining import bert_dir, synthetic_corpus, tiny_pretrain_config  # noqa: F401 (fixture)

from jaxmt.checkpointing.workdir import CONFIG_CHANGES_FILE, read_run_config
from jaxmt.data.errors import DataError
from jaxmt.errors import ConfigError


def fails_then_trains(train, failing, corrected, workdir, error=(ConfigError, DataError, FileNotFoundError)) -> dict:
    """`train(failing)` raises after recording its config; `train(corrected)` then trains in the same workdir."""
    with pytest.raises(error):
        train(failing, str(workdir))
    assert (workdir / "config.json").exists()  # what the failed start left, and what used to refuse the rerun
    results = train(corrected, str(workdir))
    assert results.get("resumed_from_step", 0) == 0
    recorded = json.loads(json.dumps(read_run_config(str(workdir)).to_dict()))
    assert recorded == json.loads(corrected.to_json_best_effort())
    assert not (workdir / CONFIG_CHANGES_FILE).exists()  # a replaced config is no change of a trained run
    return results


def test_train_after_a_missing_csv_dir_and_after_an_unset_variable(tmp_path, tiny_bert_dir, monkeypatch):
    from jaxmt.training.trainer import train_and_evaluate

    monkeypatch.delenv("JAXMT_UNSET_DIR", raising=False)
    corrected = tiny_config(tiny_bert_dir, num_steps=2, eval_every=0, checkpoint_every=2)
    missing = tiny_config(tiny_bert_dir, **{"data.source": "csv", "data.csv_dir": str(tmp_path / "no_such_dir")})
    results = fails_then_trains(train_and_evaluate, missing, corrected, tmp_path / "w")
    assert results["steps"] == 2 and (tmp_path / "w" / "checkpoints" / "2").is_dir()

    unset = tiny_config(tiny_bert_dir, **{"data.source": "csv", "data.csv_dir": "$JAXMT_UNSET_DIR/cs224n"})
    with pytest.raises(ConfigError, match="JAXMT_UNSET_DIR is not set"):
        train_and_evaluate(unset, str(tmp_path / "v"))
    # A workdir that trained keeps its config: another one is still refused, naming the change.
    with pytest.raises(ConfigError, match="this workdir was trained with another config"):
        train_and_evaluate(with_overrides(corrected.copy_and_resolve_references(), **{"optim.learning_rate": 1e-3}),
                           str(tmp_path / "w"))


def test_pretrain_after_a_corpus_without_text(tmp_path, bert_dir):  # noqa: F811
    from jaxmt.pretraining.trainer import pretrain

    corpus, blank = tmp_path / "corpus.txt", tmp_path / "blank.txt"
    corpus.write_text(synthetic_corpus(8, 6))
    blank.write_text("\n\n")
    corrected = tiny_pretrain_config(bert_dir, corpus, tmp_path / "cache", num_steps=2, log_every=1,
                                     checkpoint_every=2)
    failing = tiny_pretrain_config(bert_dir, blank, tmp_path / "cache", num_steps=2, log_every=1, checkpoint_every=2)
    fails_then_trains(pretrain, failing, corrected, tmp_path / "w")
    assert (tmp_path / "w" / "hf_model").is_dir()


def test_qa_after_a_missing_train_file(tmp_path, qa_bert, squad_file):  # noqa: F811
    from jaxmt.downstream.qa_train import train_and_evaluate_qa

    corrected = tiny_qa_config(qa_bert, squad_file, num_steps=2, checkpoint_every=2)
    failing = tiny_qa_config(qa_bert, squad_file, num_steps=2, checkpoint_every=2)
    failing.data.train_file = str(tmp_path / "no_such_train.json")
    fails_then_trains(train_and_evaluate_qa, failing, corrected, tmp_path / "w")


def test_acgan_after_a_bad_row_under_on_bad_row_error(tmp_path, tiny_bert_dir):
    from jaxmt.gan.trainer import train_gan_or_baseline

    data = tmp_path / "data"
    data.mkdir()
    header = "\tid\tsentence\tsentiment\n"  # the CS224N files' layout: a leading index column
    rows = "".join(f"{i}\tid{i}\tthe movie was {'good' if i % 2 else 'bad'} .\t{i % 5}\n" for i in range(40))
    for split in ("train", "dev"):
        (data / f"ids-sst-{split}.csv").write_text(header + rows)
    (data / "bad").mkdir()
    for split in ("train", "dev"):
        (data / "bad" / f"ids-sst-{split}.csv").write_text(header + rows + "41\tid41\tno label here\n")
    common = {"data.source": "csv", "data.on_bad_row": "error", "num_steps": 2, "eval_every": 0,
              "data.max_train_examples": -1, "data.max_eval_examples": -1, "tasks.sst.batch_size": 8}
    failing = gan_config(tiny_bert_dir, **common, **{"data.csv_dir": str(data / "bad")})
    corrected = gan_config(tiny_bert_dir, **common, **{"data.csv_dir": str(data)})
    results = fails_then_trains(train_gan_or_baseline, failing, corrected, tmp_path / "w")
    assert results["steps"] == 2


def test_sweep_run_after_a_failed_start_in_its_workdir(tmp_path, tiny_bert_dir):
    """A sweep run's folder holding only the config.json of a start that failed (here written as that start
    would have) is trained with the sweep's config; the table gets its row."""
    from jaxmt.gan.fractions import run_config_for, run_dir, run_sweep
    from jaxmt.training import loop

    config = gan_config(tiny_bert_dir, num_steps=2, eval_every=0)
    folder = run_dir(str(tmp_path), 1.0, "baseline", config.seed)
    stale = run_config_for(config, 1.0, "baseline", config.seed, config.num_steps)
    stale.data.csv_dir = str(tmp_path / "no_such_dir")
    loop.prepare_workdir(stale, folder)
    rows = run_sweep(config, str(tmp_path), [1.0], ["baseline"])
    assert len(rows) == 1 and read_run_config(folder).data.csv_dir != stale.data.csv_dir
