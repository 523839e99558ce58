"""The labeled-fraction sweep behind `python -m jaxmt.sweep`.

For each labeled fraction, trains AC-GAN-BERT and the plain fine-tuned baseline on the same
labeled subset (same seed, steps, batch size, optimizer, dev set), and writes DIR/results.csv,
DIR/results.md (table) and DIR/accuracy.png (dev accuracy against labeled fraction), plus each GAN
run's mode-collapse checks (columns of the table; PCA plot in DIR/fraction_F/acgan/pca.png).
A run whose results.json exists is not trained again, so a killed sweep picks up where it stopped.
"""

from __future__ import annotations

import csv
import dataclasses
import json
import logging
import os

from ml_collections import ConfigDict

from jaxmt.errors import ConfigError

COLUMNS = ("labeled_fraction", "labeled_examples", "method", "dev_accuracy", "steps", "batch_size",
           "train_seconds", "seconds_per_step", "class_fidelity", "probe_real_accuracy", "diversity_ratio",
           "diversity_ratio_min", "workdir")


def run_dir(workdir: str, fraction: float, method: str) -> str:
    return os.path.join(workdir, f"fraction_{fraction:g}", method)


def result_row(results: dict, workdir: str) -> dict:
    collapse = results.get("collapse", {})
    row = {k: results.get(k, collapse.get(k, "")) for k in COLUMNS}
    row["workdir"] = workdir
    return row


def run_sweep(config: ConfigDict, workdir: str, fractions: list[float], methods: tuple[str, ...]) -> list[dict]:
    """Trains every (fraction, method) not yet done; returns one row a run (see COLUMNS)."""
    from jaxmt.gan.baseline import train_baseline
    from jaxmt.gan.build import check_gan_config, load_gan_data
    from jaxmt.gan.semi_supervised import stratified_labeled_subset
    from jaxmt.gan.trainer import train_gan

    check_gan_config(config)
    if not fractions:
        raise ConfigError("--fractions is empty: give at least one labeled fraction, e.g. 0.05,0.2,1.0")
    trainers = {"acgan": train_gan, "baseline": train_baseline}
    unknown = [m for m in methods if m not in trainers]
    if unknown:
        raise ConfigError(f"--methods: unknown {unknown}; expected a subset of {sorted(trainers)}")
    data = None
    rows = []
    for fraction in fractions:
        for method in methods:
            out = run_dir(workdir, fraction, method)
            done = os.path.join(out, "results.json")
            if os.path.exists(done):
                with open(done) as f:
                    rows.append(result_row(json.load(f), out))
                continue
            run_config = config.copy_and_resolve_references()
            run_config.gan.labeled_fraction = fraction
            run_config.gan.method = method
            run_config.gan.save_checkpoints = False
            check_gan_config(run_config)
            data = data or load_gan_data(run_config)  # tokenized once; only the labeled subset changes
            run_data = dataclasses.replace(
                data, labeled=stratified_labeled_subset(data.train.data.labels, fraction, config.seed))
            logging.getLogger(__name__).info("sweep: fraction %g, %s, %d labeled", fraction, method,
                                             len(run_data.labeled))
            rows.append(result_row(trainers[method](run_config, out, run_data), out))
    write_table(rows, workdir)
    return rows


def write_table(rows: list[dict], workdir: str) -> dict[str, str]:
    """results.csv (one row a run), results.md (one row a fraction) and accuracy.png; returns their paths."""
    os.makedirs(workdir, exist_ok=True)
    paths = {"csv": os.path.join(workdir, "results.csv"), "md": os.path.join(workdir, "results.md"),
             "png": os.path.join(workdir, "accuracy.png")}
    with open(paths["csv"], "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=COLUMNS)
        writer.writeheader()
        writer.writerows(rows)
    with open(paths["md"], "w") as f:
        f.write(markdown_table(rows) + "\n")
    plot_accuracy(rows, paths["png"])
    return paths


def _fmt(value, digits: int = 3) -> str:
    return f"{value:.{digits}f}" if isinstance(value, float) else ("–" if value in ("", None) else str(value))


def markdown_table(rows: list[dict]) -> str:
    """One line a labeled fraction: both methods' dev accuracy and the GAN's mode-collapse checks."""
    by_fraction: dict[float, dict[str, dict]] = {}
    for row in rows:
        by_fraction.setdefault(float(row["labeled_fraction"]), {})[row["method"]] = row
    lines = ["| labeled fraction | labeled examples | baseline dev acc | AC-GAN-BERT dev acc | Δ (GAN − base) | "
             "class fidelity (probe on real) | diversity fake/real (min class) | steps | time baseline / GAN (s) |",
             "|---|---|---|---|---|---|---|---|---|"]
    for fraction in sorted(by_fraction):
        base, gan = by_fraction[fraction].get("baseline", {}), by_fraction[fraction].get("acgan", {})
        any_row = gan or base
        b, g = base.get("dev_accuracy"), gan.get("dev_accuracy")
        delta = f"{g - b:+.3f}" if isinstance(b, float) and isinstance(g, float) else "–"
        lines.append(
            f"| {fraction:g} | {any_row.get('labeled_examples', '–')} | {_fmt(b)} | {_fmt(g)} | {delta} | "
            f"{_fmt(gan.get('class_fidelity'))} ({_fmt(gan.get('probe_real_accuracy'))}) | "
            f"{_fmt(gan.get('diversity_ratio'), 2)} ({_fmt(gan.get('diversity_ratio_min'), 2)}) | "
            f"{any_row.get('steps', '–')} | "
            f"{_fmt(base.get('train_seconds'), 0)} / {_fmt(gan.get('train_seconds'), 0)} |")
    return "\n".join(lines)


def plot_accuracy(rows: list[dict], path: str) -> str:
    """Dev accuracy against labeled fraction (log x), one line a method."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    for method, label in (("baseline", "fine-tuned baseline"), ("acgan", "AC-GAN-BERT")):
        points = sorted((float(r["labeled_fraction"]), float(r["dev_accuracy"])) for r in rows if r["method"] == method)
        if points:
            ax.plot(*zip(*points), marker="o", label=label)
    ax.set_xscale("log")
    ax.set(xlabel="labeled fraction of the training set", ylabel="dev accuracy", title="dev accuracy vs labels")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
