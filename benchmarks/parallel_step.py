"""Step time of each parallel strategy on 8 emulated CPU devices, or one accelerator's step time and MFU.

Strategies (mesh over ('data', 'fsdp', 'tensor')): data (8,1,1), fsdp (1,8,1), tensor (1,1,8),
mix (2,2,2), and the pmap path. A small random BERT (hidden 128, 2 layers, 8 heads by default), the
three demo tasks, random tokens, losses summed. Emulated CPU devices share the host's cores, so the
numbers compare the strategies' compiled programs (collectives, resharding), not real scaling.

    python benchmarks/parallel_step.py [--batch=32] [--length=64] [--steps=3] [--repeats=3]
    python benchmarks/parallel_step.py --mfu   # the default backend's first device: BERT-base, bf16, length 128

--mfu times one device with a BERT-base-sized random model (H 768, 12 layers, 12 heads) and reports
model FLOPs utilisation against the device's dense bf16 peak (known GPUs and TPUs only).
"""

from __future__ import annotations

import json
import os
import statistics
import sys
import time

if "--mfu" not in sys.argv:  # before JAX starts: 8 emulated CPU devices
    os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=8")
    os.environ.setdefault("JAX_PLATFORMS", "cpu")

import jax  # noqa: E402
import numpy as np  # noqa: E402
from absl import app, flags  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from benchmarks.common import encoder_matmul_flops  # noqa: E402
from configs import default  # noqa: E402
from jaxmt.data.schema import DEFAULT_TASKS  # noqa: E402
from jaxmt.parallel.mesh import make_mesh  # noqa: E402
from jaxmt.training import setup  # noqa: E402
from jaxmt.training.optimizer import make_optimizer  # noqa: E402
from jaxmt.training.step import (
    init_state,  # noqa: E402
    multitask_step_runner,  # noqa: E402
)

_BATCH = flags.DEFINE_integer("batch", 32, "Examples per task per step (global).")
_LENGTH = flags.DEFINE_integer("length", 64, "Tokens per sequence.")
_STEPS = flags.DEFINE_integer("steps", 3, "Steps per timing round.")
_REPEATS = flags.DEFINE_integer("repeats", 3, "Timing rounds (strategies alternate within a round).")
_HIDDEN = flags.DEFINE_integer("hidden", 128, "Hidden size of the random BERT (8-device mode).")
_LAYERS = flags.DEFINE_integer("layers", 2, "Layers of the random BERT (8-device mode).")
_MFU = flags.DEFINE_bool("mfu", False, "Time BERT-base on one device of the default backend in bf16 and report MFU.")

STRATEGIES = {"data": ((8, 1, 1), "jit"), "fsdp": ((1, 8, 1), "jit"), "tensor": ((1, 1, 8), "jit"),
              "mix": ((2, 2, 2), "jit"), "pmap": ((8, 1, 1), "pmap")}
PEAK_BF16_FLOPS = {"H100": 989e12, "H200": 989e12, "A100": 312e12, "L4": 121e12, "TPU v4": 275e12,
                   "TPU v5 lite": 197e12, "TPU v5e": 197e12, "TPU v5p": 459e12}


def bert_config(hidden: int, layers: int, heads: int, vocab: int = 30522):
    from transformers import BertConfig

    return BertConfig(vocab_size=vocab, hidden_size=hidden, num_hidden_layers=layers, num_attention_heads=heads,
                      intermediate_size=4 * hidden, max_position_embeddings=512)


def random_batches(vocab: int, batch: int, length: int) -> dict:
    rng = np.random.default_rng(0)
    out = {}
    for task, spec in DEFAULT_TASKS.items():
        ids = rng.integers(5, vocab, size=(batch, 1, length), dtype=np.int32)
        labels = (rng.uniform(0, 5, batch).astype(np.float32) if spec.kind == "regression"
                  else rng.integers(0, spec.output_dim if spec.kind == "classification" else 2, batch).astype(np.int32))
        out[task] = {"input_ids": ids, "token_type_ids": np.zeros_like(ids), "attention_mask": np.ones_like(ids),
                     "labels": labels, "example_mask": np.ones(batch, np.float32)}
    return out


def build(shape, mode: str, bert, devices, dtype: str = "float32"):
    """A runner, its initial state and its device-ready batches for one strategy."""
    config = default.get_config()
    config.mesh.shape, config.parallel.mode, config.model.dtype = shape, mode, dtype
    mesh = make_mesh(config.mesh.axes, config.mesh.shape, devices)
    model = setup.build_model(config, bert, DEFAULT_TASKS)
    tx = make_optimizer(config, 1000, len(DEFAULT_TASKS))
    make = lambda: init_state(model, tx, jax.random.PRNGKey(0), None)  # noqa: E731
    shardings = setup.state_shardings(jax.eval_shape(make), mesh)
    runner = multitask_step_runner(config, mesh, model, tx, {t: 1.0 for t in DEFAULT_TASKS}, shardings)
    state = jax.jit(make, out_shardings=shardings)()
    host = random_batches(bert.vocab_size, _BATCH.value, _LENGTH.value)
    if mode == "pmap":
        n = jax.local_device_count()
        batches = {t: {k: v.reshape((n, -1) + v.shape[1:]) for k, v in b.items()} for t, b in host.items()}
    else:
        batches = jax.device_put(host, runner.data_sharding)
    return runner, state, batches


def time_rounds(runs: dict) -> dict:
    rng = jax.random.PRNGKey(1)
    for run in runs.values():
        start = time.perf_counter()
        run["state"], metrics = run["runner"].step(run["state"], run["batches"], rng)
        jax.block_until_ready(metrics)
        run["compile_s"], run["times"] = time.perf_counter() - start, []
    for _ in range(_REPEATS.value):
        for run in runs.values():
            start = time.perf_counter()
            for _ in range(_STEPS.value):
                run["state"], metrics = run["runner"].step(run["state"], run["batches"], rng)
            jax.block_until_ready((run["state"].params, metrics))
            run["times"].append((time.perf_counter() - start) / _STEPS.value)
    return {name: {"s_per_step": round(statistics.median(r["times"]), 4), "compile_s": round(r["compile_s"], 1),
                   "all_s": [round(t, 4) for t in r["times"]]} for name, r in runs.items()}


def emulated_devices() -> dict:
    bert = bert_config(_HIDDEN.value, _LAYERS.value, heads=8)
    runs = {}
    for name, (shape, mode) in STRATEGIES.items():
        runner, state, batches = build(shape, mode, bert, jax.devices())
        runs[name] = {"runner": runner, "state": state, "batches": batches}
    return {"benchmark": "parallel_step", "backend": jax.default_backend(), "devices": jax.device_count(),
            "host_cpus": os.cpu_count(), "model": {"hidden": _HIDDEN.value, "layers": _LAYERS.value, "heads": 8},
            "tasks": 3, "per_task_batch": _BATCH.value, "length": _LENGTH.value, "strategies": time_rounds(runs)}


def one_device_mfu() -> dict:
    bert = bert_config(768, 12, heads=12)
    device = jax.devices()[0]
    runner, state, batches = build((1, 1, 1), "jit", bert, [device], dtype="bfloat16")
    timing = time_rounds({"bert_base": {"runner": runner, "state": state, "batches": batches}})["bert_base"]
    flops = encoder_matmul_flops(bert, [_LENGTH.value] * (3 * _BATCH.value), training=True)
    peak = next((v for k, v in PEAK_BF16_FLOPS.items() if k.lower() in device.device_kind.lower()), None)
    achieved = flops / timing["s_per_step"]
    return {"benchmark": "parallel_step_mfu", "device": device.device_kind, "backend": jax.default_backend(),
            "model": "bert-base-sized random init", "dtype": "bfloat16", "tasks": 3, "per_task_batch": _BATCH.value,
            "length": _LENGTH.value, **timing, "model_tflops_per_step": round(flops / 1e12, 3),
            "achieved_tflops": round(achieved / 1e12, 2),
            "peak_bf16_tflops": None if peak is None else peak / 1e12,
            "mfu": None if peak is None else round(achieved / peak, 4)}


def main(argv: list[str]) -> None:
    del argv
    print(json.dumps(one_device_mfu() if _MFU.value else emulated_devices(), indent=2))


if __name__ == "__main__":
    app.run(main)
