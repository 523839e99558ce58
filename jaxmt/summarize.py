"""Command line: python -m jaxmt.summarize --runs=NAME=GLOB [--runs=...] [--baseline=NAME] [--archive=DIR]

Seeds made into a table. Each `--runs` names an arm (a config, an ablation) and a glob of its
workdirs, one a seed; the table gives, for every metric in the runs' results.json under `--key`
(`dev`: the last evaluation; `best_dev`: the best checkpoint's), the mean and sample standard
deviation over the arm's seeds. With `--baseline`, each other arm's difference to it is marked
`*` where it exceeds seed noise: |difference| > 2 standard errors (Welch's, from the two arms'
seed spreads). With two or three seeds that is a rough screen, not a significance test, and the
tables say so.

`--probes=GLOB` tabulates `jaxmt.probe` runs instead, one a seed: per probing task, a table of the layers
against the probed models, accuracy in percent as mean ± std over the seeds, and with `--baseline` (a model's
name) each other model's difference to it, `*` where it exceeds seed noise.

`--archive=DIR` copies each run's small records (results.json, config.json, metrics.jsonl) to
DIR/NAME/RUN, so a table can be rebuilt (`--runs=NAME=DIR/NAME/*`) after the workdirs, with their
checkpoints, are gone: how docs/runs keeps the runs behind the docs' tables.

Globs, runs, the archive and --out may be any `etils.epath` path (gs://bucket/runs/*/seed* too).
"""

from __future__ import annotations

import json
import math
import os

import numpy as np
from absl import app, flags
from etils import epath

from jaxmt.cli import parse_flags
from jaxmt.paths import absolute, copy_file, glob_paths

RECORDS = ("results.json", "config.json", "metrics.jsonl")


def define_flags() -> None:
    flags.DEFINE_multi_string("runs", [], "NAME=GLOB: an arm and its workdirs (one a seed); repeat for each arm.")
    flags.DEFINE_string("key", "dev", "The results.json entry to summarize: dev (last evaluation) | best_dev | ...")
    flags.DEFINE_string("baseline", "", "An arm's NAME: mark the other arms' differences to it that exceed noise.")
    flags.DEFINE_list("metrics", [], "Metrics to show, in order ('' = every numeric one the runs share).")
    flags.DEFINE_string("archive", "", "Copy each run's results.json, config.json and metrics.jsonl to DIR/NAME/.")
    flags.DEFINE_string("probes", "", "GLOB of jaxmt.probe output folders, one a seed: probing tables instead.")
    flags.DEFINE_string("out", "", "Also write the table to this markdown file.")


def parse_arms(items: list[str]) -> dict[str, list[str]]:
    """['a=runs/x/seed*'] -> {'a': [sorted finished workdirs]}; an arm with no finished run is a ConfigError."""
    from jaxmt.errors import ConfigError

    arms: dict[str, list[str]] = {}
    for item in items:
        name, sep, pattern = item.partition("=")
        if not sep or not name or not pattern:
            raise ConfigError(f"--runs: {item!r} is not NAME=GLOB")
        if name in arms:
            raise ConfigError(f"--runs: the name {name!r} is used twice")
        dirs = sorted(d for d in glob_paths(pattern) if epath.Path(d, "results.json").is_file())
        if not dirs:
            raise ConfigError(f"--runs: {pattern!r} matches no workdir with a results.json (finished run)")
        arms[name] = dirs
    if not arms:
        raise ConfigError("--runs: name at least one arm, e.g. --runs=recipe=runs/paper_a/seed*")
    return arms


def read_scores(workdir: str, key: str) -> dict[str, float]:
    """The numeric entries of results.json[key] (a dict of metrics), e.g. {'sst': 0.51, 'mean': 0.74}."""
    from jaxmt.data.errors import DataError

    path = os.path.join(workdir, "results.json")
    try:
        results = json.loads(epath.Path(path).read_text())
    except json.JSONDecodeError as err:
        raise DataError(f"{path}: not JSON ({err.msg})") from None
    scores = results.get(key)
    if not isinstance(scores, dict):
        raise DataError(f"{path}: no '{key}' metrics (entries: {', '.join(sorted(results))})")
    return {k: float(v) for k, v in scores.items() if isinstance(v, (int, float)) and k != "step"}


def arm_stats(scores: list[dict[str, float]], metric: str) -> tuple[float, float, int]:
    """Mean, sample standard deviation (0 for one seed) and number of seeds of one metric."""
    values = np.array([s[metric] for s in scores if metric in s], dtype=np.float64)
    std = float(values.std(ddof=1)) if len(values) > 1 else 0.0
    return float(values.mean()), std, len(values)


def exceeds_noise(a: tuple[float, float, int], b: tuple[float, float, int]) -> bool:
    """|mean_a - mean_b| > 2 Welch standard errors; never with a single seed on either side."""
    (mean_a, std_a, n_a), (mean_b, std_b, n_b) = a, b
    if n_a < 2 or n_b < 2:
        return False
    return abs(mean_a - mean_b) > 2 * math.sqrt(std_a**2 / n_a + std_b**2 / n_b)


def stats_cell(stats: tuple[float, float, int], digits: int = 4) -> str:
    """`mean ± std` over seeds; the mean alone for one seed, which has no spread to show."""
    mean, std, n = stats
    return f"{mean:.{digits}f} ± {std:.{digits}f}" if n > 1 else f"{mean:.{digits}f}"


def difference(a: tuple[float, float, int], b: tuple[float, float, int], digits: int = 4) -> str:
    """mean_a - mean_b signed to `digits` (a rounded zero as +0), `*` where it exceeds seed noise."""
    text = f"{a[0] - b[0]:+.{digits}f}"
    if float(text) == 0.0:
        text = f"{0.0:+.{digits}f}"
    return text + ("*" if exceeds_noise(a, b) else "")


def markdown_table(arms: dict[str, list[dict[str, float]]], metrics: list[str], baseline: str = "") -> str:
    """One row an arm: `mean ± std` a metric (the mean alone for one seed), its difference to the baseline
    (`*`: beyond noise), seeds."""
    header = "| arm | seeds | " + " | ".join(metrics) + " |"
    lines = [header, "|---|---:|" + "---:|" * len(metrics)]
    base = {metric: arm_stats(arms[baseline], metric) for metric in metrics} if baseline else {}
    for name, scores in arms.items():
        cells = []
        for metric in metrics:
            stats = arm_stats(scores, metric)
            cell = stats_cell(stats)
            if name != baseline and metric in base:
                cell += f" ({difference(stats, base[metric])})"
            cells.append(cell)
        lines.append(f"| {name} | {len(scores)} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def probe_tables(results: list[dict], baseline: str = "") -> str:
    """jaxmt.probe results (one a seed) -> a markdown table a task: layers x models, accuracy % mean ± std,
    each model's difference to `baseline` (`*`: beyond seed noise)."""
    models = list(results[0]["accuracy"])
    sections = []
    for task in results[0]["tasks"]:
        layers = len(results[0]["accuracy"][models[0]][task])
        header = "| layer | " + " | ".join(models) + " |"
        lines = [f"### {task} (majority class {100 * results[0]['majority'][task]:.1f}%, {len(results)} seeds)",
                 "", header, "|---|" + "---:|" * len(models)]
        for layer in range(layers):
            stats = {m: arm_stats([{"a": 100 * r["accuracy"][m][task][layer]} for r in results], "a") for m in models}
            cells = []
            for model in models:
                cell = stats_cell(stats[model], 1)
                if baseline and model != baseline:
                    cell += f" ({difference(stats[model], stats[baseline], 1)})"
                cells.append(cell)
            lines.append(f"| {'embeddings' if layer == 0 else f'layer {layer}'} | " + " | ".join(cells) + " |")
        sections.append("\n".join(lines))
    return "\n\n".join(sections)


def read_probe_runs(pattern: str) -> list[dict]:
    """The results.json of every probe folder matching `pattern`, all over the same models and tasks."""
    from jaxmt.data.errors import DataError
    from jaxmt.errors import ConfigError

    paths = sorted(glob_paths(os.path.join(pattern, "results.json")))
    if not paths:
        raise ConfigError(f"--probes={pattern}: matches no probe folder with a results.json")
    results = []
    for path in paths:
        try:
            result = json.loads(epath.Path(path).read_text())
        except json.JSONDecodeError as err:
            raise DataError(f"{path}: not JSON ({err.msg})") from None
        if "accuracy" not in result or "tasks" not in result:
            raise DataError(f"{path}: not a jaxmt.probe result (no 'accuracy' and 'tasks')")
        shape = (list(result["accuracy"]), list(result["tasks"]))
        if results and shape != (list(results[0]["accuracy"]), list(results[0]["tasks"])):
            raise DataError(f"{path}: probes other models or tasks than {paths[0]}")
        results.append(result)
    return results


def archive_runs(arms: dict[str, list[str]], out: str) -> None:
    """Copies each run's RECORDS to out/NAME/RUN (RUN = the workdir's base name)."""
    for name, dirs in arms.items():
        for workdir in dirs:
            target = os.path.join(out, name, os.path.basename(os.path.normpath(workdir)))
            if absolute(target).rstrip("/") == absolute(workdir).rstrip("/"):
                continue
            epath.Path(target).mkdir(parents=True, exist_ok=True)
            for record in RECORDS:
                if epath.Path(workdir, record).is_file():
                    copy_file(os.path.join(workdir, record), os.path.join(target, record))


def probes_table(pattern: str, baseline: str) -> str:
    """--probes: the probing tables of the probe folders matching `pattern`."""
    from jaxmt.errors import ConfigError

    results = read_probe_runs(pattern)
    if baseline and baseline not in results[0]["accuracy"]:
        raise ConfigError(f"--baseline={baseline}: not a probed model ({', '.join(results[0]['accuracy'])})")
    return probe_tables(results, baseline)


def runs_table(f: flags.FlagValues) -> str:
    """--runs: the seeds' table of every arm (archiving their records with --archive)."""
    from jaxmt.errors import ConfigError

    arms = parse_arms(f.runs)
    if f.baseline and f.baseline not in arms:
        raise ConfigError(f"--baseline={f.baseline}: not an arm of --runs ({', '.join(arms)})")
    scores = {name: [read_scores(d, f.key) for d in dirs] for name, dirs in arms.items()}
    shared = set.intersection(*(set(s) for runs in scores.values() for s in runs))
    metrics = list(f.metrics) or sorted(shared, key=lambda m: (m == "mean", m))
    missing = [m for m in metrics if m not in shared]
    if missing:
        raise ConfigError(f"--metrics: {missing} not in every run's {f.key} (shared: {sorted(shared)})")
    if f.archive:
        archive_runs(arms, f.archive)
    return markdown_table(scores, metrics, f.baseline)


def main(argv: list[str]) -> None:
    del argv
    from jaxmt.training.faults import user_facing_errors

    f = flags.FLAGS
    with user_facing_errors():
        table = probes_table(f.probes, f.baseline) if f.probes else runs_table(f)
        if f.out:
            epath.Path(f.out).write_text(table + "\n")
    print(table)


def run() -> None:
    """The `jaxmt-summarize` console script (and `python -m jaxmt.summarize`)."""
    define_flags()
    app.run(main, flags_parser=parse_flags)


if __name__ == "__main__":
    run()
