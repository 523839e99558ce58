"""Command line: python -m jaxmt.evaluate --workdir=DIR [--split=dev|test] [--checkpoint=best|latest] [--data_dir=D].

Restores a trained run's params (read-only: nothing is written under the checkpoint folders) and
rebuilds its model and data from the config the run recorded in DIR/config.json; prints the
metrics of each task that has labels, and writes predictions in the CS224N starter's format to
DIR/predictions/ (e.g. sst-dev-output.csv). `--data_dir` reads CS224N-format files from another
folder instead of the run's own data. A task whose split has no file (the course gives no Quora
test file) gets no prediction file, and the command says so.
"""

from __future__ import annotations

import json
import os

import numpy as np
from absl import app, flags
from etils import epath

from jaxmt.cli import check_output_dir, parse_flags, setup_logging
from jaxmt.data.demo import DEMO_BANNER
from jaxmt.data.errors import DataError
from jaxmt.data.schema import BINARY, CLASSIFICATION
from jaxmt.data.sources import load_splits
from jaxmt.inference import read_run, restore_run
from jaxmt.paths import expand_path
from jaxmt.training import setup
from jaxmt.training.evaluation import Predictor, run_eval_packing
from jaxmt.training.faults import user_facing_errors

# The column names the CS224N starter writes (evaluation.py, test_model_multitask), its
# "Similiary" spelling included, so the files drop in wherever the starter's files are read.
PREDICTION_COLUMNS = {"sst": "Predicted_Sentiment", "para": "Predicted_Is_Paraphrase", "sts": "Predicted_Similiary"}


def format_prediction(kind: str, value: float) -> str:
    """A value as the starter prints it: argmax class as an int, paraphrase as the rounded sigmoid
    (a float: `1.0`), similarity as the model's float32 output widened to a Python float, every digit
    of its float64 value (`2.7151050567626953`, not float32's shortest `2.715105`), so the files are
    byte-identical to the starter's."""
    if kind == CLASSIFICATION:
        return str(int(value))
    if kind == BINARY:
        return str(float(value))
    return str(float(np.float32(value)))


def write_predictions(path: str, task: str, ids: list[str], predictions, kind: str = CLASSIFICATION) -> None:
    """One CS224N output file: a header `id \\t Predicted_X `, then `id , value ` a line."""
    column = PREDICTION_COLUMNS.get(task, "Predicted_Label")
    with epath.Path(path).open("w") as f:  # any epath path: a gs:// workdir too
        f.write(f"id \t {column} \n")
        for example_id, value in zip(ids, predictions):
            f.write(f"{example_id} , {format_prediction(kind, value)} \n")


def evaluate_workdir(workdir: str, split: str = "dev", checkpoint: str = "best",
                     output_dir: str | None = None, data_dir: str | None = None) -> dict:
    """Restores `checkpoint` of the run in `workdir`, evaluates `split` and writes predictions.

    The model and data come from WORKDIR/config.json; `data_dir` swaps the data for the
    CS224N-format files (the run's `tasks.<name>.files` names) in that folder.
    """
    config, specs = read_run(workdir)
    if data_dir:
        data_dir = expand_path(data_dir, "--data_dir")
        if not epath.Path(data_dir).is_dir():
            raise DataError(f"{data_dir}: --data_dir is not a folder")
        config.data.source, config.data.csv_dir = "csv", data_dir
    data = load_splits(config, specs, split)
    if not data:
        raise DataError(f"no task of {sorted(specs)} has a {split} split in {config.data.source} data"
                        + (f" under {config.data.csv_dir}" if config.data.source == "csv" else ""))
    run = restore_run(config, workdir, checkpoint, specs)
    encoded = setup.encode_splits(config, data, run.tokenizer)
    predictor = Predictor(run.model, run.mesh, config.eval_batch_size, config.data.buckets,
                          run.tokenizer.pad_token_id, run_eval_packing(config, encoded, run.mesh))
    metrics, predictions = predictor.evaluate(run.params, encoded)
    output_dir = output_dir or os.path.join(workdir, "predictions")
    epath.Path(output_dir).mkdir(parents=True, exist_ok=True)
    files = {}
    for task, preds in predictions.items():
        files[task] = os.path.join(output_dir, f"{task}-{split}-output.csv")
        write_predictions(files[task], task, encoded[task].data.ids, preds.tolist(), specs[task].kind)
    return {"split": split, "checkpoint": checkpoint, "step": run.step, "metrics": metrics,
            "prediction_files": files, "tasks_without_data": sorted(set(specs) - set(files)),
            "demo_data": any(d.is_demo for d in data.values())}


def define_flags() -> None:
    flags.DEFINE_string("workdir", None, "A training workdir (holds config.json and checkpoints).", required=True)
    flags.DEFINE_enum("split", "dev", ["dev", "test"], "Which split to predict.")
    flags.DEFINE_enum("checkpoint", "best", ["best", "latest"], "Which checkpoint to restore.")
    flags.DEFINE_string("output_dir", None, "Where predictions go (default: WORKDIR/predictions).")
    flags.DEFINE_string("data_dir", None, "A folder of CS224N-format files to score instead of the run's own data.")


def main(argv: list[str]) -> None:
    del argv
    setup_logging()
    f = flags.FLAGS
    with user_facing_errors():
        if f.output_dir:
            check_output_dir(f.output_dir, "--output_dir")
        result = evaluate_workdir(f.workdir, f.split, f.checkpoint, f.output_dir, f.data_dir)
    tag = f"[{DEMO_BANNER}] " if result["demo_data"] else ""
    for task, value in result["metrics"].items():
        print(f"{tag}{result['split']} {task}: {value:.4f}")
    for path in result["prediction_files"].values():
        print(f"wrote {path}")
    for task in result["tasks_without_data"]:
        print(f"no {result['split']} file for task {task}: no predictions written for it")
    print(json.dumps(result, indent=2, sort_keys=True))


def run() -> None:
    """The `jaxmt-evaluate` console script (and `python -m jaxmt.evaluate`)."""
    define_flags()
    app.run(main, flags_parser=parse_flags)


if __name__ == "__main__":
    run()
