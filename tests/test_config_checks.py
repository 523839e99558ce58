"""jaxmt.config_checks: every numeric field of every shipped config has a range, and a value outside it
stops the run with one line naming the field, before any model is loaded."""

import fnmatch
import importlib
import math
import subprocess
import sys
import time

import pytest
from conftest import ROOT

from jaxmt.config_checks import RANGE_RULES, check_ranges, numeric_fields, rule_for
from jaxmt.errors import ConfigError

CONFIG_NAMES = sorted(p.stem for p in (ROOT / "configs").glob("*.py") if not p.stem.startswith("_"))
ENTAILMENT_PRESETS = ("sick", "snli", "mnli", "mnli_mismatched", "rte")


def shipped_configs():
    """(label, config) of every configs/*.py, entailment once per data preset."""
    for name in CONFIG_NAMES:
        module = importlib.import_module(f"configs.{name}")
        if name == "entailment":
            for preset in ENTAILMENT_PRESETS:
                yield f"{name}:{preset}", module.get_config(preset)
        else:
            yield name, module.get_config()


def test_every_numeric_field_of_every_config_has_a_rule():
    uncovered = sorted({f"{label}: {path}" for label, config in shipped_configs()
                        for path, _ in numeric_fields(config) if rule_for(path) is None})
    assert not uncovered, f"add a rule to jaxmt.config_checks.RANGE_RULES for {uncovered}"


def test_every_rule_decides_some_shipped_field():
    paths = {path for _, config in shipped_configs() for path, _ in numeric_fields(config)}
    deciding = {next(pattern for pattern, _ in RANGE_RULES if fnmatch.fnmatchcase(path, pattern)) for path in paths}
    unused = [pattern for pattern, _ in RANGE_RULES if pattern not in deciding]
    assert not unused, f"rules that decide no shipped field (misspelt, or shadowed by an earlier rule): {unused}"


@pytest.mark.parametrize("label, config", list(shipped_configs()), ids=lambda x: x if isinstance(x, str) else "")
def test_shipped_configs_are_in_range(label, config):
    check_ranges(config)


# (field, bad value, expected message tail); each case runs on every config that has the field.
BAD_VALUES = [
    ("optim.learning_rate", -0.1, "expected > 0"),
    ("optim.learning_rate", 0.0, "expected > 0"),
    ("optim.learning_rate", math.nan, "expected > 0"),
    ("optim.warmup_fraction", 1.5, "expected in [0, 1]"),
    ("optim.weight_decay", -0.01, "expected >= 0"),
    ("optim.clip_norm", -1.0, "expected >= 0"),
    ("num_steps", 0, "expected >= 1"),
    ("batch_size", 0, "expected >= 1"),
    ("eval_batch_size", 0, "expected >= 1"),
    ("tasks.sst.batch_size", 0, "expected >= 1"),
    ("tasks.nli.batch_size", -4, "expected >= 1"),
    ("tasks.sts.weight", -1.0, "expected >= 0"),
    ("tasks.mlm.mask_rate", 1.0, "expected in (0, 1)"),
    ("tasks.nsp.layer", 0, "expected >= 1"),
    ("model.dropout", 1.0, "expected in [0, 1)"),
    ("model.dropout", -0.1, "expected in [0, 1)"),
    ("model.hidden_size", 0, "expected >= 1"),
    ("model.shared_dim", -1, "expected >= 0"),
    ("eval_every", -1, "expected >= 0"),
    ("eval_every_epochs", -0.5, "expected >= 0"),
    ("optim.head_learning_rate", -1e-3, "expected >= 0"),
    ("log_every", 0, "expected >= 1"),
    ("checkpoint_every", -1, "expected >= 1"),
    ("keep_checkpoints", 0, "expected >= 1"),
    ("seed", -1, "expected >= 0"),
    ("data.max_length", 0, "expected >= 1"),
    ("data.max_train_examples", 0, "expected >= 1 or -1 (all)"),
    ("data.heldout_fraction", 1.0, "expected in (0, 1)"),
    ("data.sick_split", (1.2, -0.1, -0.1), "expected in [0, 1] for each element"),
    ("decode.n_best", 0, "expected >= 1"),
    ("gan.g_dropout", 1.0, "expected in [0, 1)"),
    ("gan.labeled_fraction", 0.0, "expected in (0, 1]"),
    ("gan.g_learning_rate", -1e-4, "expected > 0"),
    ("gan.weights.g_fool", -0.5, "expected >= 0"),
    ("gan.fake_batch_size", -1, "expected >= 0"),
    ("gan.d_layers", 0, "expected >= 1"),
    ("mesh.shape", (0, 1, 1), "expected >= 1 or -1 (all the remaining devices) for each element"),
    ("parallel.process_id", -2, "expected >= 0 or -1 (from the environment)"),
]


def get_field(config, path):
    node = config
    for part in path.split("."):
        if part not in node:
            return None
        node = node[part]
    return node


def set_field(config, path, value):
    *parents, last = path.split(".")
    node = config
    for part in parents:
        node = node[part]
    node[last] = value


CASES = [(label, field, bad, tail) for label, config in shipped_configs() for field, bad, tail in BAD_VALUES
         if get_field(config, field) is not None]


def test_every_bad_value_is_tried_on_some_config():
    tried = {field for _, field, _, _ in CASES}
    assert tried == {field for field, _, _ in BAD_VALUES}


@pytest.mark.parametrize("label, field, bad, tail", CASES)
def test_out_of_range_value_is_a_one_line_error_naming_the_field(label, field, bad, tail):
    config = dict(shipped_configs())[label]
    set_field(config, field, bad)
    with pytest.raises(ConfigError) as caught:
        check_ranges(config)
    assert str(caught.value) == f"config.{field} = {bad!r}; expected {tail.removeprefix('expected ')}"


@pytest.mark.parametrize("field, edge", [
    ("optim.warmup_fraction", 1.0), ("optim.warmup_fraction", 0.0), ("model.dropout", 0.0), ("eval_every", 0),
    ("data.max_train_examples", -1), ("optim.clip_norm", 0.0), ("model.shared_dim", 0), ("mesh.shape", (-1, 2, 1)),
])
def test_edge_values_that_mean_something_are_accepted(field, edge):
    config = importlib.import_module("configs.default").get_config()
    set_field(config, field, edge)
    check_ranges(config)


def test_negative_learning_rate_on_the_command_line_exits_2_before_loading_a_model(tmp_path):
    start = time.monotonic()
    out = subprocess.run([sys.executable, "-m", "jaxmt.train", "--config=configs/pcgrad.py",
                          "--config.optim.learning_rate=-1", f"--workdir={tmp_path / 'w'}"],
                         cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert out.returncode == 2, out.stderr[-2000:]
    assert out.stderr.strip() == "jaxmt: error: config.optim.learning_rate = -1.0; expected > 0"
    assert not (tmp_path / "w").exists()  # nothing set up: the trainer was never called
    assert time.monotonic() - start < 60
