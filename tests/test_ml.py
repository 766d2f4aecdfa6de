"""Unit tests for helpers.ml: known answers on small synthetic data, agreement with scikit-learn, bad inputs."""
import numpy as np
import pytest
from sklearn import cluster as skc
from sklearn import decomposition as skd
from sklearn import linear_model as skl
from sklearn import metrics as skm
from sklearn import mixture as skmix
from sklearn import naive_bayes as sknb
from sklearn import svm as sksvm
from sklearn.datasets import load_iris, make_blobs, make_classification

from helpers.ml import (PCA, SVC, DecisionTreeClassifier, GaussianMixture, GaussianNB, GridSearchCV, KFold,
                        KMeans, LinearRegression, LogisticRegression, NotFittedError, StandardScaler,
                        StratifiedKFold, accuracy_score, adjusted_rand_score, cross_val_score, kernel_matrix,
                        lr_at, minimize, pair_update, smo, train_test_split)


@pytest.fixture(scope="module")
def iris():
    X, y = load_iris(return_X_y=True)
    return StandardScaler().fit_transform(X), y


@pytest.fixture(scope="module")
def binary():
    X, y = make_classification(120, 5, n_informative=3, random_state=0)
    return StandardScaler().fit_transform(X), y


# --- preprocessing, PCA, optim ---------------------------------------------------------------------------

def test_scaler_matches_sklearn(iris):
    from sklearn.preprocessing import StandardScaler as SK
    X, _ = load_iris(return_X_y=True)
    np.testing.assert_allclose(StandardScaler().fit_transform(X), SK().fit_transform(X), atol=1e-12)


def test_pca_matches_sklearn_up_to_sign(iris):
    X, _ = iris
    ours, ref = PCA(3).fit(X), skd.PCA(3).fit(X)
    np.testing.assert_allclose(ours.explained_variance_, ref.explained_variance_, rtol=1e-10)
    signs = np.sign((ours.components_ * ref.components_).sum(1))[:, None]
    np.testing.assert_allclose(ours.components_, signs * ref.components_, atol=1e-10)


def test_pca_full_rank_reconstructs():
    X = np.random.default_rng(0).normal(size=(50, 4))
    p = PCA(4).fit(X)
    np.testing.assert_allclose(p.inverse_transform(p.transform(X)), X, atol=1e-10)
    with pytest.raises(ValueError, match="n_components"):
        PCA(5).fit(X)


def test_minimize_quadratic_and_schedules():
    # f(w) = 0.5 ||w - 3||^2 has minimum at w = 3
    tr = minimize(lambda w, idx: w - 3.0, np.zeros(2), n=1, lr=0.5, epochs=60, momentum=0.5)
    np.testing.assert_allclose(tr.w, 3.0, atol=1e-8)
    assert lr_at("cosine", 1.0, 0, 10) == 1.0 and lr_at("cosine", 1.0, 10, 10) == pytest.approx(0.0)
    assert lr_at("step", 1.0, 5, 10) == 0.25
    with pytest.raises(ValueError, match="schedule"):
        lr_at("warmup", 1.0, 0, 10)
    with pytest.raises(ValueError, match="batch_size"):
        minimize(lambda w, idx: w, np.zeros(1), n=4, lr=0.1, epochs=1, batch_size=5)


# --- linear models ----------------------------------------------------------------------------------------

def test_linear_regression_recovers_known_weights():
    rng = np.random.default_rng(0)
    X = rng.normal(size=(200, 3))
    y = X @ np.array([1.5, -2.0, 0.5]) + 4.0                    # noiseless: exact answer known
    for m in (LinearRegression("normal"), LinearRegression("gd", epochs=500)):
        m.fit(X, y)
        np.testing.assert_allclose(m.coef_, [1.5, -2.0, 0.5], atol=1e-6)
        assert m.intercept_ == pytest.approx(4.0, abs=1e-6)
    assert m.score(X, y) == pytest.approx(1.0)


def test_linear_regression_sgd_close_to_normal():
    rng = np.random.default_rng(1)
    X = rng.normal(size=(300, 4))
    y = X @ rng.normal(size=4) + 0.1 * rng.normal(size=300)
    exact = LinearRegression("normal").fit(X, y).coef_
    sgd = LinearRegression(lr=0.02, epochs=60, batch_size=1, schedule="inverse").fit(X, y).coef_
    np.testing.assert_allclose(sgd, exact, atol=0.02)


def test_gd_diverges_above_two_over_lambda_max():
    rng = np.random.default_rng(2)
    X, y = rng.normal(size=(100, 2)), rng.normal(size=100)
    lam = LinearRegression(epochs=1).fit(X, y).lambda_max_
    bad = LinearRegression(lr=2.2 / lam, epochs=200).fit(X, y).loss_history_
    good = LinearRegression(lr=1.8 / lam, epochs=200).fit(X, y).loss_history_
    assert bad[-1] > bad[0] and good[-1] < good[0]


@pytest.mark.parametrize("l1_ratio,solver", [(0.0, "lbfgs"), (1.0, "saga"), (0.5, "saga")])
def test_logistic_matches_sklearn_binary(binary, l1_ratio, solver):
    X, y = binary
    ours = LogisticRegression(C=0.5, l1_ratio=l1_ratio).fit(X, y)
    ref = skl.LogisticRegression(C=0.5, l1_ratio=l1_ratio, solver=solver, tol=1e-10, max_iter=20000).fit(X, y)
    np.testing.assert_allclose(ours.coef_, ref.coef_, atol=1e-4)
    np.testing.assert_array_equal(ours.coef_ == 0, ref.coef_ == 0)
    np.testing.assert_array_equal(ours.predict(X), ref.predict(X))


def test_logistic_multinomial_matches_sklearn(iris):
    X, y = iris
    ours = LogisticRegression(C=1.0).fit(X, y)
    ref = skl.LogisticRegression(C=1.0, tol=1e-10, max_iter=5000).fit(X, y)
    np.testing.assert_allclose(ours.predict_proba(X), ref.predict_proba(X), atol=1e-5)
    np.testing.assert_allclose(ours.predict_proba(X).sum(1), 1.0)


def test_logistic_bad_inputs(iris):
    X, y = iris
    with pytest.raises(NotFittedError):
        LogisticRegression().predict(X)
    with pytest.raises(ValueError, match="l1_ratio"):
        LogisticRegression(l1_ratio=1.5).fit(X, y)
    with pytest.raises(ValueError, match="2 classes"):
        LogisticRegression().fit(X, np.zeros(len(X)))
    m = LogisticRegression().fit(X, y)
    with pytest.raises(ValueError, match="features"):
        m.predict(X[:, :2])


# --- clustering --------------------------------------------------------------------------------------------

def test_kmeans_finds_separated_blobs():
    X, y = make_blobs(300, centers=4, cluster_std=0.5, random_state=0)
    for init in ("k-means++", "random"):
        km = KMeans(4, init=init, n_init=5).fit(X)
        assert adjusted_rand_score(y, km.labels_) == pytest.approx(1.0)
    ref = skc.KMeans(4, n_init=5, random_state=0).fit(X)
    assert km.inertia_ == pytest.approx(ref.inertia_, rel=1e-8)
    np.testing.assert_array_equal(km.predict(X), km.labels_)


def test_kmeans_bad_inputs():
    X = np.zeros((5, 2))
    with pytest.raises(ValueError, match="init"):
        KMeans(2, init="farthest").fit(X)
    with pytest.raises(ValueError, match="n_clusters"):
        KMeans(6).fit(X)
    with pytest.raises(NotFittedError):
        KMeans(2).predict(X)


def test_gmm_em_monotone_and_close_to_sklearn(iris):
    X, y = iris
    g = GaussianMixture(3, max_iter=200, tol=1e-8).fit(X)
    h = np.array(g.log_likelihood_history_)
    assert np.all(np.diff(h) >= -1e-9)
    ref = skmix.GaussianMixture(3, covariance_type="full", tol=1e-8, max_iter=200, random_state=0).fit(X)
    assert g.score(X) >= ref.score(X) - 0.05
    np.testing.assert_allclose(g.predict_proba(X).sum(1), 1.0)
    np.testing.assert_allclose(g.weights_.sum(), 1.0)


def test_gmm_single_component_is_mle():
    X = np.random.default_rng(0).normal(size=(400, 2)) @ np.array([[2.0, 0.0], [0.7, 0.5]])
    g = GaussianMixture(1, reg_covar=0.0).fit(X)
    np.testing.assert_allclose(g.means_[0], X.mean(0), atol=1e-12)
    np.testing.assert_allclose(g.covariances_[0], np.cov(X.T, bias=True), atol=1e-12)


# --- tree --------------------------------------------------------------------------------------------------

def test_tree_learns_xor_and_threshold():
    X = np.array([[0, 0], [0, 1], [1, 0], [1, 1]], dtype=float)
    y = np.array([0, 1, 1, 0])
    for crit in ("gini", "entropy"):
        t = DecisionTreeClassifier(crit).fit(X, y)
        np.testing.assert_array_equal(t.predict(X), y)
        assert t.depth_ == 2
    stump = DecisionTreeClassifier(max_depth=1).fit(np.array([[1.0], [2.0], [3.0], [4.0]]), [0, 0, 1, 1])
    assert stump.feature_[0] == 0 and stump.threshold_[0] == 2.5


def test_tree_training_accuracy_and_depth(iris):
    X, y = iris
    assert DecisionTreeClassifier().fit(X, y).score(X, y) == 1.0  # iris has no duplicate points with different labels
    assert DecisionTreeClassifier(max_depth=2).fit(X, y).depth_ <= 2


def test_tree_bad_inputs(iris):
    X, y = iris
    with pytest.raises(ValueError, match="criterion"):
        DecisionTreeClassifier("log_loss").fit(X, y)
    with pytest.raises(ValueError, match="samples"):
        DecisionTreeClassifier().fit(X, y[:-1])
    with pytest.raises(NotFittedError):
        DecisionTreeClassifier().predict(X)


# --- SVM ---------------------------------------------------------------------------------------------------

def test_smo_two_points_closed_form():
    # points at -1 and +1 on a line: w = 1, b = 0, both support vectors with alpha = 1/2 (hard margin)
    X = np.array([[-1.0], [1.0]])
    y = np.array([-1.0, 1.0])
    a, rho, _ = smo(kernel_matrix(X, X, "linear"), y, C=10.0, tol=1e-10)
    np.testing.assert_allclose(a, [0.5, 0.5], atol=1e-12)
    assert rho == pytest.approx(0.0, abs=1e-12)


def test_pair_update_is_the_clipped_minimizer_of_the_dual():
    # brute force: the dual restricted to the pair is a 1-D function of t along a_i += y_i t, a_j -= y_j t
    rng = np.random.default_rng(0)
    for _ in range(200):
        C = rng.uniform(0.5, 5)
        a = rng.uniform(0, C, 2) * (rng.random(2) < 0.7)
        y = rng.choice([-1.0, 1.0], 2)
        V = rng.normal(size=(2, 3)); K = V @ V.T + 1e-3 * np.eye(2)
        Q = np.outer(y, y) * K
        G = Q @ a - 1 + rng.normal(size=2)                      # gradient of the full dual at a (others fixed)
        new = np.array(pair_update(a[0], a[1], y[0], y[1], G[0], G[1], K[0, 0], K[1, 1], K[0, 1], C))
        assert np.all(new >= 0) and np.all(new <= C)
        assert y @ new == pytest.approx(y @ a, abs=1e-12)      # the equality constraint is kept
        ts = np.r_[np.linspace(-2 * C, 2 * C, 40001), 0.0]       # t = 0 (a itself) is always feasible
        cand = a[None] + ts[:, None] * np.array([y[0], -y[1]])
        ok = np.all((cand >= 0) & (cand <= C), axis=1)
        d = cand[ok] - a
        obj = d @ G + 0.5 * np.einsum("ni,ij,nj->n", d, Q, d)  # f(a + d) - f(a) for f = 1/2 a^T Q a - 1^T a
        best = cand[ok][np.argmin(obj)]
        np.testing.assert_allclose(new, best, atol=4 * C / 40000 + 1e-9)


def test_smo_accepts_a_pair_update():
    X, y = make_blobs(40, centers=2, random_state=0)
    yy = np.where(y == 0, 1.0, -1.0)
    K = kernel_matrix(X, X, "rbf", 0.5)
    calls = []

    def spy(*args):
        calls.append(args)
        return pair_update(*args)

    a1, rho1, it1 = smo(K, yy, 1.0)
    a2, rho2, it2 = smo(K, yy, 1.0, update=spy)
    np.testing.assert_array_equal(a1, a2)
    assert rho1 == rho2 and it1 == it2 and len(calls) == it2 - 1  # the last iteration only tests the stopping rule


def test_kernels_match_sklearn():
    from sklearn.metrics.pairwise import polynomial_kernel, rbf_kernel
    A, B = np.random.default_rng(0).normal(size=(5, 3)), np.random.default_rng(1).normal(size=(4, 3))
    np.testing.assert_allclose(kernel_matrix(A, B, "rbf", gamma=0.3), rbf_kernel(A, B, gamma=0.3), atol=1e-12)
    np.testing.assert_allclose(kernel_matrix(A, B, "poly", 0.5, 3, 1.0),
                               polynomial_kernel(A, B, degree=3, gamma=0.5, coef0=1.0), atol=1e-12)


@pytest.mark.parametrize("kernel", ["linear", "poly", "rbf"])
def test_svc_matches_sklearn(iris, kernel):
    X, y = iris
    ours, ref = SVC(kernel=kernel).fit(X, y), sksvm.SVC(kernel=kernel).fit(X, y)
    np.testing.assert_array_equal(ours.predict(X), ref.predict(X))
    assert ours.n_support_ == pytest.approx(ref.n_support_.sum(), abs=3)


def test_svc_binary_decision_matches_sklearn(binary):
    X, y = binary
    ours, ref = SVC(kernel="rbf").fit(X, y), sksvm.SVC(kernel="rbf", tol=1e-3).fit(X, y)
    # libsvm's positive class is its first class (0); scikit-learn flips the sign so that class 1 is positive
    np.testing.assert_allclose(-ours.decision_function(X)[:, 0], ref.decision_function(X), atol=1e-2)


def test_svc_bad_inputs(iris):
    X, y = iris
    with pytest.raises(ValueError, match="kernel"):
        SVC(kernel="sigmoid").fit(X, y)
    with pytest.raises(ValueError, match="gamma"):
        SVC(gamma=-1).fit(X, y)
    with pytest.raises(ValueError, match="2-D"):
        SVC().fit(X[:, 0], y)
    with pytest.raises(NotFittedError):
        SVC().predict(X)


# --- naive Bayes -------------------------------------------------------------------------------------------

def test_gnb_identical_to_sklearn(iris):
    X, y = iris
    ours, ref = GaussianNB().fit(X, y), sknb.GaussianNB().fit(X, y)
    np.testing.assert_array_equal(ours.predict(X), ref.predict(X))
    np.testing.assert_allclose(ours.var_, ref.var_, rtol=1e-12)
    np.testing.assert_allclose(ours.predict_proba(X), ref.predict_proba(X), atol=1e-10)


def test_gnb_constant_feature_is_smoothed():
    X = np.c_[np.arange(6.0), np.ones(6)]
    m = GaussianNB().fit(X, [0, 0, 0, 1, 1, 1])
    assert np.all(np.isfinite(m.joint_log_likelihood(X)))
    with pytest.raises(NotFittedError):
        GaussianNB().predict_proba(X)


# --- model selection, metrics ------------------------------------------------------------------------------

def test_kfold_partitions():
    X = np.zeros((23, 1))
    tests = [te for _, te in KFold(5, shuffle=True).split(X)]
    np.testing.assert_array_equal(np.sort(np.concatenate(tests)), np.arange(23))
    assert sorted(len(t) for t in tests) == [4, 4, 5, 5, 5]


def test_stratified_kfold_keeps_proportions():
    y = np.array([0] * 30 + [1] * 10 + [2] * 20)
    for tr, te in StratifiedKFold(5, shuffle=True).split(np.zeros((60, 1)), y):
        np.testing.assert_array_equal(np.bincount(y[te]), [6, 2, 4])
        assert len(np.intersect1d(tr, te)) == 0
    with pytest.raises(ValueError, match="n_splits"):
        list(StratifiedKFold(11).split(np.zeros((60, 1)), y))


def test_train_test_split_stratified():
    y = np.array([0] * 40 + [1] * 20)
    Xtr, Xte, ytr, yte = train_test_split(np.arange(60)[:, None], y, test_size=0.25)
    assert np.bincount(yte).tolist() == [10, 5] and len(Xtr) == 45
    assert len(np.intersect1d(Xtr[:, 0], Xte[:, 0])) == 0


def test_cross_val_and_grid_search(iris):
    X, y = iris
    scores = cross_val_score(GaussianNB(), X, y, cv=5)
    assert scores.shape == (5,) and scores.mean() > 0.9
    gs = GridSearchCV(SVC(), {"C": [0.01, 1.0], "kernel": ["rbf"]}, cv=3).fit(X, y)
    assert gs.best_params_["C"] == 1.0 and len(gs.cv_results_) == 2
    with pytest.raises(ValueError, match="no parameter"):
        GridSearchCV(SVC(), {"depth": [1]}).fit(X, y)


def test_metrics_match_sklearn():
    rng = np.random.default_rng(0)
    a, b = rng.integers(0, 3, 50), rng.integers(0, 4, 50)
    assert adjusted_rand_score(a, b) == pytest.approx(skm.adjusted_rand_score(a, b), abs=1e-12)
    assert adjusted_rand_score(a, (a + 1) % 3) == pytest.approx(1.0)
    assert accuracy_score([1, 2], [1, 3]) == 0.5
    with pytest.raises(ValueError, match="shapes"):
        accuracy_score([1, 2], [1])


# --- benchmark harness -------------------------------------------------------------------------------------

def test_bench_compare_small_and_bad_names():
    from helpers.ml import bench
    rows = bench.compare(datasets=("iris",), models=("gnb", "tree"), n_splits=3)
    assert [r["model"] for r in rows] == ["gnb", "tree"]
    assert rows[0]["agree"] == 1.0 and abs(rows[1]["acc_ours"] - rows[1]["acc_sklearn"]) <= 0.05
    assert "| iris | gnb |" in bench.markdown_table(rows, ["dataset", "model"])
    with pytest.raises(ValueError, match="unknown model"):
        bench.pair("knn")
    with pytest.raises(ValueError, match="unknown dataset"):
        bench.load("mnist")
