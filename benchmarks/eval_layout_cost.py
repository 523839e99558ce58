"""What each evaluation layout computes on the CS224N dev sets: tokens, attention positions, batches, shapes.

No model runs: every layout's batches are built and counted (`benchmarks/real_stream.py` times the ones jaxmt
uses). Tokens are the elements of the arrays fed to the encoder (rows x row length, padding included);
attention positions are rows x row length squared (what a dense attention over each row computes, segment
masks or not); shapes are the distinct (task, rows, length) a process compiles once each. Layouts:

- sized_rows: what jaxmt evaluates in (`eval_packing(128)`: 32 / 64 / 128-token rows, each example to the row
  length its size fills best, several examples a row);
- rows of every multiple of 8 or 16, filled the same way (`fill`) or with each example in the shortest row
  that holds its longest sequence (`fit`: about one sequence a row, PyTorch's attention cost);
- padded buckets (`eval_batches`, batch 64, the config's buckets) and PyTorch's length-sorted batches of 64,
  each padded to its own longest (`benchmarks/real_stream.py`'s `dynamic_batch`).

    python benchmarks/eval_layout_cost.py [--out=benchmarks/results/eval_layout_cost.json]
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterable
from pathlib import Path

import numpy as np
from absl import app, flags

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks.common import write_result  # noqa: E402
from configs import pcgrad  # noqa: E402
from jaxmt.data.eval_batches import EvalPacking, eval_packing, fit_choice, sized_eval_batches  # noqa: E402
from jaxmt.data.sampling import eval_batches  # noqa: E402
from jaxmt.data.sources import load_splits, task_specs  # noqa: E402
from jaxmt.data.tokenization import EncodedSplit, make_batch  # noqa: E402
from jaxmt.models.pretrained import load_pretrained  # noqa: E402
from jaxmt.training import setup  # noqa: E402

_CSV_DIR = flags.DEFINE_string("csv_dir", str(ROOT.parent / "shared" / "data" / "cs224n"), "CS224N data folder.")
_OUT = flags.DEFINE_string("out", "benchmarks/results/eval_layout_cost.json", "Where the JSON is written.")

Batches = Callable[[str, EncodedSplit, int], Iterable[tuple[np.ndarray, dict]]]


def cost(dev: dict[str, EncodedSplit], batches: Batches, pad_id: int) -> dict:
    """Tokens, attention positions, batches and distinct shapes of one layout over every dev set."""
    tokens = positions = count = 0
    shapes = set()
    for task, split in dev.items():
        for _, batch in batches(task, split, pad_id):
            ids = batch["input_ids"]  # [rows, length] packed; [rows, sequences, length] or [rows, length] padded
            tokens += ids.size
            positions += ids.size * ids.shape[-1]
            shapes.add((task, *ids.shape))
            count += 1
    return {"tokens": int(tokens), "attention_positions": int(positions), "batches": count, "shapes": len(shapes)}


def main(argv: list[str]) -> None:
    del argv
    config = pcgrad.get_config()
    config.model.name, config.data.source, config.data.csv_dir = "minilm", "csv", _CSV_DIR.value
    specs = task_specs(config)
    pretrained = load_pretrained(config.model.name)
    dev = setup.encode_splits(config, load_splits(config, specs, "dev"), pretrained.tokenizer)
    batch_size, buckets = config.eval_batch_size, config.data.buckets
    every_8, every_16 = tuple(range(8, 129, 8)), tuple(range(16, 129, 16))

    def packed(packing: EvalPacking, fit: bool) -> Batches:
        return lambda _, split, pad: sized_eval_batches(
            split, packing, pad, fit_choice(split, packing.row_lengths) if fit else None)

    def dynamic(_, split: EncodedSplit, pad: int):
        for idx, _batch in eval_batches(split, batch_size, buckets, pad):
            yield idx, make_batch(split, idx, int(split.lengths[idx].max()), pad)

    layouts: dict[str, Batches] = {
        "sized_rows (jaxmt: 32/64/128, fill)": packed(eval_packing(config.data.pack_length), False),
        "every 16 tokens, fill": packed(EvalPacking(every_16), False),
        "every 16 tokens, fit": packed(EvalPacking(every_16), True),
        "every 8 tokens, fill": packed(EvalPacking(every_8), False),
        "every 8 tokens, fit": packed(EvalPacking(every_8), True),
        f"padded buckets {tuple(buckets)}, batch {batch_size}":
            lambda _, split, pad: eval_batches(split, batch_size, buckets, pad),
        f"pytorch length-sorted, batch {batch_size}, padded to each batch's longest": dynamic,
    }
    pad_id = pretrained.tokenizer.pad_token_id
    real = int(sum(int(s.lengths.sum()) for s in dev.values()))
    write_result({"benchmark": "eval_layout_cost", "tokenizer": config.model.name,
                  "dev_examples": {t: len(s.data) for t, s in dev.items()}, "real_tokens": real,
                  "layouts": {name: cost(dev, batches, pad_id) for name, batches in layouts.items()}},
                 ROOT / _OUT.value)


if __name__ == "__main__":
    app.run(main)
