"""Throughput on the real CS224N training stream: jaxmt packed vs jaxmt padded vs PyTorch with dynamic padding.

Settings: configs/pcgrad.py on the CS224N files (data.source=csv, --csv_dir), MiniLM (--model), the config's
defaults (sampling 'all', 16 examples a task a step, AdamW 5e-5, seed 0, eval batch 64, max_length 128,
pack_length 128: what `python -m jaxmt.train --config=configs/pcgrad.py --config.data.source=csv` trains);
--max_length changes the truncation length; the JSON records the settings.

Training: the first `--steps` x 16 examples of each task's stream, in the sampler's order, run three ways:
  (a) jaxmt_packed: token-budget batches as `PackedTaskSampler` draws them (`make_sampler`, the trainer's own),
      for as many packed steps as it takes to cover every task's share; a task's last draws may run past its
      share, and the examples actually trained are what is counted (the JSON lists them);
  (b) jaxmt_padded: 3 x 16 a step, padded to the smallest bucket (32/64/128) that fits the step's longest;
  (c) torch_dynamic: `benchmarks/torch_reference.py` on the same 3 x 16 a step, each task's 16 padded to their
      own longest (as HF's DataCollatorWithPadding), the same AdamW settings, PCGrad as Pytorch-PCGrad;
each for the summed-loss step and for the PCGrad step, every runner with its own state. jaxmt runs its own
step (`multitask_step_runner`: jit, state donated). Evaluation: one pass over the three dev sets, batch 64
(packed layouts from `make_sampler`, padded buckets, torch padded to each batch's longest).

Timing: host batches are built before timing (their build time is reported apart); each pass is cut into
`--rounds` slices (contiguous for training; every `rounds`-th batch for evaluation, whose batches are sorted by
length, so every slice mixes lengths); the runners alternate slice by slice in one process (round r: every runner
on slice r), each blocking on its results at the end of its slice; medians over rounds. Per runner: examples/s,
real tokens/s, padding efficiency (real tokens / tokens of the arrays fed to the encoder), s/step (s/batch for
evaluation); per setting the ratios packed/torch and packed/padded of examples/s.

    python benchmarks/real_stream.py [--steps=100] [--rounds=5] [--torch_threads=2] [--no_torch] [--out=PATH]
    python benchmarks/real_stream.py --quick --no_torch   # smoke run: 6 steps, 2 rounds, 128 dev examples a task
    python benchmarks/real_stream.py --only=eval          # the evaluation runners alone (no train step compiled)
    python benchmarks/real_stream.py --only=train --no_padded   # packed vs torch training only

A relative --out is taken from the repository root; --quick writes benchmarks/results/real_stream_quick.json
and --only=eval benchmarks/results/real_stream_eval_cpu_2core.json unless --out is given, so neither replaces
the full result. Packed evaluation packs into rows sized to the examples (`jaxmt.data.eval_batches`: 32 / 64 /
128 tokens, --eval_tokens a batch, at most --eval_max_examples examples), as the trainer's `Predictor` does.
"""

from __future__ import annotations

import dataclasses
import statistics
import sys
import time
from collections.abc import Callable, Collection, Sequence
from pathlib import Path

import jax
import numpy as np
from absl import app, flags
from ml_collections import ConfigDict

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks import torch_reference as ref  # noqa: E402
from benchmarks.common import JaxmtTrain, environment, jaxmt_train, torch_info, train_run, write_result  # noqa: E402
from configs import pcgrad  # noqa: E402
from jaxmt.data.eval_batches import EvalPacking, fit_choice, sized_eval_batches  # noqa: E402
from jaxmt.data.packing import PackedTaskSampler, train_step_batches  # noqa: E402
from jaxmt.data.sampling import TaskSampler, eval_batches  # noqa: E402
from jaxmt.data.sources import load_splits, task_specs  # noqa: E402
from jaxmt.data.tokenization import EncodedSplit, make_batch  # noqa: E402
from jaxmt.models.pretrained import load_pretrained  # noqa: E402
from jaxmt.parallel.mesh import data_parallel_size, make_mesh  # noqa: E402
from jaxmt.training import setup  # noqa: E402
from jaxmt.training.evaluation import Predictor, run_eval_packing  # noqa: E402
from jaxmt.training.faults import user_facing_errors  # noqa: E402
from jaxmt.training.trainer import make_sampler  # noqa: E402

_MODEL = flags.DEFINE_string("model", "minilm", "Model alias or directory.")
_CSV_DIR = flags.DEFINE_string("csv_dir", str(ROOT.parent / "shared" / "data" / "cs224n"), "CS224N data folder.")
_STEPS = flags.DEFINE_integer("steps", 100, "Padded steps' worth of training examples (16 a task a step).")
_ROUNDS = flags.DEFINE_integer("rounds", 5, "Alternating timing rounds (slices of each pass).")
_EVAL_EXAMPLES = flags.DEFINE_integer("eval_examples", -1, "Keep the first N dev examples of each task (-1: all).")
_NO_TORCH = flags.DEFINE_bool("no_torch", False, "Skip the PyTorch reference.")
_NO_PADDED = flags.DEFINE_bool("no_padded", False, "Skip the jaxmt padded training runners (the slowest).")
_PACKED_ROWS = flags.DEFINE_string("packed_rows", "", "Also train packed batches with these rows a group "
                                   "(runner jaxmt_packed_rows), e.g. an earlier sizing: 'sst:4,para:5,sts:5'.")
_TORCH_THREADS = flags.DEFINE_integer("torch_threads", 2, "torch.set_num_threads for the reference.")
_MAX_LENGTH = flags.DEFINE_integer("max_length", 128, "data.max_length (truncation; pack_length is 128).")
_OUT = flags.DEFINE_string("out", "benchmarks/results/real_stream_cpu_2core.json", "Where the JSON is written.")
_QUICK = flags.DEFINE_bool("quick", False, "Smoke run: 6 steps, 2 rounds, 128 dev examples a task.")
_ONLY = flags.DEFINE_enum("only", "all", ["all", "train", "eval"], "Run the training or evaluation runners alone.")
_EVAL_TOKENS = flags.DEFINE_integer("eval_tokens", EvalPacking((1,)).tokens, "Packed evaluation: tokens a batch.")
_EVAL_MAX_EXAMPLES = flags.DEFINE_integer("eval_max_examples", EvalPacking((1,)).max_examples,
                                          "Packed evaluation: examples a batch at most.")
_FIT_ROWS = flags.DEFINE_integer("fit_rows", 0, "Also evaluate in rows of every multiple of N tokens, each example "
                                 "in the shortest that holds its longest sequence (runner jaxmt_fit_rows; "
                                 "benchmarks/eval_layout_cost.py counts its cost); 0: off.")

EVAL_ONLY_OUT = "benchmarks/results/real_stream_eval_cpu_2core.json"
QUICK = {"steps": 6, "rounds": 2, "eval_examples": 128, "out": "benchmarks/results/real_stream_quick.json"}
PACK_LENGTH = 128  # tokens a packed row


def flag_value(name: str):
    """The flag's value, or its --quick setting when --quick is on and the flag was not given."""
    flag = flags.FLAGS[name]
    return QUICK[name] if _QUICK.value and not flag.present else flag.value


def bench_config(surgery: str, packing: bool, schedule_steps: int, eval_examples: int) -> ConfigDict:
    """configs/pcgrad.py on the CSV files with --max_length and pack_length 128; `surgery` none or pcgrad."""
    config = pcgrad.get_config()
    config.model.name = _MODEL.value
    config.data.source, config.data.csv_dir = "csv", _CSV_DIR.value
    config.data.max_length, config.data.pack_length = _MAX_LENGTH.value, PACK_LENGTH
    config.data.max_eval_examples = eval_examples
    config.data.packing = packing
    config.optim.gradient_surgery = surgery
    config.num_steps = schedule_steps
    setup.check_config(config)
    return config


def batch_counts(batch: dict) -> np.ndarray:
    """[examples, real tokens, tokens fed to the encoder] of one padded or packed host batch."""
    real = batch["attention_mask"].sum() if "attention_mask" in batch else np.count_nonzero(batch["segment_ids"])
    return np.asarray([batch["example_mask"].sum(), real, batch["input_ids"].size], np.int64)


def dynamic_batch(split: EncodedSplit, indices: np.ndarray, pad_id: int) -> dict:
    """The examples at `indices` padded to their own longest (DataCollatorWithPadding), no filler rows."""
    return make_batch(split, indices, int(split.lengths[indices].max()), pad_id)


def packed_steps_to_cover(sampler: TaskSampler, quotas: dict[str, int], limit: int) -> int:
    """Packed steps until every task's draws have taken at least its quota of examples of its stream."""
    taken, step = dict.fromkeys(sampler.tasks, 0), 0
    while any(taken[t] < quotas[t] for t in sampler.tasks):
        if step == limit:
            raise RuntimeError(f"{limit} packed steps do not cover {quotas} examples: raise the schedule")
        for task in sampler.tasks_at(step):
            taken[task] += len(sampler.indices(task, step))
        step += 1
    return step


def stream_indices(sampler: TaskSampler, steps: int) -> dict[str, np.ndarray]:
    """Each task's example indices over `steps` steps, in order."""
    return {t: np.concatenate([sampler.indices(t, s) for s in range(steps)]) for t in sampler.tasks}


def built(make: Callable[[], list]) -> tuple[list, float]:
    """`make()` and the seconds it took."""
    start = time.perf_counter()
    out = make()
    return out, time.perf_counter() - start


def train_streams(train: dict[str, EncodedSplit], packed_samplers: dict[str, TaskSampler],
                  padded_sampler: TaskSampler, steps: int, buckets: Sequence[int], pad_id: int,
                  limit: int) -> tuple[dict, dict]:
    """The host batches of the packed, padded and torch runners over the start of the same stream: by kind
    (items, their `batch_counts` [items, 3], seconds to build them); and the facts of the stream for the JSON.

    Padded and torch take `steps` steps of the padded sampler; each packed kind (`packed_samplers`: kind ->
    sampler) takes as many packed steps as train as many examples, `limit` at most. A packed draw takes the padded
    draw's examples, and carries those its rows do not hold to the next draw (`jaxmt.data.packing`), so the packed
    steps train the padded stream's examples but for the few carried past the last step or dropped (checked: at
    least 90% of them; the JSON gives the share).
    """
    quotas = {t: steps * padded_sampler.batch_sizes[t] for t in padded_sampler.tasks}
    padded_idx = stream_indices(padded_sampler, steps)
    makers, facts = [], {"examples_per_task": quotas, "padded_steps": steps}
    for kind, sampler in packed_samplers.items():
        packed_steps = packed_steps_to_cover(sampler, quotas, limit)
        packed_idx = stream_indices(sampler, packed_steps)
        shared = {t: round(float(np.isin(padded_idx[t], packed_idx[t]).mean()), 4) for t in quotas}
        if min(shared.values()) < 0.9:  # drops (up to 5%), and the carry past a short run's end
            raise RuntimeError(f"the {kind} steps train only {shared} of the padded stream's examples")
        makers.append((kind, lambda sampler=sampler, n=packed_steps: [
            train_step_batches(train, sampler, s, buckets, pad_id) for s in range(n)]))
        suffix = kind.removeprefix("packed")
        facts.update({f"packed{suffix}_steps": packed_steps,
                      # share of the padded stream's examples the packed steps train
                      f"padded_examples_trained_packed{suffix}": shared,
                      f"packed{suffix}_examples_per_task": {t: len(v) for t, v in packed_idx.items()},
                      f"packed{suffix}_rows": {t: v.rows for t, v in sampler.layouts.items()}})
    streams = {}
    for kind, make in (
        *makers,
        ("padded", lambda: [train_step_batches(train, padded_sampler, s, buckets, pad_id) for s in range(steps)]),
        ("torch", lambda: [{t: dynamic_batch(train[t], padded_sampler.indices(t, s), pad_id)
                            for t in padded_sampler.tasks_at(s)} for s in range(steps)]),
    ):
        items, build_s = built(make)
        streams[kind] = (items, np.stack([sum(batch_counts(b) for b in step.values()) for step in items]), build_s)
    return streams, facts


class Timed:
    """One runner over a pass of items (train steps or eval batches), timed one round's slice at a time.

    `counts` [items, 3]: examples, real tokens and tokens fed to the encoder of each item; `run(items)` runs
    them and waits for their results.
    """

    def __init__(self, name: str, items: Sequence, counts: np.ndarray, run: Callable[[Sequence], None],
                 slices: list[np.ndarray]) -> None:
        self.name, self.items, self.counts, self.run, self.slices = name, items, counts, run, slices
        self.wall: list[float] = []
        self.cpu: list[float] = []
        self.info: dict = {}

    def warm_up(self, items: Sequence) -> None:
        """Runs `items` untimed (compiles, allocator, kernels) and records how long that took."""
        start = time.perf_counter()
        self.run(items)
        self.info["warmup_s"] = round(time.perf_counter() - start, 1)

    def time_round(self, r: int) -> None:
        chosen = [self.items[i] for i in self.slices[r]]
        wall, cpu = time.perf_counter(), time.process_time()
        self.run(chosen)
        self.wall.append(time.perf_counter() - wall)
        self.cpu.append(time.process_time() - cpu)

    def summary(self) -> dict:
        per_round = np.stack([self.counts[s].sum(0) for s in self.slices])  # [rounds, 3]
        sizes = [len(s) for s in self.slices]
        examples, real, computed = (int(v) for v in self.counts.sum(0))
        median = statistics.median
        return {
            "steps": len(self.items), "examples": examples, "real_tokens": real, "computed_tokens": computed,
            "padding_efficiency": round(real / computed, 4),
            "examples_per_s": round(median([n / w for n, w in zip(per_round[:, 0], self.wall)]), 2),
            "real_tokens_per_s": round(median([n / w for n, w in zip(per_round[:, 1], self.wall)]), 1),
            "s_per_step": round(median([w / n for w, n in zip(self.wall, sizes)]), 4),
            "cpu_s_per_step": round(median([c / n for c, n in zip(self.cpu, sizes)]), 4),
            "examples_per_cpu_s": round(median([n / c for n, c in zip(per_round[:, 0], self.cpu)]), 2),
            "pass_s": round(sum(self.wall), 2), "round_s": [round(w, 2) for w in self.wall], **self.info,
        }


def shape_key(batches: dict) -> tuple:
    return tuple((t, b["input_ids"].shape) for t, b in sorted(batches.items()))


def one_per_shape(items: Sequence, key: Callable) -> list:
    """The first item of each distinct shape: what a warm-up must run to compile every step."""
    first: dict = {}
    for item in items:
        first.setdefault(key(item), item)
    return list(first.values())


def train_runners(label: str, surgery: str, pretrained, specs: dict, streams: dict, slices: dict,
                  use_torch: bool, schedule_steps: int, eval_examples: int) -> list[Timed]:
    """The packed, padded and torch runners of one step kind, each with its own state, warmed up."""
    runners = []
    kinds = [k for k in streams if k.startswith("packed")] + ([] if _NO_PADDED.value else ["padded"])
    for kind in kinds:
        config = bench_config(surgery, kind.startswith("packed"), schedule_steps, eval_examples)
        train = jaxmt_train(config, pretrained, specs, schedule_steps)
        heads = jax.device_get(train.state.params["heads"])  # before the first step donates the state
        first_leaf = jax.tree_util.tree_leaves(train.state.params)[0]
        items, counts, build_s = streams[kind]
        timed = Timed(f"jaxmt_{kind}", items, counts, train_run(train), slices[kind])
        timed.warm_up(one_per_shape(items, shape_key))
        timed.info.update(compiles=len(one_per_shape(items, shape_key)), donated_state_freed=first_leaf.is_deleted(),
                          host_build_s_per_step=round(build_s / len(items), 4))
        runners.append(timed)
    if use_torch:
        optim = config.optim
        model, opt, scheduler = ref.reference_training(pretrained.path, specs, heads, schedule_steps,
                                                       optim.learning_rate, optim.weight_decay, optim.warmup_fraction,
                                                       config.seed)
        items, counts, build_s = streams["torch"]
        batches = [{t: ref.torch_batch(b) for t, b in step.items()} for step in items]

        def run(chosen: Sequence) -> None:
            for step in chosen:
                ref.train_step(model, opt, scheduler, step, surgery == "pcgrad", optim.clip_norm)

        timed = Timed("torch_dynamic", batches, counts, run, slices["padded"])
        timed.warm_up(batches[:1])
        timed.info["host_build_s_per_step"] = round(build_s / len(items), 4)
        runners.append(timed)
    print(f"real_stream: {label} runners ready", file=sys.stderr)
    return runners


def eval_runners(train: JaxmtTrain, config: ConfigDict, pretrained, dev: dict, packings: dict[str, dict], rounds: int,
                 use_torch: bool, fit: Collection[str] = ()) -> tuple[list[Timed], dict]:
    """Packed (one runner per entry of `packings`: runner name -> task -> `EvalPacking`; the runners named in
    `fit` place each example in the shortest row that holds its longest sequence), padded and torch
    evaluation runners over the dev sets (every `rounds`-th batch a round), warmed up, on `train`'s initial
    params; and the predictions each fills in (by runner, then task)."""
    pad_id, batch_size = pretrained.tokenizer.pad_token_id, config.eval_batch_size
    params = train.state.params
    heads = jax.device_get(params["heads"])
    passes = {
        **{name: lambda t, p=packing, f=name in fit: sized_eval_batches(
            dev[t], p[t], pad_id, fit_choice(dev[t], p[t].row_lengths) if f else None)
           for name, packing in packings.items()},
        "jaxmt_padded": lambda t: eval_batches(dev[t], batch_size, config.data.buckets, pad_id),
        "torch_dynamic": lambda t: ((i, dynamic_batch(dev[t], i, pad_id))
                                    for i, _ in eval_batches(dev[t], batch_size, config.data.buckets, pad_id)),
    }
    if not use_torch:
        del passes["torch_dynamic"]
    predictions = {name: {t: np.zeros(len(s.data), s.data.spec.label_dtype) for t, s in dev.items()}
                   for name in passes}
    runners = []
    for name, batches_of in passes.items():
        items, build_s = built(lambda b=batches_of: [(t, idx, batch) for t in dev for idx, batch in b(t)])
        counts = np.stack([batch_counts(batch) for _, _, batch in items])
        out = predictions[name]
        if name == "torch_dynamic":
            model = ref.build_torch_model(pretrained.path, train.model.specs, seed=config.seed)
            ref.copy_heads(model, heads)
            items = [(t, idx, ref.torch_batch(batch)) for t, idx, batch in items]

            def run(chosen: Sequence, model=model, out=out) -> None:
                for t, idx, batch in chosen:
                    out[t][idx] = ref.predict(model, t, batch).numpy()[: len(idx)]
        else:
            predictor = Predictor(train.model, train.mesh, batch_size, config.data.buckets, pad_id,
                                  packings.get(name))

            def run(chosen: Sequence, predictor=predictor, out=out) -> None:
                queued = [(t, idx, batch["example_mask"] > 0, predictor.predict_batch(params, t, batch))
                          for t, idx, batch in chosen]
                jax.block_until_ready([q[-1] for q in queued])
                for t, idx, slots, preds in queued:
                    out[t][idx] = np.asarray(preds)[slots]

        slices = [np.arange(r, len(items), rounds) for r in range(rounds)]
        timed = Timed(name, items, counts, run, slices)
        if name == "torch_dynamic":  # nothing to compile: a batch of each task
            timed.warm_up(one_per_shape(items, lambda item: item[0]))
        else:  # a batch of each task and shape compiles every predict step
            warm = one_per_shape(items, lambda item: (item[0], item[2]["input_ids"].shape))
            timed.warm_up(warm)
            timed.info["compiles"] = len(warm)
        timed.info["host_build_s"] = round(build_s, 2)
        runners.append(timed)
    return runners, predictions


def agreement(predictions: dict, dev: dict, reference: str = "jaxmt_padded") -> dict:
    """Per runner and task: the fraction of equal classes, or the largest score difference, against `reference`."""
    out = {}
    for name, preds in predictions.items():
        if name == reference:
            continue
        out[name] = {t: (float(np.mean(p == predictions[reference][t])) if dev[t].data.spec.kind != "regression"
                         else float(np.max(np.abs(p - predictions[reference][t])))) for t, p in preds.items()}
    return out


def compare(runners: list[Timed]) -> dict:
    """Each runner's summary and the examples/s ratios of packed over torch and over padded (and of the
    --packed_rows runner's, where it ran: over torch, and packed over it)."""
    entry = {r.name: r.summary() for r in runners}
    for name, label in (("jaxmt_packed", "packed"), ("jaxmt_packed_rows", "packed_rows")):
        if name not in entry:
            continue
        for other, short in (("torch_dynamic", "torch"), ("jaxmt_padded", "padded"), ("jaxmt_packed_rows", "rows")):
            if other in entry and other != name:
                entry[f"ratio_{label}_over_{short}"] = round(
                    entry[name]["examples_per_s"] / entry[other]["examples_per_s"], 3)
    return entry


def rows_sampler(sampler: PackedTaskSampler, spec: str, num_steps: int) -> dict[str, TaskSampler]:
    """{"packed_rows": `sampler` with each group's rows set by `spec` ('task:rows,...')}, or {} for ''."""
    if not spec:
        return {}
    rows = {task: int(n) for task, n in (item.split(":") for item in spec.split(","))}
    layouts = {t: dataclasses.replace(v, rows=rows.get(t, v.rows)) for t, v in sampler.layouts.items()}
    return {"packed_rows": PackedTaskSampler(sampler.splits, layouts, sampler.batch_sizes, sampler.mode, sampler.seed,
                                             num_steps)}


def main(argv: list[str]) -> None:
    del argv
    steps, rounds, eval_examples = flag_value("steps"), flag_value("rounds"), flag_value("eval_examples")
    out_path = Path(EVAL_ONLY_OUT if _ONLY.value == "eval" and not _QUICK.value and not flags.FLAGS["out"].present
                    else flag_value("out"))
    out_path = out_path if out_path.is_absolute() else ROOT / out_path
    torch_note = ref.setup_torch("real_stream", _NO_TORCH.value, _TORCH_THREADS.value)
    use_torch = torch_note is None
    schedule_steps = 2 * steps  # the optimizer's schedule, and the packed sampler's horizon (>= the packed steps)
    base = bench_config("pcgrad", True, schedule_steps, eval_examples)
    specs = task_specs(base)
    pretrained = load_pretrained(base.model.name)
    tokenizer, pad_id = pretrained.tokenizer, pretrained.tokenizer.pad_token_id
    train = setup.encode_splits(base, load_splits(base, specs, "train"), tokenizer)
    dev = setup.encode_splits(base, load_splits(base, specs, "dev"), tokenizer)
    mesh = make_mesh(base.mesh.axes, base.mesh.shape)
    packed_sampler = make_sampler(base, train, data_parallel_size(mesh))
    packing = {t: dataclasses.replace(v, tokens=_EVAL_TOKENS.value, max_examples=_EVAL_MAX_EXAMPLES.value)
               for t, v in run_eval_packing(base, dev, mesh).items()}
    fitted = {} if not _FIT_ROWS.value else {"jaxmt_fit_rows": dict.fromkeys(dev, dataclasses.replace(
        next(iter(packing.values())), row_lengths=tuple(range(_FIT_ROWS.value, PACK_LENGTH + 1, _FIT_ROWS.value))))}
    padded_sampler = make_sampler(bench_config("pcgrad", False, schedule_steps, eval_examples), train,
                                  data_parallel_size(mesh))

    buckets = base.data.buckets
    streams, facts, slices = {}, {}, {}
    if _ONLY.value != "eval":
        samplers = {"packed": packed_sampler, **rows_sampler(packed_sampler, _PACKED_ROWS.value, schedule_steps)}
        streams, facts = train_streams(train, samplers, padded_sampler, steps, buckets, pad_id, schedule_steps)
        slices = {"padded": np.array_split(np.arange(steps), rounds),
                  **{k: np.array_split(np.arange(facts[f"{k}_steps"]), rounds) for k in samplers}}

    evaluation, predictions = [], {}
    if _ONLY.value != "train":
        initial = jaxmt_train(base, pretrained, specs, schedule_steps)  # its params, never stepped, are evaluated
        evaluation, predictions = eval_runners(initial, base, pretrained, dev, {"jaxmt_packed": packing, **fitted},
                                               rounds, use_torch, fit=fitted)
    groups = {} if _ONLY.value == "eval" else {
        label: train_runners(label, surgery, pretrained, specs, streams, slices, use_torch, schedule_steps,
                             eval_examples) for label, surgery in (("sum", "none"), ("pcgrad", "pcgrad"))}
    for r in range(rounds):
        for group in groups.values():
            for runner in group:
                runner.time_round(r)
        if groups:
            print(f"real_stream: training round {r + 1}/{rounds} done", file=sys.stderr)
    for r in range(rounds):
        for runner in evaluation:
            runner.time_round(r)

    result = {
        "benchmark": "real_stream",
        "model": _MODEL.value,
        "data": str(Path(_CSV_DIR.value).resolve()),
        "settings": {
            "config": "configs/pcgrad.py (sum: optim.gradient_surgery=none)", "data.source": "csv",
            "data.max_length": _MAX_LENGTH.value, "data.pack_length": PACK_LENGTH, "data.buckets": list(buckets),
            "tasks.batch_size": {t: base.tasks[t].batch_size for t in specs}, "sampling": base.sampling,
            "seed": base.seed, "eval_batch_size": base.eval_batch_size, "model.dtype": base.model.dtype,
            "optim": {k: base.optim[k] for k in ("learning_rate", "weight_decay", "warmup_fraction", "clip_norm")},
            "schedule_steps": schedule_steps, "steps": steps, "rounds": rounds, "quick": _QUICK.value,
            "only": _ONLY.value, "train_padded": not _NO_PADDED.value,
            "dev_examples": {t: len(s.data) for t, s in dev.items()},
        },
        "stream": {
            **facts,
            "packed_layouts": {t: f"{v.rows}x{v.length}, <= {v.max_examples} examples"
                               for t, v in packed_sampler.layouts.items()},
            "eval_layouts": {t: {length: f"{v.layout(length).rows}x{length}, <= {v.max_examples} examples"
                                 for length in v.row_lengths} for t, v in packing.items()},
            **({"eval_fit_rows": f"every {_FIT_ROWS.value} tokens, each example in the shortest row that holds its "
                                 "longest sequence"} if fitted else {}),
        },
        **environment(torch_info(use_torch, torch_note, _TORCH_THREADS.value)),
        "method": f"host batches built before timing; {rounds} rounds, each runner on one slice of the pass a round "
                  "(training: contiguous slices of the stream; evaluation: every rounds-th batch), alternating in one "
                  "process, blocking at the end of each slice; medians over rounds; padding_efficiency = real tokens "
                  "/ tokens of the arrays fed to the encoder; ratios of examples/s",
    }
    if groups:
        result["train"] = {label: compare(group) for label, group in groups.items()}
    if evaluation:
        result["eval"] = {**compare(evaluation), "prediction_agreement (classes: fraction equal, scores: max abs "
                          "difference)": agreement(predictions, dev)}
    write_result(result, out_path)


def run_main(argv: list[str]) -> None:
    with user_facing_errors():
        main(argv)


if __name__ == "__main__":
    app.run(run_main)
