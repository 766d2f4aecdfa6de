"""The Triton W4A16 GEMV (helpers/kernels/w4a16_gemv_triton.py) against the dequantize-then-matmul reference, within the
CUDA kernel's a-priori error bound: on the CPU through Triton's interpreter (in a fresh process, because
TRITON_INTERPRET must be set before the kernel is defined), on a GPU for real. Skipped where `triton` (the `gpu`
extra) is not installed."""
import os
import subprocess
import sys
import textwrap

import pytest

pytest.importorskip("triton", reason="the `triton` package (the course's `gpu` extra) is not installed")

CHECK = textwrap.dedent("""
    import sys
    import numpy as np
    import torch
    from helpers.kernels import w4a16_gemv as gemv
    from helpers.kernels import w4a16_gemv_triton as tgemv
    from helpers.kernels.int4_dequant import from_codes, quantize_weight

    device = sys.argv[1]
    rng = np.random.default_rng(0)
    # (rows, cols, group, symmetric, block_rows, block_bytes): ragged rows and bytes, groups that split a block
    for rows, cols, group, sym, br, bb in [(64, 256, 64, True, 16, 32), (37, 200, 40, False, 16, 32),
                                           (5, 96, 32, True, 8, 64), (3, 8, 2, False, 4, 4)]:
        wq = quantize_weight(rng.standard_normal((rows, cols)).astype(np.float32), group, symmetric=sym)
        x = rng.standard_normal(cols).astype(np.float16)
        y = tgemv.gemv(wq, torch.from_numpy(x).to(device), block_rows=br, block_bytes=bb).cpu().numpy()
        err, bound = np.abs(y - gemv.reference(wq, x)), gemv.error_bound(wq, x)
        assert np.all(err <= bound), (rows, cols, group, sym, float(np.max(err / bound)))
    # every signed code, each column alone: y picks out exactly one dequantized weight (exact)
    every = from_codes(np.arange(-8, 8).reshape(1, 16), [[0.5]], group_size=16)
    for k in range(16):
        x = np.zeros(16, np.float16)
        x[k] = 1
        y = tgemv.gemv(every, torch.from_numpy(x).to(device)).cpu().numpy()
        assert y[0] == 0.5 * (k - 8), (k, y[0])
    print("ok")
""")


def _run(device: str, interpret: bool) -> subprocess.CompletedProcess:
    env = {**os.environ, "TRITON_INTERPRET": "1" if interpret else "0", "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, "-c", CHECK, device], capture_output=True, text=True, env=env, timeout=300,
                          cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def test_triton_gemv_matches_reference_in_the_interpreter():
    out = _run("cpu", interpret=True)
    assert out.returncode == 0 and out.stdout.strip().endswith("ok"), out.stderr[-3000:]


def test_bad_input_is_refused():
    out = subprocess.run([sys.executable, "-c", textwrap.dedent("""
        import numpy as np, torch
        from helpers.kernels import w4a16_gemv_triton as tgemv
        from helpers.kernels.int4_dequant import quantize_weight
        wq = quantize_weight(np.ones((4, 16), np.float32), 8)
        for bad, kwargs in [(torch.ones(15), {}), (torch.ones(16), {"block_rows": 6})]:
            try:
                tgemv.gemv(wq, bad, **kwargs)
            except ValueError as e:
                print("refused:", e)
        try:
            tgemv.gemv(np.ones((4, 16)), torch.ones(16))
        except TypeError as e:
            print("refused:", e)
    """)], capture_output=True, text=True, env={**os.environ, "TRITON_INTERPRET": "1"}, timeout=120,
        cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.count("refused:") == 3, out.stdout


@pytest.mark.gpu
def test_triton_gemv_matches_reference_on_the_gpu():
    torch = pytest.importorskip("torch")
    if not torch.cuda.is_available():
        pytest.skip("no CUDA device")
    out = _run("cuda", interpret=False)
    assert out.returncode == 0 and out.stdout.strip().endswith("ok"), out.stderr[-3000:]
