"""A workdir remembers its config: a resumed run with another config is refused, recorded or accepted."""

import json

import pytest
from conftest import tiny_config

from jaxmt.checkpointing.workdir import (
    ADDED_FIELDS,
    CONFIG_CHANGES_FILE,
    RESUMABLE_FIELDS,
    check_resume_config,
    read_run_config,
    write_run_config,
)
from jaxmt.errors import ConfigError


@pytest.fixture
def workdir(tmp_path, tiny_bert_dir):
    write_run_config(str(tmp_path), tiny_config(tiny_bert_dir))
    return tmp_path


def test_a_new_workdir_or_the_same_config_has_no_changes(tmp_path, workdir, tiny_bert_dir):
    assert check_resume_config(str(tmp_path / "fresh"), tiny_config(tiny_bert_dir), allow_changes=False) == []
    assert check_resume_config(str(workdir), tiny_config(tiny_bert_dir), allow_changes=False) == []
    assert not (workdir / CONFIG_CHANGES_FILE).exists()


def test_a_changed_training_field_is_refused_naming_every_change(workdir, tiny_bert_dir):
    config = tiny_config(tiny_bert_dir, num_steps=12, log_every=3, **{"optim.learning_rate": 1e-4})
    with pytest.raises(ConfigError) as info:
        check_resume_config(str(workdir), config, allow_changes=False)
    message = str(info.value)
    assert "\n" not in message and message.startswith(f"{workdir}/config.json: ")
    assert "config.log_every: 2 -> 3, config.num_steps: 6 -> 12, config.optim.learning_rate: 5e-05 -> 0.0001" in message
    assert "num_steps, optim.learning_rate may not change" in message
    assert read_run_config(str(workdir)).num_steps == 6  # nothing rewritten


def test_resumable_fields_change_freely_and_are_recorded(workdir, tiny_bert_dir):
    assert {"log_every", "eval_every", "checkpoint_every", "keep_checkpoints", "on_nonfinite"} <= set(RESUMABLE_FIELDS)
    config = tiny_config(tiny_bert_dir, log_every=1, keep_checkpoints=5, on_nonfinite="skip")
    changes = check_resume_config(str(workdir), config, allow_changes=False)
    assert changes == ["config.keep_checkpoints: 2 -> 5", "config.log_every: 2 -> 1",
                       "config.on_nonfinite: 'stop' -> 'skip'"]
    assert read_run_config(str(workdir)).on_nonfinite == "skip"
    record = json.loads((workdir / CONFIG_CHANGES_FILE).read_text())
    assert record["changes"] == changes and record["allowed_by"] == "resumable fields"


def test_allow_changes_accepts_any_change_and_records_it(workdir, tiny_bert_dir):
    config = tiny_config(tiny_bert_dir, num_steps=12, allow_config_change=True)
    changes = check_resume_config(str(workdir), config, allow_changes=config.allow_config_change)
    assert changes == ["config.allow_config_change: false -> true", "config.num_steps: 6 -> 12"]
    assert read_run_config(str(workdir)).num_steps == 12
    again = tiny_config(tiny_bert_dir, num_steps=24)
    with pytest.raises(ConfigError, match="config.num_steps: 12 -> 24"):  # compared with the updated config.json
        check_resume_config(str(workdir), again, allow_changes=False)
    lines = (workdir / CONFIG_CHANGES_FILE).read_text().splitlines()
    assert len(lines) == 1 and json.loads(lines[0])["allowed_by"] == "allow_config_change"



def _record_without(workdir, fields: list[str], **values) -> None:
    """Rewrites workdir's config.json as an older jaxmt wrote it: `fields` absent, `values` set (dotted keys)."""
    path = workdir / "config.json"
    recorded = json.loads(path.read_text())

    def parent(dotted: str) -> tuple[dict, str]:
        *parents, name = dotted.split(".")
        node = recorded
        for key in parents:
            node = node[key]
        return node, name

    for dotted in fields:
        node, name = parent(dotted)
        node.pop(name)
    for dotted, value in values.items():
        node, name = parent(dotted)
        node[name] = value
    path.write_text(json.dumps(recorded))


def test_a_workdir_recorded_before_new_fields_resumes_while_they_hold_their_defaults(workdir, tiny_bert_dir):
    from configs import default

    defaults = default.get_config()
    for field, value in ADDED_FIELDS.items():  # the table follows configs/default.py
        node = defaults
        for part in field.replace("*", "sst").split("."):
            node = node[part]
        assert (list(node) if isinstance(node, tuple) else node) == value, field
    older = [f.replace("*", t) for f in ADDED_FIELDS for t in ("sst", "para", "sts")]
    _record_without(workdir, sorted(set(older)), **{"model.dtype": "float32"})
    assert check_resume_config(str(workdir), tiny_config(tiny_bert_dir), allow_changes=False) == []  # CPU: auto = f32
    assert not (workdir / CONFIG_CHANGES_FILE).exists()
    _record_without(workdir, [], **{"model.dtype": "bfloat16"})  # a resolved field: auto is float32 here, not bf16
    with pytest.raises(ConfigError, match=r"config.model.dtype: 'bfloat16' -> 'auto'"):
        check_resume_config(str(workdir), tiny_config(tiny_bert_dir), allow_changes=False)
    _record_without(workdir, [], **{"model.dtype": "float32"})
    with pytest.raises(ConfigError, match=r"config.optim.accumulation_steps: \(absent\) -> 2"):
        check_resume_config(str(workdir), tiny_config(tiny_bert_dir, **{"optim.accumulation_steps": 2}),
                            allow_changes=False)
    changes = check_resume_config(str(workdir), tiny_config(tiny_bert_dir, **{"data.prefetch": 0}), allow_changes=False)
    assert changes == ["config.data.prefetch: (absent) -> 0"]  # resumable: recorded, not refused
