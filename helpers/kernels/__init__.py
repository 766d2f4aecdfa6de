"""CUDA kernels: load `kernels/<name>.cu` into CuPy, compile-check them without a GPU, simulate them on a CPU.

- `load(name)` compiles `kernels/<name>.cu` once into a cached `cupy.RawKernel` (needs CUDA + the `gpu` extra).
- `compile_check(name)` compiles to PTX with `nvcc --ptx` when present, else NVRTC (CuPy's bindings); no GPU needed.
- `simulate(kernel, grid, block, *args)` runs a Python transcription of a kernel over every thread of a
  launch, so the CPU lane checks the indexing logic that the GPU lane then checks on the real kernel.
- `launch(kernel, grid, block, *args)` (from `simulator.py`) runs it warp by warp and counts what the GPU's
  memory system sees: 32-byte sectors per global request, shared-memory bank conflicts, divergent branches.

`python -m helpers.kernels --check` compile-checks every kernel (one line each; non-zero exit on failure).
"""
from __future__ import annotations

import inspect
import itertools
import os
import shutil
import subprocess
import tempfile
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

from ..session import ROOT

KERNELS = ROOT / "kernels"
ARCH = "compute_80"  # PTX for Ampere and newer (A100, H100, L4, RTX 30xx/40xx)


def names() -> list[str]:
    """Every kernel source in `kernels/`, by stem."""
    return sorted(p.stem for p in KERNELS.glob("*.cu"))


def source(name: str) -> str:
    path = KERNELS / f"{name}.cu"
    if not path.is_file():
        raise FileNotFoundError(f"no kernel {name!r} in {KERNELS}; have: {', '.join(names()) or 'none'}")
    return path.read_text()


@lru_cache(maxsize=None)
def load(name: str, function: str | None = None):
    """The `cupy.RawKernel` for `function` (default: `name`) in `kernels/<name>.cu`, compiled once."""
    import cupy

    return cupy.RawKernel(source(name), function or name)


def _entries(ptx: str) -> str:
    return ", ".join(ln.split()[-1].rstrip("(") for ln in ptx.splitlines() if ".entry" in ln)


def _ptx_nvcc(nvcc: str, path: Path, arch: str) -> tuple[bool, str]:
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / f"{path.stem}.ptx"
        proc = subprocess.run([nvcc, "--ptx", f"-arch={arch}", "-o", str(out), str(path)],
                              capture_output=True, text=True)
        if proc.returncode != 0:
            return False, (proc.stderr or proc.stdout).strip()
        return True, f"nvcc --ptx -arch={arch}: entries {_entries(out.read_text())}"


def cuda_include_dir() -> str | None:
    """Where the CUDA headers (cuda_fp16.h and what it includes) are: the pip wheel that NVIDIA's `cuda.pathfinder`
    finds (the `gpu` extra installs both), else $CUDA_PATH / $CUDA_HOME / /usr/local/cuda; None when none has them."""
    try:
        from cuda.pathfinder import find_nvidia_header_directory

        found = find_nvidia_header_directory("cudart")
        if found:
            return str(found)
    except ImportError:
        pass
    for root in (os.environ.get("CUDA_PATH"), os.environ.get("CUDA_HOME"), "/usr/local/cuda"):
        if root and (Path(root) / "include" / "cuda_fp16.h").is_file():
            return str(Path(root) / "include")
    return None


def _ptx_nvrtc(path: Path, arch: str) -> tuple[bool, str]:
    """NVRTC through CuPy's raw bindings: needs the NVRTC library (the `gpu` extra), not a GPU or driver. Unlike nvcc,
    NVRTC searches no include directory by itself, so the CUDA headers' folder is passed when a kernel includes one."""
    try:
        from cupy_backends.cuda.libs import nvrtc
    except ImportError:
        return False, "neither nvcc nor CuPy's NVRTC (pip install -e '.[gpu]') is available to compile CUDA"
    include = cuda_include_dir()
    options = (f"-arch={arch}",) + ((f"-I{include}",) if include else ())
    program = nvrtc.createProgram(path.read_text(), path.name, (), ())
    try:
        nvrtc.compileProgram(program, options)
        ptx = nvrtc.getPTX(program)
    except nvrtc.NVRTCError:
        log = nvrtc.getProgramLog(program).strip()
        if include is None and "#include" in path.read_text():
            log += ("\nNo CUDA headers found for NVRTC: pip install nvidia-cuda-runtime-cu12 (in the `gpu` extra), "
                    "or set CUDA_PATH to a CUDA Toolkit")
        return False, log
    finally:
        nvrtc.destroyProgram(program)
    ptx = ptx.decode() if isinstance(ptx, bytes) else ptx
    return True, f"NVRTC {'.'.join(map(str, nvrtc.getVersion()))} -arch={arch}: entries {_entries(ptx)}"


def compile_check(name: str, arch: str = ARCH, compiler: str = "auto") -> tuple[bool, str]:
    """Compile `kernels/<name>.cu` to PTX; returns (ok, how — or the compiler's error log).

    `compiler`: "nvcc", "nvrtc", or "auto" (nvcc when on PATH, else NVRTC).
    """
    source(name)  # clear error for an unknown kernel
    path = KERNELS / f"{name}.cu"
    nvcc = shutil.which("nvcc")
    if compiler == "nvcc" or (compiler == "auto" and nvcc):
        if not nvcc:
            return False, "nvcc is not on PATH"
        return _ptx_nvcc(nvcc, path, arch)
    if compiler not in ("auto", "nvrtc"):
        raise ValueError(f"compiler must be 'auto', 'nvcc' or 'nvrtc', got {compiler!r}")
    return _ptx_nvrtc(path, arch)


# --------------------------------------------------------------------------------------------------
# A CPU simulator of the CUDA execution model
# --------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class dim3:
    x: int = 1
    y: int = 1
    z: int = 1


def as_dim3(v) -> dim3:
    if isinstance(v, dim3):
        return v
    v = (v,) if isinstance(v, int) else tuple(v)
    if not 1 <= len(v) <= 3 or any(int(d) < 1 for d in v):
        raise ValueError(f"launch dimensions must be 1-3 positive ints, got {v}")
    return dim3(*map(int, v))


@dataclass
class Thread:
    """What a kernel sees: CUDA's built-in variables, plus the block's shared memory."""

    blockIdx: dim3
    threadIdx: dim3
    blockDim: dim3
    gridDim: dim3
    shared: dict = field(default_factory=dict)  # one dict per block, like __shared__ arrays


def simulate(kernel, grid, block, *args) -> None:
    """Run `kernel(thread, *args)` for every thread of a `<<<grid, block>>>` launch, on the CPU.

    A plain function runs thread after thread. A generator function may `yield` where the CUDA code has
    `__syncthreads()`: all threads of a block then advance phase by phase, so shared-memory kernels see
    the same ordering guarantees as on the GPU. Threads of one block must reach the same number of barriers.
    """
    grid, block = as_dim3(grid), as_dim3(block)
    is_generator = inspect.isgeneratorfunction(kernel)
    for bz, by, bx in itertools.product(range(grid.z), range(grid.y), range(grid.x)):
        shared: dict = {}
        threads = [Thread(dim3(bx, by, bz), dim3(tx, ty, tz), block, grid, shared)
                   for tz, ty, tx in itertools.product(range(block.z), range(block.y), range(block.x))]
        if not is_generator:
            for t in threads:
                kernel(t, *args)
            continue
        running = [kernel(t, *args) for t in threads]
        while running:
            finished = []
            for gen in running:
                try:
                    next(gen)
                except StopIteration:
                    finished.append(gen)
            if finished and len(finished) != len(running):
                raise RuntimeError(f"block {(bx, by, bz)}: threads reached different numbers of __syncthreads()")
            running = [g for g in running if g not in finished]


# The warp-level simulator grows this one: same dim3/Thread, plus counted memory (see simulator.py).
from .simulator import OutOfBounds, Report, launch, shfl_down, shfl_idx, shfl_xor  # noqa: E402
