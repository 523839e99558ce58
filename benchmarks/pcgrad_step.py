"""Step time of the PCGrad train step against the summed-loss step, on the same batches.

MiniLM (or --model), the three tasks, a per-task batch of 16 at length 64 by default. The two
steps alternate in repeats (A, B, A, B, ...) in one process, so load on the machine hits both
alike; the medians and their ratio are printed as JSON. Target: PCGrad / sum <= 1.10.

    python benchmarks/pcgrad_step.py [--model=minilm] [--batch=16] [--length=64] [--repeats=5]
"""

from __future__ import annotations

import json
import os
import platform
import statistics
import sys
import time

import jax
import numpy as np
from absl import app, flags

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from configs import default  # noqa: E402
from jaxmt.data.schema import DEFAULT_TASKS  # noqa: E402
from jaxmt.models.pretrained import load_pretrained  # noqa: E402
from jaxmt.training import setup  # noqa: E402
from jaxmt.training.optimizer import make_optimizer  # noqa: E402
from jaxmt.training.step import init_state, make_train_step  # noqa: E402

_MODEL = flags.DEFINE_string("model", "minilm", "Model alias or directory.")
_BATCH = flags.DEFINE_integer("batch", 16, "Examples per task per step.")
_LENGTH = flags.DEFINE_integer("length", 64, "Tokens per sequence (all positions real).")
_REPEATS = flags.DEFINE_integer("repeats", 5, "Alternating timing rounds.")
_STEPS = flags.DEFINE_integer("steps", 3, "Steps per timing round.")


def random_batches(vocab_size: int, batch: int, length: int, seed: int = 0) -> dict:
    rng = np.random.default_rng(seed)
    out = {}
    for task, spec in DEFAULT_TASKS.items():
        ids = rng.integers(1000, vocab_size, size=(batch, 1, length), dtype=np.int32)
        types = np.zeros_like(ids)
        if spec.is_pair:
            types[..., length // 2:] = 1
        labels = (rng.uniform(0, 5, batch).astype(np.float32) if spec.kind == "regression"
                  else rng.integers(0, spec.output_dim if spec.kind == "classification" else 2, batch).astype(np.int32))
        out[task] = {"input_ids": ids, "token_type_ids": types, "attention_mask": np.ones_like(ids),
                     "labels": labels, "example_mask": np.ones(batch, np.float32)}
    return out


def main(argv: list[str]) -> None:
    del argv
    pretrained = load_pretrained(_MODEL.value)
    batches = jax.device_put(random_batches(pretrained.config.vocab_size, _BATCH.value, _LENGTH.value))
    rng = jax.random.PRNGKey(1)
    runners = {}
    for name, surgery in (("sum", "none"), ("pcgrad", "pcgrad")):
        config = default.get_config()
        config.optim.gradient_surgery = surgery
        model = setup.build_model(config, pretrained.config, DEFAULT_TASKS)
        tx = make_optimizer(config, 1000, len(DEFAULT_TASKS))
        state = init_state(model, tx, jax.random.PRNGKey(0), pretrained.params)
        step = jax.jit(make_train_step(model, tx, {t: 1.0 for t in DEFAULT_TASKS}, per_task_grads=surgery != "none"),
                       donate_argnums=(0,))
        start = time.perf_counter()
        state, metrics = step(state, batches, rng)
        jax.block_until_ready(metrics)
        runners[name] = {"step": step, "state": state, "compile_s": time.perf_counter() - start, "times": []}
    for _ in range(_REPEATS.value):
        for runner in runners.values():
            start = time.perf_counter()
            for _ in range(_STEPS.value):
                runner["state"], metrics = runner["step"](runner["state"], batches, rng)
            jax.block_until_ready((runner["state"].params, metrics))
            runner["times"].append((time.perf_counter() - start) / _STEPS.value)
    median = {name: statistics.median(r["times"]) for name, r in runners.items()}
    examples = 3 * _BATCH.value
    print(json.dumps({
        "benchmark": "pcgrad_step",
        "backend": jax.default_backend(), "devices": jax.device_count(), "cpu_count": os.cpu_count(),
        "machine": platform.processor() or platform.machine(),
        "model": _MODEL.value, "tasks": 3, "per_task_batch": _BATCH.value, "length": _LENGTH.value,
        "sum_s_per_step": round(median["sum"], 4), "pcgrad_s_per_step": round(median["pcgrad"], 4),
        "sum_examples_per_s": round(examples / median["sum"], 2),
        "pcgrad_examples_per_s": round(examples / median["pcgrad"], 2),
        "ratio_pcgrad_over_sum": round(median["pcgrad"] / median["sum"], 4), "target_ratio": 1.10,
        "meets_target": median["pcgrad"] / median["sum"] <= 1.10,
        "all_times_s": {name: [round(t, 4) for t in r["times"]] for name, r in runners.items()},
        "compile_s": {name: round(r["compile_s"], 1) for name, r in runners.items()},
    }, indent=2))


if __name__ == "__main__":
    app.run(main)
