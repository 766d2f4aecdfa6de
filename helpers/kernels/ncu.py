"""Nsight Compute's counters for the course's memory kernels, to set beside the simulator's counts (1.5, GPU lane).

`python -m helpers.kernels.ncu` is the program ncu profiles: it launches, in order, `LAUNCHES` — the strided copies
and the three transposes on the shapes notebook 1-05 simulates. `measure()` runs it under `ncu --csv` and returns, per
launch, the simulator's quantities as the hardware counts them:

    sectors per request (global loads, stores) = l1tex__t_sectors_pipe_lsu_mem_global_op_{ld,st}.sum
                                                 / l1tex__t_requests_pipe_lsu_mem_global_op_{ld,st}.sum
    shared-memory bank conflicts (extra passes) = l1tex__data_bank_conflicts_pipe_lsu_mem_shared_op_{ld,st}.sum
    achieved occupancy (%)                      = sm__warps_active.avg.pct_of_peak_sustained_active
"""
from __future__ import annotations

import csv
import os
import shutil
import subprocess
import sys

from ..session import ROOT
from . import coalescing, transpose

STRIDES = (1, 2, 4, 8, 32)
COPY_OUTPUTS = 512                 # outputs per strided copy: 16 full warps, as in the notebook's simulation
TRANSPOSE_SHAPE = (64, 96)         # 2 x 3 tiles of 32 x 32, as in the notebook's simulation
LAUNCHES = [("copy_coalesced" if s == 1 else "copy_strided", f"copy stride {s}") for s in STRIDES] + \
           [(f"transpose_{v}", f"transpose {v}") for v in transpose.VARIANTS]      # (kernel, label), in launch order
METRICS = ("l1tex__t_sectors_pipe_lsu_mem_global_op_ld.sum", "l1tex__t_requests_pipe_lsu_mem_global_op_ld.sum",
           "l1tex__t_sectors_pipe_lsu_mem_global_op_st.sum", "l1tex__t_requests_pipe_lsu_mem_global_op_st.sum",
           "l1tex__data_bank_conflicts_pipe_lsu_mem_shared_op_ld.sum",
           "l1tex__data_bank_conflicts_pipe_lsu_mem_shared_op_st.sum",
           "sm__warps_active.avg.pct_of_peak_sustained_active")


def launch_all() -> None:
    """The launches ncu profiles (CuPy's own kernels, e.g. for `arange`, are filtered out by name)."""
    import cupy as cp

    for s in STRIDES:
        coalescing.on_gpu(cp.arange(COPY_OUTPUTS * s, dtype=cp.float32), s)
    m = cp.arange(TRANSPOSE_SHAPE[0] * TRANSPOSE_SHAPE[1], dtype=cp.float32).reshape(TRANSPOSE_SHAPE)
    for v in transpose.VARIANTS:
        transpose.on_gpu(m, v)
    cp.cuda.Device().synchronize()


def _number(text: str) -> float:
    return float(text.replace(",", "")) if text.strip() not in ("", "n/a") else float("nan")


def parse(text: str) -> list[tuple[str, dict[str, float]]]:
    """`ncu --csv` output (one row per kernel launch and metric, after ncu's own `==PROF==` lines) ->
    [(kernel name, {metric: value})] in launch order."""
    lines = [line for line in text.splitlines() if line.startswith('"')]
    if not lines:
        raise ValueError("no CSV in ncu's output (did ncu profile any kernel?)")
    launches: dict[str, tuple[str, dict]] = {}
    for row in csv.DictReader(lines):
        try:
            launch, kernel, metric, value = row["ID"], row["Kernel Name"], row["Metric Name"], row["Metric Value"]
        except KeyError as e:
            raise ValueError(f"ncu CSV without the column {e}; columns: {list(row)}") from None
        launches.setdefault(launch, (kernel.split("(")[0].strip(), {}))[1][metric] = _number(value)
    return [launches[k] for k in sorted(launches, key=int)]


def derived(metrics: dict[str, float]) -> dict[str, float]:
    """The simulator's quantities from one launch's raw counters."""
    per = lambda op: (metrics[f"l1tex__t_sectors_pipe_lsu_mem_global_op_{op}.sum"]
                      / max(metrics[f"l1tex__t_requests_pipe_lsu_mem_global_op_{op}.sum"], 1))
    return {"ld_sectors_per_request": per("ld"), "st_sectors_per_request": per("st"),
            "bank_conflicts": metrics["l1tex__data_bank_conflicts_pipe_lsu_mem_shared_op_ld.sum"]
            + metrics["l1tex__data_bank_conflicts_pipe_lsu_mem_shared_op_st.sum"],
            "achieved_occupancy_pct": metrics["sm__warps_active.avg.pct_of_peak_sustained_active"]}


def measure(timeout: float = 300) -> dict[str, dict[str, float]]:
    """{launch label: derived counters}, from ncu run on `launch_all()` (needs a CUDA GPU, CuPy and ncu on PATH)."""
    ncu = shutil.which("ncu")
    if ncu is None:
        raise FileNotFoundError("Nsight Compute (`ncu`) is not on PATH: install the CUDA toolkit's nsight-compute")
    cmd = [ncu, "--clock-control", "none", "--csv", "--kernel-name", "regex:^(copy_|transpose_)",
           "--metrics", ",".join(METRICS), sys.executable, "-m", "helpers.kernels.ncu"]
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout)
    if proc.returncode != 0:
        raise RuntimeError(f"ncu failed ({proc.returncode}): {(proc.stderr or proc.stdout)[-2000:]}")
    rows = parse(proc.stdout)
    kernels = [k for k, _ in rows]
    if kernels != [k for k, _ in LAUNCHES]:
        raise RuntimeError(f"ncu profiled {kernels}, expected {[k for k, _ in LAUNCHES]}")
    return {label: derived(metrics) for (_, label), (_, metrics) in zip(LAUNCHES, rows)}


if __name__ == "__main__":
    launch_all()
