"""Training on a tiny random BERT: the loss falls, resumption is exact, evaluation is read-only."""

import hashlib
import json
import os
import shutil
import subprocess
import sys

import chex
import jax
import numpy as np
import pytest
from conftest import ROOT, tiny_config

from jaxmt.data.demo import demo_split
from jaxmt.data.sampling import TaskSampler, train_batches
from jaxmt.data.schema import DEFAULT_TASKS
from jaxmt.training import setup
from jaxmt.training.optimizer import make_optimizer
from jaxmt.training.step import init_state, make_train_step


def train_losses(tiny_bert, config, steps):
    specs = DEFAULT_TASKS
    encoded = setup.encode_splits(config, {t: demo_split(s, "train", 64) for t, s in specs.items()},
                                  tiny_bert.tokenizer)
    model = setup.build_model(config, tiny_bert.config, specs)
    tx = make_optimizer(config, steps, len(specs))
    state = init_state(model, tx, jax.random.PRNGKey(0), tiny_bert.params)
    step_fn = jax.jit(make_train_step(model, tx, setup.loss_weights(config, specs),
                                      per_task_grads=config.optim.gradient_surgery == "pcgrad"))
    sampler = TaskSampler({t: 64 for t in specs}, {t: 16 for t in specs}, "all", 0, steps)
    losses = []
    for step in range(steps):
        batches = train_batches(encoded, sampler, step, config.data.buckets, tiny_bert.tokenizer.pad_token_id)
        state, metrics = step_fn(state, batches, jax.random.PRNGKey(1))
        losses.append({k: float(v) for k, v in metrics.items()})
    return state, losses


@pytest.mark.parametrize("surgery", ["none", "pcgrad"])
def test_tiny_bert_training_lowers_every_task_loss(tiny_bert, tiny_bert_dir, surgery):
    config = tiny_config(tiny_bert_dir, **{"optim.learning_rate": 1e-2, "optim.gradient_surgery": surgery,
                                           "optim.warmup_fraction": 0.05, "model.dropout": 0.0})
    state, losses = train_losses(tiny_bert, config, steps=60)
    for task in DEFAULT_TASKS:
        first = np.mean([m[f"loss/{task}"] for m in losses[:5]])
        last = np.mean([m[f"loss/{task}"] for m in losses[-5:]])
        assert last < 0.9 * first, (task, first, last)
    chex.assert_trees_all_equal_shapes_and_dtypes(
        state.params, init_state(setup.build_model(config, tiny_bert.config, DEFAULT_TASKS),
                                 make_optimizer(config, 60, 3), jax.random.PRNGKey(0), tiny_bert.params).params)
    assert int(state.step) == 60


def read_jsonl(workdir):
    with open(os.path.join(workdir, "metrics.jsonl")) as f:
        return [json.loads(line) for line in f]


def tree_digest(path):
    digest = hashlib.sha256()
    for root, _, files in sorted(os.walk(path)):
        for name in sorted(files):
            full = os.path.join(root, name)
            digest.update(full.encode())
            digest.update(open(full, "rb").read())
            digest.update(str(os.stat(full).st_mtime_ns).encode())
    return digest.hexdigest()


@pytest.fixture(scope="module")
def trained_workdir(tmp_path_factory, tiny_bert_dir):
    from jaxmt.training.trainer import train_and_evaluate

    workdir = str(tmp_path_factory.mktemp("run") / "work")
    config = tiny_config(tiny_bert_dir, **{"optim.gradient_surgery": "pcgrad"})
    results = train_and_evaluate(config, workdir)
    return workdir, config, results


def test_trainer_writes_logs_checkpoints_and_results(trained_workdir):
    workdir, config, results = trained_workdir
    assert results["demo_data"] is True and results["steps"] == 6
    assert set(results["dev"]) == {"sst", "para", "sts", "mean"}
    assert sorted(os.listdir(os.path.join(workdir, "checkpoints")))[-2:] == ["3", "6"]
    assert os.listdir(os.path.join(workdir, "best"))
    assert any(name.startswith("events") for name in os.listdir(os.path.join(workdir, "tensorboard")))
    rows = read_jsonl(workdir)
    train_rows = [r for r in rows if "train/loss/total" in r]
    assert [r["step"] for r in train_rows] == [2, 4, 6]
    assert all("train/pcgrad/cos/para-sst" in r and "train/pcgrad/conflicts" in r for r in train_rows)
    assert [r["step"] for r in rows if "dev/mean" in r] == [3, 6]
    assert json.load(open(os.path.join(workdir, "results.json")))["dev"] == results["dev"]


def test_resumed_run_equals_uninterrupted_run(trained_workdir, tmp_path, tiny_bert_dir):
    from jaxmt.training.trainer import train_and_evaluate

    workdir, config, results = trained_workdir
    resumed = str(tmp_path / "resumed")
    shutil.copytree(workdir, resumed)
    shutil.rmtree(os.path.join(resumed, "checkpoints", "6"))  # as if killed after the step-3 checkpoint
    again = train_and_evaluate(config, resumed)  # metrics.jsonl kept: it holds steps 4-6 of the first run too
    assert again["resumed_from_step"] == 3
    full = {r["step"]: r for r in read_jsonl(workdir) if "train/loss/total" in r}
    rows = [r for r in read_jsonl(resumed) if "train/loss/total" in r]
    assert [r["step"] for r in rows] == [2, 4, 6]  # no step twice: the rows after step 3 were written again
    part = {r["step"]: r for r in rows if r["step"] > 3}
    assert sorted(part) == [4, 6]
    for step in part:
        for key in ("train/loss/sst", "train/loss/para", "train/loss/sts", "train/pcgrad/cos/para-sst"):
            assert part[step][key] == pytest.approx(full[step][key], rel=1e-5, abs=1e-6), (step, key)
    for key, value in results["dev"].items():
        assert again["dev"][key] == pytest.approx(value, abs=1e-6)


def test_evaluate_restores_writes_cs224n_predictions_and_never_touches_checkpoints(trained_workdir, tmp_path):
    from jaxmt.evaluate import evaluate_workdir

    workdir, _, results = trained_workdir
    before = tree_digest(os.path.join(workdir, "checkpoints")) + tree_digest(os.path.join(workdir, "best"))
    out = evaluate_workdir(workdir, split="dev", checkpoint="latest", output_dir=str(tmp_path / "pred"))
    for key, value in results["dev"].items():
        assert out["metrics"][key] == pytest.approx(value, abs=1e-6)
    lines = open(out["prediction_files"]["sst"]).read().splitlines()
    assert lines[0] == "id \t Predicted_Sentiment "
    assert len(lines) == 1 + 48 and lines[1].startswith("demo-sst-dev-0 , ")
    assert open(out["prediction_files"]["sts"]).readline() == "id \t Predicted_Similiary \n"
    test = evaluate_workdir(workdir, split="test", checkpoint="best", output_dir=str(tmp_path / "pred"))
    assert test["metrics"] == {} and set(test["prediction_files"]) == {"sst", "para", "sts"}
    after = tree_digest(os.path.join(workdir, "checkpoints")) + tree_digest(os.path.join(workdir, "best"))
    assert before == after


# What the CS224N starter's evaluation.py (test_model_multitask) writes: `f"id \\t {column} \\n"`, then
# `f"{id} , {value} \\n"` with the argmax class (numpy int), the rounded sigmoid (float32: 0.0 / 1.0) and
# the similarity (float32).
STARTER_FORMAT = {
    "sst": ("id \t Predicted_Sentiment \n", r"\S+ , [0-4] \n"),
    "para": ("id \t Predicted_Is_Paraphrase \n", r"\S+ , [01]\.0 \n"),
    "sts": ("id \t Predicted_Similiary \n", r"\S+ , -?\d+\.\d+(e-?\d+)? \n"),
}


def test_prediction_files_have_the_cs224n_starter_format(trained_workdir, tmp_path):
    import re

    from jaxmt.evaluate import format_prediction

    out = evaluate_workdir_quietly(trained_workdir[0], tmp_path)
    for task, (header, line_pattern) in STARTER_FORMAT.items():
        with open(out["prediction_files"][task]) as f:
            lines = f.readlines()
        assert lines[0] == header, task
        assert len(lines) == 49 and all(re.fullmatch(line_pattern, line) for line in lines[1:]), (task, lines[1])
    assert format_prediction("regression", 2.3456789) == str(float(np.float32(2.3456789))) == "2.3456788063049316"
    assert format_prediction("binary", 1) == "1.0" and format_prediction("classification", 3.0) == "3"


def evaluate_workdir_quietly(workdir, tmp_path, **kwargs):
    from jaxmt.evaluate import evaluate_workdir

    return evaluate_workdir(workdir, checkpoint="latest", output_dir=str(tmp_path / "pred"), **kwargs)


def write_cs224n_folder(folder, rows: int = 10, with_quora_test: bool = False):
    """The demo dev rows as CS224N files (and test files without labels), as the course lays them out."""
    folder.mkdir(parents=True)
    names = {"sst": ("ids-sst", "sentence\tsentiment"), "para": ("quora", "sentence1\tsentence2\tis_duplicate"),
             "sts": ("sts", "sentence1\tsentence2\tsimilarity")}
    for task, (stem, columns) in names.items():
        data = demo_split(DEFAULT_TASKS[task], "dev", rows)
        texts = [data.text_a] + ([data.text_b] if data.text_b else [])
        body = ["\t".join([str(i), f"my-{task}-{i}", *(t[i] for t in texts), str(data.labels[i])])
                for i in range(rows)]
        (folder / f"{stem}-dev.csv").write_text(f"\tid\t{columns}\n" + "\n".join(body) + "\n")
        if task != "para" or with_quora_test:
            test_columns = columns.rsplit("\t", 1)[0]
            (folder / f"{stem}-test-student.csv").write_text(
                f"\tid\t{test_columns}\n" + "\n".join(line.rsplit("\t", 1)[0] for line in body) + "\n")


def test_evaluate_scores_a_folder_of_cs224n_files(trained_workdir, tmp_path):
    folder = tmp_path / "mine"
    write_cs224n_folder(folder)
    dev = evaluate_workdir_quietly(trained_workdir[0], tmp_path, split="dev", data_dir=str(folder))
    assert set(dev["metrics"]) == {"sst", "para", "sts", "mean"} and dev["tasks_without_data"] == []
    with open(dev["prediction_files"]["para"]) as f:
        assert [line.split(" , ")[0] for line in f.readlines()[1:]] == [f"my-para-{i}" for i in range(10)]
    test = evaluate_workdir_quietly(trained_workdir[0], tmp_path, split="test", data_dir=str(folder))
    assert test["metrics"] == {} and sorted(test["prediction_files"]) == ["sst", "sts"]
    assert test["tasks_without_data"] == ["para"]  # no quora-test-student.csv: said, not silent


MULTI_DEVICE_SCRIPT = """
import json, sys
sys.path.insert(0, {tests!r})
from conftest import tiny_config
from jaxmt.training.trainer import train_and_evaluate
import jax
# data.pack_groups fixed (default 0 = one group a device): a step's examples depend on the groups, not the devices
config = tiny_config({model!r}, **{{"num_steps": 4, "log_every": 1, "eval_every": 0, "model.dropout": 0.0,
                                    "data.pack_groups": 4}})
train_and_evaluate(config, {workdir!r})
print(json.dumps({{"devices": jax.device_count()}}))
"""


def run_with_devices(n, model_dir, workdir):
    env = dict(os.environ, XLA_FLAGS=f"--xla_force_host_platform_device_count={n}", JAX_PLATFORMS="cpu")
    script = MULTI_DEVICE_SCRIPT.format(tests=str(ROOT / "tests"), model=str(model_dir), workdir=str(workdir))
    proc = subprocess.run([sys.executable, "-c", script], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert json.loads(proc.stdout.strip().splitlines()[-1])["devices"] == n
    return {r["step"]: r for r in read_jsonl(workdir) if "train/loss/total" in r}


def test_four_emulated_devices_give_the_same_losses_as_one(tiny_bert_dir, tmp_path):
    one = run_with_devices(1, tiny_bert_dir, tmp_path / "one")
    four = run_with_devices(4, tiny_bert_dir, tmp_path / "four")
    assert sorted(one) == sorted(four) == [1, 2, 3, 4]
    for step in one:
        for key in ("train/loss/sst", "train/loss/para", "train/loss/sts"):
            assert four[step][key] == pytest.approx(one[step][key], abs=1e-4), (step, key)
