"""The input pipeline on the real CS224N stream: how many steps' batches it delivers a second, and how long the
training loop's thread waits for its batch in a real training run.

Settings: configs/pcgrad.py on the CS224N files in --csv_dir (data.source=csv: the three tasks, 16 examples a task
a step, packed into 128-token rows), MiniLM (--model); the batch function is the trainer's own `Program.batch`
(`jaxmt.training.trainer.train_and_evaluate`, stopped where it would start the loop): the step's packed host
batches of the three tasks, handed to the device (`put_host`).

(a) The pipeline alone, --steps steps in --rounds alternating rounds, medians; each mode blocks on every batch's
    device arrays:
    - sync: `Program.batch(step)` in the consuming thread (what the loop did before prefetch);
    - prefetch_thread: `jaxmt.data.prefetch.Prefetcher` (one thread, --prefetch steps ahead), consumer `get`;
    - grain_threads: grain `MapDataset.range(...).map(Program.batch)` read by grain's thread pool
      (`to_iter_dataset(ReadOptions(num_threads=2, prefetch_buffer_size=--prefetch))`);
    - grain_processes: grain's worker processes (`mp_prefetch`, 2 workers) building the host batches (as
      host_only), handed to the device in the consuming thread (a worker cannot make device arrays for it); its
      start-up (workers spawned, the splits pickled to them) is reported apart.
    Also host_only: the host batches alone (`train_step_batches` on the trainer's splits and sampler, as its
    `Program.batch` builds them before `put_host`), in the consuming thread. Beside steps/s (wall clock), each
    mode but grain_processes has steps_per_cpu_s: steps a second of this process's CPU time (all its threads),
    what it delivers from a free core when the machine is shared (wall-clock rates then measure the load too).
Also the packing's density over the same steps (placements only): each task's rows a group, examples trained a
draw, tokens computed (the rows) and real a trained example, and the share of drawn examples dropped.
(b) A real training run: `train_and_evaluate` for --train_steps steps with data.prefetch=--prefetch and with 0, the
    loop's wait for each step's batch (`Outcome.input_wait_seconds`) at steady state (from step 3: the first step
    compiles) and the step time.

    python benchmarks/input_pipeline.py [--steps=600] [--rounds=3] [--train_steps=30] [--prefetch=2] [--out=PATH]
    python benchmarks/input_pipeline.py --quick   # smoke run: 60 steps, 2 rounds, 6 training steps

A relative --out is taken from the repository root; --quick writes benchmarks/results/input_pipeline_quick.json
unless --out is given.
"""

from __future__ import annotations

import contextlib
import functools
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from unittest import mock

import jax
import numpy as np
from absl import app, flags
from ml_collections import ConfigDict

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks.common import environment, write_result  # noqa: E402
from configs import pcgrad  # noqa: E402
from jaxmt.data.packing import PackedTaskSampler, example_tokens, train_step_batches  # noqa: E402
from jaxmt.data.prefetch import Prefetcher  # noqa: E402
from jaxmt.data.sources import load_splits, task_specs  # noqa: E402
from jaxmt.models.pretrained import load_pretrained  # noqa: E402
from jaxmt.parallel.mesh import data_parallel_size, make_mesh  # noqa: E402
from jaxmt.training import loop, setup  # noqa: E402
from jaxmt.training.faults import user_facing_errors  # noqa: E402
from jaxmt.training.trainer import make_sampler, train_and_evaluate  # noqa: E402

FLAGS = flags.FLAGS


def define_flags() -> None:
    """The command line's flags (defined when run as a script, so importing this module for its functions
    clashes with no other benchmark's flags)."""
    flags.DEFINE_string("model", "minilm", "Model alias or directory.")
    flags.DEFINE_string("csv_dir", str(ROOT.parent / "shared" / "data" / "cs224n"), "CS224N data folder.")
    flags.DEFINE_integer("steps", 600, "Steps' batches each pipeline mode delivers, over all rounds.")
    flags.DEFINE_integer("rounds", 3, "Alternating timing rounds of the pipeline modes.")
    flags.DEFINE_integer("train_steps", 30, "Steps of each real training run (0: skip part b).")
    flags.DEFINE_integer("prefetch", 2, "data.prefetch: steps built ahead.")
    flags.DEFINE_bool("grain", True, "Also time grain's thread pool and worker processes.")
    flags.DEFINE_string("out", "benchmarks/results/input_pipeline_cpu_2core.json", "Where the JSON is written.")
    flags.DEFINE_bool("quick", False, "Smoke run: 60 steps, 2 rounds, 6 training steps.")


QUICK = {"steps": 60, "rounds": 2, "train_steps": 6, "out": "benchmarks/results/input_pipeline_quick.json"}
STEADY_FROM = 2  # waits of steps before this index are start-up (compile, the queue's first fill)
GRAIN_WORKERS = 2


def flag_value(name: str):
    """The flag's value, or its --quick setting when --quick is on and the flag was not given."""
    flag = FLAGS[name]
    return QUICK[name] if FLAGS.quick and not flag.present else flag.value


def bench_config(model: str, csv_dir: str, num_steps: int, prefetch: int) -> ConfigDict:
    """configs/pcgrad.py on the CS224N files in `csv_dir`, `model`, `num_steps` steps, evaluation only at the end
    (64 dev examples a task), no checkpoint before the last step."""
    config = pcgrad.get_config()
    config.model.name = model
    config.data.source, config.data.csv_dir = "csv", csv_dir
    config.data.prefetch = prefetch
    config.data.max_eval_examples = 64
    config.num_steps = num_steps
    config.eval_every, config.checkpoint_every, config.log_every = 0, num_steps, 10
    return config


class _Captured(Exception):
    pass


def trainer_program(config: ConfigDict) -> loop.Program:
    """The `Program` the trainer builds for `config` (stopped before its loop runs: nothing compiled)."""
    captured = {}

    def capture(program, config, workdir):
        captured["program"] = program
        raise _Captured

    with (tempfile.TemporaryDirectory() as workdir, mock.patch.object(loop, "run", capture),
          contextlib.suppress(_Captured)):
        train_and_evaluate(config, workdir)
    return captured["program"]


def host_batches(step: int, splits: dict, sampler, buckets, pad_id: int) -> dict:
    """The step's host batches as the trainer builds them before `put_host` (a module-level function, so grain's
    worker processes can unpickle it)."""
    return train_step_batches(splits, sampler, step, buckets, pad_id)


def host_part(config: ConfigDict) -> Callable[[int], dict]:
    """`host_batches` on `config`'s training splits and sampler (built as the trainer builds them)."""
    specs = task_specs(config)
    tokenizer = load_pretrained(config.model.name).tokenizer
    splits = setup.encode_splits(config, load_splits(config, specs, "train"), tokenizer)
    sampler = make_sampler(config, splits, data_parallel_size(make_mesh(config.mesh.axes, config.mesh.shape)))
    return functools.partial(host_batches, splits=splits, sampler=sampler, buckets=config.data.buckets,
                             pad_id=tokenizer.pad_token_id)


def packing_density(sampler: PackedTaskSampler, steps: int) -> dict:
    """Per task over `steps` steps: rows a group, examples trained a draw, tokens computed (its rows) and real a
    trained example, and the share of drawn examples dropped (placements only, no arrays built)."""
    out = {}
    for task, split in sampler.splits.items():
        layout, tokens = sampler.layouts[task], example_tokens(split)
        draws = [s for s in range(steps) if task in sampler.tasks_at(s)]
        trained = [sampler.indices(task, s) for s in draws]
        examples = sum(len(t) for t in trained)
        out[task] = {"layout": f"{layout.groups}x{layout.rows}x{layout.length}",
                     "examples_per_draw": round(examples / len(draws), 3),
                     "computed_tokens_per_example": round(len(draws) * layout.array_rows * layout.length / examples, 2),
                     "real_tokens_per_example": round(sum(int(tokens[t].sum()) for t in trained) / examples, 2),
                     "dropped_share": round(sum(sampler.dropped(task, s) for s in draws)
                                            / (len(draws) * sampler.batch_sizes[task]), 4)}
    if sampler.mode == "all":  # every task every step: a step's tokens over its examples
        tokens = sum(v.array_rows * v.length for v in sampler.layouts.values())
        examples = sum(out[t]["examples_per_draw"] for t in sampler.tasks)
        out["step_computed_tokens_per_example"] = round(tokens / examples, 2)
    return out


def consume(batches: Iterator) -> int:
    """Reads every batch, waiting for its device arrays; returns how many."""
    count = 0
    for batch in batches:
        jax.block_until_ready(batch)
        count += 1
    return count


def mode_runners(program: loop.Program, host: Callable[[int], dict], depth: int,
                 use_grain: bool) -> dict[str, Callable[[range], int]]:
    """Each pipeline mode as `run(steps) -> batches delivered`."""

    def prefetch_thread(steps: range) -> int:
        with Prefetcher(program.batch, steps, depth) as ahead:
            return consume(ahead.get(s) for s in steps)

    runners = {
        "host_only": lambda steps: sum(1 for s in steps if host(s)),
        "sync": lambda steps: consume(program.batch(s) for s in steps),
        "prefetch_thread": prefetch_thread,
    }
    if use_grain:
        import grain

        def grain_threads(steps: range) -> int:
            dataset = grain.MapDataset.range(steps.start, steps.stop).map(program.batch)
            return consume(iter(dataset.to_iter_dataset(grain.ReadOptions(num_threads=2,
                                                                          prefetch_buffer_size=max(depth, 1)))))

        runners["grain_threads"] = grain_threads
    return runners


def grain_processes(host: Callable[[int], dict], steps: range, put: Callable[[dict], dict]) -> dict:
    """grain's worker processes building the host batches of `steps`; the consumer puts them on the device.
    Returns steps/s after the first batch and the seconds to the first batch (workers' start-up)."""
    import grain

    dataset = grain.MapDataset.range(steps.start, steps.stop).map(host).to_iter_dataset()
    start = time.perf_counter()
    iterator = iter(dataset.mp_prefetch(grain.MultiprocessingOptions(num_workers=GRAIN_WORKERS)))
    jax.block_until_ready(put(next(iterator)))
    first = time.perf_counter()
    count = consume(put(b) for b in iterator)
    end = time.perf_counter()
    return {"steps_per_s": round(count / (end - first), 1), "first_batch_s": round(first - start, 2),
            "workers": GRAIN_WORKERS}


def pipeline_rates(program: loop.Program, host: Callable[[int], dict], steps: int, rounds: int, depth: int,
                   use_grain: bool) -> dict:
    """(a): steps/s of each mode, medians over `rounds` alternating rounds of `steps / rounds` steps each (every
    mode the same steps in a round, so they build the same batches)."""
    runners = mode_runners(program, host, depth, use_grain)
    per_round = max(steps // rounds, 1)
    rates: dict[str, list[float]] = {name: [] for name in runners}
    cpu_rates: dict[str, list[float]] = {name: [] for name in runners}
    for r in range(rounds):
        chosen = range(r * per_round, (r + 1) * per_round)
        for name, run in runners.items():
            start, cpu = time.perf_counter(), time.process_time()
            count = run(chosen)
            rates[name].append(count / (time.perf_counter() - start))
            cpu_rates[name].append(count / max(time.process_time() - cpu, 1e-9))
    out = {name: {"steps_per_s": round(statistics.median(v), 1), "rounds": [round(x, 1) for x in v],
                  "steps_per_cpu_s": round(statistics.median(cpu_rates[name]), 1)} for name, v in rates.items()}
    out["steps_per_round"] = per_round
    if use_grain:
        out["grain_processes"] = grain_processes(host, range(per_round), put_of(program, host))
    return out


def put_of(program: loop.Program, host: Callable[[int], dict]) -> Callable[[dict], dict]:
    """The device transfer of `program.batch` for a host batch (one process: the whole batch, with the
    shardings of `program.batch`'s arrays), checked to give step 0's batch exactly."""
    device = program.batch(0)
    shardings = jax.tree_util.tree_map(lambda a: a.sharding, device)

    def put(batch: dict) -> dict:
        return jax.tree_util.tree_map(lambda x, s: jax.make_array_from_process_local_data(s, x, x.shape), batch,
                                      shardings)

    jax.tree_util.tree_map(np.testing.assert_array_equal, jax.device_get(put(host(0))), jax.device_get(device))
    return put


def wait_summary(waits: list[float], step_seconds: list[float]) -> dict:
    """The loop's wait for each step's batch at steady state (ms) beside the step time."""
    steady = np.asarray(waits[STEADY_FROM:]) * 1e3
    if not len(steady):
        return {"steps": len(waits)}
    return {"steps": len(waits), "steady_steps": len(steady), "wait_ms_median": round(float(np.median(steady)), 3),
            "wait_ms_mean": round(float(steady.mean()), 3), "wait_ms_p90": round(float(np.quantile(steady, 0.9)), 3),
            "wait_ms_max": round(float(steady.max()), 3),
            "step_s_median": round(float(np.median(step_seconds[STEADY_FROM:])), 4)}


def training_waits(config: ConfigDict, depth: int) -> dict:
    """(b): a real training run of `config` with prefetch `depth` and one without; the loop's waits for input."""
    out = {}
    for prefetch in (depth, 0):
        outcomes = []
        real_run = loop.run

        def recording(program, config, workdir, real_run=real_run, outcomes=outcomes):
            outcomes.append(real_run(program, config, workdir))
            return outcomes[-1]

        with tempfile.TemporaryDirectory() as workdir, mock.patch.object(loop, "run", recording):
            run_config = config.copy_and_resolve_references()
            run_config.data.prefetch = prefetch
            train_and_evaluate(run_config, workdir)
        outcome = outcomes[0]
        out[f"prefetch_{prefetch}"] = wait_summary(outcome.input_wait_seconds, outcome.step_seconds)
        print(f"input_pipeline: training run with prefetch {prefetch} done", file=sys.stderr)
    return out


def main(argv: list[str]) -> None:
    del argv
    steps, rounds, train_steps = flag_value("steps"), flag_value("rounds"), flag_value("train_steps")
    out_path = Path(flag_value("out"))
    out_path = out_path if out_path.is_absolute() else ROOT / out_path
    depth = FLAGS.prefetch
    config = bench_config(FLAGS.model, FLAGS.csv_dir, steps, depth)
    program, host = trainer_program(config), host_part(config)
    example = jax.device_get(program.batch(0))
    stream = {t: {"shape": list(b["input_ids"].shape), "examples": int(b["example_mask"].sum())}
              for t, b in example.items()}
    density = packing_density(host.keywords["sampler"], steps)
    pipeline = pipeline_rates(program, host, steps, rounds, depth, FLAGS.grain)
    print("input_pipeline: pipeline modes timed", file=sys.stderr)
    result = {
        "benchmark": "input_pipeline",
        "model": FLAGS.model,
        "data": str(Path(FLAGS.csv_dir).resolve()),
        "settings": {"config": "configs/pcgrad.py, data.source=csv", "steps": steps, "rounds": rounds,
                     "train_steps": train_steps, "prefetch": depth, "quick": FLAGS.quick},
        "step_0_batches": stream,
        **environment({"skipped": "not used"}),
        "method": "(a) each mode delivers the same steps' batches in a round, blocking on each batch's device arrays; "
                  "modes alternate round by round in one process; medians of steps/s over rounds. (b) the loop's "
                  f"wait for each step's batch (Outcome.input_wait_seconds) from step {STEADY_FROM + 1} on",
        "packing": density,
        "pipeline": pipeline,
    }
    if train_steps:
        result["training"] = training_waits(bench_config(FLAGS.model, FLAGS.csv_dir, train_steps, depth), depth)
    write_result(result, out_path)


def run_main(argv: list[str]) -> None:
    with user_facing_errors():
        main(argv)


if __name__ == "__main__":
    define_flags()
    app.run(run_main)
