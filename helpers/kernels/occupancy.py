"""The CUDA occupancy formula: how many warps of a kernel fit on one SM, and which resource runs out first.

Occupancy = resident warps / the SM's maximum. Blocks per SM = the minimum of four limits (the CUDA Occupancy
Calculator's formula; CUDA C++ Programming Guide, "Technical Specifications per Compute Capability", 8.0 and 9.0):
    threads         ⌊max warps per SM / warps per block⌋
    blocks          at most `max_blocks` resident blocks (32 on sm_80 and sm_90)
    registers       registers are allocated per warp in units of 256: ⌊regs per SM / (⌈32·regs/256⌉·256)⌋ warps,
                    divided by warps per block
    shared memory   ⌊smem per SM / (smem per block + 1 KiB reserved by the system)⌋
(Simplification: the shared-memory carveout is assumed at its maximum.) Used by Modules 1.5 (the kernels) and 1.6 (profiling).
"""
from __future__ import annotations

SM_LIMITS = {"A100 (sm_80)": dict(max_warps=64, max_blocks=32, regs=65536, smem=164 * 1024),
             "H100 (sm_90)": dict(max_warps=64, max_blocks=32, regs=65536, smem=228 * 1024)}


def occupancy(threads, regs_per_thread, smem_per_block, sm, reg_unit=256, smem_reserved=1024):
    """(resident warps per SM / max, the limiting resource) for a kernel with this launch and resource use."""
    if not 1 <= threads <= 1024:
        raise ValueError(f"a block has 1..1024 threads, got {threads}")
    if regs_per_thread < 0 or regs_per_thread > 255 or smem_per_block < 0:
        raise ValueError(f"need 0 <= registers per thread <= 255 and shared memory >= 0, "
                         f"got {regs_per_thread}, {smem_per_block}")
    warps = -(-threads // 32)
    regs_per_warp = -(-regs_per_thread * 32 // reg_unit) * reg_unit
    limits = {"threads": sm["max_warps"] // warps,
              "blocks": sm["max_blocks"],
              "registers": (sm["regs"] // regs_per_warp) // warps if regs_per_thread else sm["max_blocks"],
              "shared memory": sm["smem"] // (smem_per_block + smem_reserved)}
    blocks = min(limits.values())
    return blocks * warps / sm["max_warps"], min(limits, key=limits.get)
