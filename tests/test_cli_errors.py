"""Command lines fail on bad input with one line and exit status 2, never a traceback: each case is a row of
the README's "When things go wrong" table. All fail before any model is loaded, so each takes seconds."""

import os
import re
import subprocess
import sys

import pytest
from conftest import ROOT


def run_command(module, *args, cwd=ROOT):
    env = dict(os.environ, PYTHONPATH=str(ROOT), JAX_PLATFORMS="cpu")
    return subprocess.run([sys.executable, "-m", module, *args], cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=120)


def assert_one_line_error(out, message):
    """Exit 2 and one error line; INFO log lines (absl's `I1202 06:29:21.32 ...`) may come before it."""
    assert out.returncode == 2, out.stderr[-2000:]
    lines = [line for line in out.stderr.strip().splitlines() if not re.match(r"I\d{4} ", line)]
    assert len(lines) == 1 and lines[0].startswith("jaxmt: error: "), out.stderr[-2000:]
    assert message in lines[0]


@pytest.fixture
def files(tmp_path):
    (tmp_path / "no_get_config.py").write_text("CONFIG = {}\n")
    (tmp_path / "broken_import.py").write_text("from configs import nothing_here\n\ndef get_config():\n    pass\n")
    (tmp_path / "a_file").write_text("")
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "metrics.jsonl").write_text('{"step": 1, "train/loss/sst": 1.0}\n{"step": 2, "train/lo\n')
    (tmp_path / "empty_run").mkdir()
    (tmp_path / "empty_run" / "metrics.jsonl").write_text("")
    return tmp_path


@pytest.mark.parametrize("module, args, message", [
    ("jaxmt.train", ["--config=configs/nope.py"], "configs/nope.py: no such config file (shipped: configs/acgan.py"),
    ("jaxmt.train", ["--config=configs"], "configs is a folder; give a config file"),
    ("jaxmt.train", ["--config={tmp}/no_get_config.py"], "no_get_config.py: has no get_config() function"),
    ("jaxmt.train", ["--config={tmp}/broken_import.py"], "broken_import.py: cannot load it (ImportError"),
    ("jaxmt.train", ["--config=configs/entailment.py:bogus"], "unknown data 'bogus'; choose sick or one of"),
    ("jaxmt.train", ["--workdir={tmp}/a_file/run"], "a_file is a file, not a folder"),
    ("jaxmt.pretrain", ["--workdir="], "--workdir is empty"),
    ("jaxmt.pretrain", ["--config.sampling=all"], "bad command-line flag: --config.sampling: the config has no field"),
    ("jaxmt.train", ["--config.optim.learning_rat=1"],
     "--config.optim.learning_rat: the config has no field config.optim.learning_rat; "
     "did you mean config.optim.learning_rate?"),
    ("jaxmt.train", ["--config=configs/sum.py", "--config.optm.learning_rate=1"],
     "--config.optm.learning_rate: the config has no field config.optm; did you mean config.optim?"),
    ("jaxmt.train", ["--config.parallel.distributed=on", "--workdir={tmp}/w"], "but coordinator_address should be"),
    ("jaxmt.qa", ["--config.decode.n_best=0"], "config.decode.n_best = 0; expected >= 1"),
    ("jaxmt.acgan", ["--config.gan.g_dropout=1.0"], "config.gan.g_dropout = 1.0; expected in [0, 1)"),
    ("jaxmt.sweep", ["--fractions=0.1,half"], "--fractions=0.1,half: give labeled fractions in (0, 1]"),
    ("jaxmt.plot", ["--workdir={tmp}/run"], "metrics.jsonl:2: not a JSON object"),
    ("jaxmt.plot", ["--workdir={tmp}/empty_run"], "no metrics logged yet"),
    ("jaxmt.plot", ["--workdir={tmp}/nowhere"], "metrics.jsonl: not found; is"),
    ("jaxmt.probe", ["--batch_size=0"], "flag --batch_size=0: 0 is not a positive integer"),
    ("jaxmt.evaluate", ["--workdir={tmp}/nowhere"], "config.json: not found; is"),
])
def test_bad_input_is_one_line_and_exit_2(files, module, args, message):
    out = run_command(module, *(arg.format(tmp=files) for arg in args))
    assert_one_line_error(out, message)


def test_a_checkout_config_given_by_path_loads_from_another_directory(tmp_path):
    """configs/*.py import their base relatively, so the file works whatever the working directory."""
    out = run_command("jaxmt.train", f"--config={ROOT / 'configs' / 'sum.py'}", "--config.num_steps=0", cwd=tmp_path)
    assert_one_line_error(out, "config.num_steps = 0; expected >= 1")


def test_help_exits_0_and_prints_the_docstring_verbatim():
    """absl exits 1 after --helpfull and %-formats the module docstring; README says 0 is a command's success."""
    import jaxmt.summarize

    out = run_command("jaxmt.summarize", "--helpfull")
    assert out.returncode == 0, out.stderr[-2000:]
    assert jaxmt.summarize.__doc__.strip() in out.stdout
    assert run_command("jaxmt.train", "--help").returncode == 0


def test_no_command_docstring_has_a_bare_percent_sign():
    """absl's usage() %-formats a command's docstring when it holds a '%': every command's help stays readable."""
    import ast
    import configparser

    parser = configparser.ConfigParser()
    parser.read(ROOT / "setup.cfg")
    modules = [line.split("=")[1].strip().split(":")[0]
               for line in parser["options.entry_points"]["console_scripts"].strip().splitlines()]
    assert len(modules) >= 11
    for module in modules:
        source = (ROOT / (module.replace(".", "/") + ".py")).read_text()
        doc = ast.get_docstring(ast.parse(source), clean=False)
        assert doc.count("%") == 2 * doc.count("%%"), module
