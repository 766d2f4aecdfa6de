"""The warp-level simulator's counts against their closed forms, and bad launches it must catch."""
import numpy as np
import pytest

from helpers.kernels import OutOfBounds, launch, shfl_down, shfl_xor
from helpers.kernels import simulator as sim
from helpers.kernels.coalescing import copy_coalesced, copy_strided
from helpers.kernels.divergence import divergent, branch_free


# -- the two cost rules on plain addresses ---------------------------------------------------------

def test_sector_rule_on_addresses():
    lanes = np.arange(32)
    assert sim.sectors(4 * lanes) == 4                # 128 contiguous bytes
    assert sim.sectors(4 * lanes + 4) == 5            # shifted by one float: straddles one more sector
    assert sim.sectors(4 * 2 * lanes) == 8            # stride 2
    assert sim.sectors(4 * 8 * lanes) == 32           # stride 8: one sector per lane
    assert sim.sectors([0] * 32) == 1                 # every lane the same float
    assert sim.sectors(2 * lanes, itemsize=2) == 2    # 32 halves = 64 B
    assert sim.sectors([30], itemsize=4) == 2         # a misaligned float spans two sectors


def test_bank_rule_on_addresses():
    lanes = np.arange(32)
    assert sim.bank_ways(4 * lanes) == 1              # a row of floats: 32 banks, 1 word each
    assert sim.bank_ways(4 * 32 * lanes) == 32        # a column of a 32-wide float tile: all in bank 0
    assert sim.bank_ways(4 * 33 * lanes) == 1         # ... of a 33-wide tile: bank (33 l) % 32 = l
    assert sim.bank_ways(4 * 2 * lanes) == 2          # stride 2 words: 2-way
    assert sim.bank_ways([8] * 32) == 1               # one word for all: broadcast
    assert sim.bank_ways([0, 128] * 16) == 2          # two words of bank 0
    assert sim.bank_ways(lanes, itemsize=1) == 1      # 32 bytes = 8 words, 4 lanes per word


# -- global memory: sectors per warp request in a real launch --------------------------------------

@pytest.mark.parametrize("stride", [1, 2, 3, 4, 8, 16, 33])
def test_strided_load_costs_min_4s_32_sectors(stride):
    n = 256
    x, out = np.arange((n - 1) * stride + 1, dtype=np.float32), np.full(n, np.nan, np.float32)
    r = launch(copy_strided, 2, 128, x, out, n, stride)
    assert r.load_requests == r.store_requests == n // 32
    assert r.sectors_per_load == min(4 * stride, 32)  # 4 for stride 1, 8 for stride 2, 32 from stride 8
    assert r.sectors_per_store == 4                   # the writes stay coalesced
    assert r.load_efficiency == 4 / min(4 * stride, 32)
    assert np.array_equal(out, x[::stride])


def test_coalesced_copy_is_4_sectors_and_misaligned_is_5():
    n = 1024
    x, out = np.arange(n + 1, dtype=np.float32), np.full(n, np.nan, np.float32)
    r = launch(copy_coalesced, 4, 256, x, out, n)
    assert (r.load_requests, r.load_sectors, r.store_sectors) == (32, 4 * 32, 4 * 32)

    def shifted(t, x, out, n):
        i = t.blockIdx.x * t.blockDim.x + t.threadIdx.x
        out[i] = x[i + 1]

    assert launch(shifted, 4, 256, x, out, n).sectors_per_load == 5
    assert np.array_equal(out, x[1:])


def test_two_loads_on_one_line_and_loop_trips_are_separate_requests():
    def add_rows(t, a, b, out):
        for j in range(3):  # trip j of every lane = one request per warp
            i = j * 64 + t.threadIdx.x
            out[i] = a[i] + b[i]

    a, b, out = np.arange(192.0, dtype=np.float32), np.ones(192, np.float32), np.zeros(192, np.float32)
    r = launch(add_rows, 1, 64, a, b, out)
    assert r.load_requests == 2 * 3 * 2 and r.store_requests == 3 * 2  # 2 arrays x 3 trips x 2 warps
    assert r.sectors_per_load == r.sectors_per_store == 4
    assert {(s.kind, s.array) for s in r.sites} == {("global load", "a"), ("global load", "b"), ("global store", "out")}
    assert np.array_equal(out, a + b)


def test_warps_are_formed_by_linear_thread_id():
    seen = {}

    def who(t, x):
        seen[(t.threadIdx.x, t.threadIdx.y)] = (t.tid, t.warp, t.lane)
        _ = x[t.threadIdx.y * 64 + t.threadIdx.x]  # 8 rows of 8 floats, 64 floats apart

    r = launch(who, 1, (8, 8), np.zeros(8 * 64, np.float32))
    assert seen[(3, 5)] == (43, 1, 11)
    assert r.warps == 2 and r.load_requests == 2
    assert r.sectors_per_load == 4  # a warp = 4 rows of the block; each row's 8 floats = one 32-B sector


def test_partial_last_warp():
    x = np.arange(48, dtype=np.float32)
    r = launch(copy_coalesced, 1, 48, x, np.zeros(48, np.float32), 48)
    assert r.warps == 2 and r.load_sectors == 4 + 2  # 32 lanes, then 16 lanes = 64 B


# -- shared memory: bank conflicts in a real launch ------------------------------------------------

def _tile_by_column(width):
    def kernel(t, out):
        tile = t.shared_array("tile", (32, width))
        tile[t.threadIdx.y, t.threadIdx.x] = np.float32(t.threadIdx.y * 32 + t.threadIdx.x)  # by row
        yield  # __syncthreads()
        out[t.threadIdx.y * 32 + t.threadIdx.x] = tile[t.threadIdx.x, t.threadIdx.y]     # by column
    return kernel


@pytest.mark.parametrize("width,ways", [(32, 32), (33, 1)])
def test_tile_read_by_column_conflicts_unless_padded(width, ways):
    out = np.full(1024, np.nan, np.float32)
    r = launch(_tile_by_column(width), 1, (32, 32), out)
    loads = [s for s in r.sites if s.kind == "shared load"]
    stores = [s for s in r.sites if s.kind == "shared store"]
    assert loads[0].requests == stores[0].requests == 32
    assert loads[0].per_request == ways and stores[0].per_request == 1
    assert r.max_ways == ways and r.bank_conflicts == 32 * (ways - 1)
    assert np.array_equal(out.reshape(32, 32), np.arange(1024, dtype=np.float32).reshape(32, 32).T)


def test_broadcast_is_not_a_conflict():
    def kernel(t, out):
        s = t.shared_array("s", 64)
        if t.threadIdx.x == 0:
            s[5] = np.float32(7)
        yield
        out[t.threadIdx.x] = s[5] + s[(t.threadIdx.x % 2) * 32]  # broadcast; then 2 words of bank 0

    out = np.zeros(64, np.float32)
    r = launch(kernel, 1, 64, out)
    assert sorted(s.per_request for s in r.sites if s.kind == "shared load") == [1.0, 2.0]
    assert r.bank_conflicts == 2  # one extra pass per warp, from the second read only


# -- divergence ------------------------------------------------------------------------------------

@pytest.mark.parametrize("n,extra", [(1024, 0), (1000, 1)])
def test_even_odd_branch_diverges_every_warp_branch_free_none(n, extra):
    x, out = np.ones(n, np.float32), np.full(n, np.nan, np.float32)
    warps = 1024 // 32
    r = launch(divergent, 4, 256, x, out, n, 2)
    # every warp with live lanes splits at `i % 2 == 0`; the warp straddling n also splits at `i < n`
    assert r.divergent_branches == warps + extra
    assert all(v >= 1 for v in r.divergent_per_warp.values()) and len(r.divergent_per_warp) == warps
    r = launch(branch_free, 4, 256, x, out, n, 2)
    assert r.divergent_branches == extra and r.branches == warps


def test_uniform_branch_per_warp_does_not_diverge():
    def by_warp(t, out):
        i = t.threadIdx.x
        if t.branch((i // 32) % 2 == 0):
            out[i] = 1.0
        else:
            out[i] = 2.0

    r = launch(by_warp, 1, 128, np.zeros(128, np.float32))
    assert (r.branches, r.divergent_branches) == (4, 0)


# -- warp shuffles ---------------------------------------------------------------------------------

def test_shuffle_reductions():
    def warp_sum(t, x, out):
        v = x[t.blockIdx.x * t.blockDim.x + t.threadIdx.x]
        for offset in (16, 8, 4, 2, 1):
            v += yield shfl_down(v, offset)  # __shfl_down_sync(0xffffffff, v, offset)
        if t.lane == 0:
            out[t.blockIdx.x * 2 + t.warp] = v

    def butterfly(t, x, out):
        v = x[t.threadIdx.x]
        for mask in (16, 8, 4, 2, 1):
            v += yield shfl_xor(v, mask)
        out[t.threadIdx.x] = v  # every lane holds its warp's total

    x = np.arange(128, dtype=np.float32)
    out = np.full(4, np.nan, np.float32)
    launch(warp_sum, 2, 64, x, out)
    assert np.array_equal(out, x.reshape(4, 32).sum(1))
    out = np.full(64, np.nan, np.float32)
    launch(butterfly, 1, 64, x[:64], out)
    assert np.array_equal(out, np.repeat(x[:64].reshape(2, 32).sum(1), 32))


# -- bad launches ----------------------------------------------------------------------------------

def test_out_of_bounds_names_block_thread_array_and_index():
    def unguarded(t, x, out):
        i = t.blockIdx.x * t.blockDim.x + t.threadIdx.x
        out[i] = x[i]  # the CUDA bug: no `if (i < n)`

    x = np.zeros(1000, np.float32)
    with pytest.raises(OutOfBounds, match=r"block \(3, 0, 0\) thread \(232, 0, 0\): global array 'x' index 1000 "
                                          r"is out of bounds for 1000 elements"):
        launch(unguarded, 4, 256, x, np.zeros(1000, np.float32))

    def shared_oob(t):
        s = t.shared_array("s", (4, 8))
        s[t.threadIdx.x, 8] = 1.0

    with pytest.raises(OutOfBounds, match=r"thread \(0, 0, 0\): shared array 's' index \(0, 8\)"):
        launch(shared_oob, 1, 2)
    with pytest.raises(OutOfBounds, match="index -1"):
        launch(lambda t, x: x[t.threadIdx.x - 1], 1, 2, x)
    with pytest.raises(IndexError):  # OutOfBounds is an IndexError
        launch(lambda t, x: x[1000], 1, 1, x)


def test_grid_too_small_leaves_nan():
    n = 1000
    x, out = np.ones(n, np.float32), np.full(n, np.nan, np.float32)
    launch(copy_coalesced, n // 256, 256, x, out, n)  # 3 blocks = 768 threads for 1000 elements
    assert np.isnan(out).sum() == n - 768 and not np.isnan(out[:768]).any()


def test_bad_launch_configurations():
    with pytest.raises(ValueError, match="at most 1024 threads"):
        launch(lambda t: None, 1, (64, 32))
    with pytest.raises(ValueError, match="48 KiB"):
        launch(lambda t: t.shared_array("big", 20_000), 1, 1)
    with pytest.raises(TypeError, match="one element"):
        launch(lambda t, x: x[0:4], 1, 1, np.zeros(4))
    with pytest.raises(TypeError, match="C-contiguous"):
        launch(lambda t, x: None, 1, 1, np.zeros((4, 4))[:, 0])

    def unequal_barriers(t):
        if t.threadIdx.x == 0:
            yield

    with pytest.raises(RuntimeError, match="different numbers of __syncthreads"):
        launch(unequal_barriers, 1, 64)

    def unequal_shuffles(t):
        if t.lane < 16:
            yield shfl_down(1, 1)

    with pytest.raises(RuntimeError, match="warp shuffles"):
        launch(unequal_shuffles, 1, 32)
    with pytest.raises(TypeError, match="yield"):
        launch(lambda t: (yield 3), 1, 32)
