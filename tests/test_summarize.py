"""jaxmt.summarize: seeds into mean ± std tables, the noise screen, and archived run records."""

import json
import subprocess
import sys

import pytest
from conftest import ROOT

from jaxmt.errors import ConfigError
from jaxmt.summarize import arm_stats, exceeds_noise, markdown_table, parse_arms, read_scores


def fake_run(path, dev, best=None):
    path.mkdir(parents=True)
    (path / "results.json").write_text(json.dumps({"dev": dev, "best_dev": best or dict(dev, step=100)}))
    (path / "config.json").write_text("{}")
    (path / "metrics.jsonl").write_text('{"step": 1}\n')
    return str(path)


def test_mean_and_sample_std_over_seeds():
    scores = [{"sst": 0.50}, {"sst": 0.52}, {"sst": 0.54}]
    mean, std, n = arm_stats(scores, "sst")
    assert (round(mean, 6), round(std, 6), n) == (0.52, 0.02, 3)
    assert arm_stats([{"sst": 0.5}], "sst") == (0.5, 0.0, 1)


def test_noise_screen_is_two_welch_standard_errors():
    assert exceeds_noise((0.60, 0.01, 3), (0.50, 0.01, 3))  # 0.1 apart, se 0.008
    assert not exceeds_noise((0.51, 0.02, 2), (0.50, 0.02, 2))  # 0.01 apart, se 0.02
    assert not exceeds_noise((0.90, 0.0, 1), (0.10, 0.0, 1))  # one seed: never called


def test_table_marks_differences_to_the_baseline(tmp_path):
    arms = {"recipe": [{"sst": 0.50, "mean": 0.7}, {"sst": 0.51, "mean": 0.7}],
            "sum": [{"sst": 0.40, "mean": 0.7}, {"sst": 0.41, "mean": 0.7}]}
    table = markdown_table(arms, ["sst", "mean"], baseline="recipe")
    assert "| recipe | 2 | 0.5050 ± 0.0071 | 0.7000 ± 0.0000 |" in table
    assert "0.4050 ± 0.0071 (-0.1000*)" in table and "(+0.0000)" in table
    one_seed = markdown_table({"recipe": arms["recipe"], "solo": [{"sst": 0.45, "mean": 0.7}]}, ["sst"], "recipe")
    assert "| solo | 1 | 0.4500 (-0.0550) |" in one_seed  # no ± for one seed: it has no spread


def test_arms_skip_unfinished_runs_and_read_the_chosen_entry(tmp_path):
    fake_run(tmp_path / "a" / "seed0", {"sst": 0.5, "mean": 0.5})
    (tmp_path / "a" / "seed1").mkdir()  # still running: no results.json
    arms = parse_arms([f"a={tmp_path}/a/seed*"])
    assert arms == {"a": [str(tmp_path / "a" / "seed0")]}
    assert read_scores(arms["a"][0], "best_dev") == {"sst": 0.5, "mean": 0.5}  # 'step' is not a metric
    with pytest.raises(ConfigError, match="not NAME=GLOB"):
        parse_arms(["no-equals-sign"])
    with pytest.raises(ConfigError, match="used twice"):
        parse_arms([f"a={tmp_path}/a/seed*", f"a={tmp_path}/a/seed*"])


def test_cli_writes_the_table_and_archives_records_that_rebuild_it(tmp_path):
    for seed, sst in enumerate((0.50, 0.52)):
        fake_run(tmp_path / "runs" / "x" / f"seed{seed}", {"sst": sst, "mean": sst})
    archive, out = tmp_path / "archive", tmp_path / "table.md"
    cmd = [sys.executable, "-m", "jaxmt.summarize", f"--runs=x={tmp_path}/runs/x/seed*", f"--archive={archive}",
           f"--out={out}"]
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "| x | 2 | 0.5100 ± 0.0141 | 0.5100 ± 0.0141 |" in out.read_text()
    assert sorted(p.name for p in (archive / "x" / "seed1").iterdir()) == ["config.json", "metrics.jsonl",
                                                                         "results.json"]
    rebuilt = subprocess.run([sys.executable, "-m", "jaxmt.summarize", f"--runs=x={archive}/x/*"], cwd=ROOT,
                             capture_output=True, text=True, timeout=300)
    assert out.read_text().strip() in rebuilt.stdout


def fake_probe(path, accuracy, tasks=("bigram_shift",)):
    path.mkdir(parents=True)
    (path / "results.json").write_text(json.dumps({
        "tasks": {t: {"train": 8, "test": 2, "classes": 2} for t in tasks},
        "majority": dict.fromkeys(tasks, 0.5),
        "accuracy": {model: {t: layers for t in tasks} for model, layers in accuracy.items()}}))


def test_probe_seeds_make_a_layer_by_model_table_a_task(tmp_path):
    """--probes: accuracy % mean ± std over the probe seeds, each model's difference to the baseline."""
    for seed, (a, b) in enumerate([(0.50, 0.60), (0.52, 0.62), (0.54, 0.64)]):
        fake_probe(tmp_path / f"seed{seed}", {"base": [a, 0.5], "hier": [b, 0.5]})
    cmd = [sys.executable, "-m", "jaxmt.summarize", f"--probes={tmp_path}/seed*", "--baseline=base",
           f"--out={tmp_path / 'probe.md'}"]
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    table = (tmp_path / "probe.md").read_text()
    assert "### bigram_shift (majority class 50.0%, 3 seeds)" in table
    assert "| embeddings | 52.0 ± 2.0 | 62.0 ± 2.0 (+10.0*) |" in table
    assert "| layer 1 | 50.0 ± 0.0 | 50.0 ± 0.0 (+0.0) |" in table
    fake_probe(tmp_path / "seed9", {"base": [0.5, 0.5]})  # another set of models: refused, naming the file
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode != 0 and "seed9/results.json: probes other models or tasks" in proc.stderr
