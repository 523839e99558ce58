import importlib
import json
import os

import pytest
from conftest import ROOT, tiny_config

from jaxmt.errors import ConfigError
from jaxmt.parallel.mesh import MeshError, make_mesh, mesh_shape
from jaxmt.training.setup import check_config


def load_config(name):
    return importlib.import_module(f"configs.{name}").get_config()


def test_shipped_configs_are_valid_and_differ_only_where_they_say():
    pcgrad, summed = load_config("pcgrad"), load_config("sum")
    for config in (pcgrad, summed, load_config("default")):
        check_config(config)
    assert pcgrad.optim.gradient_surgery == "pcgrad" and summed.optim.gradient_surgery == "none"
    summed.optim.gradient_surgery = "pcgrad"
    assert summed.to_dict() == pcgrad.to_dict()


def test_every_top_level_config_has_allow_config_change():
    for name in ("default", "pcgrad", "sum", "acgan", "acgan_baseline", "acgan_cfimdb", "entailment", "squad",
                 "pretrain_bert", "pretrain_hierarchical", "pretrain_minilm", "pretrain_minilm_hierarchical",
                 "paper_b_squad", "paper_b_sick"):
        assert load_config(name).allow_config_change is False, name


def test_a_config_file_adds_a_task_for_the_gan(tmp_path):
    """docs/acgan.md and docs/api.md: a new task is a config file (configs/acgan_cfimdb.py), not a flag."""
    from jaxmt.data.sources import load_split, task_specs
    from jaxmt.gan.build import check_gan_config

    config = load_config("acgan_cfimdb")
    check_gan_config(config)
    rows = "".join(f"{i}\tr{i}\tA review , number {i} .\t{i % 2}\n" for i in range(6))
    for split in ("train", "dev"):
        (tmp_path / f"ids-cfimdb-{split}.csv").write_text("\tid\tsentence\tsentiment\n" + rows)
    config.data.csv_dir = str(tmp_path)
    spec = task_specs(config)["cfimdb"]
    assert spec.num_classes == 2 and not spec.is_pair
    assert load_split(config, spec, "train").labels.tolist() == [0, 1] * 3
    assert load_split(config, spec, "test") is None  # no test file named: no test predictions


def test_every_config_field_is_documented_on_its_line():
    for name in ("default",):
        text = (ROOT / "configs" / f"{name}.py").read_text()
        for line in text.splitlines():
            if line.strip().startswith("config.") and " = " in line and "ConfigDict()" not in line:
                assert "#" in line, f"configs/{name}.py: undocumented field: {line.strip()}"


@pytest.mark.parametrize("field, value, message", [
    ("sampling", "random", "config.sampling = 'random'"),
    ("model.pair_mode", "joint", "config.model.pair_mode"),
    ("data.max_length", 512, "longer than the largest bucket"),
    ("data.buckets", (64, 32), "need increasing lengths"),
])
def test_bad_config_values_fail_before_anything_runs(tiny_bert_dir, field, value, message):
    with pytest.raises(ConfigError, match=message):
        check_config(tiny_config(tiny_bert_dir, **{field: value}))


def test_pcgrad_needs_every_task_each_step(tiny_bert_dir):
    with pytest.raises(ConfigError, match="set sampling='all'"):
        check_config(tiny_config(tiny_bert_dir, **{"optim.gradient_surgery": "pcgrad", "sampling": "round_robin"}))


def test_unknown_task_and_misspelt_key(tiny_bert_dir):
    from jaxmt.data.sources import task_specs

    with pytest.raises(ConfigError, match="unknown task 'nli'"):
        task_specs(tiny_config(tiny_bert_dir, task_names=("sst", "nli")))
    config = tiny_config(tiny_bert_dir)
    with pytest.raises(AttributeError, match="learning_rat"):
        config.optim.learning_rat = 1.0


def test_mesh_shapes():
    assert mesh_shape(("data",), (-1,), 8) == (8,)
    assert mesh_shape(("data", "model"), (2, -1), 8) == (2, 4)
    with pytest.raises(MeshError, match="does not fit 8 devices"):
        mesh_shape(("data",), (3,), 8)
    assert make_mesh(("data",), (-1,)).size >= 1


def test_plot_draws_losses_and_pcgrad_cosines(tmp_path):
    from jaxmt.plot import plot_run

    rows = [{"step": s, "train/loss/sst": 1.0 / s, "train/loss/sts": 2.0 / s, "train/pcgrad/cos/sst-sts": 0.1 * s - 0.3,
             "train/pcgrad/conflicts": s % 3} for s in range(1, 8)]
    (tmp_path / "metrics.jsonl").write_text("\n".join(json.dumps(r) for r in rows))
    out = plot_run(str(tmp_path))
    assert out.endswith("training.png") and os.path.getsize(out) > 10_000
    with pytest.raises(FileNotFoundError, match="metrics.jsonl"):
        plot_run(str(tmp_path / "missing"))
