"""benchmarks/real_stream.py's streams and accounting, on the demo data (no step is compiled: a --quick run of
the whole script compiles four train steps, over a minute of CPU, too slow for the suite)."""

import importlib.util

import numpy as np
import pytest
from conftest import tiny_config

from benchmarks.common import encoder_matmul_flops
from benchmarks.real_stream import Timed, compare, train_streams
from jaxmt.data.sources import load_splits, task_specs
from jaxmt.training import setup
from jaxmt.training.trainer import make_sampler


@pytest.fixture(scope="module")
def streams(tiny_bert, tiny_bert_dir):
    config = tiny_config(tiny_bert_dir)
    specs = task_specs(config)
    train = setup.encode_splits(config, load_splits(config, specs, "train"), tiny_bert.tokenizer)
    packed_sampler = make_sampler(config, train, 1)
    config.data.packing = False
    padded_sampler = make_sampler(config, train, 1)
    pad_id = tiny_bert.tokenizer.pad_token_id
    steps = 5
    out, facts = train_streams(train, {"packed": packed_sampler}, padded_sampler, steps, config.data.buckets, pad_id,
                               4 * steps)
    return out, facts, train, padded_sampler, steps


def test_streams_cover_the_same_examples_and_count_tokens(streams):
    out, facts, train, padded_sampler, steps = streams
    (packed, packed_counts, _), (padded, padded_counts, _), (torch, torch_counts, _) = (
        out[k] for k in ("packed", "padded", "torch"))
    assert len(padded) == len(torch) == steps and len(packed) == facts["packed_steps"]
    for task, quota in facts["examples_per_task"].items():
        assert quota == steps * 8 and facts["packed_examples_per_task"][task] >= quota
    # Counts: examples, real tokens, tokens fed to the encoder.
    assert packed_counts[:, 0].sum() == sum(facts["packed_examples_per_task"].values())
    assert padded_counts[:, 0].sum() == torch_counts[:, 0].sum() == 3 * steps * 8
    np.testing.assert_array_equal(padded_counts[:, 1], torch_counts[:, 1])  # the same examples, the same tokens
    assert (torch_counts[:, 2] <= padded_counts[:, 2]).all()  # own longest <= the step's common bucket
    packed_efficiency = packed_counts[:, 1].sum() / packed_counts[:, 2].sum()
    assert packed_efficiency > padded_counts[:, 1].sum() / padded_counts[:, 2].sum()
    for step, batches in enumerate(torch):  # dynamic padding: each task's batch to its own longest
        for task, batch in batches.items():
            longest = train[task].lengths[padded_sampler.indices(task, step)].max()
            assert batch["input_ids"].shape == (8, 1, longest)


def test_timed_summary_and_ratios():
    counts = np.asarray([[4, 30, 40], [4, 20, 40], [2, 10, 20]])
    calls = []
    runners = [Timed(name, ["a", "b", "c"], counts * scale, calls.append, [np.arange(2), np.arange(2, 3)])
               for name, scale in (("jaxmt_packed", 2), ("jaxmt_padded", 1))]
    for r in range(2):
        for runner in runners:
            runner.time_round(r)
    assert calls == [["a", "b"], ["a", "b"], ["c"], ["c"]]
    entry = compare(runners)
    packed = entry["jaxmt_packed"]
    assert (packed["steps"], packed["examples"], packed["real_tokens"], packed["computed_tokens"]) == (3, 20, 120, 200)
    assert packed["padding_efficiency"] == 0.6
    assert entry["ratio_packed_over_padded"] > 0 and "ratio_packed_over_torch" not in entry


def test_input_pipeline_modes_deliver_the_trainers_batches_and_waits_are_summarised(tiny_bert_dir):
    """benchmarks/input_pipeline.py's part (a) on the demo data (no step compiled) and its wait summary."""
    from benchmarks.input_pipeline import (
        host_part,
        packing_density,
        pipeline_rates,
        put_of,
        trainer_program,
        wait_summary,
    )

    config = tiny_config(tiny_bert_dir, **{"data.prefetch": 2})
    program, host = trainer_program(config), host_part(config)
    put_of(program, host)  # the host batches put on the device equal the trainer's own device batch (checked)
    rates = pipeline_rates(program, host, steps=6, rounds=2, depth=2, use_grain=False)
    assert set(rates) == {"host_only", "sync", "prefetch_thread", "steps_per_round"} and rates["steps_per_round"] == 3
    assert all(len(rates[m]["rounds"]) == 2 and rates[m]["steps_per_s"] > 0 for m in ("sync", "prefetch_thread"))
    density = packing_density(host.keywords["sampler"], 6)  # the rows' tokens over the examples they train
    for task in config.task_names:
        d = density[task]
        assert d["computed_tokens_per_example"] >= d["real_tokens_per_example"] > 0 and 0 <= d["dropped_share"] <= 1
    summary = wait_summary([5.0, 0.5, 0.001, 0.003, 0.002], [9.0, 1.0, 1.0, 2.0, 1.0])
    assert summary["steady_steps"] == 3 and summary["wait_ms_median"] == 2.0 and summary["wait_ms_max"] == 3.0
    assert summary["step_s_median"] == 1.0


def test_accelerator_check_runs_on_cpu_with_a_tiny_model(tmp_path):
    """benchmarks/accelerator.py --tiny: the GPU check's whole path (packed bf16 step, evaluation, the bf16-autocast
    torch reference, MFU) on CPU, as one command writing its JSON."""
    import json
    import subprocess
    import sys

    from conftest import ROOT

    out = tmp_path / "accelerator.json"
    args = [sys.executable, "benchmarks/accelerator.py", "--tiny", "--steps=2", "--rounds=1", "--eval_examples=32",
            f"--out={out}"]
    run = subprocess.run(args, cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr[-2000:]
    result = json.loads(out.read_text())
    assert result["tiny"] and result["model"]["compute_dtype"] == "bfloat16"
    # The PyTorch reference runs only where torch is installed (the bench extra; CI's clean checkout has no torch):
    # without it the jaxmt half still runs and the JSON says there was no reference.
    has_torch = importlib.util.find_spec("torch") is not None
    assert result["torch_device"] == ("cpu" if has_torch else None)
    for part in ("train", "eval"):
        jaxmt = result[part]["jaxmt_packed"]
        assert jaxmt["examples"] > 0 and jaxmt["examples_per_s"] > 0 and 0 < jaxmt["mfu"] < 1
        if has_torch:
            torch = result[part]["torch_dynamic"]
            assert jaxmt["examples"] == torch["examples"]  # the same examples for both
            assert result[part]["ratio_jaxmt_over_torch"] > 0
        else:
            assert "torch_dynamic" not in result[part] and "ratio_jaxmt_over_torch" not in result[part]
    assert result["peak_source"] == "best bf16 matmul measured here" and result["gpu"] == "not available in this run"


def test_encoder_matmul_flops_counts_dense_layers_and_attention_per_sequence():
    """The MFU numerator of every benchmark, by hand for hidden 2, feed-forward 4, one layer: per token
    2 x (4 x 2 x 2 + 2 x 2 x 4) = 64 dense FLOPs; per sequence of n, 4 x n^2 x 2 for attention's two matmuls."""
    from types import SimpleNamespace

    bert = SimpleNamespace(hidden_size=2, intermediate_size=4, num_hidden_layers=1)
    assert encoder_matmul_flops(bert, [3], training=False) == 3 * 64 + 8 * 9
    assert encoder_matmul_flops(bert, [3, 1], training=False) == 4 * 64 + 8 * (9 + 1)  # each at its own length
    assert encoder_matmul_flops(bert, np.array([3, 1]), training=True) == 3 * (4 * 64 + 8 * 10)
    base = SimpleNamespace(hidden_size=768, intermediate_size=3072, num_hidden_layers=12)
    dense = 12 * (4 * 768 * 768 + 2 * 768 * 3072)  # BERT-base's 85M encoder weights: 6 N FLOPs a trained token
    assert encoder_matmul_flops(base, [128], training=True) == 6 * dense * 128 + 3 * 12 * 4 * 128 * 128 * 768
