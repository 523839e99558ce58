"""Command line: python -m jaxmt.plot --workdir=DIR [--out=FILE.png]

Draws what a run logged over training: per-task losses, and, for PCGrad runs, the pairwise
cosine similarity of the task gradients and the number of conflicting pairs per step.
"""

from __future__ import annotations

import json
import os

from absl import app, flags
from etils import epath

from jaxmt.cli import check_output_dir, parse_flags
from jaxmt.paths import absolute, save_figure


def read_metrics(workdir: str) -> list[dict]:
    """The rows of WORKDIR/metrics.jsonl; a missing, empty or garbled file is a one-line DataError."""
    from jaxmt.data.errors import DataError, location

    path = epath.Path(workdir) / "metrics.jsonl"
    if not path.exists():
        raise FileNotFoundError(f"{path}: not found; is {workdir} a jaxmt training workdir?")
    rows = []
    with path.open() as f:
        for number, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as err:
                raise DataError(f"{location(path, number)}: not a JSON object ({err.msg})") from None
            if not isinstance(row, dict) or "step" not in row:
                raise DataError(f"{location(path, number)}: expected a JSON object with a 'step'")
            rows.append(row)
    if not rows:
        raise DataError(f"{path}: no metrics logged yet; plot once the run has logged a step")
    return rows


def series(rows: list[dict], prefix: str) -> dict[str, tuple[list[int], list[float]]]:
    """{metric name: (steps, values)} of every metric starting with `prefix`."""
    out: dict[str, tuple[list[int], list[float]]] = {}
    for row in rows:
        for key, value in row.items():
            if key.startswith(prefix):
                steps, values = out.setdefault(key[len(prefix):], ([], []))
                steps.append(row["step"])
                values.append(value)
    return out


def plot_run(workdir: str, out: str | None = None) -> str:
    """Writes the PNG and returns its path (default WORKDIR/training.png)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = read_metrics(workdir)
    losses = series(rows, "train/loss/")
    cosines = series(rows, "train/pcgrad/cos/")
    conflicts = series(rows, "train/pcgrad/conflicts")
    panels = 1 + bool(cosines)
    fig, axes = plt.subplots(1, panels, figsize=(6 * panels, 4), squeeze=False)
    ax = axes[0, 0]
    for name, (steps, values) in sorted(losses.items()):
        ax.plot(steps, values, label=name)
    ax.set(title="training loss by task", xlabel="step", ylabel="loss")
    ax.legend()
    if cosines:
        ax = axes[0, 1]
        for name, (steps, values) in sorted(cosines.items()):
            ax.plot(steps, values, label=f"cos({name.replace('-', ', ')})")
        ax.axhline(0.0, color="gray", lw=0.8)
        ax.set(title="PCGrad: task-gradient cosine", xlabel="step", ylabel="cosine similarity")
        if conflicts:
            twin = ax.twinx()
            steps, values = conflicts[""]
            twin.step(steps, values, where="post", color="black", alpha=0.3, label="conflicting pairs")
            twin.set_ylabel("conflicting pairs (ordered)")
            twin.legend(loc="lower right")
        ax.legend(loc="upper right")
    fig.suptitle(os.path.basename(absolute(workdir).rstrip("/")))
    fig.tight_layout()
    out = save_figure(fig, out or os.fspath(epath.Path(workdir) / "training.png"), format="png", dpi=110)
    plt.close(fig)
    return out


def define_flags() -> None:
    flags.DEFINE_string("workdir", None, "A training workdir (holds metrics.jsonl).", required=True)
    flags.DEFINE_string("out", None, "Output PNG (default: WORKDIR/training.png).")


def main(argv: list[str]) -> None:
    del argv
    from jaxmt.training.faults import user_facing_errors

    with user_facing_errors():
        if flags.FLAGS.out:
            check_output_dir(os.path.dirname(flags.FLAGS.out) or ".", "--out")
        print(plot_run(flags.FLAGS.workdir, flags.FLAGS.out))


def run() -> None:
    """The `jaxmt-plot` console script (and `python -m jaxmt.plot`)."""
    define_flags()
    app.run(main, flags_parser=parse_flags)


if __name__ == "__main__":
    run()
