"""helpers/profiling: the Chrome-trace parser against torch.profiler's own ranking, phases against the wall time,
the TensorBoard histogram round trip, and the occupancy formula against hand computations."""
import numpy as np
import pytest
import torch
from torch.profiler import record_function

from helpers.kernels.occupancy import SM_LIMITS, occupancy
from helpers.profiling.tensorboard import grid_edges, log_histograms, read_histograms
from helpers.profiling.trace import load_trace, phases, profile_callable, self_times, top_ops


def _work():
    torch.manual_seed(0)
    a, b = torch.randn(96, 96), torch.randn(96, 96)
    with record_function("outer"):
        with record_function("mm_phase"):
            for _ in range(20):
                c = a @ b
        with record_function("act_phase"):
            for _ in range(5):
                c = torch.relu(c).sum(0)
    return c


@pytest.fixture(scope="module")
def traced(tmp_path_factory):
    path = tmp_path_factory.mktemp("trace") / "t.json"
    _, prof = profile_callable(_work, path)
    return load_trace(path), prof


def test_top_op_matches_key_averages(traced):
    events, prof = traced
    ours = top_ops(events, 3)
    ka = sorted([a for a in prof.key_averages() if "::" in a.key], key=lambda a: -a.self_cpu_time_total)
    assert ours[0][0] == ka[0].key
    ref = {a.key: (a.self_cpu_time_total, a.count) for a in ka}
    for name, self_us, count in ours:
        assert count == ref[name][1]
        assert self_us == pytest.approx(ref[name][0], abs=2e-3 * count)   # trace times: µs with 3 decimals


def test_self_times_sum_to_top_level_time(traced):
    events, _ = traced
    total_self = sum(s["self_us"] for s in self_times(events).values())
    ops = sorted([e for e in events if e.get("cat") == "cpu_op"], key=lambda e: (e["ts"], -e["dur"]))
    top_level, end = 0.0, -1.0
    for e in ops:
        if e["ts"] >= end:
            top_level += e["dur"]
            end = e["ts"] + e["dur"]
    assert total_self == pytest.approx(top_level, abs=2e-3 * len(ops))


def test_phases_within_total(traced):
    events, _ = traced
    ph = phases(events)
    outer = [p for p in ph if p[0] == "outer"][0]
    inner = [p for p in ph if p[0] in ("mm_phase", "act_phase")]
    assert len(inner) == 2
    assert sum(p[2] for p in inner) <= outer[2]
    for _, t0, d in inner:
        assert outer[1] <= t0 and t0 + d <= outer[1] + outer[2] + 1e-3


def test_load_trace_missing(tmp_path):
    with pytest.raises(FileNotFoundError):
        load_trace(tmp_path / "none.json")


def test_histogram_round_trip(tmp_path):
    from torch.utils.tensorboard import SummaryWriter

    x = torch.randn(2000, generator=torch.Generator().manual_seed(0))
    codes = torch.round(x * 20)
    with SummaryWriter(tmp_path) as w:
        log_histograms(w, {"x": x}, 0)
        log_histograms(w, {"codes": codes}, 3, bins=grid_edges(-100, 100, 0.1))
    h = read_histograms(tmp_path)
    hx = h["x"][0]
    assert hx["step"] == 0 and hx["counts"].sum() == 2000 == hx["num"]
    assert hx["min"] == pytest.approx(float(x.min())) and hx["max"] == pytest.approx(float(x.max()))
    assert hx["sum"] == pytest.approx(float(x.double().sum()), rel=1e-5)
    hc = h["codes"][0]
    assert hc["step"] == 3
    # every value is an integer: all counts lie in the narrow bins around integers
    widths = np.diff(hc["limits"])
    counts = hc["counts"][1:]
    assert counts[widths < 0.5].sum() == 2000
    np.testing.assert_array_equal(np.sort(np.unique(codes.numpy())), np.sort(np.unique(
        np.round((hc["limits"][:-1] + hc["limits"][1:])[counts > 0] / 2))))


def test_occupancy_hand_computations():
    a100 = SM_LIMITS["A100 (sm_80)"]
    assert occupancy(256, 64, 0, a100) == (32 / 64, "registers")          # 2048 regs/warp -> 32 warps
    assert occupancy(256, 32, 48 * 1024, a100) == (24 / 64, "shared memory")  # 164K // 49K = 3 blocks
    assert occupancy(32, 16, 0, a100) == (32 / 64, "blocks")
    assert occupancy(256, 37, 0, a100)[0] == 48 / 64                       # 37 -> 40 regs: 51 warps -> 6 blocks
    with pytest.raises(ValueError):
        occupancy(2048, 32, 0, a100)
