"""Paper B's pipeline: the continued pre-training configs of MiniLM, the downstream configs, and launch/paper_b.sh
(its order, skipping, archiving and session splitting, run with a stand-in for Python)."""

from __future__ import annotations

import json
import os
import shlex
import stat
import subprocess
import sys

import numpy as np
import pytest
from conftest import ROOT, SHARED_DATA, minilm_installed

from jaxmt.errors import ConfigError

SCRIPT = ROOT / "launch" / "paper_b.sh"
ENCODERS = ("baseline", "hierarchical", "minilm")
IDLE_MINUTES = {"pretrain": 35, "downstream": 6}  # the per-run budgets the configs are sized for


def load(name: str):
    import importlib

    return importlib.import_module(f"configs.{name}")


def flat(config) -> dict:
    """A config's dotted fields, as the resume check compares them (`jaxmt.checkpointing.workdir._flatten`)."""
    from jaxmt.checkpointing.workdir import _flatten

    return _flatten(config.to_dict())


# ---------------------------------------------------------------------------------------------- configs


def test_minilm_pretraining_configs_pass_the_trainers_checks_and_differ_only_in_the_tasks(tmp_path):
    from jaxmt.config_checks import check_ranges
    from jaxmt.pretraining.trainer import check_config, task_layers

    base_module, hier_module = load("pretrain_minilm"), load("pretrain_minilm_hierarchical")
    base, hier = base_module.get_config(), hier_module.get_config()
    corpus = SHARED_DATA / "corpus" / "wikitext2-test.txt"
    if not corpus.exists():  # check_config needs a corpus file that exists; the data stays the config's own
        corpus = tmp_path / "wikitext2-test.txt"
        corpus.write_text(" = A = \n\n One sentence here . Another one there .\n")
    for config in (base, hier):
        assert config.model.init_from == "minilm" and tuple(config.data.files) == (
            "../shared/data/corpus/wikitext2-test.txt",)  # the test file only: the valid file is left for probing
        check_ranges(config)
        probe = config.copy_and_resolve_references()
        probe.data.files = (str(corpus),)
        check_config(probe)
    # MiniLM has 6 layers; the layer-coverage check (every layer gets a loss) accepts both.
    assert task_layers(base, 6) == (("mlm", 6), ("nsp", 6)) and base.transfer == "none"
    assert task_layers(hier, 6) == (("bigram_shift", 2), ("mlm", 6), ("nsp", 4)) and hier.transfer == "add_cls"
    differ = {k for k, v in flat(base).items() if flat(hier)[k] != v}
    # Steps, batch, LR, data, held-out, seed: equal (the bigram-shift head is the baseline's only in name: it does
    # not train bigram shift).
    assert differ == {"task_names", "tasks.nsp.layer", "transfer", "tasks.bigram_shift.head"}
    assert "bigram_shift" not in base.task_names and hier.tasks.bigram_shift.head == "token_labels"
    assert 2e-5 <= base.optim.learning_rate <= 5e-5 and base.optim.warmup_fraction > 0
    assert base.num_steps % base.eval_every == 0 and base.num_steps // base.eval_every >= 5  # MLM's curve
    # The sizing in the docstrings: the measured step and run time, consistent with num_steps (the rest is
    # start-up, evaluations and checkpoints) and within the budget.
    for module in (base_module, hier_module):
        steps_minutes = base.num_steps * module.STEP_TIME["seconds"] / 60
        assert steps_minutes < module.STEP_TIME["run_minutes"] <= steps_minutes + 2, module.__name__
        assert module.STEP_TIME["run_minutes"] <= IDLE_MINUTES["pretrain"], module.__name__
        assert f"{module.STEP_TIME['seconds']:.2f} s a step" in module.__doc__
        assert f"{module.STEP_TIME['run_minutes']} minutes" in module.__doc__


def test_minilm_pretraining_config_leaving_a_layer_untrained_is_refused():
    from jaxmt.pretraining.trainer import task_layers

    config = load("pretrain_minilm_hierarchical").get_config()
    config.tasks.mlm.layer = 5
    with pytest.raises(ConfigError, match="encoder layer 6 of 6 would get no loss"):
        task_layers(config, 6)


def test_paper_b_downstream_configs_score_held_out_data_once():
    from jaxmt.config_checks import check_ranges
    from jaxmt.downstream.qa_train import check_qa_config
    from jaxmt.training.setup import check_config

    qa, sick = load("paper_b_squad").get_config(), load("paper_b_sick").get_config()
    for config in (qa, sick):
        check_ranges(config)
        assert config.eval_every == 0 and config.model.name == "minilm"  # one scoring, at the end: no selection
    check_qa_config(qa)
    check_config(sick)
    assert qa.data.train_file.endswith("part1.json") and qa.data.dev_file.endswith("part2.json")
    assert sick.data.source == "sick" and tuple(sick.task_names) == ("nli",)


def test_the_pipelines_config_overrides_name_fields_of_their_configs(tmp_path):
    """Every --config.FIELD the script passes exists in the config it passes it to."""
    (tmp_path / "data" / "corpus").mkdir(parents=True)
    out = run_script(tmp_path, DRY_RUN="1")
    commands = [shlex.split(line.split(": ", 1)[1]) for line in out.stdout.splitlines() if " run " in line
                and "--config=" in line]
    assert len(commands) == 2 + 2 * 3 * len(ENCODERS)
    for command in commands:
        config_file = next(a for a in command if a.startswith("--config="))
        fields = flat(load(config_file.split("=", 1)[1].removeprefix("configs/").removesuffix(".py")).get_config())
        for arg in command:
            if arg.startswith("--config."):
                assert arg[len("--config."):].split("=", 1)[0] in fields, (config_file, arg)


# ---------------------------------------------------------------------------------------------- tiny runs


def test_qa_takes_an_encoder_directory_and_a_seed_through_the_paper_b_config(tmp_path):
    from test_downstream import squad_items, squad_words

    from jaxmt.downstream.qa_train import train_and_evaluate_qa
    from jaxmt.models.pretrained import write_random_bert

    encoder = write_random_bert(tmp_path / "hf_model", squad_words(), seed=1)  # as a pre-training run exports
    squad_file = tmp_path / "squad.json"
    squad_file.write_text(json.dumps(squad_items()))
    results = {}
    for seed in (0, 1):
        config = load("paper_b_squad").get_config()
        config.model.name, config.seed = str(encoder), seed
        config.data.train_file = config.data.dev_file = str(squad_file)
        config.data.max_length, config.data.stride, config.data.max_eval_examples = 32, 8, 4
        config.batch_size, config.eval_batch_size = 8, 8
        config.num_steps = config.checkpoint_every = 4
        results[seed] = train_and_evaluate_qa(config, str(tmp_path / f"qa{seed}"))
    assert set(results[0]["dev"]) == {"exact_match", "f1"}  # the metrics launch/paper_b.sh tabulates
    assert results[0]["dev_questions"] == 4 and results[0]["model"] == str(encoder)
    assert not np.allclose(results[0]["train_loss"], results[1]["train_loss"])  # the seed reaches init and order


def test_sick_takes_an_encoder_directory_and_a_seed_through_the_paper_b_config(tmp_path):
    from test_downstream import _sick_rows, sick_words, write_sick

    from jaxmt.models.pretrained import write_random_bert
    from jaxmt.training.trainer import train_and_evaluate

    encoder = write_random_bert(tmp_path / "hf_model", sick_words(), seed=0)
    results = {}
    for seed in (0, 1):
        config = load("paper_b_sick").get_config()
        config.model.name, config.seed = str(encoder), seed
        config.data.sick_file = write_sick(tmp_path / "SICK.txt", _sick_rows(48))
        config.data.sick_split = (0.5, 0.5, 0.0)
        config.data.buckets, config.data.max_length, config.data.packing = (16,), 16, False
        config.tasks.nli.batch_size, config.eval_batch_size = 8, 16
        config.num_steps = config.checkpoint_every = 4
        config.log_every = 1
        results[seed] = train_and_evaluate(config, str(tmp_path / f"sick{seed}"))
    assert "nli" in results[0]["dev"]  # the metric launch/paper_b.sh tabulates
    losses = {seed: [row["train/loss/nli"] for row in map(json.loads, open(tmp_path / f"sick{seed}" / "metrics.jsonl"))
                     if "train/loss/nli" in row] for seed in (0, 1)}
    assert len(losses[0]) == 4 and not np.allclose(losses[0], losses[1])  # the seed reaches init and order


@pytest.mark.skipif(not minilm_installed(), reason="MiniLM not installed (its tokenizer reads the real text)")
def test_real_squad_halves_are_read_whole_with_the_paper_b_windows():
    from jaxmt.downstream import squad
    from jaxmt.pretraining.trainer import load_tokenizer

    folder = SHARED_DATA / "squad"
    if not (folder / "squad-v1.1-dev-part1.json").exists():
        pytest.skip(f"real data not found at {folder} (see ../shared/data/README.md)")
    config = load("paper_b_squad").get_config()
    tokenizer, data = load_tokenizer("minilm"), config.data
    train = squad.read_squad(str(folder / "squad-v1.1-dev-part1.json"))
    dev = squad.read_squad(str(folder / "squad-v1.1-dev-part2.json"))
    assert (len(train), len(dev)) == (4961, 5609)  # the data README's counts
    feats = squad.make_features(train, tokenizer, data.max_length, data.stride, data.max_query_length)
    assert feats.skipped_counts() == dict.fromkeys(squad.SKIP_REASONS, 0)  # every training question kept
    assert len(set(feats.example_index.tolist())) == len(train)
    scored = squad.make_features(dev[:data.max_eval_examples], tokenizer, data.max_length, data.stride,
                                 data.max_query_length, labeled=False)
    assert scored.skipped_counts() == dict.fromkeys(squad.SKIP_REASONS, 0)


# ---------------------------------------------------------------------------------------------- the script

STUB = '''#!{python}
"""Stands in for Python in launch/paper_b.sh: records each call and writes a finished run's files."""
import json, os, sys

args = sys.argv[1:]
if args[:2] == ["-m", "jaxmt.summarize"]:
    os.execv(sys.executable, [sys.executable, *args])
module = args[1]
flags = dict(a[2:].split("=", 1) for a in args[2:] if a.startswith("--") and "=" in a)
workdir = flags.get("workdir") or flags["out"]
with open(os.environ["STUB_CALLS"], "a") as f:
    f.write(json.dumps([module, workdir, flags]) + "\\n")
if os.environ.get("STUB_FAIL") and workdir.endswith(os.environ["STUB_FAIL"]):
    sys.exit(1)
os.makedirs(os.path.join(workdir, "checkpoints", "1"), exist_ok=True)
seed = int(flags.get("config.seed", flags.get("seed", 0)))
if module == "jaxmt.pretrain":
    os.makedirs(os.path.join(workdir, "hf_model"), exist_ok=True)
    open(os.path.join(workdir, "hf_model", "config.json"), "w").write("{{}}")
results = {{"dev": {{"exact_match": 10.0 + seed, "f1": 20.0 + 3 * seed, "nli": 0.5 + 0.01 * seed, "mean": 0.5}},
           "heldout": {{"mlm/loss": 2.0 + seed, "nsp/accuracy": 0.8}}}}
if module == "jaxmt.probe":  # jaxmt.probe's layout: per model, per task, an accuracy a layer
    models = [item.split("=", 1)[0] for item in flags["models"].split(",")]
    results = {{"tasks": {{"bigram_shift": {{"train": 8, "test": 2, "classes": 2}}}},
               "majority": {{"bigram_shift": 0.5}},
               "accuracy": {{m: {{"bigram_shift": [0.5, 0.6 + 0.01 * seed]}} for m in models}}}}
for name, text in (("results.json", json.dumps(results)), ("config.json", json.dumps(flags)),
                   ("metrics.jsonl", "{{}}\\n"), ("results.md", "table\\n"), ("results.csv", "a,b\\n")):
    open(os.path.join(workdir, name), "w").write(text)
'''


def run_script(tmp_path, **env):
    """launch/paper_b.sh with RUNS, ARCHIVE and DATA in tmp_path and the stub as Python."""
    stub = tmp_path / "python"
    if not stub.exists():
        stub.write_text(STUB.format(python=sys.executable))
        stub.chmod(stub.stat().st_mode | stat.S_IEXEC)
    (tmp_path / "data" / "corpus").mkdir(parents=True, exist_ok=True)
    base = {"RUNS": str(tmp_path / "runs"), "ARCHIVE": str(tmp_path / "archive"), "DATA": str(tmp_path / "data"),
            "PYTHON": str(stub), "STUB_CALLS": str(tmp_path / "calls.jsonl"), "STAGES": "pretrain probe qa sick"}
    return subprocess.run(["bash", str(SCRIPT)], capture_output=True, text=True, env={**os.environ, **base, **env})


def calls(tmp_path) -> list[str]:
    """The runs the stub was asked for (relative to RUNS), in order; the record is then cleared."""
    path = tmp_path / "calls.jsonl"
    if not path.exists():
        return []
    runs = [os.path.relpath(json.loads(line)[1], tmp_path / "runs") for line in path.read_text().splitlines()]
    path.unlink()
    return runs


def downstream(encoder: str, seeds=(0, 1, 2)) -> list[str]:
    return [f"{task}/{encoder}/seed{seed}" for seed in seeds for task in ("qa", "sick")]


def test_pipeline_runs_in_order_archives_and_splits_over_sessions(tmp_path):
    import shutil

    # Session 1 ends (here: a failure) during minilm's second QA run.
    out = run_script(tmp_path, STUB_FAIL="qa/minilm/seed1")
    assert out.returncode == 2 and "qa/minilm/seed1 failed" in out.stderr
    assert calls(tmp_path) == (["pretrain/baseline", "pretrain/hierarchical", "probe/seed0", "probe/seed1",
                                "probe/seed2"] + downstream("baseline") + downstream("hierarchical")
                               + downstream("minilm", (0,)) + ["qa/minilm/seed1"])
    archive, runs = tmp_path / "archive", tmp_path / "runs"
    assert sorted(os.listdir(archive / "qa" / "minilm")) == ["seed0"]
    assert sorted(os.listdir(archive / "qa" / "baseline" / "seed2")) == ["config.json", "metrics.jsonl", "results.json"]
    assert sorted(os.listdir(archive / "probe" / "seed1")) == ["results.csv", "results.json", "results.md"]
    assert not (runs / "qa" / "baseline" / "seed2" / "checkpoints").exists()  # freed once finished
    assert (runs / "pretrain" / "hierarchical" / "hf_model").is_dir()
    timings = (archive / "timings.tsv").read_text().splitlines()
    assert timings[0].split("\t") == ["run", "seconds", "load_at_start", "finished_utc"] and len(timings) == 1 + 19
    config = json.loads((archive / "qa" / "hierarchical" / "seed1" / "config.json").read_text())
    assert config["config.model.name"] == f"{runs}/pretrain/hierarchical/hf_model" and config["config.seed"] == "1"
    assert config["config.data.train_file"].endswith("data/squad/squad-v1.1-dev-part1.json")

    # The same session again: everything finished is skipped; only the failed run and the rest are made.
    out = run_script(tmp_path, STAGES="qa", ENCODERS="minilm", SEEDS="1")
    assert out.returncode == 0, out.stderr
    assert calls(tmp_path) == ["qa/minilm/seed1"]

    # Session 2 (runs/ lost): no pre-training (all its readers are archived), minilm's remaining runs, the tables.
    shutil.rmtree(runs)
    out = run_script(tmp_path, STAGES="pretrain probe qa sick summary")
    assert out.returncode == 0, out.stderr
    assert calls(tmp_path) == ["sick/minilm/seed1"] + downstream("minilm", (2,))
    assert "skip   pretrain/baseline (every probe, qa and sick run that reads it is archived)" in out.stdout
    table = (archive / "qa_vs_minilm.md").read_text()
    assert "| minilm | 3 | 11.0000 ± 1.0000 | 23.0000 ± 3.0000 |" in table  # mean ± std over the three seeds
    assert "| hierarchical | 3 | 11.0000 ± 1.0000 (+0.0000) |" in (archive / "qa.md").read_text()
    assert {"qa.md", "qa_vs_minilm.md", "sick.md", "sick_vs_minilm.md", "pretrain.md", "probe.md"} <= set(
        os.listdir(archive))
    assert "| layer 1 | 61.0 ± 1.0 (+0.0) | 61.0 ± 1.0 | 61.0 ± 1.0 (+0.0) |" in (archive / "probe.md").read_text()

    # Session 3: a hierarchical run missing from the archive makes that encoder (only) pre-train again.
    shutil.rmtree(runs)
    shutil.rmtree(archive / "sick" / "hierarchical" / "seed2")
    out = run_script(tmp_path)
    assert out.returncode == 0, out.stderr
    assert calls(tmp_path) == ["pretrain/hierarchical", "sick/hierarchical/seed2"]
    assert "pre-training again" in out.stdout


def test_pipeline_dry_run_and_bad_variables(tmp_path):
    out = run_script(tmp_path, DRY_RUN="1", STAGES="downstream", ENCODERS="minilm", SEEDS="4")
    assert out.returncode == 0, out.stderr
    assert [line.split()[2].rstrip(":") for line in out.stdout.splitlines() if " run " in line] == downstream(
        "minilm", (4,))
    assert calls(tmp_path) == [] and not (tmp_path / "archive").exists()
    for env, message in ((dict(STAGES="pretrain tune"), "unknown stage 'tune'"),
                         (dict(ENCODERS="bert"), "unknown encoder 'bert'"),
                         (dict(SEEDS="0 x"), "seeds must be non-negative integers"),
                         (dict(DATA=str(tmp_path / "nowhere")), "has no corpus/")):
        out = run_script(tmp_path, **env)
        assert out.returncode == 2 and message in out.stderr, (env, out.stderr)
    # A continued encoder's downstream run without its pre-training in this session stops with the reason.
    out = run_script(tmp_path, STAGES="qa", ENCODERS="baseline")
    assert out.returncode == 2 and "the baseline encoder" in out.stderr and "runs/ does not survive" in out.stderr
