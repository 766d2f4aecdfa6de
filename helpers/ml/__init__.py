"""A small machine-learning library from first principles (numpy only), with scikit-learn's API.

Module 0.1 builds it and benchmarks it against scikit-learn (`helpers.ml.bench`).
"""
from .base import NotFittedError
from .cluster import GaussianMixture, KMeans, kmeans_plusplus
from .decomposition import PCA
from .linear import LinearRegression, LogisticRegression, add_bias, softmax, soft_threshold
from .metrics import accuracy_score, adjusted_rand_score
from .model_selection import GridSearchCV, KFold, StratifiedKFold, cross_val_score, train_test_split
from .naive_bayes import GaussianNB
from .optim import lr_at, minimize
from .preprocessing import StandardScaler
from .svm import SVC, kernel_matrix, pair_update, smo
from .tree import DecisionTreeClassifier, best_split, impurity

__all__ = [
    "PCA", "SVC", "DecisionTreeClassifier", "GaussianMixture", "GaussianNB", "GridSearchCV", "KFold",
    "KMeans", "LinearRegression", "LogisticRegression", "NotFittedError", "StandardScaler",
    "StratifiedKFold", "accuracy_score", "adjusted_rand_score", "cross_val_score", "kernel_matrix",
    "add_bias", "best_split", "impurity", "kmeans_plusplus", "lr_at", "minimize", "pair_update", "smo", "soft_threshold",
    "softmax", "train_test_split",
]
