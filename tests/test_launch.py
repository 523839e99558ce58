import subprocess

from conftest import ROOT


def run(*args):
    return subprocess.run(["bash", str(ROOT / "launch" / "local.sh"), *args], capture_output=True, text=True)


def test_local_dry_run_prints_the_exact_command():
    out = run("--cpu-devices", "4", "--python", "py", "--dry-run", "--", "--config=configs/pcgrad.py", "--workdir=w")
    assert out.returncode == 0
    assert out.stdout.split() == ["env", "JAX_PLATFORMS=cpu", "XLA_FLAGS=--xla_force_host_platform_device_count=4",
                                  "py", "-m", "jaxmt.train", "--config=configs/pcgrad.py", "--workdir=w"]


def test_local_dry_run_runs_the_module_given():
    out = run("--module", "jaxmt.pretrain", "--python", "py", "--dry-run", "--",
              "--config=configs/pretrain_hierarchical.py", "--workdir=w")
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["env", "py", "-m", "jaxmt.pretrain", "--config=configs/pretrain_hierarchical.py",
                                  "--workdir=w"]


def test_local_rejects_bad_options():
    bad = run("--cpu-devices", "two", "--dry-run")
    assert bad.returncode == 2 and "positive integer" in bad.stderr
    unknown = run("--workdir=w")
    assert unknown.returncode == 2 and "trainer flags go after --" in unknown.stderr
    for module in ("jaxmt.trian", "os", "jaxmt.train; rm -rf x"):
        bad_module = run("--module", module, "--dry-run")
        assert bad_module.returncode == 2 and "is not a jaxmt command" in bad_module.stderr, module


def test_paper_a_pipeline_trains_only_missing_runs_with_each_arms_overrides(tmp_path):
    """launch/paper_a.sh with a stand-in trainer: archived runs are skipped, the rest get their arm's flags."""
    import json
    import sys

    archive, runs, calls = tmp_path / "archive", tmp_path / "runs", tmp_path / "calls.txt"
    # Done in an earlier session: the recipe's seeds 0 and 1, the triplet reading's three (the tables' baseline).
    for arm, seed in [("recipe", 0), ("recipe", 1), ("triplet", 0), ("triplet", 1), ("triplet", 2)]:
        kept = archive / arm / f"seed{seed}"
        kept.mkdir(parents=True)
        dev = {"sst": 0.5, "para": 0.8, "sts": 0.87, "mean": 0.72}
        (kept / "results.json").write_text(json.dumps({"dev": dev, "best_dev": dev}))
    stub = tmp_path / "python"  # jaxmt.train and jaxmt.evaluate are recorded and faked; the rest really runs
    stub.write_text(f"""#!/usr/bin/env bash
if [[ "$2" == jaxmt.train || "$2" == jaxmt.evaluate ]]; then
  echo "$@" >> {calls}
  for arg in "$@"; do [[ "$arg" == --workdir=* ]] && workdir="${{arg#--workdir=}}"; done
  dev='{{"sst": 0.4, "para": 0.8, "sts": 0.8, "mean": 0.67}}'
  [[ "$2" == jaxmt.train ]] && echo "{{\\"dev\\": $dev, \\"best_dev\\": $dev}}" > "$workdir/results.json"
  exit 0
fi
exec {sys.executable} "$@"
""")
    stub.chmod(0o755)
    env = {"PATH": "/usr/bin:/bin", "ARMS": "recipe sum", "RUNS": str(runs), "ARCHIVE": str(archive),
           "PYTHON": str(stub)}
    out = subprocess.run(["bash", str(ROOT / "launch" / "paper_a.sh")], env=env, capture_output=True, text=True,
                         timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    lines = calls.read_text().splitlines()
    trained = [line for line in lines if "jaxmt.train" in line]
    assert len(trained) == 3, lines  # recipe seed 2, sum seeds 0 and 1
    assert f"--config=configs/paper_a.py --workdir={runs}/recipe/seed2 --config.seed=2" in trained[0]
    assert "surgery" not in trained[0]
    assert all("--config=configs/paper_a_triplet.py" in t for t in trained[1:])  # ablations change the triplet
    assert all("--config.optim.gradient_surgery=none --config.optim.surgery_groups=()" in t for t in trained[1:])
    assert [line for line in lines if "jaxmt.evaluate" in line] == [
        f"-m jaxmt.evaluate --workdir={runs}/recipe/seed2 --split=test "
        f"--output_dir={archive}/recipe/seed2/test_predictions"]
    assert (archive / "sum" / "seed1" / "results.json").exists()
    table = (archive / "table_dev.md").read_text()
    assert "| recipe | 3 |" in table and "| triplet | 3 |" in table and "| sum | 2 |" in table
    assert "| sum | 2 | 0.4000 ± 0.0000 (-0.1000*)" in table  # against the triplet reading, the baseline
    (archive / "table_dev.md").unlink()
    # One arm asked for: nothing left to train, and the tables still cover every archived arm.
    again = subprocess.run(["bash", str(ROOT / "launch" / "paper_a.sh")], env={**env, "ARMS": "sum"},
                           capture_output=True, text=True, timeout=600)
    assert again.returncode == 0, again.stderr[-3000:]
    assert len(calls.read_text().splitlines()) == len(lines)
    table = (archive / "table_dev.md").read_text()
    assert "| recipe | 3 |" in table and "| triplet | 3 |" in table and "| sum | 2 |" in table


def test_archived_run_records_are_not_ignored_by_git():
    """launch/paper_a.sh and paper_b.sh keep finished runs in docs/runs for later sessions: git must see them."""
    import shutil

    import pytest

    if shutil.which("git") is None or not (ROOT / ".git").exists():
        pytest.skip("needs a git checkout")
    check = ["git", "check-ignore", "-q", "--no-index"]
    ignored = subprocess.run([*check, "docs/runs/paper_a/recipe/seed0/results.json"], cwd=ROOT)
    assert ignored.returncode == 1, "docs/runs/ is git-ignored: archived run records would not be committed"
    scratch = subprocess.run([*check, "runs/paper_a/recipe/seed0/results.json"], cwd=ROOT)
    assert scratch.returncode == 0, "runs/ (workdirs with checkpoints) should stay ignored"
