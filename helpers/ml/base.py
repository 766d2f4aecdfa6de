"""What every estimator in `helpers.ml` shares: input checks and the fitted-or-not guard.

The API mirrors scikit-learn (`fit` returns self, `predict`, `score`) so each model can be put
side by side with its scikit-learn counterpart on the same data.
"""
from __future__ import annotations

import numpy as np


class NotFittedError(ValueError):
    """`predict` (or `transform`) called before `fit`."""


def check_X(X, n_features: int | None = None) -> np.ndarray:
    """X as a finite float64 (n, d) array; `n_features` enforces the width seen in `fit`."""
    X = np.asarray(X, dtype=np.float64)
    if X.ndim != 2:
        raise ValueError(f"X must be 2-D (n_samples, n_features), got shape {X.shape}")
    if X.shape[0] == 0:
        raise ValueError("X has no samples")
    if not np.all(np.isfinite(X)):
        raise ValueError("X contains NaN or inf")
    if n_features is not None and X.shape[1] != n_features:
        raise ValueError(f"X has {X.shape[1]} features, the model was fit on {n_features}")
    return X


def check_X_y(X, y) -> tuple[np.ndarray, np.ndarray]:
    """(X, y) with matching lengths; y must be 1-D."""
    X = check_X(X)
    y = np.asarray(y)
    if y.ndim != 1:
        raise ValueError(f"y must be 1-D (n_samples,), got shape {y.shape}")
    if len(y) != len(X):
        raise ValueError(f"X has {len(X)} samples but y has {len(y)}")
    return X, y


def check_choice(name: str, value, choices) -> None:
    """Raise a ValueError naming the bad value and the accepted ones."""
    if value not in choices:
        raise ValueError(f"unknown {name} {value!r}; expected one of {sorted(choices)}")


class Estimator:
    """Base class: `_fitted_attr` is set by `fit`; `_check_fitted` guards `predict`."""

    _fitted_attr = "n_features_in_"

    def _check_fitted(self) -> None:
        if not hasattr(self, self._fitted_attr):
            raise NotFittedError(f"{type(self).__name__} is not fitted yet; call fit(X, y) first")

    def get_params(self) -> dict:
        """Constructor arguments (used by `GridSearchCV` to clone a model)."""
        import inspect

        names = inspect.signature(type(self).__init__).parameters
        return {k: getattr(self, k) for k in names if k != "self"}

    def set_params(self, **params):
        valid = self.get_params()
        for k, v in params.items():
            if k not in valid:
                raise ValueError(f"{type(self).__name__} has no parameter {k!r}; have {sorted(valid)}")
            setattr(self, k, v)
        return self

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.get_params().items())
        return f"{type(self).__name__}({args})"


class Classifier(Estimator):
    """Classifiers map labels to 0..K-1 internally and back in `predict`."""

    def _encode(self, y: np.ndarray) -> np.ndarray:
        self.classes_, y_idx = np.unique(y, return_inverse=True)
        return y_idx

    def score(self, X, y) -> float:
        """Accuracy on (X, y)."""
        return float(np.mean(self.predict(X) == np.asarray(y)))
