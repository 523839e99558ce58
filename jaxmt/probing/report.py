"""Probing results as a layer x task table (CSV and Markdown) and side-by-side heat maps (PNG), written to any
`etils.epath` folder (gs://... too)."""

from __future__ import annotations

import csv
import io
import os
from collections.abc import Sequence

import numpy as np
from etils import epath

from jaxmt.paths import save_figure

Results = dict[str, dict[str, np.ndarray]]  # model -> task -> per-layer accuracy [layers]


def layer_names(num_layers: int) -> list[str]:
    return ["embeddings"] + [f"layer {i}" for i in range(1, num_layers)]


def write_csv(path: str, results: Results, chance: dict[str, float]) -> None:
    """Long format: one row per (model, layer, task), plus each task's majority-class accuracy."""
    with io.StringIO(newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["model", "layer", "layer_name", "task", "accuracy"])
        for model, by_task in results.items():
            for task, accs in by_task.items():
                for layer, (name, acc) in enumerate(zip(layer_names(len(accs)), accs)):
                    writer.writerow([model, layer, name, task, f"{float(acc):.4f}"])
        for task, acc in chance.items():
            writer.writerow(["majority", "", "", task, f"{acc:.4f}"])
        epath.Path(path).write_bytes(f.getvalue().encode())  # bytes: the csv module's \r\n kept as written


def markdown_table(results: Results, chance: dict[str, float]) -> str:
    """One table per model (layers as rows, tasks as columns, each column's best layer in bold)."""
    parts = []
    for model, by_task in results.items():
        tasks = list(by_task)
        n = max(len(a) for a in by_task.values())
        parts.append(f"### {model}\n")
        parts.append("| layer | " + " | ".join(tasks) + " |")
        parts.append("|---|" + "---:|" * len(tasks))
        best = {t: int(np.argmax(by_task[t])) for t in tasks}
        for layer, name in enumerate(layer_names(n)):
            cells = []
            for t in tasks:
                text = f"{100 * float(by_task[t][layer]):.1f}"
                cells.append(f"**{text}**" if layer == best[t] else text)
            parts.append(f"| {name} | " + " | ".join(cells) + " |")
        parts.append("| majority class | " + " | ".join(f"{100 * chance[t]:.1f}" for t in tasks) + " |\n")
    return "\n".join(parts)


def plot_heatmaps(path: str, results: Results, tasks: Sequence[str] | None = None) -> None:
    """One heat map per model, side by side, on one colour scale, each cell labelled with its accuracy."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    models = list(results)
    tasks = list(tasks or next(iter(results.values())))
    grids = [np.asarray([results[m][t] for t in tasks]).T * 100 for m in models]  # [layers, tasks]
    lo, hi = min(g.min() for g in grids), max(g.max() for g in grids)
    fig, axes = plt.subplots(1, len(models), figsize=(1.0 + 1.6 * len(tasks) * len(models), 1.2 + 0.45 * max(
        g.shape[0] for g in grids)), squeeze=False)
    for ax, model, grid in zip(axes[0], models, grids):
        image = ax.imshow(grid, cmap="viridis", vmin=lo, vmax=hi, aspect="auto")
        ax.set_title(model)
        ax.set_xticks(range(len(tasks)), [t.replace("_", "\n") for t in tasks], fontsize=8)
        ax.set_yticks(range(grid.shape[0]), layer_names(grid.shape[0]), fontsize=8)
        for (r, c), value in np.ndenumerate(grid):
            ax.text(c, r, f"{value:.0f}", ha="center", va="center", fontsize=7,
                    color="white" if value < (lo + hi) / 2 else "black")
    fig.colorbar(image, ax=axes[0].tolist(), label="test accuracy (%)")
    save_figure(fig, path, dpi=120, bbox_inches="tight")
    plt.close(fig)


def write_report(out_dir: str, results: Results, chance: dict[str, float], sizes: dict[str, dict[str, int]],
                 footer: str = "") -> dict:
    """results.csv, results.md (`footer` after the tables) and heatmap.png in `out_dir`; returns their paths."""
    epath.Path(out_dir).mkdir(parents=True, exist_ok=True)
    paths = {k: os.path.join(out_dir, name) for k, name in (("csv", "results.csv"), ("markdown", "results.md"),
                                                           ("heatmap", "heatmap.png"))}
    write_csv(paths["csv"], results, chance)
    sizes_line = ", ".join(f"{t}: {s['train']} train / {s['test']} test, {s['classes']} classes"
                           for t, s in sizes.items())
    epath.Path(paths["markdown"]).write_text(
        f"## Probing accuracy (%) by layer\n\nExamples: {sizes_line}.\n\n{markdown_table(results, chance)}{footer}")
    plot_heatmaps(paths["heatmap"], results)
    return paths
