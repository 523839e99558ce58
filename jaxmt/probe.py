"""Command line: python -m jaxmt.probe --models=NAME=DIR,NAME2=DIR2 --corpus=FILE --out=DIR.

Builds the probing tasks from the corpus once, probes every layer of every model on the same
examples, and writes results.csv, results.md, heatmap.png and results.json to --out. The corpus, the
models and --out may be any `etils.epath` path (gs://... too).
"""

from __future__ import annotations

import json
import logging
import os
import time

from absl import app, flags
from etils import epath

from jaxmt.cli import check_output_dir, parse_flags, setup_logging
from jaxmt.paths import absolute, expand_path, is_local

log = logging.getLogger("jaxmt.probe")


def define_flags() -> None:
    flags.DEFINE_list("models", ["minilm=minilm"], "Models to compare, NAME=DIR (or NAME=alias), comma separated.")
    flags.DEFINE_string("corpus", "../shared/data/corpus/wikitext2-valid.txt", "Plain-text (WikiText-style) corpus.")
    flags.DEFINE_string("out", "runs/probe", "Directory for the tables and the heat map.")
    flags.DEFINE_list("tasks", ["bigram_shift", "sentence_length", "word_content", "odd_man_out",
                                "coordination_inversion"], "Probing tasks to run.")
    flags.DEFINE_integer("max_sentences", 1000, "Sentences per task at most (balanced over classes; 20% held out).",
                         lower_bound=1)
    flags.DEFINE_integer("seed", 0, "Seeds task construction and the train/test split.", lower_bound=0)
    flags.DEFINE_integer("max_length", 64, "Tokens per sentence at most.", lower_bound=8)
    flags.DEFINE_integer("batch_size", 64, "Sentences per encoder batch.", lower_bound=1)
    flags.DEFINE_integer("probe_steps", 300,
                         "L-BFGS iterations (at most) of each scikit-learn logistic-regression probe.", lower_bound=1)
    flags.DEFINE_float("l2", 1e-3, "L2 penalty on the probe weights.", lower_bound=0.0)


def parse_models(items: list[str]) -> dict[str, str]:
    """['base=DIR', 'hier=DIR2'] -> {'base': 'DIR', 'hier': 'DIR2'}; a bare DIR is named after itself."""
    from jaxmt.errors import ConfigError

    models = {}
    for item in items:
        name, sep, path = item.partition("=")
        name, path = (name, path) if sep else (os.path.basename(item.rstrip("/")) or item, item)
        if not name or not path:
            raise ConfigError(f"--models: {item!r} is not NAME=DIR")
        if name in models:
            raise ConfigError(f"--models: the name {name!r} is used twice")
        models[name] = path
    if not models:
        raise ConfigError("--models: name at least one model")
    return models


def seen_in_pretraining(model_path: str, corpus: str) -> bool | None:
    """Whether `corpus` was among the files the model was pre-trained on, from its jaxmt run config.

    A model exported by `jaxmt.pretrain` lives in `WORKDIR/hf_model` beside the run's config.json.
    Returns None when that config (or its `data.files`) is not there, e.g. for a downloaded model.
    Files are matched by identity where the recorded path resolves, else by name.
    """
    from jaxmt.checkpointing.workdir import read_run_config

    try:
        run_config = read_run_config(os.path.dirname(absolute(expand_path(model_path, "--models")).rstrip("/")))
        files = [expand_path(f, "config.data.files") for f in run_config.data.files]
    except (FileNotFoundError, AttributeError, KeyError, ValueError):
        return None
    for recorded in files:
        if is_local(recorded) and is_local(corpus) and os.path.exists(recorded) and os.path.exists(corpus):
            if os.path.samefile(recorded, corpus):
                return True
        elif os.path.basename(recorded) == os.path.basename(corpus):
            return True
    return False


def run_probing(models: dict[str, str], corpus: str, out: str, tasks: list[str], max_sentences: int, seed: int,
                max_length: int, batch_size: int, probe_steps: int, l2: float) -> dict:
    from jaxmt.models.pretrained import load_pretrained
    from jaxmt.probing.linear_probe import LayerFeatures, ProbeConfig, majority_accuracy, probe_model
    from jaxmt.probing.report import write_report
    from jaxmt.probing.tasks import build_tasks, read_corpus_sentences

    corpus, out = expand_path(corpus, "--corpus"), expand_path(out, "--out")
    sentences = read_corpus_sentences(corpus)
    try:
        built = build_tasks(sentences, tasks, max_examples=max_sentences, seed=seed)
    except ValueError as err:
        from jaxmt.data.errors import DataError

        if isinstance(err, DataError):
            raise
        from jaxmt.errors import ConfigError

        raise ConfigError(f"--tasks: {err}") from None
    sizes = {t: {"train": len(task.train), "test": len(task.test), "classes": task.num_classes}
             for t, task in built.items()}
    log.info("%d corpus sentences; tasks %s", len(sentences), sizes)
    chance = {t: majority_accuracy(task) for t, task in built.items()}
    config = ProbeConfig(steps=probe_steps, l2=l2)
    results, seconds = {}, {}
    for name, path in models.items():
        start = time.time()
        features = LayerFeatures(load_pretrained(path), max_length=max_length, batch_size=batch_size)
        results[name] = probe_model(features, built, config)
        seconds[name] = round(time.time() - start, 1)
        log.info("%s: probed %d layers x %d tasks in %.0f s", name, features.num_layers, len(built), seconds[name])
    seen = {name: seen_in_pretraining(path, corpus) for name, path in models.items()}
    for name in (n for n, was_seen in seen.items() if was_seen):
        log.warning("%s was pre-trained on %s: its probe accuracies are not on unseen text", name, corpus)
    seen_words = {True: "yes", False: "no", None: "unknown"}
    paths = write_report(out, results, chance, sizes, footer=(
        f"\nProbing sentences from {os.path.basename(corpus)}; seen in pre-training: "
        + ", ".join(f"{name} {seen_words[was_seen]}" for name, was_seen in seen.items()) + ".\n"))
    summary = {"models": models, "corpus": absolute(corpus), "corpus_sentences": len(sentences),
               "tasks": sizes, "majority": chance, "seen_in_pretraining": seen, "seconds": seconds, "files": paths,
               "accuracy": {m: {t: [round(float(a), 4) for a in accs] for t, accs in by_task.items()}
                            for m, by_task in results.items()}}
    epath.Path(out, "results.json").write_text(json.dumps(summary, indent=2))
    return summary


def main(argv: list[str]) -> None:
    del argv
    setup_logging()
    from jaxmt.training.faults import user_facing_errors

    f = flags.FLAGS
    with user_facing_errors():
        check_output_dir(f.out, "--out")
        summary = run_probing(parse_models(f.models), f.corpus, f.out, f.tasks, f.max_sentences, f.seed,
                              f.max_length, f.batch_size, f.probe_steps, f.l2)
    print(epath.Path(summary["files"]["markdown"]).read_text())
    print(f"wrote {', '.join(summary['files'].values())}")


def run() -> None:
    """The `jaxmt-probe` console script (and `python -m jaxmt.probe`)."""
    define_flags()
    app.run(main, flags_parser=parse_flags)


if __name__ == "__main__":
    run()
