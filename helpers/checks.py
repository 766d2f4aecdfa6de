"""Assertions that are counted, printed and explained.

Every check prints one line and records its result in the active run (`helpers.session`), so the
results file says how many passed. A failing check raises `AssertionError` with the numbers a reader
needs to see what went wrong (like Karpathy's `cmp`).
"""
from __future__ import annotations

import numpy as np

from . import session


def _as_array(x) -> np.ndarray:
    if hasattr(x, "detach"):  # torch tensor
        x = x.detach().cpu().numpy()
    return np.asarray(x)


def _done(name: str, ok: bool, detail: str):
    run = session.current()
    if run is not None:
        run.record(name, ok)
    if not ok:
        print(f"✗ {name} — {detail}")
        raise AssertionError(f"{name}: {detail}")
    print(f"✓ {name} — {detail}" if detail else f"✓ {name}")


def check(name: str, condition, detail: str = "") -> bool:
    """Pass when `condition` is true."""
    _done(name, bool(condition), detail)
    return True


def check_equal(name: str, actual, expected):
    """Pass when `actual` equals `expected` exactly (scalars, sequences, arrays, tensors)."""
    a, e = _as_array(actual), _as_array(expected)
    if a.shape != e.shape:
        _done(name, False, f"shape {a.shape} != expected {e.shape}")
    diff = a != e
    n_bad = int(np.count_nonzero(diff))
    if n_bad == 0:
        detail = f"exact ({a.size} values)" if a.size != 1 else f"{a.item()!r}"
        _done(name, True, detail)
        return actual
    where = np.argwhere(diff)[:3] if a.ndim else [()]
    examples = ", ".join(f"[{','.join(map(str, w))}] {a[tuple(w)].item()!r} != {e[tuple(w)].item()!r}" for w in where)
    _done(name, False, f"{n_bad}/{a.size} differ, e.g. {examples}")


def check_close(name: str, actual, expected, atol: float = 1e-6, rtol: float = 0.0):
    """Pass when |actual - expected| <= atol + rtol * |expected| everywhere; reports the max diff."""
    a = _as_array(actual).astype(np.float64)
    e = _as_array(expected).astype(np.float64)
    if a.shape != e.shape:
        _done(name, False, f"shape {a.shape} != expected {e.shape}")
    err = np.abs(a - e)
    tol = atol + rtol * np.abs(e)
    ok = bool(np.all(err <= tol)) and not np.any(np.isnan(a) != np.isnan(e))
    maxdiff = float(np.max(err)) if err.size else 0.0  # NaN if any value is NaN
    if a.size == 1:
        detail = f"{a.item():.6g} vs {e.item():.6g} (|diff| {maxdiff:.2g}, tol {float(tol.max()):.2g})"
    else:
        detail = f"max |diff| {maxdiff:.2g} over {a.size} values (tol atol={atol:g}, rtol={rtol:g})"
    _done(name, ok, detail)
    return actual


def check_at_least(name: str, value, bound):
    """A target: `value >= bound` (e.g. test accuracy >= 0.98)."""
    value = float(_as_array(value))
    _done(name, value >= bound, f"{value:.6g} >= {bound:.6g}" if value >= bound
          else f"{value:.6g} < target {bound:.6g}")
    return value


def check_at_most(name: str, value, bound):
    """A target: `value <= bound` (e.g. validation loss <= 2.10)."""
    value = float(_as_array(value))
    _done(name, value <= bound, f"{value:.6g} <= {bound:.6g}" if value <= bound
          else f"{value:.6g} > target {bound:.6g}")
    return value


def cmp(name: str, ours, ref, atol: float = 1e-6):
    """Karpathy's `cmp`: exact / approximate / maxdiff of a hand-derived gradient vs autograd."""
    a, r = _as_array(ours).astype(np.float64), _as_array(ref).astype(np.float64)
    if a.shape != r.shape:
        _done(name, False, f"shape {a.shape} != reference {r.shape}")
    exact = bool(np.array_equal(a, r))
    maxdiff = float(np.max(np.abs(a - r))) if a.size else 0.0
    approx = maxdiff <= atol
    _done(name, approx, f"exact: {str(exact):5} | approximate: {str(approx):5} | maxdiff: {maxdiff:.2g}")
    return maxdiff
