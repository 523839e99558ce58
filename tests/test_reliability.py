"""Faults a researcher meets: bad data and config, preemption, a crash mid-save, NaNs."""

import json
import os
import signal
import subprocess
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import ROOT, read_params, tiny_config

from jaxmt.data.csv_source import read_csv_split
from jaxmt.data.errors import DataError
from jaxmt.data.schema import DEFAULT_TASKS
from jaxmt.training.faults import EXIT_BAD_INPUT, EXIT_PREEMPTED, NonFiniteError

FIXTURES = ROOT / "tests" / "fixtures" / "bad_data"
SST = DEFAULT_TASKS["sst"]

# fixture -> (message with file:line (field) when on_bad_row='error', rows kept when 'skip')
ROW_FAULTS = {
    "extra_column": (r"extra_column\.csv:3: 5 columns where the header has 4", 1),
    "empty_sentence": (r"empty_sentence\.csv:3 \(field 'sentence'\): empty sentence", 1),
    "empty_label": (r"empty_label\.csv:3 \(field 'sentiment'\): empty label", 1),
    "non_numeric_label": (r"non_numeric_label\.csv:3 \(field 'sentiment'\): label 'positive' is not a number", 1),
    "out_of_range_label": (r"out_of_range_label\.csv:3 \(field 'sentiment'\): class label 5 is outside 0..4", 1),
    "nan_label": (r"nan_label\.csv:3 \(field 'sentiment'\): label nan is not a finite number", 1),
}
FILE_FAULTS = {
    "missing_column": r"missing_column\.csv:1: header has no column 'sentence'",
    "wrong_encoding": r"wrong_encoding\.csv:3: not valid UTF-8 \(byte 0xe9\)",
    "unclosed_quote": r"unclosed_quote\.csv:3: unreadable row .* a quote that never closes",
    "empty_file": r"empty_file\.csv: file is empty",
    "missing_file": r"missing_file\.csv: file not found",
}


@pytest.mark.parametrize("name", sorted(ROW_FAULTS))
def test_bad_row_is_an_error_naming_file_line_and_field_or_a_counted_skip(name, caplog):
    message, kept = ROW_FAULTS[name]
    path = str(FIXTURES / f"{name}.csv")
    with pytest.raises(DataError, match=message):
        read_csv_split(SST, path, "train", on_bad_row="error")
    data = read_csv_split(SST, path, "train", on_bad_row="skip")
    assert len(data) == kept and len(data.skipped) == 1
    assert data.skipped[0].location == f"{path}:3"
    assert f"skipped 1 bad rows (on_bad_row='skip'), e.g. {path}:3" in caplog.text


@pytest.mark.parametrize("name", sorted(FILE_FAULTS))
def test_bad_file_is_an_error_in_either_mode(name):
    for mode in ("error", "skip"):
        with pytest.raises(DataError, match=FILE_FAULTS[name]):
            read_csv_split(SST, str(FIXTURES / f"{name}.csv"), "train", on_bad_row=mode)


@pytest.mark.parametrize("name, rows", [("bom", 1), ("crlf", 2)])
def test_bom_and_crlf_files_read_cleanly(name, rows):
    data = read_csv_split(SST, str(FIXTURES / f"{name}.csv"), "train", on_bad_row="error")
    assert len(data) == rows and data.ids[0] == "x1" and data.text_a[0] == "A fine film ."
    assert data.labels.tolist()[0] == 3 and not data.skipped


def test_malformed_test_header_reads_by_column_name():
    data = read_csv_split(SST, str(FIXTURES / "malformed_header.csv"), "test", on_bad_row="error")
    assert data.ids == ["b757", "d17a"] and data.labels is None


def run_train(*flags, devices=1, timeout=300):
    env = dict(os.environ, JAX_PLATFORMS="cpu", XLA_FLAGS=f"--xla_force_host_platform_device_count={devices}")
    return subprocess.run([sys.executable, "-m", "jaxmt.train", *flags], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=timeout)


@pytest.mark.parametrize("flags, message", [
    (["--config.optim.learning_rat=1e-4"], "config.optim.learning_rat; did you mean config.optim.learning_rate?"),
    (["--config.task_names=('sst', 'nli')"], "unknown task 'nli' in config.task_names"),
    (["--config.sampling=random"], "config.sampling = 'random'; expected one of"),
    (["--config.tasks.sst.batch_size=3"], "config.tasks.sst.batch_size = 3 is not divisible by the 2 data-parallel"),
    (["--config.data.pack_groups=3"], "config.data.pack_groups = 3 is not a multiple of the 2 data-parallel"),
    (["--config.model.name=configs"], "configs: no config.json, so this is not a Hugging Face model directory"),
])
def test_bad_config_is_a_one_line_error_before_any_compilation(flags, message, tmp_path):
    out = run_train("--config=configs/sum.py", f"--workdir={tmp_path / 'w'}", *flags, devices=2)
    assert out.returncode == EXIT_BAD_INPUT, out.stderr[-2000:]
    assert message in out.stderr
    assert "Traceback" not in out.stderr and "compiling" not in out.stderr
    assert not (tmp_path / "w" / "checkpoints").exists()


def tiny_flags(model_dir, workdir, steps):
    return ["--config=configs/sum.py", f"--workdir={workdir}", f"--config.model.name={model_dir}",
            f"--config.num_steps={steps}", "--config.log_every=1", "--config.eval_every=0",
            "--config.checkpoint_every=1000", "--config.data.max_train_examples=64",
            "--config.data.max_eval_examples=32", "--config.data.buckets=(16, 32, 64)", "--config.data.max_length=64",
            "--config.tasks.sst.batch_size=8", "--config.tasks.para.batch_size=8", "--config.tasks.sts.batch_size=8"]


def test_sigterm_saves_exits_75_and_the_same_command_resumes_exactly(tiny_bert_dir, tmp_path):
    steps = 40
    full, cut = tmp_path / "full", tmp_path / "cut"
    assert run_train(*tiny_flags(tiny_bert_dir, full, steps)).returncode == 0
    env = dict(os.environ, JAX_PLATFORMS="cpu")
    proc = subprocess.Popen([sys.executable, "-m", "jaxmt.train", *tiny_flags(tiny_bert_dir, cut, steps)], cwd=ROOT,
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    metrics = cut / "metrics.jsonl"
    deadline = time.time() + 240
    while time.time() < deadline and not (metrics.exists() and len(metrics.read_text().splitlines()) >= 3):
        time.sleep(0.05)
    proc.send_signal(signal.SIGTERM)
    _, stderr = proc.communicate(timeout=120)
    assert proc.returncode == EXIT_PREEMPTED, stderr[-2000:]
    stopped = int(stderr.split("at step ")[1].split(";")[0])
    assert 3 <= stopped < steps and "run the same command to resume" in stderr
    assert os.listdir(cut / "checkpoints") == [str(stopped)]

    resumed = run_train(*tiny_flags(tiny_bert_dir, cut, steps))
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert json.loads((cut / "results.json").read_text())["resumed_from_step"] == stopped
    jax.tree_util.tree_map(np.testing.assert_array_equal, read_params(full, steps), read_params(cut, steps))
    full_rows = {r["step"]: r for r in map(json.loads, (full / "metrics.jsonl").read_text().splitlines())}
    cut_rows = {r["step"]: r for r in map(json.loads, (cut / "metrics.jsonl").read_text().splitlines())}
    assert sorted(cut_rows) == sorted(full_rows)
    for step, row in full_rows.items():
        for key, value in row.items():
            if key.startswith(("train/loss", "dev/")):
                assert cut_rows[step][key] == value, (step, key)


CRASH_SCRIPT = """
import sys, numpy as np
from jaxmt.checkpointing.manager import Checkpoints
ckpt = Checkpoints(sys.argv[1], keep=5)
state = {"w": np.full((4096, 4096), 1.0, np.float32), "b": np.arange(10.0)}
ckpt.save(1, state); ckpt.wait()
print("saved 1", flush=True)
ckpt.save(2, {"w": state["w"] * 2, "b": state["b"] * 2})
print("saving 2", flush=True)
ckpt.wait()
print("saved 2", flush=True)
"""


def test_kill_9_during_a_save_leaves_the_previous_checkpoint_restorable(tmp_path):
    from jaxmt.checkpointing.manager import Checkpoints

    proc = subprocess.Popen([sys.executable, "-c", CRASH_SCRIPT, str(tmp_path)], cwd=ROOT, stdout=subprocess.PIPE,
                            text=True)
    assert proc.stdout.readline().strip() == "saved 1"
    assert proc.stdout.readline().strip() == "saving 2"
    proc.kill()  # SIGKILL while step 2 is being written
    proc.wait()
    ckpt = Checkpoints(str(tmp_path), keep=5)
    assert ckpt.latest_step() == 1
    restored = ckpt.restore({"w": jax.ShapeDtypeStruct((4096, 4096), jnp.float32),
                             "b": jax.ShapeDtypeStruct((10,), jnp.float64 if jax.config.x64_enabled else jnp.float32)})
    assert float(restored["w"][0, 0]) == 1.0 and float(restored["b"][3]) == 3.0
    ckpt.save(2, restored)  # the half-written step 2 does not block a new save
    ckpt.wait()
    assert ckpt.latest_step() == 2


def poisoned_batches(bad_step):
    """The trainer's `train_step_batches` with NaN similarity labels for sts at `bad_step`."""
    from jaxmt.data.packing import train_step_batches as clean

    def batches(splits, sampler, step, buckets, pad_id, *shard):
        host = clean(splits, sampler, step, buckets, pad_id, *shard)
        if step + 1 == bad_step:
            host["sts"]["labels"] = np.full_like(host["sts"]["labels"], np.nan)
        return host

    return batches


def test_nan_loss_stops_naming_step_and_task_and_keeps_the_last_good_checkpoint(tiny_bert_dir, tmp_path,
                                                                                  monkeypatch):
    from jaxmt.training import trainer

    monkeypatch.setattr(trainer, "train_step_batches", poisoned_batches(bad_step=5))
    config = tiny_config(tiny_bert_dir, **{"num_steps": 8, "checkpoint_every": 2, "eval_every": 0})
    with pytest.raises(NonFiniteError, match=r"step 5: non-finite loss in task sts; the update was not applied"):
        trainer.train_and_evaluate(config, str(tmp_path))
    assert sorted(int(s) for s in os.listdir(tmp_path / "checkpoints")) == [2, 4]
    params = read_params(tmp_path, 4)
    assert all(np.isfinite(x).all() for x in jax.tree_util.tree_leaves(params))


def test_nan_loss_with_skip_leaves_the_params_untouched_and_reports_the_step(tiny_bert_dir, tmp_path, monkeypatch):
    from jaxmt.training import trainer

    monkeypatch.setattr(trainer, "train_step_batches", poisoned_batches(bad_step=3))
    config = tiny_config(tiny_bert_dir, **{"num_steps": 4, "checkpoint_every": 1, "eval_every": 0,
                                           "keep_checkpoints": 5, "on_nonfinite": "skip",
                                           "optim.gradient_surgery": "pcgrad"})
    results = trainer.train_and_evaluate(config, str(tmp_path))
    assert results["skipped_nonfinite_steps"] == [3]
    before, after = read_params(tmp_path, 2), read_params(tmp_path, 3)
    jax.tree_util.tree_map(np.testing.assert_array_equal, before, after)
    final = read_params(tmp_path, 4)
    assert not np.array_equal(final["heads"]["sst"]["kernel"], after["heads"]["sst"]["kernel"])
    assert all(np.isfinite(x).all() for x in jax.tree_util.tree_leaves(final))
