"""Evaluation throughput of jaxmt's Predictor against a PyTorch reference, on the dev sets.

Data: the CS224N dev files (sst dev, the first 1000 rows of quora dev, sts dev) when --csv_dir holds
them, else the embedded demo data. Both frameworks predict the same batches: `eval_batches` (shortest
first, padded to the smallest bucket that fits, last batch filled with masked rows), batch 64, the
same MiniLM weights and heads; torch runs under torch.inference_mode with torch.set_num_threads(2).
Full passes over all three dev sets alternate (jaxmt, torch, jaxmt, ...) in one process after a
warm-up pass (jaxmt compiles once per task and bucket there); medians are printed as JSON, with the
agreement of the two frameworks' predictions.

    python benchmarks/eval_throughput.py [--repeats=3] [--csv_dir=/work/shared/data/cs224n] [--no_torch]
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

from benchmarks import torch_reference as ref  # noqa: E402
from configs import default  # noqa: E402
from jaxmt.data.sampling import eval_batches  # noqa: E402
from jaxmt.data.sources import load_splits, task_specs  # noqa: E402
from jaxmt.models.pretrained import load_pretrained  # noqa: E402
from jaxmt.parallel.host_data import put_global  # noqa: E402
from jaxmt.parallel.mesh import make_mesh  # noqa: E402
from jaxmt.parallel.state_sharding import encoder_shardings  # noqa: E402
from jaxmt.training import setup  # noqa: E402
from jaxmt.training.evaluation import Predictor  # noqa: E402

_MODEL = flags.DEFINE_string("model", "minilm", "Model alias or directory.")
_CSV_DIR = flags.DEFINE_string("csv_dir", "/work/shared/data/cs224n", "CS224N data folder (demo data if absent).")
_PARA_ROWS = flags.DEFINE_integer("para_rows", 1000, "Quora dev rows used (the first N).")
_REPEATS = flags.DEFINE_integer("repeats", 3, "Alternating timing rounds (full passes over the dev sets).")
_TORCH_THREADS = flags.DEFINE_integer("torch_threads", 2, "torch.set_num_threads for the reference.")
_NO_TORCH = flags.DEFINE_bool("no_torch", False, "Skip the PyTorch reference.")


def dev_data(config) -> tuple[dict, str]:
    """Dev splits by task (quora capped to its first rows) and where they came from."""
    csv_files = [config.tasks[t].files.dev for t in config.task_names]
    if all(os.path.exists(os.path.join(_CSV_DIR.value, f)) for f in csv_files):
        config.data.source, config.data.csv_dir = "csv", _CSV_DIR.value
    data = load_splits(config, task_specs(config), "dev")
    if "para" in data and len(data["para"]) > _PARA_ROWS.value:
        data["para"] = data["para"].subset(range(_PARA_ROWS.value))
    return data, config.data.source


def main(argv: list[str]) -> None:
    del argv
    torch_note = ref.setup_torch("eval_throughput", _NO_TORCH.value, _TORCH_THREADS.value)
    use_torch = torch_note is None
    config = default.get_config()
    pretrained = load_pretrained(_MODEL.value)
    data, source = dev_data(config)
    splits = setup.encode_splits(config, data, pretrained.tokenizer)
    specs = {t: s.data.spec for t, s in splits.items()}
    pad_id, buckets, batch_size = pretrained.tokenizer.pad_token_id, tuple(config.data.buckets), config.eval_batch_size

    mesh = make_mesh(config.mesh.axes, config.mesh.shape)
    model = setup.build_model(config, pretrained.config, specs)
    params = jax.jit(model.init)(jax.random.PRNGKey(config.seed),
                                 put_global(pretrained.params, encoder_shardings(pretrained.params, mesh)))
    predictor = Predictor(model, mesh, batch_size, buckets, pad_id)
    batches = {t: list(eval_batches(s, batch_size, buckets, pad_id)) for t, s in splits.items()}
    examples = sum(len(s.data) for s in splits.values())
    real_tokens = sum(int(s.lengths.sum()) for s in splits.values())
    padded_tokens = sum(b["input_ids"].size for bs in batches.values() for _, b in bs)

    def run_jaxmt() -> dict:
        return {t: predictor.predict(params, t, s) for t, s in splits.items()}

    runners = {"jaxmt": run_jaxmt}
    if use_torch:

        ref.seed_everything(0)
        torch_model = ref.build_torch_model(pretrained.path, specs)
        ref.copy_heads(torch_model, jax.device_get(params["heads"]))
        torch_batches = {t: [(idx, ref.torch_batch(b)) for idx, b in bs] for t, bs in batches.items()}

        def run_torch() -> dict:
            out = {}
            for task, task_batches in torch_batches.items():
                preds = np.zeros(len(splits[task].data), dtype=specs[task].label_dtype)
                for idx, batch in task_batches:
                    preds[idx] = ref.predict(torch_model, task, batch).numpy()[: len(idx)]
                out[task] = preds
            return out

        runners["torch"] = run_torch

    start = time.perf_counter()
    predictions = {name: run() for name, run in runners.items()}  # warm-up; jaxmt compiles here
    warmup_s = time.perf_counter() - start
    wall: dict[str, list[float]] = {name: [] for name in runners}
    cpu: dict[str, list[float]] = {name: [] for name in runners}
    for _ in range(_REPEATS.value):
        for name, run in runners.items():
            w, c = time.perf_counter(), time.process_time()
            run()
            wall[name].append(time.perf_counter() - w)
            cpu[name].append(time.process_time() - c)

    results = {}
    for name in runners:
        seconds = statistics.median(wall[name])
        results[name] = {"s_per_pass": round(seconds, 3), "min_s_per_pass": round(min(wall[name]), 3),
                         "cpu_s_per_pass": round(statistics.median(cpu[name]), 3),
                         "examples_per_s": round(examples / seconds, 1),
                         "real_tokens_per_s": round(real_tokens / seconds, 1),
                         "all_s": [round(t, 3) for t in wall[name]]}
    compiles = {t: step._cache_size() for t, step in predictor._steps.items() if hasattr(step, "_cache_size")}
    results["jaxmt"]["compiles_per_task"] = compiles  # one per bucket the task's batches use
    out = {
        "benchmark": "eval_throughput",
        "model": _MODEL.value, "data": source,
        "examples": {t: len(s.data) for t, s in splits.items()}, "examples_total": examples,
        "batch_size": batch_size, "buckets": list(buckets),
        "real_tokens": real_tokens, "padded_tokens": padded_tokens,
        "backend": jax.default_backend(), "jax": jax.__version__, "cpu_count": os.cpu_count(),
        "machine": platform.processor() or platform.machine(), "load_average_1m": round(os.getloadavg()[0], 2),
        "torch": ({"version": __import__("torch").__version__, "threads": __import__("torch").get_num_threads(),
                   "mode": "inference_mode, sdpa attention"} if use_torch else {"skipped": torch_note}),
        "gpu": "not available in this run",
        "method": f"warm-up pass, then {_REPEATS.value} alternating full passes over the dev sets in one process; "
                  "medians",
        "warmup_s": round(warmup_s, 1),
        "results": results,
    }
    if use_torch:
        ratio = results["jaxmt"]["examples_per_s"] / results["torch"]["examples_per_s"]
        out["ratio_jaxmt_over_torch"] = round(ratio, 3)
        agree = {}
        for task in splits:
            a, b = predictions["jaxmt"][task], predictions["torch"][task]
            agree[task] = (float(np.mean(a == b)) if specs[task].kind != "regression"
                           else float(np.max(np.abs(a - b))))
        out["prediction_agreement"] = {"classes: fraction equal, scores: max abs difference": agree}
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    app.run(main)
