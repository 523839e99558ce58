"""Every ```python snippet of README.md and docs/api.md runs, so the documented API cannot rot unseen.

A snippet right after a `<!-- snippet: slow -->` line (invisible in the rendered page) trains or
loads a model and carries the `slow` marker.
"""

import json
import re
import shlex
import subprocess
import sys
import tempfile

import pytest
from conftest import ROOT
from test_multihost import free_port

DOCUMENTS = ("README.md", "docs/api.md")
SNIPPET = re.compile(r"^(<!-- snippet: slow -->\n)?```python\n(.*?)^```", re.MULTILINE | re.DOTALL)


def snippets() -> list:
    found = []
    for document in DOCUMENTS:
        text = (ROOT / document).read_text()
        for number, match in enumerate(SNIPPET.finditer(text), start=1):
            line = text[: match.start()].count("\n") + 1
            marks = [pytest.mark.slow] if match.group(1) else []
            found.append(pytest.param(match.group(2), id=f"{document}:{line}#{number}", marks=marks))
    return found


def test_the_documents_have_snippets():
    assert {p.id.split(":")[0] for p in snippets()} == set(DOCUMENTS)


@pytest.mark.parametrize("code", snippets())
def test_snippet_runs(code, tmp_path, monkeypatch):
    monkeypatch.chdir(ROOT)
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))  # what a snippet writes goes to tmp_path
    exec(compile(code, "<snippet>", "exec"), {"__name__": "__snippet__"})


# --- docs/scaling.md: multi-process launches -------------------------------------------------------------------

def scaling_page() -> str:
    return " ".join((ROOT / "docs" / "scaling.md").read_text().split())


def multiprocess_flags(module: str, config: str) -> list[str]:
    """The flags launch/multiprocess.sh gives the first of 2 processes of `module` (its dry run's command)."""
    dry = subprocess.run(["bash", "launch/multiprocess.sh", "--module", module, "--num-processes", "2", "--dry-run",
                          "--", f"--config={config}", "--workdir=w"], cwd=ROOT, capture_output=True, text=True,
                         timeout=60)
    assert dry.returncode == 0, dry.stderr
    (first,) = [line for line in dry.stdout.splitlines() if f" -m {module} " in line and "process_id=0" in line]
    return [word for word in shlex.split(first) if word.startswith("--config")]


def test_every_shipped_config_takes_the_flags_a_multiprocess_launch_passes():
    """docs/scaling.md: every shipped config has the `parallel` block the launchers set (no flag error)."""
    from absl import flags
    from ml_collections.config_flags import config_flags

    from jaxmt.cli import ConfigFileParser

    assert "Every shipped config has the block" in scaling_page()
    configs = sorted(p.relative_to(ROOT).as_posix() for p in (ROOT / "configs").glob("*.py")
                     if "def get_config" in p.read_text())
    assert len(configs) >= 15
    for config in configs:
        argv = ["prog", *multiprocess_flags("jaxmt.train", config)]
        values = flags.FlagValues()  # the commands' --config flag (jaxmt.cli), here reading `argv`
        flags.DEFINE_flag(config_flags._ConfigFlag(parser=ConfigFileParser(), serializer=flags.ArgumentSerializer(),
                                                   name="config", default=config, help_string="",
                                                   flag_values=values, sys_argv=argv), values)
        values(argv)
        parallel = values.config.parallel
        assert (parallel.num_processes, parallel.process_id) == (2, 0), config
        assert parallel.coordinator_address.startswith("127.0.0.1:"), config


def test_the_commands_the_page_names_start_the_multiprocess_setup_from_the_config():
    """Each training command the page lists calls jax.distributed.initialize with its config's parallel block
    before its first JAX computation (tests/test_multihost.py trains jaxmt.train and jaxmt.acgan on 2 processes;
    the slow test below jaxmt.pretrain)."""
    import importlib
    import inspect

    sentence = re.search(r"all five training commands, (.*?), start the multi-process set-up", scaling_page())
    modules = re.findall(r"`(jaxmt\.\w+)`", sentence.group(1))
    assert modules == ["jaxmt.train", "jaxmt.pretrain", "jaxmt.qa", "jaxmt.acgan", "jaxmt.sweep"]
    entry = {"jaxmt.train": "jaxmt.training.trainer:train_and_evaluate", "jaxmt.pretrain":
             "jaxmt.pretraining.trainer:pretrain", "jaxmt.qa": "jaxmt.downstream.qa_train:train_and_evaluate_qa",
             "jaxmt.acgan": "jaxmt.gan.build:prepare_gan_run", "jaxmt.sweep": "jaxmt.gan.fractions:run_sweep"}
    for module in modules:
        assert multiprocess_flags(module, "configs/default.py")  # the launcher takes the module
        path, name = entry[module].split(":")
        source = inspect.getsource(getattr(importlib.import_module(path), name))
        assert "distributed.initialize(config.parallel)" in source, module


def test_pmap_trains_the_default_packed_batches(tmp_path, tiny_bert_dir):
    """docs/scaling.md: `--config.parallel.mode=pmap` trains jaxmt.train's default config, packed batches included
    (here on this process's one device; tests/test_parallel.py compares pmap's packed losses on 8 with jit's)."""
    from conftest import tiny_config

    from jaxmt.training.trainer import train_and_evaluate

    assert "| multitask fine-tuning (`jaxmt.train`, sum and PCGrad) | yes | yes, packed batches (the default) " \
           "included |" in (ROOT / "docs" / "scaling.md").read_text()
    config = tiny_config(tiny_bert_dir, **{"parallel.mode": "pmap", "num_steps": 1, "eval_every": 0,
                                           "data.max_eval_examples": 8})
    assert config.data.packing
    assert train_and_evaluate(config, str(tmp_path / "run"))["steps"] == 1


@pytest.mark.slow
def test_pretraining_runs_as_two_processes(tmp_path, tiny_bert_dir):
    """docs/scaling.md's multi-process launch of jaxmt.pretrain, shrunk: 2 processes x 1 CPU device, 2 steps."""
    from test_pretraining import synthetic_corpus

    (tmp_path / "corpus.txt").write_text(synthetic_corpus(6, 4))
    (tmp_path / "tiny_pretrain.py").write_text(f'''from configs import pretrain_hierarchical


def get_config():
    config = pretrain_hierarchical.get_config()
    config.data.files = ("{tmp_path / 'corpus.txt'}",)
    config.data.cache_dir = "{tmp_path / 'cache'}"
    config.data.max_length, config.data.heldout_fraction, config.data.max_eval_examples = 24, 0.25, 16
    config.model.tokenizer = "{tiny_bert_dir}"
    config.model.hidden_size, config.model.num_layers, config.model.num_heads = 32, 3, 2
    config.model.intermediate_size = 64
    config.tasks.mlm.layer, config.tasks.nsp.layer, config.tasks.bigram_shift.layer = 3, 2, 1
    config.tasks.mlm.max_predictions = 4
    config.batch_size, config.eval_batch_size = 8, 16
    config.num_steps, config.log_every, config.eval_every, config.checkpoint_every = 2, 1, 0, 2
    return config
''')
    workdir, logs = tmp_path / "run", tmp_path / "logs"
    command = ["bash", "launch/multiprocess.sh", "--module", "jaxmt.pretrain", "--num-processes", "2",
               "--cpu-devices", "1", "--port", str(free_port()), "--log-dir", str(logs), "--python", sys.executable,
               "--", f"--config={tmp_path / 'tiny_pretrain.py'}", f"--workdir={workdir}"]
    proc = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:] + "".join(p.read_text()[-2000:] for p in sorted(logs.iterdir()))
    results = json.loads((workdir / "results.json").read_text())
    assert (results["steps"], results["devices"]) == (2, 2)
