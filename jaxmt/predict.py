"""Command line: python -m jaxmt.predict --workdir=DIR --task=TASK [--checkpoint=best|latest] SENTENCE ...

Scores raw sentences with a trained run (its config.json and best or latest checkpoint, read-only) and
prints one line per example on stdout:

    sst   class id, then the probability of each class:  2<TAB>0.0312<TAB>0.1210<TAB>0.5120<TAB>...
    para  the probability that the pair is a paraphrase:  0.8731
    sts   the similarity score in the task's range:       3.2150

A single-sentence task takes each argument as one sentence; a pair task (para, sts) takes the arguments
two at a time (`--task=sts "s1" "s2"`). `--input_file=F.tsv` reads the examples instead, one a line (a
pair as two tab-separated sentences); the output lines follow its lines. The Python API is
`jaxmt.inference.TrainedModel`.
"""

from __future__ import annotations

import sys

from absl import app, flags

from jaxmt.cli import parse_flags, setup_logging

FLAGS = flags.FLAGS


def read_inputs(spec, args: list[str], input_file: str | None) -> tuple[list[str], list[str] | None]:
    """(first sentences, second sentences or None) from the arguments or the file; one-line errors."""
    from jaxmt.data.errors import DataError, location
    from jaxmt.errors import ConfigError

    if args and input_file:
        raise ConfigError("give the sentences as arguments or as --input_file, not both")
    if not args and not input_file:
        raise ConfigError(f"nothing to score: give the sentences of task {spec.name!r} as arguments or "
                          "--input_file=F.tsv")
    width = 2 if spec.is_pair else 1
    if args:
        if len(args) % width:
            raise DataError(f"task {spec.name!r} scores sentence pairs: give the arguments two at a time "
                            f"(\"s1\" \"s2\" ...), got {len(args)}")
        rows = [args[i:i + width] for i in range(0, len(args), width)]
    else:
        from etils import epath

        try:
            lines = epath.Path(input_file).read_text().splitlines()  # any epath path: gs://... too
        except (FileNotFoundError, IsADirectoryError):
            raise DataError(f"{input_file}: no such file (--input_file)") from None
        rows = []
        for number, line in enumerate(lines, 1):
            cells = [cell.strip() for cell in line.split("\t")]
            if len(cells) != width or not all(cells):
                what = "two tab-separated sentences" if width == 2 else "one sentence (no tab)"
                raise DataError(f"{location(input_file, number)}: task {spec.name!r} needs {what} a line, "
                                f"got {line!r}")
            rows.append(cells)
        if not rows:
            raise DataError(f"{input_file}: no lines to score")
    return [r[0] for r in rows], ([r[1] for r in rows] if spec.is_pair else None)


def define_flags() -> None:
    flags.DEFINE_string("workdir", None, "A training workdir (holds config.json and checkpoints).", required=True)
    flags.DEFINE_string("task", None, "The task to predict, one the run trained (e.g. sst, para, sts).", required=True)
    flags.DEFINE_enum("checkpoint", "best", ["best", "latest"], "Which checkpoint to restore.")
    flags.DEFINE_string("input_file", None, "Examples one a line (a pair as two tab-separated sentences).")


def main(argv: list[str]) -> None:
    setup_logging()
    from jaxmt.data.demo import DEMO_BANNER
    from jaxmt.inference import TrainedModel, format_scores, read_run, run_task_spec
    from jaxmt.training.faults import user_facing_errors

    with user_facing_errors():
        config, specs = read_run(FLAGS.workdir)  # the inputs are checked before any model loads
        spec = run_task_spec(specs, FLAGS.task)
        texts_a, texts_b = read_inputs(spec, argv[1:], FLAGS.input_file)
        scores = TrainedModel(FLAGS.workdir, FLAGS.checkpoint).predict(spec.name, texts_a, texts_b)
    if config.data.source == "demo":
        print(f"[{DEMO_BANNER}] this run was trained on the demo data", file=sys.stderr)
    print("\n".join(format_scores(spec, row) for row in scores))


def run() -> None:
    """The `jaxmt-predict` console script (and `python -m jaxmt.predict`)."""
    define_flags()
    app.run(main, flags_parser=parse_flags)


if __name__ == "__main__":
    run()
