"""A warp-level simulator of a CUDA launch: run a kernel's Python transcription on a CPU and count what the
memory system and the scheduler would see — the numbers Nsight Compute reports on a GPU.

A GPU runs the threads of a block in *warps* of 32 lanes that execute one instruction at a time, together.
What makes a kernel fast or slow is mostly what one such warp-wide instruction costs:

- **global memory** is served in 32-byte *sectors*. A warp load of 32 consecutive float32 (128 bytes) needs
  4 sectors — *coalesced*; the same load with a stride of 2 floats touches 8 sectors, with a stride of 8 or
  more floats 32 sectors: 8× the traffic for the same useful bytes (CUDA C++ Best Practices Guide §9.2.1).
- **shared memory** is split into 32 *banks* of 4-byte words (word w lives in bank w % 32). A warp access
  is served in one pass ("wavefront") unless several lanes want *different* words of one bank: an n-way
  bank conflict costs n passes. Lanes reading the *same* word get it by broadcast, at no cost
  (CUDA C++ Programming Guide, "Shared Memory" in the compute-capability appendix).
- **branches**: when the lanes of a warp disagree on a condition, the warp runs both paths one after the
  other with part of its lanes masked off — *divergence*.

How the counting works. `launch(kernel, grid, block, *args)` wraps every NumPy array argument in a
`DeviceArray` (global memory) and gives each thread `t.shared_array(...)` (shared memory). Every element
access goes through the wrapper, which records (thread, source site, address). The accesses that the lanes
of one warp make at the *same dynamic instruction* — same source site (code object + line and columns, so
`a[i] + b[i]` is two sites), same occurrence (the k-th time each lane gets there, e.g. loop trip k) —
form one *warp request*; its cost is computed from its set of addresses. Threads run warp by warp, in order
of their linear id (x fastest, as the hardware forms warps); a bare `yield` is `__syncthreads()` and
`v = yield shfl_down(v, d)` is a warp shuffle, so kernels that communicate see the GPU's ordering.

Simplifications (say them out loud): every access of an element is a request (no L1/L2 caching, no
instruction reordering); shared memory is modelled for elements of ≤ 4 bytes; arrays start 256-byte aligned.
"""
from __future__ import annotations

import inspect
import itertools
import linecache
import sys
from collections import Counter, defaultdict
from dataclasses import dataclass, field

import numpy as np

from . import Thread, as_dim3, dim3

WARP_SIZE = 32
SECTOR_BYTES = 32          # global memory is moved in 32-byte sectors
BANKS, BANK_BYTES = 32, 4  # shared memory: 32 banks, 4 bytes wide
ALIGN = 256                # cudaMalloc returns 256-byte aligned pointers
MAX_THREADS_PER_BLOCK = 1024
MAX_SHARED_BYTES = 48 * 1024  # static __shared__ per block


class OutOfBounds(IndexError):
    """A thread read or wrote outside an array — on a GPU, a silent corruption or an illegal-address crash."""


# --------------------------------------------------------------------------------------------------
# 1. What a kernel sees: the thread, its memory, its shuffles
# --------------------------------------------------------------------------------------------------

class DeviceArray:
    """A NumPy array seen through a CUDA pointer: one element per access, every access recorded.

    `x[i]` uses the flat (row-major) index like `x[i]` on a `float*`; `x[r, c]` is `x[r][c]` of a 2-D
    array. Reads return a NumPy scalar of the array's dtype, so arithmetic rounds like the GPU's.
    """

    __slots__ = ("name", "space", "base", "itemsize", "shape", "dtype", "size", "_flat", "_launch")

    def __init__(self, array: np.ndarray, name: str, space: str, base: int, launch: "_Launch"):
        if not array.flags.c_contiguous:
            raise TypeError(f"{space} array {name!r} must be C-contiguous (np.ascontiguousarray), like device memory")
        self.name, self.space, self.base = name, space, base
        self.itemsize, self.shape, self.dtype, self.size = array.itemsize, array.shape, array.dtype, array.size
        self._flat = array.reshape(-1)  # a view: writes go to the caller's array
        self._launch = launch

    def __len__(self) -> int:
        return self.shape[0] if self.shape else 1

    def _offset(self, index) -> int:
        """Flat element offset of `index`, bounds-checked like cuda-memcheck would."""
        if isinstance(index, (int, np.integer)) and not isinstance(index, (bool, np.bool_)):
            i = int(index)
            if not 0 <= i < self.size:
                self._out_of_bounds(i, f"{self.size} elements")
            return i
        if isinstance(index, tuple) and len(index) == len(self.shape) and all(
                isinstance(i, (int, np.integer)) and not isinstance(i, (bool, np.bool_)) for i in index):
            for i, n in zip(index, self.shape):
                if not 0 <= i < n:
                    self._out_of_bounds(tuple(int(j) for j in index), f"shape {self.shape}")
            return int(np.ravel_multi_index(index, self.shape))
        raise TypeError(f"{self.space} array {self.name!r}: index one element with an int (flat) or a tuple of "
                        f"{len(self.shape)} ints, like a CUDA pointer; got {index!r}")

    def _out_of_bounds(self, index, extent: str):
        t = self._launch.current
        raise OutOfBounds(f"block {_xyz(t.blockIdx)} thread {_xyz(t.threadIdx)}: {self.space} array {self.name!r} "
                          f"index {index} is out of bounds for {extent}")

    def __getitem__(self, index):
        i = self._offset(index)
        self._launch.record(self.space + " load", self, sys._getframe(1), self.base + i * self.itemsize)
        return self._flat[i]

    def __setitem__(self, index, value):
        i = self._offset(index)
        self._launch.record(self.space + " store", self, sys._getframe(1), self.base + i * self.itemsize)
        self._flat[i] = value

    def __repr__(self):
        return f"DeviceArray({self.space} {self.name!r}, shape={self.shape}, dtype={self.dtype})"


@dataclass
class WarpThread(Thread):
    """A `Thread` that knows its warp and lane, owns counted shared arrays and marks branches."""

    tid: int = 0   # linear id in the block: x + y*Dx + z*Dx*Dy
    warp: int = 0  # tid // 32
    lane: int = 0  # tid % 32
    _launch: "_Launch" = None
    _seen: dict = field(default_factory=dict)  # site -> times this thread executed it

    def shared_array(self, name: str, shape, dtype=np.float32) -> DeviceArray:
        """`__shared__ float name[shape]`: one array per block, created by the first thread that asks."""
        shape = (shape,) if isinstance(shape, int) else tuple(shape)
        if name not in self.shared:
            dtype = np.dtype(dtype)
            used = sum(a.size * a.itemsize for a in self.shared.values())
            need = int(np.prod(shape)) * dtype.itemsize
            if used + need > MAX_SHARED_BYTES:
                raise ValueError(f"shared array {name!r} needs {need} B; the block already has {used} B of the "
                                 f"{MAX_SHARED_BYTES // 1024} KiB of static shared memory a block may have")
            # Shared memory starts uninitialised: NaN makes a read-before-write visible in float results.
            fill = np.nan if dtype.kind == "f" else 0
            self.shared[name] = DeviceArray(np.full(shape, fill, dtype), name, "shared", 0, self._launch)
        arr = self.shared[name]
        if arr.shape != shape or arr.dtype != np.dtype(dtype):
            raise ValueError(f"shared array {name!r} is {arr.shape} {arr.dtype}, "
                             f"asked again as {shape} {np.dtype(dtype)}")
        return arr

    def branch(self, cond) -> bool:
        """Write `if t.branch(cond):` where the CUDA code has `if (cond)`: counts whether the warp diverges."""
        cond = bool(cond)
        self._launch.record("branch", None, sys._getframe(1), cond)
        return cond


@dataclass(frozen=True)
class _Shuffle:
    value: object
    mode: str  # "down", "xor", "idx"
    arg: int


def shfl_down(value, delta: int) -> _Shuffle:
    """`v = yield shfl_down(v, delta)` is `v = __shfl_down_sync(0xffffffff, v, delta)`: lane l gets lane l+delta's v."""
    return _Shuffle(value, "down", int(delta))


def shfl_xor(value, mask: int) -> _Shuffle:
    """`v = yield shfl_xor(v, mask)` is `__shfl_xor_sync(0xffffffff, v, mask)`: lane l gets lane l^mask's v."""
    return _Shuffle(value, "xor", int(mask))


def shfl_idx(value, src_lane: int) -> _Shuffle:
    """`v = yield shfl_idx(v, src)` is `__shfl_sync(0xffffffff, v, src)`: every lane gets lane src's v."""
    return _Shuffle(value, "idx", int(src_lane))


def _xyz(d: dim3) -> tuple:
    return (d.x, d.y, d.z)


# --------------------------------------------------------------------------------------------------
# 2. What the simulator reports
# --------------------------------------------------------------------------------------------------

@dataclass
class Site:
    """The counts of one source site (one load, store or branch in the transcription)."""

    kind: str      # 'global load', 'global store', 'shared load', 'shared store', 'branch'
    array: str     # array name ('' for a branch)
    line: int
    code: str
    requests: int = 0    # warp-level executions
    sectors: int = 0     # global: 32-byte sectors moved
    wavefronts: int = 0  # shared: passes (1 per request without conflicts)
    divergent: int = 0   # branch: warp executions whose lanes disagreed
    bytes: int = 0       # bytes the lanes asked for

    @property
    def per_request(self) -> float:
        """sectors/request (global), ways/request (shared), fraction divergent (branch)."""
        n = {"branch": self.divergent, "shared load": self.wavefronts, "shared store": self.wavefronts}.get(
            self.kind, self.sectors)
        return n / self.requests if self.requests else 0.0


@dataclass
class Report:
    """Counts of one launch, summed over every warp."""

    blocks: int = 0
    warps: int = 0
    threads: int = 0
    load_requests: int = 0
    load_sectors: int = 0
    load_bytes: int = 0
    store_requests: int = 0
    store_sectors: int = 0
    store_bytes: int = 0
    shared_requests: int = 0
    shared_wavefronts: int = 0
    max_ways: int = 0
    branches: int = 0
    divergent_branches: int = 0
    divergent_per_warp: dict = field(default_factory=dict)  # {(blockIdx, warp): divergent branches}
    sites: list = field(default_factory=list)

    @property
    def sectors_per_load(self) -> float:
        return self.load_sectors / self.load_requests if self.load_requests else 0.0

    @property
    def sectors_per_store(self) -> float:
        return self.store_sectors / self.store_requests if self.store_requests else 0.0

    @property
    def load_efficiency(self) -> float:
        """Requested bytes / bytes moved: 1.0 when coalesced; above 1.0 when lanes share addresses (one sector
        serves them all — nvprof's gld_efficiency exceeds 100 % the same way)."""
        return self.load_bytes / (SECTOR_BYTES * self.load_sectors) if self.load_sectors else 0.0

    @property
    def store_efficiency(self) -> float:
        return self.store_bytes / (SECTOR_BYTES * self.store_sectors) if self.store_sectors else 0.0

    @property
    def bank_conflicts(self) -> int:
        """Extra shared-memory passes: Σ (n-way − 1) over requests."""
        return self.shared_wavefronts - self.shared_requests

    @property
    def ways_per_request(self) -> float:
        return self.shared_wavefronts / self.shared_requests if self.shared_requests else 0.0

    def table(self) -> str:
        """One row per source site: what each line of the kernel costs per warp."""
        rows = [f"{'line':>5}  {'kind':<12} {'array':<8} {'requests':>9} {'per request':>16}  code"]
        unit = {"global load": "sectors", "global store": "sectors", "shared load": "ways",
                "shared store": "ways", "branch": "divergent"}
        for s in sorted(self.sites, key=lambda s: (s.line, s.kind)):
            per = f"{s.per_request:.2f} {unit[s.kind]}"
            rows.append(f"{s.line:>5}  {s.kind:<12} {s.array:<8} {s.requests:>9} {per:>16}  {s.code}")
        return "\n".join(rows)


# --------------------------------------------------------------------------------------------------
# 3. Recording accesses and turning warp requests into counts
# --------------------------------------------------------------------------------------------------

class _Launch:
    """The state of one launch: the thread now running, the current block's requests, the totals."""

    def __init__(self):
        self.current: WarpThread | None = None
        self.requests = defaultdict(list)  # (kind, array, warp, site, occurrence) -> [address or bool per lane]
        self.where: dict = {}              # site -> (filename, line)
        self.sites: dict = {}              # (kind, array name, site) -> Site
        self.report = Report()

    def record(self, kind: str, array, frame, value) -> None:
        t = self.current
        site = _site_of(frame)
        occurrence = t._seen.get(site, 0)
        t._seen[site] = occurrence + 1
        if site not in self.where:
            self.where[site] = (frame.f_code.co_filename, frame.f_lineno)
        self.requests[(kind, array, t.warp, site, occurrence)].append(value)

    def end_block(self, block_idx: tuple) -> None:
        """Cost every warp request of the block just run, then forget them."""
        r = self.report
        for (kind, array, warp, site, _), values in self.requests.items():
            s = self._site(kind, array, site)
            s.requests += 1
            if kind == "branch":
                r.branches += 1
                if len(set(values)) > 1:  # some active lanes go one way, some the other
                    s.divergent += 1
                    r.divergent_branches += 1
                    key = (block_idx, warp)
                    r.divergent_per_warp[key] = r.divergent_per_warp.get(key, 0) + 1
                continue
            s.bytes += len(values) * array.itemsize
            if kind.startswith("global"):
                n = len(_spans(values, array.itemsize, SECTOR_BYTES))
                s.sectors += n
                if kind == "global load":
                    r.load_requests, r.load_sectors, r.load_bytes = (
                        r.load_requests + 1, r.load_sectors + n, r.load_bytes + len(values) * array.itemsize)
                else:
                    r.store_requests, r.store_sectors, r.store_bytes = (
                        r.store_requests + 1, r.store_sectors + n, r.store_bytes + len(values) * array.itemsize)
            else:
                ways = bank_ways(values, array.itemsize)
                s.wavefronts += ways
                r.shared_requests += 1
                r.shared_wavefronts += ways
                r.max_ways = max(r.max_ways, ways)
        self.requests.clear()

    def _site(self, kind, array, site) -> Site:
        name = array.name if array is not None else ""
        key = (kind, name, site)
        if key not in self.sites:
            filename, line = self.where[site]
            self.sites[key] = Site(kind, name, line, linecache.getline(filename, line).strip())
        return self.sites[key]


_POSITIONS: dict = {}


def _site_of(frame) -> tuple:
    """The source site of the instruction a frame is executing: code object + (line, end line, column, end column).

    Not the bytecode offset alone: CPython's specialising interpreter moves it after a few calls.
    """
    code = frame.f_code
    if code not in _POSITIONS:
        _POSITIONS[code] = list(code.co_positions())
    return code, _POSITIONS[code][frame.f_lasti // 2]


def _spans(addresses, itemsize: int, unit: int) -> set:
    """The distinct `unit`-byte-aligned chunks that the accesses [a, a + itemsize) touch."""
    return {c for a in addresses for c in range(a // unit, (a + itemsize - 1) // unit + 1)}


def bank_ways(addresses, itemsize: int = 4) -> int:
    """n of an n-way bank conflict: the most DISTINCT 4-byte words any one bank must deliver (≥ 1)."""
    words = _spans(addresses, itemsize, BANK_BYTES)  # same word twice = broadcast: counted once
    return max(Counter(w % BANKS for w in words).values())


def sectors(addresses, itemsize: int = 4) -> int:
    """Global-memory sectors (32 B) one warp request touches."""
    return len(_spans(addresses, itemsize, SECTOR_BYTES))


# --------------------------------------------------------------------------------------------------
# 4. Running a launch: block by block, warp by warp
# --------------------------------------------------------------------------------------------------

def launch(kernel, grid, block, *args) -> Report:
    """Run `kernel(t, *args)` as `kernel<<<grid, block>>>(args)` and return the counts.

    Every `np.ndarray` in `args` becomes global memory (writes reach your array); other args pass as-is.
    The kernel may be a plain function or a generator: bare `yield` = `__syncthreads()`,
    `v = yield shfl_down(v, d)` / `shfl_xor` / `shfl_idx` = a warp shuffle.
    """
    grid, block = as_dim3(grid), as_dim3(block)
    per_block = block.x * block.y * block.z
    if per_block > MAX_THREADS_PER_BLOCK:
        raise ValueError(f"a block has at most {MAX_THREADS_PER_BLOCK} threads, got {_xyz(block)} = {per_block}")
    run = _Launch()
    args = _device_args(kernel, args, run)
    r = run.report
    for bz, by, bx in itertools.product(range(grid.z), range(grid.y), range(grid.x)):
        shared: dict = {}
        threads = []
        for tid, (tz, ty, tx) in enumerate(itertools.product(range(block.z), range(block.y), range(block.x))):
            threads.append(WarpThread(dim3(bx, by, bz), dim3(tx, ty, tz), block, grid, shared,
                                      tid=tid, warp=tid // WARP_SIZE, lane=tid % WARP_SIZE, _launch=run))
        warps = [threads[w:w + WARP_SIZE] for w in range(0, per_block, WARP_SIZE)]
        if inspect.isgeneratorfunction(kernel):
            _run_with_barriers(kernel, args, warps, run, (bx, by, bz))
        else:
            for t in threads:
                run.current = t
                kernel(t, *args)
        run.end_block((bx, by, bz))
        r.blocks, r.warps, r.threads = r.blocks + 1, r.warps + len(warps), r.threads + per_block
    r.sites = list(run.sites.values())
    return r


def _device_args(kernel, args, run: _Launch) -> list:
    """Wrap the array arguments as global memory, named after the kernel's parameters, 256-byte aligned."""
    positional = (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
    params = [p.name for p in inspect.signature(kernel).parameters.values() if p.kind in positional][1:]
    out, base = [], 0
    for k, a in enumerate(args):
        if isinstance(a, np.ndarray):
            name = params[k] if k < len(params) else f"arg{k}"
            a = DeviceArray(a, name, "global", base, run)
            base += -(-max(a.size * a.itemsize, 1) // ALIGN) * ALIGN
        out.append(a)
    return out


def _run_with_barriers(kernel, args, warps, run: _Launch, block_idx) -> None:
    """Advance every warp to the next `__syncthreads()`, resolving its shuffles on the way; repeat."""
    gens = {id(t): kernel(t, *args) for w in warps for t in w}
    live = [list(w) for w in warps]
    while any(live):
        finished, waiting = 0, 0
        for w, lanes in enumerate(live):
            sends = {id(t): None for t in lanes}
            while lanes:
                yielded, done = {}, []
                for t in lanes:
                    run.current = t
                    try:
                        yielded[id(t)] = gens[id(t)].send(sends[id(t)])
                    except StopIteration:
                        done.append(t)
                lanes = [t for t in lanes if id(t) in yielded]
                live[w] = lanes
                finished += len(done)
                shuffles = {k: v for k, v in yielded.items() if isinstance(v, _Shuffle)}
                if not shuffles:
                    if any(v is not None for v in yielded.values()):
                        raise TypeError("a kernel may only `yield` (= __syncthreads()) or `yield shfl_...(v, ...)`")
                    waiting += len(lanes)
                    break
                if len(shuffles) != len(yielded) or done:
                    raise RuntimeError(f"block {block_idx} warp {w}: lanes reached different warp shuffles "
                                       "(every lane of the warp must call __shfl_*_sync together)")
                sends = _shuffle(lanes, yielded)
        if finished and waiting:
            raise RuntimeError(f"block {block_idx}: threads reached different numbers of __syncthreads()")


def _shuffle(lanes, yielded) -> dict:
    """Each lane's result of a warp shuffle; a source lane that does not exist leaves the value unchanged."""
    by_lane = {t.lane: yielded[id(t)] for t in lanes}
    out = {}
    for t in lanes:
        s = yielded[id(t)]
        src = {"down": t.lane + s.arg, "xor": t.lane ^ s.arg, "idx": s.arg}[s.mode]
        out[id(t)] = by_lane[src].value if src in by_lane else s.value
    return out
