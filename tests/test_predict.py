"""configs/paper_a_bert_base.py's code path on a tiny random BERT, and using its trained run:
`jaxmt.inference.TrainedModel` and `python -m jaxmt.predict`."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest
from conftest import ROOT, with_overrides

from jaxmt.data.demo import demo_split
from jaxmt.data.errors import DataError
from jaxmt.errors import ConfigError
from jaxmt.training import setup
from jaxmt.training.evaluation import Predictor


@pytest.fixture(scope="module")
def paper_a_run(tmp_path_factory, tiny_bert_dir):
    """Paper A's config with the tiny BERT for BERT-base, the demo data and a few steps; with the other switches
    on (the cosine STS head, Quora pairs encoded jointly while STS pairs stay siamese, sst against para+sts for
    PCGrad, a head learning rate) to run them in the trainer."""
    from configs import paper_a_bert_base
    from jaxmt.training.trainer import train_and_evaluate

    config = with_overrides(paper_a_bert_base.get_config(), **{
        "model.name": str(tiny_bert_dir), "data.source": "demo", "tasks.sts.head": "cosine",
        "tasks.para.pair_mode": "cross", "optim.surgery_groups": (("sst",), ("para", "sts")),
        "optim.head_learning_rate": 1e-3,
        "num_epochs": 0.5, "log_every": 2, "checkpoint_every": 4, "eval_every_epochs": 0.25,
        "data.max_train_examples": 64, "data.max_eval_examples": 32, "eval_batch_size": 32,
        "data.buckets": (16, 32, 64), "data.max_length": 64})
    workdir = str(tmp_path_factory.mktemp("paper_a") / "run")
    return workdir, config, train_and_evaluate(config, workdir)


def test_paper_a_config_states_the_papers_settings():
    from configs import paper_a_bert_base

    config = paper_a_bert_base.get_config()
    assert (config.optim.learning_rate, config.model.dropout, config.model.pair_mode) == (1e-5, 0.3, "siamese")
    assert config.optim.gradient_surgery == "pcgrad" and config.sampling == "all" and config.num_epochs == 3
    assert {config.tasks[t].batch_size for t in config.task_names} == {8}
    setup.check_config(config)


def test_paper_a_config_trains_its_epochs_evaluating_every_quarter_epoch(paper_a_run):
    """num_epochs sets num_steps with the epoch eval_every_epochs counts: half an epoch is two quarter-epoch
    intervals, ceil(64 / 8) = 8 steps an epoch."""
    workdir, config, results = paper_a_run
    assert results["steps"] == 4 and results["data"]["train_sizes"] == {"sst": 64, "para": 64, "sts": 64}
    assert results["eval_every"] == 2
    rows = [json.loads(line) for line in open(os.path.join(workdir, "metrics.jsonl"))]
    assert [r["step"] for r in rows if "dev/mean" in r] == [2, 4]
    train_rows = [r for r in rows if "train/loss/total" in r]
    assert train_rows and all("train/pcgrad/cos/para+sts-sst" in r and "train/grad_norm/para+sts" in r
                              for r in train_rows)
    recorded = json.load(open(os.path.join(workdir, "config.json")))
    assert recorded["eval_every_epochs"] == 0.25 and recorded["tasks"]["sts"]["head"] == "cosine"


def test_paper_a_run_restores_its_split_optimizer_state(paper_a_run):
    """The checkpoint holds PCGrad's state over 2 groups and AdamW split by encoder_or_head; a rerun restores it."""
    from jaxmt.training.trainer import train_and_evaluate

    workdir, config, _ = paper_a_run
    assert train_and_evaluate(config, workdir)["resumed_from_step"] == 4


@pytest.fixture(scope="module")
def trained_model(paper_a_run):
    from jaxmt.inference import TrainedModel

    return TrainedModel(paper_a_run[0])


def test_trained_model_predicts_what_the_dev_evaluation_scores(trained_model, paper_a_run):
    _, config, _ = paper_a_run
    run = trained_model.run
    evaluation = Predictor(run.model, run.mesh, config.eval_batch_size, config.data.buckets, run.tokenizer.pad_token_id)
    for task in ("sst", "para", "sts"):
        data = demo_split(trained_model.specs[task], "dev", 12)
        expected = evaluation.predict(run.params, task, setup.encode_splits(config, {task: data}, run.tokenizer)[task])
        scores = trained_model.predict(task, data.text_a, data.text_b)
        if task == "sst":
            assert scores.shape == (12, 5)
            np.testing.assert_allclose(scores.sum(axis=1), 1.0, rtol=1e-5)
            np.testing.assert_array_equal(scores.argmax(axis=1), expected)
        elif task == "para":
            assert scores.shape == (12,) and ((scores >= 0) & (scores <= 1)).all()
            np.testing.assert_array_equal(scores > 0.5, expected == 1)
        else:
            assert ((scores >= 0) & (scores <= 5)).all()
            np.testing.assert_allclose(scores, expected, rtol=1e-5, atol=1e-6)
    assert trained_model.predict("sst", []).shape == (0, 5)


def test_evaluate_runs_the_trainers_sized_rows_and_predicts_what_the_padded_path_does(paper_a_run, tmp_path,
                                                                                      monkeypatch):
    """`jaxmt.evaluate` packs a packing run's dev sets into sized rows through the trainer's Predictor (the
    batches come from `sized_eval_batches`), scores the trainer's last evaluation, and its prediction files hold
    the padded path's predictions (sst, para: equal; sts: within float32 rounding)."""
    from jaxmt.data.sources import load_splits, task_specs
    from jaxmt.evaluate import evaluate_workdir
    from jaxmt.inference import restore_run
    from jaxmt.training import evaluation

    workdir, config, results = paper_a_run
    packed_calls = []
    sized = evaluation.sized_eval_batches
    monkeypatch.setattr(evaluation, "sized_eval_batches",
                        lambda split, *a: packed_calls.append(split.data.spec.name) or sized(split, *a))
    out = evaluate_workdir(workdir, split="dev", checkpoint="latest", output_dir=str(tmp_path / "pred"))
    assert config.data.packing and sorted(packed_calls) == ["para", "sst", "sts"]
    assert out["metrics"] == pytest.approx(results["dev"], abs=1e-6)
    specs = task_specs(config)
    run = restore_run(config, workdir, "latest", specs)
    splits = setup.encode_splits(config, load_splits(config, specs, "dev"), run.tokenizer)
    padded = Predictor(run.model, run.mesh, config.eval_batch_size, config.data.buckets, run.tokenizer.pad_token_id)
    for task, split in splits.items():
        with open(out["prediction_files"][task]) as f:
            written = np.asarray([float(line.split(" , ")[1]) for line in f.readlines()[1:]])
        np.testing.assert_allclose(written, padded.predict(run.params, task, split), rtol=0, atol=1e-5)


def test_trained_model_refuses_inputs_that_do_not_fit_the_task(trained_model):
    with pytest.raises(ConfigError, match="task 'nli': this run trained para, sst, sts"):
        trained_model.predict("nli", ["a"])
    with pytest.raises(DataError, match="task 'sts' scores sentence pairs: give the second sentences too"):
        trained_model.predict("sts", ["a"])
    with pytest.raises(DataError, match="task 'sst' takes single sentences, not pairs"):
        trained_model.predict("sst", ["a"], ["b"])
    with pytest.raises(DataError, match="task 'para': second sentence 2 is empty"):
        trained_model.predict("para", ["a", "b"], ["c", "  "])


def predict_command(*args):
    env = dict(os.environ, PYTHONPATH=str(ROOT), JAX_PLATFORMS="cpu")
    return subprocess.run([sys.executable, "-m", "jaxmt.predict", *args], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=300)


def test_predict_command_prints_a_line_per_sentence(paper_a_run):
    out = predict_command(f"--workdir={paper_a_run[0]}", "--task=sst", "the movie was good", "what an awful film")
    assert out.returncode == 0, out.stderr[-2000:]
    lines = out.stdout.strip().split("\n")
    assert len(lines) == 2
    for line in lines:
        label, *probabilities = line.split("\t")
        assert label in "01234" and len(probabilities) == 5
        assert int(label) == int(np.argmax([float(p) for p in probabilities]))
        assert sum(map(float, probabilities)) == pytest.approx(1.0, abs=1e-3)
    assert "DEMO DATA" in out.stderr


def test_predict_command_reads_pairs_from_a_file(paper_a_run, tmp_path):
    (tmp_path / "pairs.tsv").write_text("a man plays a guitar\ta man plays music\nthe cat sleeps\tstocks fell today\n")
    out = predict_command(f"--workdir={paper_a_run[0]}", "--task=sts", f"--input_file={tmp_path / 'pairs.tsv'}",
                          "--checkpoint=latest")
    assert out.returncode == 0, out.stderr[-2000:]
    scores = [float(line) for line in out.stdout.strip().split("\n")]
    assert len(scores) == 2 and all(0.0 <= s <= 5.0 for s in scores)


@pytest.mark.parametrize("args, message", [
    (["--task=sts", "only one sentence"], "task 'sts' scores sentence pairs: give the arguments two at a time"),
    (["--task=sst", "--input_file={tmp}/lines.tsv"], "lines.tsv:2: task 'sst' needs one sentence (no tab) a line"),
    (["--task=nli", "a"], "task 'nli': this run trained para, sst, sts"),
    (["--task=sst"], "nothing to score: give the sentences of task 'sst' as arguments or --input_file"),
])
def test_predict_command_bad_input_is_one_line_and_exit_2(paper_a_run, tmp_path, args, message):
    (tmp_path / "lines.tsv").write_text("a fine film\ntwo\tcolumns\n")
    out = predict_command(f"--workdir={paper_a_run[0]}", *(a.format(tmp=tmp_path) for a in args))
    assert out.returncode == 2, out.stderr[-2000:]
    errors = [line for line in out.stderr.strip().splitlines() if line.startswith("jaxmt: error:")]
    assert len(errors) == 1 and message in errors[0] and "Traceback" not in out.stderr, out.stderr[-2000:]
    assert out.stdout == ""


def test_exported_encoder_loads_in_flax_bert_and_mean_pools_to_the_runs_embeddings(trained_model, tmp_path):
    """`jaxmt.export`: a Hugging Face directory whose mean-pooled last hidden states are the run's sentence
    embeddings (paper A's config has no shared layers), as sentence-transformers would pool them."""
    import jax.numpy as jnp
    from transformers import FlaxBertModel

    path = tmp_path / "hf"
    proc = subprocess.run([sys.executable, "-m", "jaxmt.export", f"--workdir={trained_model.workdir}",
                           f"--out={path}"], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert {"config.json", "model.safetensors", "tokenizer.json"} <= set(os.listdir(path))
    hf = FlaxBertModel.from_pretrained(str(path))
    tokens = trained_model.run.tokenizer(["a gripping film", "the plot drags"], padding=True, return_tensors="np")
    hidden = hf(**tokens).last_hidden_state
    mask = tokens["attention_mask"][..., None]
    pooled = (hidden * mask).sum(1) / mask.sum(1)
    batch = {"input_ids": tokens["input_ids"][:, None], "attention_mask": tokens["attention_mask"][:, None],
             "token_type_ids": tokens["token_type_ids"][:, None]}
    ours = trained_model.run.model.features(trained_model.run.params, batch, rng=None, deterministic=True)[:, 0]
    np.testing.assert_allclose(pooled, jnp.asarray(ours), atol=1e-5)


def test_sts_prediction_file_is_byte_identical_to_the_starters(tmp_path):
    """The CS224N starter writes each STS score of its float32 output array as a Python float (its float64
    digits: `2.7151050567626953`); jaxmt's file holds the same bytes, not float32's shortest `2.715105`."""
    from jaxmt.data.schema import REGRESSION
    from jaxmt.evaluate import write_predictions

    scores = np.array([2.715105, 0.1, 5.0, -0.00031, 1e-7, 3.0000002], dtype=np.float32)
    ids = [f"id{i:02d}" for i in range(len(scores))]
    starter = "id \t Predicted_Similiary \n" + "".join(f"{i} , {s} \n" for i, s in zip(ids, scores.tolist()))
    write_predictions(str(tmp_path / "sts-dev-output.csv"), "sts", ids, scores, kind=REGRESSION)
    written = (tmp_path / "sts-dev-output.csv").read_bytes()
    assert written == starter.encode()
    assert b"id00 , 2.7151050567626953 \n" in written and b"id04 , 1.0000000116860974e-07 \n" in written


def test_num_epochs_is_a_whole_number_of_epoch_evaluations():
    """3 epochs train exactly 3 of eval_every_epochs=1's intervals, whatever a step's examples (packed draws hold a
    fractional mean); half an epoch rounds up to a step."""
    from ml_collections import ConfigDict

    from jaxmt.training.trainer import epoch_eval_every, epoch_num_steps

    sizes = {"sst": 7544, "para": 29719, "sts": 5240}
    for per_step in (8.0, 9.43, 16.0):
        examples = dict.fromkeys(sizes, per_step)
        config = ConfigDict({"num_epochs": 3.0, "eval_every_epochs": 1.0})
        assert epoch_num_steps(config, sizes, examples) == 3 * epoch_eval_every(config, sizes, examples)
    config = ConfigDict({"num_epochs": 0.5})
    assert epoch_num_steps(config, {"a": 9}, {"a": 8.0}) == 1  # an epoch of 2 steps
    assert epoch_num_steps(config, {"a": 24}, {"a": 8.0}) == 2
