"""`make bench` for Module 0.2: seconds per MNIST epoch of the NumPy framework vs its PyTorch twin.

Same model (784-512-256-10, BatchNorm, ReLU, dropout 0.2), same initial weights, same batches (128),
Adam, float32, on the CPU with the same number of threads for both. Goal: NumPy <= 1.5x PyTorch.
"""
from __future__ import annotations

import numpy as np


def epoch_seconds(threads: int = 1, epochs: int = 1, n: int | None = None) -> dict:
    """Train both frameworks for `epochs` on (the first `n` of) MNIST; returns mean s/epoch and accuracy."""
    import torch
    from threadpoolctl import threadpool_limits

    from ..data import load_mnist
    from .losses import CrossEntropyLoss
    from .network import mlp
    from .optim import Adam
    from .torch_twin import fit_torch, torch_accuracy, to_torch

    (xtr, ytr), (xte, yte) = load_mnist()
    x = xtr.reshape(-1, 784).astype(np.float32) / 255
    xt = xte.reshape(-1, 784).astype(np.float32) / 255
    mu, sd = x.mean(), x.std()
    x, xt = (x - mu) / sd, (xt - mu) / sd
    if n is not None:
        x, ytr = x[:n], ytr[:n]
    old = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        with threadpool_limits(threads):
            net = mlp([784, 512, 256, 10], batchnorm=True, dropout=0.2, rng=np.random.default_rng(0))
            twin = to_torch(net)
            h_np = net.fit(x, ytr, CrossEntropyLoss(), Adam(net.parameters(), lr=1e-3), epochs, 128,
                           np.random.default_rng(1), progress=False)
            h_t = fit_torch(twin, x, ytr, torch.nn.CrossEntropyLoss(), torch.optim.Adam(twin.parameters(), lr=1e-3),
                            epochs, 128, np.random.default_rng(1), progress=False)
    finally:
        torch.set_num_threads(old)
    return {"numpy_s": float(np.mean(h_np["seconds"])), "torch_s": float(np.mean(h_t["seconds"])),
            "acc_numpy": net.accuracy(xt, yte), "acc_torch": torch_accuracy(twin, xt, yte)}


def run(threads_list=(1,)) -> list[dict]:
    """One row per thread count: ours = NumPy s/epoch, reference = PyTorch s/epoch (full 60k, batch 128).

    One thread by default, as in the notebook: on a shared 2-core machine a second OpenMP/BLAS thread mostly
    spins; pass `threads_list=(1, 2)` on an idle machine to time both.
    """
    rows = []
    for threads in threads_list:
        r = epoch_seconds(threads)
        rows.append({"module": "0.2", "name": f"mnist_mlp_epoch_{threads}thread", "ours": round(r["numpy_s"], 3),
                     "reference": round(r["torch_s"], 3), "unit": "s/epoch",
                     "note": f"784-512-256-10 BN+dropout, Adam, batch 128, float32; ratio "
                             f"{r['numpy_s'] / r['torch_s']:.2f} (goal <= 1.5); 1-epoch acc numpy "
                             f"{r['acc_numpy']:.3f} torch {r['acc_torch']:.3f}"})
    return rows


if __name__ == "__main__":
    for row in run():
        print(row)
