"""Mode-collapse checks of a conditional generator, against real embeddings of the same classes.

(a) class fidelity: a logistic-regression probe trained on real embeddings labels the fakes; the
    share labeled as their conditioning class (compare with the probe's accuracy on held-out real ones).
(b) diversity: mean pairwise distance of the fakes of each class, over that of the real ones; a
    collapsed generator (one output per class, whatever the noise) gives a ratio near 0.
(c) a 2-D PCA plot of real and fake embeddings coloured by class; the 2-D points are kept (pca.npz) so
    that several seeds' runs can be drawn together (`pca_seeds_plot`: class centroids with error bars).
Files are read and written through etils.epath, so a run's workdir may be gs://... too.
"""

from __future__ import annotations

import io
import os

import numpy as np
from etils import epath

from jaxmt.paths import save_figure
from jaxmt.probing.classifier import fit_logistic_probe


def class_fidelity(real_x: np.ndarray, real_y: np.ndarray, fake_x: np.ndarray, fake_y: np.ndarray,
                   num_classes: int) -> dict[str, float]:
    """Probe fit on half the real rows: its accuracy on the other half, and on the fakes (= fidelity)."""
    fit = np.arange(len(real_x)) % 2 == 0
    probe = fit_logistic_probe(real_x[fit], real_y[fit])
    return {"probe_real_accuracy": float(np.mean(probe.predict(real_x[~fit]) == real_y[~fit])),
            "class_fidelity": float(np.mean(probe.predict(fake_x) == fake_y))}


def mean_pairwise_distance(x: np.ndarray) -> float:
    """Mean Euclidean distance over all pairs i < j (0 for fewer than two rows)."""
    x = np.asarray(x, np.float64)
    if len(x) < 2:
        return 0.0
    sq = np.sum(x * x, axis=1)
    d2 = np.maximum(sq[:, None] + sq[None, :] - 2.0 * x @ x.T, 0.0)
    iu = np.triu_indices(len(x), k=1)
    return float(np.mean(np.sqrt(d2[iu])))


def diversity(real_x: np.ndarray, real_y: np.ndarray, fake_x: np.ndarray, fake_y: np.ndarray,
              num_classes: int) -> dict[str, float]:
    """Per class c: real and fake mean pairwise distances; `diversity_ratio` = mean over classes of fake/real."""
    out, ratios = {}, []
    for c in range(num_classes):
        real_d = mean_pairwise_distance(real_x[real_y == c])
        fake_d = mean_pairwise_distance(fake_x[fake_y == c])
        out[f"diversity_real/{c}"], out[f"diversity_fake/{c}"] = real_d, fake_d
        if real_d > 0:
            ratios.append(fake_d / real_d)
    out["diversity_ratio"] = float(np.mean(ratios)) if ratios else 0.0
    out["diversity_ratio_min"] = float(np.min(ratios)) if ratios else 0.0
    return out


def pca_projection(real_x: np.ndarray, fake_x: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Real and fake rows on the first two principal components of the real ones, and the share of the real
    variance each component explains."""
    mean = real_x.mean(0)
    _, singular, vt = np.linalg.svd(real_x - mean, full_matrices=False)
    project = lambda x: (x - mean) @ vt[:2].T  # noqa: E731
    return project(real_x), project(fake_x), (singular[:2] ** 2) / np.sum(singular ** 2)


def pca_plot(real_x: np.ndarray, real_y: np.ndarray, fake_x: np.ndarray, fake_y: np.ndarray, num_classes: int,
             path: str, title: str = "") -> str:
    """Real (dots) and fake (crosses) embeddings on the first two principal components of the real ones;
    the projected points are saved beside the PNG (same name, .npz) for `pca_seeds_plot`."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    real_2d, fake_2d, explained = pca_projection(real_x, fake_x)
    points = io.BytesIO()  # in memory: zipfile seeks back in what it writes, which an object store's upload cannot
    np.savez_compressed(points, real_2d=real_2d.astype(np.float32), real_y=real_y,
                        fake_2d=fake_2d.astype(np.float32), fake_y=fake_y, explained=explained)
    epath.Path(os.path.splitext(path)[0] + ".npz").write_bytes(points.getvalue())
    colors = plt.get_cmap("viridis")(np.linspace(0, 1, num_classes))
    fig, ax = plt.subplots(figsize=(6, 5))
    for c in range(num_classes):
        ax.scatter(*real_2d[real_y == c].T, s=8, color=colors[c], alpha=0.5, label=f"real {c}")
        ax.scatter(*fake_2d[fake_y == c].T, s=14, color=colors[c], marker="x", alpha=0.8, label=f"fake {c}")
    ax.set(xlabel="PC 1 (of real)", ylabel="PC 2 (of real)", title=title or "real (o) vs generated (x) embeddings")
    ax.legend(fontsize=7, ncol=2)
    fig.tight_layout()
    save_figure(fig, path, dpi=110)
    plt.close(fig)
    return path


def class_centroids(points_2d: np.ndarray, labels: np.ndarray, num_classes: int) -> np.ndarray:
    """[K, 2] mean of each class's points (NaN for a class without points)."""
    return np.stack([points_2d[labels == c].mean(0) if np.any(labels == c) else np.full(2, np.nan)
                     for c in range(num_classes)])


def aligned_centroids(npz_paths: list[str], num_classes: int) -> tuple[np.ndarray, np.ndarray]:
    """Real and fake class centroids [S, K, 2] of several runs (seeds), each run's axes flipped to agree
    with the first run's.

    Each seed fine-tunes its own encoder, so its principal components are its own; a component's sign is
    arbitrary, and is chosen per run so that its real class centroids correlate positively with the first
    run's on that axis. Then the spread over seeds of a centroid is what differs between seeds, not a sign."""
    real, fake = [], []
    for path in npz_paths:
        with epath.Path(path).open("rb") as f, np.load(f) as run:
            real.append(class_centroids(run["real_2d"], run["real_y"], num_classes))
            fake.append(class_centroids(run["fake_2d"], run["fake_y"], num_classes))
    real, fake = np.stack(real), np.stack(fake)
    signs = np.where(np.nansum(real * real[:1], axis=1) < 0, -1.0, 1.0)  # [S, 2]
    return real * signs[:, None, :], fake * signs[:, None, :]


def pca_seeds_plot(npz_paths: list[str], num_classes: int, path: str, title: str = "") -> str:
    """Class centroids of real (circles) and fake (crosses) embeddings over several seeds' runs, each on its
    run's own first two principal components (signs aligned), error bars one standard deviation over seeds;
    a line joins each class's real and fake centroid, so class fidelity reads as short lines."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    real, fake = aligned_centroids(npz_paths, num_classes)
    colors = plt.get_cmap("viridis")(np.linspace(0, 1, num_classes))
    fig, ax = plt.subplots(figsize=(6, 5))
    for c in range(num_classes):
        for centroids, marker, kind in ((real, "o", "real"), (fake, "x", "fake")):
            mean = centroids[:, c].mean(0)
            std = centroids[:, c].std(0, ddof=1) if len(centroids) > 1 else np.zeros(2)
            ax.errorbar(mean[0], mean[1], xerr=std[0], yerr=std[1], marker=marker, ms=8, capsize=3,
                        color=colors[c], label=f"{kind} {c}")
        ax.plot(*np.stack([real[:, c].mean(0), fake[:, c].mean(0)]).T, color=colors[c], lw=0.8, alpha=0.6)
    ax.set(xlabel="PC 1 (of each run's real embeddings)", ylabel="PC 2 (error bars: std over seeds)")
    ax.set_title(title or f"class centroids over {len(npz_paths)} seeds", fontsize=10)
    ax.legend(fontsize=7, ncol=2)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    save_figure(fig, path, dpi=110)
    plt.close(fig)
    return path


def collapse_report(real_x: np.ndarray, real_y: np.ndarray, fake_x: np.ndarray, fake_y: np.ndarray,
                    num_classes: int, png_path: str | None = None, title: str = "") -> dict[str, float]:
    """(a) and (b) as scalars; (c) written to `png_path` when given."""
    real_x, fake_x = np.asarray(real_x, np.float32), np.asarray(fake_x, np.float32)
    real_y, fake_y = np.asarray(real_y), np.asarray(fake_y)
    report = class_fidelity(real_x, real_y, fake_x, fake_y, num_classes)
    report.update(diversity(real_x, real_y, fake_x, fake_y, num_classes))
    if png_path:
        pca_plot(real_x, real_y, fake_x, fake_y, num_classes, png_path, title)
    return report
