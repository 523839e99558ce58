"""The real pipeline on a few hundred rows of ../shared/data with the real MiniLM."""

import os

import pytest
from conftest import requires_minilm, tiny_config


@pytest.mark.slow
@requires_minilm
def test_real_data_trains_checkpoints_restores_and_evaluates(shared_cs224n, tmp_path):
    from jaxmt.evaluate import evaluate_workdir
    from jaxmt.training.trainer import train_and_evaluate

    config = tiny_config("minilm", **{
        "optim.gradient_surgery": "pcgrad", "data.source": "csv", "data.csv_dir": str(shared_cs224n),
        "data.buckets": (32, 64, 128), "data.max_length": 128,
        "data.max_train_examples": 200, "data.max_eval_examples": 96,
        "num_steps": 4, "eval_every": 0, "checkpoint_every": 2, "log_every": 1,
    })
    workdir = str(tmp_path / "run")
    results = train_and_evaluate(config, workdir)
    assert results["demo_data"] is False and results["data"]["source"] == "csv"
    assert results["data"]["train_sizes"] == {"sst": 200, "para": 200, "sts": 200}
    assert set(results["dev"]) == {"sst", "para", "sts", "mean"}
    assert 0.0 <= results["dev"]["sst"] <= 1.0 and -1.0 <= results["dev"]["sts"] <= 1.0
    assert sorted(os.listdir(os.path.join(workdir, "checkpoints"))) == ["2", "4"]

    dev = evaluate_workdir(workdir, split="dev", checkpoint="best")
    assert dev["step"] == 4
    for key, value in results["dev"].items():
        assert dev["metrics"][key] == pytest.approx(value, abs=1e-6)
    test = evaluate_workdir(workdir, split="test", checkpoint="latest")
    assert set(test["prediction_files"]) == {"sst", "sts"}  # the shared data has no Quora test file
    lines = open(test["prediction_files"]["sst"]).read().splitlines()
    assert lines[0] == "id \t Predicted_Sentiment " and len(lines) == 1 + 96
    assert all(int(line.split(" , ")[1]) in range(5) for line in lines[1:])
