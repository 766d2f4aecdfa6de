import numpy as np
import pytest
import torch

from helpers import check, check_at_least, check_at_most, check_close, check_equal, cmp


def test_check_passes_and_records(run):
    assert check("truth", 1 + 1 == 2)
    assert run.passed == ["truth"] and run.failed == []


def test_check_failure_raises_and_records(run):
    with pytest.raises(AssertionError, match="falsehood: why"):
        check("falsehood", False, "why")
    assert run.failed == ["falsehood"]


def test_check_equal_arrays_and_tensors():
    check_equal("arrays", np.arange(5), torch.arange(5))
    with pytest.raises(AssertionError, match=r"1/5 differ, e.g. \[3\] 9 != 3"):
        check_equal("one differs", np.array([0, 1, 2, 9, 4]), np.arange(5))
    with pytest.raises(AssertionError, match="shape"):
        check_equal("shapes", np.zeros(3), np.zeros(4))


def test_check_close_reports_max_diff():
    check_close("near", np.ones(4) + 1e-8, np.ones(4), atol=1e-6)
    with pytest.raises(AssertionError, match="max \\|diff\\| 0.1"):
        check_close("far", np.array([1.0, 1.1]), np.array([1.0, 1.0]), atol=1e-3)
    with pytest.raises(AssertionError):
        check_close("nan is never close", np.array([np.nan]), np.array([1.0]))
    check_close("relative", 101.0, 100.0, atol=0, rtol=0.02)


def test_targets():
    assert check_at_least("acc", 0.99, 0.98) == 0.99
    check_at_most("loss", 2.0, 2.1)
    with pytest.raises(AssertionError, match="< target 0.98"):
        check_at_least("acc low", 0.5, 0.98)
    with pytest.raises(AssertionError, match="> target 2.1"):
        check_at_most("loss high", 3.0, 2.1)


def test_cmp_like_karpathy(capsys):
    a = torch.randn(3, 4)
    assert cmp("same", a, a.clone()) == 0.0
    assert "exact: True" in capsys.readouterr().out
    cmp("close", a, a + 1e-9, atol=1e-6)
    with pytest.raises(AssertionError, match="approximate: False"):
        cmp("off", a, a + 1.0)
