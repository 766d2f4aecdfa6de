import json

import numpy as np
import pytest
import torch

from helpers import P, check, finish, session


def test_profile_values(monkeypatch):
    monkeypatch.delenv("COURSE_PROFILE", raising=False)
    assert P(quick=1, full=2) == 1
    monkeypatch.setenv("COURSE_PROFILE", "full")
    assert P(quick=1, full=2) == 2
    monkeypatch.setenv("COURSE_PROFILE", "huge")
    with pytest.raises(ValueError, match="huge"):
        P(quick=1, full=2)


def test_start_seeds_deterministically():
    session.start("0.1")
    a = (np.random.rand(3), torch.rand(3))
    session.start("0.1")
    b = (np.random.rand(3), torch.rand(3))
    assert np.array_equal(a[0], b[0]) and torch.equal(a[1], b[1])


def test_unknown_module():
    with pytest.raises(KeyError, match="unknown module '9.9'"):
        session.start("9.9")


def test_finish_writes_schema(run):
    check("ok", True)
    run.metric("acc_iris_logreg_ours", np.float32(0.97))
    data = finish()
    path = session.RESULTS / "0-01-ml-fundamentals.json"
    on_disk = json.loads(path.read_text())
    assert on_disk == data
    assert set(data) == {"module", "title", "profile", "device", "versions", "seconds", "checks", "metrics"}
    assert data["checks"] == {"passed": 1, "failed": 0, "names": ["ok"]}
    assert data["metrics"] == {"acc_iris_logreg_ours": pytest.approx(0.97)}
    assert data["device"].startswith("cpu:")


def test_finish_fails_when_a_check_failed(run):
    with pytest.raises(AssertionError):
        check("bad", False)
    with pytest.raises(AssertionError, match="failed checks"):
        finish()


def test_metric_rejects_non_finite(run):
    with pytest.raises(ValueError, match="not finite"):
        run.metric("loss", float("nan"))


def test_every_module_has_a_valid_stem():
    for module, (stem, title) in session.MODULES.items():
        part, number = module.split(".")
        assert stem.startswith(f"{part}-{int(number):02d}-"), stem
        assert title


def test_results_dir_override(run, tmp_path, monkeypatch):
    scratch = tmp_path / "scratch"
    monkeypatch.setenv("COURSE_RESULTS_DIR", str(scratch))
    check("ok", True)
    finish()
    assert (scratch / "0-01-ml-fundamentals.json").exists()
    assert not (session.RESULTS / "0-01-ml-fundamentals.json").exists()
