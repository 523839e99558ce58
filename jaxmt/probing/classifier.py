"""The linear probe every jaxmt diagnostic uses: scikit-learn's multinomial logistic regression on
standardised features, for the per-layer probing tasks and the GAN's class-fidelity check."""

from __future__ import annotations

import numpy as np
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline, make_pipeline
from sklearn.preprocessing import StandardScaler


def fit_logistic_probe(x: np.ndarray, y: np.ndarray, l2: float = 1e-3, max_iter: int = 300) -> Pipeline:
    """Fits StandardScaler + L2-regularised softmax regression (L-BFGS) on features [N, H] and labels [N].

    `l2` is the penalty on the weights per example (mean cross-entropy + l2 * ||w||^2), i.e. sklearn's
    C = 1 / (2 * l2 * N), so the strength does not depend on the training-set size.
    """
    x = np.asarray(x, np.float64)
    c = 1.0 / (2.0 * l2 * len(x))
    return make_pipeline(StandardScaler(), LogisticRegression(C=c, max_iter=max_iter)).fit(x, np.asarray(y))
