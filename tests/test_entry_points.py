"""Every command line meets one bad input with exit status 2 and a one-line message, never a traceback.

Each case is caught before any model is loaded or anything compiled, so each costs one Python start.
"""

import subprocess
import sys

import pytest
from conftest import ROOT

from jaxmt.training.faults import EXIT_BAD_INPUT

# verb -> (arguments after the workdir, words the message must hold)
CASES = {
    "train": (["--config=configs/pcgrad.py", "--config.sampling=random"], "config.sampling = 'random'"),
    "evaluate": ([], "config.json: not found"),
    "pretrain": (["--config=configs/pretrain_bert.py", "--config.transfer=sideways"], "config.transfer = 'sideways'"),
    "qa": (["--config=configs/squad.py"], "set config.data.train_file"),
    "acgan": (["--config=configs/pcgrad.py"], "has no `gan` block"),
    "sweep": (["--config=configs/acgan.py", "--fractions=abc"], "--fractions=abc: give labeled fractions in (0, 1]"),
    "probe": (["--models=a=minilm,a=minilm"], "the name 'a' is used twice"),
    "plot": ([], "metrics.jsonl: not found"),
    "predict": (["--task=sst", "a sentence"], "config.json: not found"),
    "export": (["--out=/tmp/jaxmt-export-never-written"], "config.json: not found"),
    "summarize": (["--runs=a=/nonexistent/seed*"], "matches no workdir with a results.json"),
}


@pytest.mark.parametrize("verb", sorted(CASES))
def test_bad_input_exits_2_with_one_line_and_no_traceback(verb, tmp_path):
    args, message = CASES[verb]
    out_flag = verb in ("probe", "summarize")
    where = [f"--out={tmp_path / 'out'}"] if out_flag else [f"--workdir={tmp_path / 'not_a_workdir'}"]
    if verb in ("evaluate", "plot", "predict", "export"):
        (tmp_path / "not_a_workdir").mkdir()
    proc = subprocess.run([sys.executable, "-m", f"jaxmt.{verb}", *where, *args], cwd=ROOT, capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == EXIT_BAD_INPUT, (verb, proc.returncode, proc.stderr[-2000:])
    assert "Traceback" not in proc.stderr, proc.stderr[-2000:]
    errors = [line for line in proc.stderr.splitlines() if line.startswith("jaxmt: error:")]
    assert len(errors) == 1 and message in errors[0], proc.stderr[-2000:]
