"""Our models vs scikit-learn on Iris, Wine and Breast Cancer: same folds, same standardization.

`compare()` returns one row per (dataset, model) with pooled out-of-fold accuracy and total fit
time of both; `run()` turns fit times into `make bench` rows. scikit-learn is the reference here
only; the library itself is numpy.
"""
from __future__ import annotations

import time

import numpy as np

from .linear import LogisticRegression
from .model_selection import StratifiedKFold
from .naive_bayes import GaussianNB
from .preprocessing import StandardScaler
from .svm import SVC
from .tree import DecisionTreeClassifier

DATASETS = ("iris", "wine", "breast_cancer")
MODELS = ("logreg", "svm_linear", "svm_poly", "svm_rbf", "tree", "tree_entropy", "gnb")


def load(name: str):
    """(X, y) of a dataset bundled with scikit-learn (no download)."""
    import sklearn.datasets as ds

    loaders = {"iris": ds.load_iris, "wine": ds.load_wine, "breast_cancer": ds.load_breast_cancer}
    if name not in loaders:
        raise ValueError(f"unknown dataset {name!r}; expected one of {sorted(loaders)}")
    return loaders[name](return_X_y=True)


def pair(model: str):
    """(ours, scikit-learn's) unfitted, with the same hyperparameters."""
    from sklearn import linear_model, naive_bayes, svm, tree

    pairs = {
        "logreg": (lambda: LogisticRegression(C=1.0),
                   lambda: linear_model.LogisticRegression(C=1.0, max_iter=5000)),
        "gnb": (GaussianNB, naive_bayes.GaussianNB),
        "tree": (lambda: DecisionTreeClassifier("gini"),
                 lambda: tree.DecisionTreeClassifier(criterion="gini", random_state=0)),
        "tree_entropy": (lambda: DecisionTreeClassifier("entropy"),
                         lambda: tree.DecisionTreeClassifier(criterion="entropy", random_state=0)),
    }
    for k in ("linear", "poly", "rbf"):
        pairs[f"svm_{k}"] = (lambda k=k: SVC(C=1.0, kernel=k), lambda k=k: svm.SVC(C=1.0, kernel=k))
    if model not in pairs:
        raise ValueError(f"unknown model {model!r}; expected one of {sorted(pairs)}")
    ours, ref = pairs[model]
    return ours(), ref()


def compare(datasets=DATASETS, models=MODELS, n_splits: int = 5, seed: int = 0, progress=None) -> list[dict]:
    """Stratified k-fold (our splitter, the same folds for both sides); features standardized on each
    training fold. Accuracy is pooled over all held-out predictions; fit time summed over folds."""
    rows = []
    for name in datasets:
        X, y = load(name)
        folds = list(StratifiedKFold(n_splits, shuffle=True, seed=seed).split(X, y))
        scaled = []
        for tr, te in folds:
            sc = StandardScaler().fit(X[tr])
            scaled.append((sc.transform(X[tr]), y[tr], sc.transform(X[te]), y[te]))
        for model in models:
            row = {"dataset": name, "model": model}
            preds = {"ours": [], "sklearn": []}
            for side in ("ours", "sklearn"):
                seconds = 0.0
                for Xtr, ytr, Xte, _ in scaled:
                    est = pair(model)[0 if side == "ours" else 1]
                    t0 = time.perf_counter()
                    est.fit(Xtr, ytr)
                    seconds += time.perf_counter() - t0
                    preds[side].append(est.predict(Xte))
                y_true = np.concatenate([s[3] for s in scaled])
                row[f"acc_{side}"] = float(np.mean(np.concatenate(preds[side]) == y_true))
                row[f"fit_s_{side}"] = seconds
            row["agree"] = float(np.mean(np.concatenate(preds["ours"]) == np.concatenate(preds["sklearn"])))
            rows.append(row)
            if progress is not None:
                progress.update(1)
    return rows


def run() -> list[dict]:
    """`make bench`: fit seconds (5 folds summed) of each of our models vs scikit-learn's."""
    return [{"module": "0.1", "name": f"fit_{r['dataset']}_{r['model']}", "ours": r["fit_s_ours"],
             "reference": r["fit_s_sklearn"], "unit": "s",
             "note": f"5-fold total; acc ours {r['acc_ours']:.3f} vs sklearn {r['acc_sklearn']:.3f}"}
            for r in compare()]


def markdown_table(rows: list[dict], columns: list[str], fmt: str = "{:.3f}") -> str:
    """A Markdown table of `rows` (dicts) with the given columns; floats formatted with `fmt`."""
    from ..show import markdown_table as table

    return table(columns, [[fmt.format(r[c]) if isinstance(r[c], float) else r[c] for c in columns] for r in rows])


if __name__ == "__main__":
    for r in run():
        print(r)
