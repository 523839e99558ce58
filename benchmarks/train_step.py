"""Training-step throughput of jaxmt against a PyTorch reference of the same model, batches and optimizer.

Two settings, all positions real tokens (no padding), the same random batches for both frameworks:
  (a) single task: sst, batch 32, length 64 (the issue's measured setting), summed loss;
  (b) multitask: sst, para, sts, per-task batch 16, length 64, summed losses and PCGrad.
jaxmt runs its real step (`multitask_step_runner` -> `JitStep` -> `make_train_step`, built as the trainer
builds it); torch runs `benchmarks/torch_reference.py` (HF `BertModel`, AdamW, Pytorch-PCGrad style
surgery) on the same MiniLM weights with torch.set_num_threads(--torch_threads). All runners alternate
in repeats (A, B, C, ..., A, B, C, ...) in one process; medians (wall and process CPU time) and
the ratio jaxmt/torch in examples/s are printed as JSON, with model FLOPs utilisation against the
best f32 matmul FLOP/s measured in the same run (JAX and torch, the max of the two).

    python benchmarks/train_step.py [--repeats=5] [--steps=2] [--torch_threads=2] [--no_torch] [--settings=...]

One core each (per-core efficiency, free of OpenMP's slowdown on a busy machine):
    taskset -c 0 python benchmarks/train_step.py --torch_threads=1 --settings=single_sst_b32_l64
"""

from __future__ import annotations

import json
import os
import statistics
import sys
import time
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np
from absl import app, flags

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from benchmarks import torch_reference as ref  # noqa: E402
from benchmarks.common import encoder_matmul_flops, environment, jaxmt_train, torch_info  # noqa: E402
from configs import default  # noqa: E402
from jaxmt.data.schema import DEFAULT_TASKS  # noqa: E402
from jaxmt.models.pretrained import load_pretrained  # noqa: E402

_MODEL = flags.DEFINE_string("model", "minilm", "Model alias or directory.")
_REPEATS = flags.DEFINE_integer("repeats", 5, "Alternating timing rounds.")
_STEPS = flags.DEFINE_integer("steps", 2, "Steps per runner per timing round.")
_TORCH_THREADS = flags.DEFINE_integer("torch_threads", 2, "torch.set_num_threads for the reference.")
_NO_TORCH = flags.DEFINE_bool("no_torch", False, "Skip the PyTorch reference.")
_SETTINGS = flags.DEFINE_list("settings", "single_sst_b32_l64,multitask_3x16_l64", "Which settings to run.")

SETTINGS = {  # name -> (tasks, per-task batch, length)
    "single_sst_b32_l64": (("sst",), 32, 64),
    "multitask_3x16_l64": (("para", "sst", "sts"), 16, 64),
}
NUM_STEPS = 1000  # the schedule's length (warm-up 10%): the benchmark runs inside warm-up for both frameworks


def random_batches(tasks: tuple[str, ...], vocab_size: int, batch: int, length: int, seed: int = 0) -> dict:
    """Host batches [B, 1, L] ('cross' pairs: one sequence, token types 0 then 1), every position real."""
    rng = np.random.default_rng(seed)
    out = {}
    for task in tasks:
        spec = DEFAULT_TASKS[task]
        ids = rng.integers(1000, vocab_size, size=(batch, 1, length), dtype=np.int32)
        types = np.zeros_like(ids)
        if spec.is_pair:
            types[..., length // 2:] = 1
        if spec.kind == "regression":
            labels = rng.uniform(0, 5, batch).astype(np.float32)
        else:
            labels = rng.integers(0, spec.output_dim if spec.kind == "classification" else 2, batch).astype(np.int32)
        out[task] = {"input_ids": ids, "token_type_ids": types, "attention_mask": np.ones_like(ids),
                     "labels": labels, "example_mask": np.ones(batch, np.float32)}
    return out


def jax_matmul_flops_per_s(n: int = 2048, repeats: int = 5) -> float:
    """Best FLOP/s of an n x n f32 matmul under jax.jit."""
    a = jnp.asarray(np.random.default_rng(0).standard_normal((n, n), np.float32))
    mm = jax.jit(lambda x, y: x @ y)
    jax.block_until_ready(mm(a, a))
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        jax.block_until_ready(mm(a, a))
        best = min(best, time.perf_counter() - start)
    return 2 * n**3 / best


class Runner:
    """One timed thing: `run()` does `steps` steps and waits for them; times are kept per round."""

    def __init__(self, name: str, run: Callable[[], None], examples: int, tokens: int) -> None:
        self.name, self.run, self.examples, self.tokens = name, run, examples, tokens
        self.wall: list[float] = []
        self.cpu: list[float] = []
        self.info: dict = {}

    def time_round(self, steps: int) -> None:
        wall, cpu = time.perf_counter(), time.process_time()
        for _ in range(steps):
            self.run()
        self.wall.append((time.perf_counter() - wall) / steps)
        self.cpu.append((time.process_time() - cpu) / steps)

    def summary(self) -> dict:
        wall = statistics.median(self.wall)
        return {"s_per_step": round(wall, 4), "min_s_per_step": round(min(self.wall), 4),
                "cpu_s_per_step": round(statistics.median(self.cpu), 4),
                "examples_per_s": round(self.examples / wall, 2), "tokens_per_s": round(self.tokens / wall, 1),
                "all_s": [round(t, 3) for t in self.wall], **self.info}


def jaxmt_runner(name: str, pretrained, tasks: tuple[str, ...], host_batches: dict, surgery: str) -> Runner:
    """jaxmt's step as the trainer builds it: config -> model, optimizer, shardings, step runner, init."""
    config = default.get_config()
    config.task_names = tasks
    config.optim.gradient_surgery = surgery
    built = jaxmt_train(config, pretrained, {t: DEFAULT_TASKS[t] for t in tasks}, NUM_STEPS)
    runner, state, step_rng = built.runner, built.state, built.step_rng
    batches = jax.device_put(host_batches, runner.data_sharding)
    heads = jax.device_get(state.params["heads"])

    cost = runner.lower(state, batches, step_rng).cost_analysis()  # XLA's count, before compiling
    cost = (cost[0] if isinstance(cost, list) else cost) or {}
    holder = {"state": state}

    def run() -> None:
        holder["state"], metrics = runner.step(holder["state"], batches, step_rng)
        jax.block_until_ready(metrics)

    old_params = jax.tree_util.tree_leaves(holder["state"].params)[0]
    start = time.perf_counter()
    run()  # the first call compiles (cached from here on)
    compile_s = time.perf_counter() - start
    examples = len(tasks) * next(iter(host_batches.values()))["input_ids"].shape[0]
    length = next(iter(host_batches.values()))["input_ids"].shape[-1]
    out = Runner(name, run, examples, examples * length)
    out.info = {"compile_s": round(compile_s, 1), "xla_flops_per_step": float(cost.get("flops", 0.0)),
                "donated_state_freed": bool(old_params.is_deleted())}
    out.info["heads"] = heads
    out.info["jit"] = runner._step
    return out


def torch_runner(name: str, model_dir, tasks: tuple[str, ...], host_batches: dict, pcgrad: bool,
                 heads: dict) -> Runner:
    """The PyTorch reference step on the same batches, weights and initial heads."""
    model, opt, scheduler = ref.reference_training(model_dir, {t: DEFAULT_TASKS[t] for t in tasks}, heads, NUM_STEPS)
    batches = {t: ref.torch_batch(b) for t, b in host_batches.items()}

    def run() -> None:
        ref.train_step(model, opt, scheduler, batches, pcgrad)

    run()  # warm-up (allocator, oneDNN kernels)
    examples = len(tasks) * next(iter(host_batches.values()))["input_ids"].shape[0]
    length = next(iter(host_batches.values()))["input_ids"].shape[-1]
    return Runner(name, run, examples, examples * length)


def main(argv: list[str]) -> None:
    del argv
    torch_note = ref.setup_torch("train_step", _NO_TORCH.value, _TORCH_THREADS.value)
    use_torch = torch_note is None
    pretrained = load_pretrained(_MODEL.value)
    runners: dict[str, list[Runner]] = {}
    for setting in _SETTINGS.value:
        tasks, batch, length = SETTINGS[setting]
        host = random_batches(tasks, pretrained.config.vocab_size, batch, length)
        group = []
        surgeries = ("none",) if len(tasks) == 1 else ("none", "pcgrad")
        for surgery in surgeries:
            label = "sum" if surgery == "none" else "pcgrad"
            jx = jaxmt_runner(f"jaxmt_{label}", pretrained, tasks, host, surgery)
            group.append(jx)
            if use_torch:
                group.append(torch_runner(f"torch_{label}", pretrained.path, tasks, host, surgery == "pcgrad",
                                          jx.info["heads"]))
        runners[setting] = group
    for _ in range(_REPEATS.value):
        for group in runners.values():
            for runner in group:
                runner.time_round(_STEPS.value)

    peaks = {"jax": jax_matmul_flops_per_s()}
    if use_torch:
        peaks["torch"] = ref.matmul_flops_per_s()
    peak = max(peaks.values())
    results = {}
    for setting, group in runners.items():
        tasks, batch, length = SETTINGS[setting]
        flops = encoder_matmul_flops(pretrained.config, [length] * (len(tasks) * batch), training=True)
        entry: dict = {"tasks": list(tasks), "per_task_batch": batch, "length": length,
                       "examples_per_step": len(tasks) * batch, "model_flops_per_step": flops}
        for runner in group:
            summary = runner.summary()
            jit = summary.pop("jit", None)
            summary.pop("heads", None)
            if jit is not None and hasattr(jit, "_cache_size"):
                summary["compiles"] = jit._cache_size()  # one per input shape (bucket); 1 here
            summary["mfu"] = round(flops / summary["s_per_step"] / peak, 4)
            entry[runner.name] = summary
        for label in ("sum", "pcgrad"):
            a, b = entry.get(f"jaxmt_{label}"), entry.get(f"torch_{label}")
            if a and b:
                entry[f"ratio_jaxmt_over_torch_{label}"] = round(a["examples_per_s"] / b["examples_per_s"], 3)
                entry[f"cpu_ratio_torch_over_jaxmt_{label}"] = round(b["cpu_s_per_step"] / a["cpu_s_per_step"], 3)
        results[setting] = entry
    print(json.dumps({
        "benchmark": "train_step",
        "model": _MODEL.value,
        **environment(torch_info(use_torch, torch_note, _TORCH_THREADS.value)),
        "method": f"{_REPEATS.value} alternating rounds of {_STEPS.value} steps per runner in one process; "
                  "medians; ratio = jaxmt examples/s / torch examples/s",
        "matmul_peak_gflops_per_s": {**{k: round(v / 1e9, 1) for k, v in peaks.items()}, "used": round(peak / 1e9, 1)},
        "settings": results,
    }, indent=2))


if __name__ == "__main__":
    app.run(main)
