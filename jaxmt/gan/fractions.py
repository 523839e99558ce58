"""The labeled-fraction sweep behind `python -m jaxmt.sweep`.

For each labeled fraction and seed, trains AC-GAN-BERT in Odena's layout (`acgan`), in its authors'
form (`paper`: GAN-BERT's K+1 discriminator and losses, G conditioned on each real row's label),
GAN-BERT (`ganbert`: the same trainer with `gan.form='ganbert'`), the plain fine-tuned baseline
(`baseline`, as many steps as the GAN runs) and the reference GAN-BERT's baseline
(`baseline_reference`: len(labeled) / batch x epochs steps) on the same labeled subset (drawn with
that seed; same batch size, optimizer, dev set), each in its own run directory
DIR/fraction_F/METHOD/seed_S. Writes DIR/results.csv (one row a run), DIR/results.md (one
row a fraction: each method's dev accuracy as mean ± std over seeds, each GAN method's difference to
the baseline marked where it exceeds seed noise, and its mode-collapse checks), DIR/accuracy.png
(mean dev accuracy against labeled fraction, error bars one standard deviation over seeds) and
DIR/checks.png (the GAN methods' class fidelity and diversity against labeled fraction, the same error
bars), DIR/p_real.png (D's mean p(real) on real and on fake rows over training, a panel a fraction,
a line a GAN method, the mean over its seeds); each GAN run keeps its PCA plot (pca.png, points in
pca.npz), DIR/pca_METHOD.png sets them side by side (a row a fraction, a column a seed), and
DIR/fraction_F/METHOD/pca_seeds.png draws the class centroids of its seeds' runs with error bars. The tables
are rewritten after every run.
A run whose results.json exists is not trained again, so a killed sweep, or one continued later with the
same flags (or more seeds or fractions), picks up where it stopped. DIR and the archive may be any
`etils.epath` path (gs://... on a pod): every table, plot and copied record goes through epath.
"""

from __future__ import annotations

import csv
import dataclasses
import io
import json
import logging
import math
import os
from collections.abc import Sequence

import jax
import numpy as np
from etils import epath
from ml_collections import ConfigDict

from jaxmt.errors import ConfigError
from jaxmt.parallel import distributed
from jaxmt.paths import copy_file, save_figure
from jaxmt.summarize import arm_stats, difference, stats_cell

log = logging.getLogger(__name__)

# sweep method -> (config.gan.method, the config.gan fields it sets, table label)
METHODS = {
    "baseline": ("baseline", {}, "fine-tuned baseline"),
    "baseline_reference": ("baseline", {}, "baseline, reference steps"),
    "acgan": ("acgan", {"form": "acgan", "fake_labels": "uniform"}, "AC-GAN-BERT"),
    "ganbert": ("acgan", {"form": "ganbert", "fake_labels": "uniform"}, "GAN-BERT"),
    "paper": ("acgan", {"form": "ganbert", "fake_labels": "batch"}, "AC-GAN-BERT, paper's form"),
}
GAN_METHODS = tuple(m for m, (gan_method, _, _) in METHODS.items() if gan_method == "acgan")
BASELINES = tuple(m for m in METHODS if m not in GAN_METHODS)
# --baseline_steps value -> the sweep method that trains that baseline
BASELINE_STEPS = {"equal": "baseline", "reference": "baseline_reference"}
COLUMNS = ("labeled_fraction", "labeled_examples", "method", "form", "seed", "dev_accuracy", "steps", "epochs",
           "batch_size", "train_examples", "train_seconds", "seconds_per_step", "class_fidelity", "d_class_fidelity",
           "probe_real_accuracy", "diversity_ratio", "diversity_ratio_min", "workdir")
NOISE_NOTE = ("Dev accuracy and the GAN checks: mean ± sample standard deviation (number of seeds). Δ: a GAN "
              "method's mean minus the baseline's; `*` where |Δ| > 2 Welch standard errors from the two seed "
              "spreads (a rough screen with 2-3 seeds, never with one).")


def run_dir(workdir: str, fraction: float, method: str, seed: int) -> str:
    return os.path.join(workdir, f"fraction_{fraction:g}", method, f"seed_{seed}")


def steps_for_epochs(epochs: float, train_examples: int, batch_size: int) -> int:
    """Steps that show a run `epochs` passes over the whole training file (labeled + unlabeled rows) at
    `batch_size` real rows a step, rounded up; the rounding to 9 digits keeps 0.1 * 160 / 16 at 1 step."""
    return max(1, math.ceil(round(epochs * train_examples / batch_size, 9)))


def reference_baseline_steps(epochs: float, labeled_examples: int, batch_size: int) -> int:
    """The reference GAN-BERT's baseline (crux82/ganbert, bert.py as run_experiment.sh runs it): BERT fine-tuned
    on the labeled rows alone for int(len(labeled) / batch x epochs) steps (at least 1)."""
    return max(1, int(epochs * labeled_examples / batch_size))


def method_steps(method: str, epochs: float, num_steps: int, train_examples: int, labeled_examples: int,
                 batch_size: int, reference_epochs: float = 0.0) -> int:
    """A run's steps: `epochs` > 0 passes over the training file (`steps_for_epochs`), else `num_steps`; the
    reference-style baseline `reference_epochs` (0: `epochs`) passes over its labeled rows
    (`reference_baseline_steps`)."""
    if method == "baseline_reference":
        if (reference_epochs or epochs) <= 0:
            raise ConfigError("--baseline_steps=reference counts passes over the labeled rows: give --epochs > 0")
        return reference_baseline_steps(reference_epochs or epochs, labeled_examples, batch_size)
    return steps_for_epochs(epochs, train_examples, batch_size) if epochs > 0 else num_steps


def result_row(results: dict, workdir: str, method: str, seed: int) -> dict:
    """A run's results.json as a table row; `method` is the sweep's name (the GAN trainer calls both forms acgan)."""
    collapse = results.get("collapse", {})
    row = {k: results.get(k, collapse.get(k, "")) for k in COLUMNS}
    steps, batch, train = row["steps"], row["batch_size"], row["train_examples"]
    if all(isinstance(v, int) and v > 0 for v in (steps, batch, train)):
        row["epochs"] = round(steps * batch / train, 3)
    row.update(method=method, seed=seed, workdir=workdir)
    return row


def run_config_for(config: ConfigDict, fraction: float, method: str, seed: int, num_steps: int) -> ConfigDict:
    """The config of one run: the sweep's config with this fraction, method (its gan fields), seed and step
    count. `gan.weights.g_class` is left as given, so unset it resolves by the form (0 for pure GAN-BERT)."""
    run_config = config.copy_and_resolve_references()
    gan_method, fields, _ = METHODS[method]
    run_config.gan.labeled_fraction = fraction
    run_config.gan.method = gan_method
    for field, value in fields.items():
        run_config.gan[field] = value
    run_config.gan.save_checkpoints = False
    run_config.seed = seed
    run_config.num_steps = num_steps
    return run_config


ARCHIVED = ("results.json", "config.json", "metrics.jsonl", "pca.png", "pca.npz")  # a finished run's records


def archive_run(run: str, target: str) -> str:
    """Copies a finished run's records (`ARCHIVED`, no checkpoints) from `run` to `target`; returns `target`."""
    epath.Path(target).mkdir(parents=True, exist_ok=True)
    for record in ARCHIVED:
        if epath.Path(run, record).is_file():
            copy_file(os.path.join(run, record), os.path.join(target, record))
    return target


def finished_run(out: str, archived: str) -> str | None:
    """Where a finished run's results.json is: the sweep's own run directory, else its archived copy (a later
    session with a fresh workdir continues from the archive); None when the run is still to train."""
    for place in (out, archived):
        if place and epath.Path(place, "results.json").exists():
            return place
    return None


def run_sweep(config: ConfigDict, workdir: str, fractions: Sequence[float], methods: Sequence[str],
              seeds: Sequence[int] | None = None, epochs: float = 0.0, archive: str = "",
              reference_epochs: float = 0.0) -> list[dict]:
    """Trains every (fraction, seed, method) not yet done; returns one row a run (see COLUMNS).

    `seeds` default to (config.seed,); `epochs` > 0 sets each run's num_steps to that many passes over
    the training file (`steps_for_epochs`), else config.num_steps; `reference_epochs` > 0 the passes over
    the labeled rows of the reference-style baseline (0: `epochs`). With `archive` (e.g. docs/runs/NAME)
    each finished run's records are copied to archive/fraction_F/METHOD/seed_S and the tables written
    there too, and a run archived there counts as done: the sweep can run in a scratch workdir and a later
    session, without that workdir, continues where the archive stops."""
    from jaxmt.gan.baseline import train_baseline
    from jaxmt.gan.build import check_gan_config, load_gan_data
    from jaxmt.gan.semi_supervised import stratified_labeled_subset
    from jaxmt.gan.trainer import train_gan

    check_gan_config(config)
    distributed.initialize(config.parallel)  # before load_gan_data's first JAX computation; no-op for one process
    if not fractions:
        raise ConfigError("--fractions is empty: give at least one labeled fraction, e.g. 0.05,0.2,1.0")
    unknown = [m for m in methods if m not in METHODS]
    if unknown or not methods:
        raise ConfigError(f"--methods: unknown {unknown}; expected a subset of {sorted(METHODS)}")
    if epochs < 0 or reference_epochs < 0:
        raise ConfigError(f"--epochs={epochs}, --reference_epochs={reference_epochs}: must be >= 0")
    seeds = list(seeds) if seeds else [config.seed]
    data, rows = None, []
    for fraction in fractions:
        for seed in seeds:
            labeled = None  # drawn once a (fraction, seed): the methods of one seed share it
            for method in methods:
                out = run_dir(workdir, fraction, method, seed)
                archived = run_dir(archive, fraction, method, seed) if archive else ""
                done = finished_run(out, archived)
                if done:
                    if archived and done == out:
                        done = archive_run(out, archived)
                    results = json.loads(epath.Path(done, "results.json").read_text())
                    rows.append(result_row(results, done, method, seed))
                    warn_if_other_steps(rows[-1], config.num_steps, epochs, reference_epochs)
                    continue
                data = data or load_gan_data(config)  # tokenized once; only the labeled subset changes
                if labeled is None:
                    labeled = stratified_labeled_subset(data.train.data.labels, fraction, seed)
                num_steps = method_steps(method, epochs, config.num_steps, len(data.train.data), len(labeled),
                                         config.tasks[data.spec.name].batch_size, reference_epochs)
                run_config = run_config_for(config, fraction, method, seed, num_steps)
                check_gan_config(run_config)
                log.info("sweep: fraction %g, seed %d, %s, %d labeled, %d steps", fraction, seed, method,
                         len(labeled), num_steps)
                trainer = train_baseline if method in BASELINES else train_gan
                results = trainer(run_config, out, dataclasses.replace(data, labeled=labeled))
                rows.append(result_row(results, archive_run(out, archived) if archived else out, method, seed))
                write_tables(rows, workdir, archive)  # the runs so far, for a look while a long sweep goes on
    write_tables(rows, workdir, archive)
    return rows


def write_tables(rows: list[dict], workdir: str, archive: str) -> None:
    """`write_table` in the workdir, and in the archive when there is one."""
    for place in (workdir, archive) if archive else (workdir,):
        write_table(rows, place)


def warn_if_other_steps(row: dict, num_steps: int, epochs: float, reference_epochs: float = 0.0) -> None:
    """A finished run is kept as it is: say so when it trained for other steps than these flags ask."""
    if epochs > 0 and not (row["train_examples"] and row["batch_size"]):
        return  # a row without its sizes: nothing to count the asked steps from
    asked = method_steps(row["method"], epochs, num_steps, row["train_examples"], row["labeled_examples"],
                         row["batch_size"], reference_epochs)
    if row["steps"] != asked:
        log.warning("sweep: %s is finished with %s steps, not the %d asked; kept (delete it to train it again)",
                    row["workdir"], row["steps"], asked)


def write_table(rows: list[dict], workdir: str) -> dict[str, str]:
    """results.csv (one row a run), results.md (one row a fraction), accuracy.png, checks.png and each GAN
    method's pca_seeds.png a fraction (from process 0 only); returns their paths."""
    epath.Path(workdir).mkdir(parents=True, exist_ok=True)
    paths = {"csv": os.path.join(workdir, "results.csv"), "md": os.path.join(workdir, "results.md"),
             "png": os.path.join(workdir, "accuracy.png")}
    if jax.process_index() != 0:
        return paths
    with io.StringIO(newline="") as f:
        writer = csv.DictWriter(f, fieldnames=COLUMNS)
        writer.writeheader()
        writer.writerows(rows)
        epath.Path(paths["csv"]).write_bytes(f.getvalue().encode())  # bytes: the csv module's \r\n as written
    epath.Path(paths["md"]).write_text(markdown_table(rows) + "\n\n" + NOISE_NOTE + "\n")
    plot_accuracy(rows, paths["png"])
    if any(r["method"] in GAN_METHODS for r in rows):
        paths["checks"] = plot_checks(rows, os.path.join(workdir, "checks.png"))
        paths["p_real"] = plot_p_real(rows, os.path.join(workdir, "p_real.png"))
    paths.update(plot_pca_seeds(rows, workdir))
    paths.update(pca_montages(rows, workdir))
    return paths


Stats = tuple[float, float, int]  # mean, sample standard deviation, seeds (as jaxmt.summarize.arm_stats)


def metric_stats(rows: list[dict], metric: str) -> Stats | None:
    """`arm_stats` of one metric over the runs (seeds) that have it; None when none has."""
    scores = [{metric: float(r[metric])} for r in rows
              if isinstance(r.get(metric), (int, float)) and not isinstance(r.get(metric), bool)]
    return arm_stats(scores, metric) if scores else None


def group_runs(rows: list[dict]) -> dict[float, dict[str, list[dict]]]:
    """fraction -> method -> its runs (one a seed)."""
    groups: dict[float, dict[str, list[dict]]] = {}
    for row in rows:
        groups.setdefault(float(row["labeled_fraction"]), {}).setdefault(row["method"], []).append(row)
    return groups


def _cell(stats: Stats | None, digits: int = 3) -> str:
    return "–" if stats is None else f"{stats_cell(stats, digits)} ({stats[2]})"


def _values(runs: list[dict], key: str) -> str:
    """The distinct values of `key` over the runs, e.g. '75' or '471/472'."""
    values = sorted({r[key] for r in runs if r.get(key) not in ("", None)})
    return "/".join(f"{v:g}" if isinstance(v, float) else str(v) for v in values) or "–"


def delta_cell(gan: Stats | None, base: Stats | None) -> str:
    """A GAN method's mean minus the baseline's, `*` where it exceeds seed noise (`summarize.difference`)."""
    return "–" if gan is None or base is None else difference(gan, base, digits=3)


def markdown_table(rows: list[dict]) -> str:
    """One line a labeled fraction: each method's dev accuracy over seeds, each GAN method's difference to
    each baseline and its mode-collapse checks (class fidelity, diversity fake/real)."""
    present = {r["method"] for r in rows}
    methods = [m for m in METHODS if m in present]
    gans = [m for m in GAN_METHODS if m in present]
    baselines = [m for m in BASELINES if m in present]
    label = {m: METHODS[m][2] for m in METHODS}
    header = ["labeled fraction", "labeled examples", "steps (epochs)"]
    header += [f"{label[m]} dev acc" for m in methods]
    header += [f"Δ {label[m]} − {b.replace('_', ' ')}" for b in baselines for m in gans]
    header += [f"{label[m]} {what}" for m in gans for what in ("class fidelity", "diversity fake/real")]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for fraction, by_method in sorted(group_runs(rows).items()):
        runs = [r for m in methods for r in by_method.get(m, [])]
        acc = {m: metric_stats(by_method.get(m, []), "dev_accuracy") for m in methods}
        cells = [f"{fraction:g}", _values(runs, "labeled_examples"),
                 f"{_values(runs, 'steps')} ({_values(runs, 'epochs')})"]
        cells += [_cell(acc[m]) for m in methods]
        cells += [delta_cell(acc[m], acc[b]) for b in baselines for m in gans]
        cells += [_cell(metric_stats(by_method.get(m, []), metric), digits) for m in gans
                  for metric, digits in (("class_fidelity", 3), ("diversity_ratio", 2))]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _errorbar_lines(ax, rows: list[dict], methods: Sequence[str], metric: str) -> None:
    """On `ax`: `metric`'s mean against labeled fraction, one line a method, error bars one std over seeds."""
    groups = group_runs(rows)
    for method in methods:
        points = [(fraction, stats) for fraction, by_method in sorted(groups.items())
                  if (stats := metric_stats(by_method.get(method, []), metric)) is not None]
        if points:
            ax.errorbar([f for f, _ in points], [s[0] for _, s in points], yerr=[s[1] for _, s in points],
                        marker="o", capsize=3, label=METHODS[method][2])
    ax.set_xscale("log")
    ax.set_xlabel("labeled fraction of the training set")
    ax.grid(alpha=0.3)
    ax.legend()


def _save(fig, path: str) -> str:
    fig.tight_layout()
    save_figure(fig, path, dpi=110)
    import matplotlib.pyplot as plt

    plt.close(fig)
    return path


def plot_accuracy(rows: list[dict], path: str) -> str:
    """Mean dev accuracy against labeled fraction (log x), one line a method, error bars one standard
    deviation over seeds."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    _errorbar_lines(ax, rows, list(METHODS), "dev_accuracy")
    ax.set(ylabel="dev accuracy (mean ± std over seeds)", title="dev accuracy vs labels")
    return _save(fig, path)


def plot_checks(rows: list[dict], path: str) -> str:
    """The GAN methods' mode-collapse checks against labeled fraction: class fidelity (with chance, 1/K, and
    the probe's accuracy on held-out real rows for reference) and diversity fake/real."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (fidelity, spread) = plt.subplots(1, 2, figsize=(11, 4))
    _errorbar_lines(fidelity, rows, GAN_METHODS, "class_fidelity")
    probe = [(float(r["labeled_fraction"]), float(r["probe_real_accuracy"])) for r in rows
             if isinstance(r.get("probe_real_accuracy"), float)]
    if probe:
        fractions = sorted({f for f, _ in probe})
        fidelity.plot(fractions, [np.mean([a for f, a in probe if f == x]) for x in fractions], "k:",
                      label="probe on held-out real rows")
        fidelity.legend()
    fidelity.set(ylabel="class fidelity (mean ± std over seeds)", title="fakes given their conditioning class")
    _errorbar_lines(spread, rows, GAN_METHODS, "diversity_ratio")
    spread.axhline(1.0, color="gray", lw=0.8)
    spread.set(ylabel="diversity fake / real (mean ± std over seeds)", title="spread of fakes within a class")
    return _save(fig, path)


P_REAL = {"real": "train/d/p_real_on_real", "fake": "train/d/p_real_on_fake"}  # D's mean p(real) a logged step


def p_real_curves(runs: list[dict]) -> dict[str, tuple[np.ndarray, np.ndarray]] | None:
    """{'real' | 'fake': (steps, D's p(real) at each, the mean over the runs)} at the steps every run logged;
    None when no run has a metrics.jsonl with them."""
    from jaxmt.plot import read_metrics

    logged = [read_metrics(r["workdir"]) for r in runs if epath.Path(r["workdir"], "metrics.jsonl").exists()]
    per_run = [{row["step"]: row for row in rows if all(k in row for k in P_REAL.values())} for rows in logged]
    per_run = [by_step for by_step in per_run if by_step]
    if not per_run:
        return None
    steps = np.array(sorted(set.intersection(*(set(by_step) for by_step in per_run))))
    return {side: (steps, np.array([np.mean([by_step[s][key] for by_step in per_run]) for s in steps]))
            for side, key in P_REAL.items()}


def plot_p_real(rows: list[dict], path: str) -> str:
    """D's mean p(real) on the real rows (solid) and on the fakes (dashed) of a batch against the training step,
    a panel a labeled fraction, a colour a GAN method, the mean over its seeds: whether D plays the real-vs-fake
    game or gives it up (both near 1)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    groups = sorted(group_runs(rows).items())
    fig, axes = plt.subplots(1, len(groups), figsize=(4 * len(groups), 3.6), squeeze=False, sharey=True)
    for ax, (fraction, by_method) in zip(axes[0], groups):
        for i, method in enumerate(GAN_METHODS):
            curves = p_real_curves(by_method.get(method, []))
            if curves is None:
                continue
            seeds = len(by_method[method])
            for side, style in (("real", "-"), ("fake", "--")):
                ax.plot(*curves[side], style, marker=".", markersize=4, color=f"C{i}",
                        label=f"{METHODS[method][2]}, {side} rows ({seeds})")
        ax.set(title=f"labeled fraction {fraction:g}", xlabel="step", ylim=(0, 1.02))
        ax.grid(alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=7)
    axes[0, 0].set_ylabel("D's mean p(real) (mean over seeds)")
    return _save(fig, path)


def pca_montages(rows: list[dict], workdir: str) -> dict[str, str]:
    """DIR/pca_METHOD.png for each GAN method: its runs' PCA plots side by side, a row a labeled fraction and a
    column a seed, so that what varies with labels and what with the seed can be seen at once."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    written = {}
    groups = group_runs(rows)
    for method in GAN_METHODS:
        grid = {(fraction, r["seed"]): png for fraction, by_method in groups.items()
                for r in by_method.get(method, []) if (png := epath.Path(r["workdir"], "pca.png")).exists()}
        if not grid:
            continue
        fractions, seeds = sorted({f for f, _ in grid}), sorted({s for _, s in grid})
        fig, axes = plt.subplots(len(fractions), len(seeds), figsize=(3.2 * len(seeds), 2.7 * len(fractions)),
                                 squeeze=False)
        for i, fraction in enumerate(fractions):
            for j, seed in enumerate(seeds):
                ax = axes[i, j]
                ax.axis("off")
                if (fraction, seed) in grid:
                    ax.imshow(plt.imread(io.BytesIO(grid[fraction, seed].read_bytes()), format="png"))
                    ax.set_title(f"fraction {fraction:g}, seed {seed}", fontsize=8)
        fig.suptitle(f"{METHODS[method][2]}: real (o) and generated (x) dev embeddings, first two PCs of the real")
        written[f"pca_montage/{method}"] = _save(fig, os.path.join(workdir, f"pca_{method}.png"))
    return written


def plot_pca_seeds(rows: list[dict], workdir: str) -> dict[str, str]:
    """DIR/fraction_F/METHOD/pca_seeds.png for each GAN method and fraction whose runs saved their PCA points
    (`collapse.pca_seeds_plot`); {'pca_seeds/F/METHOD': path}."""
    from jaxmt.gan.collapse import pca_seeds_plot

    written = {}
    for fraction, by_method in sorted(group_runs(rows).items()):
        for method in GAN_METHODS:
            runs = sorted(by_method.get(method, []), key=lambda r: r["seed"])
            npz = [p for r in runs if epath.Path(p := os.path.join(r["workdir"], "pca.npz")).exists()]
            if not npz:
                continue
            with epath.Path(npz[0]).open("rb") as f, np.load(f) as first:
                num_classes = int(max(first["real_y"].max(), first["fake_y"].max())) + 1
            path = os.path.join(os.path.dirname(runs[0]["workdir"]), "pca_seeds.png")
            title = f"{METHODS[method][2]}, fraction {fraction:g}: class centroids over {len(npz)} seed(s)"
            written[f"pca_seeds/{fraction:g}/{method}"] = pca_seeds_plot(npz, num_classes, path, title)
    return written
