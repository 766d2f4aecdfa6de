"""Non-uniform quantization: a k-means codebook of 2^bits values (Han et al., 2016, "Deep Compression").

A uniform grid spends its levels evenly over the range; a codebook puts them where the data is — dense
near the mode of a bell-shaped weight distribution, sparse in the tails. Storage is `bits` per value for
the indices plus the 2^bits centroids (float32) once per tensor. Lloyd's algorithm on scalars is the
Lloyd–Max quantizer, which minimises the MSE; we reuse the course's K-means (helpers.ml, Module 0.1).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from ..ml.cluster import KMeans


@dataclass
class Codebook:
    """2^bits sorted centroids; `quantize` maps values to the index of the nearest one."""

    centroids: torch.Tensor  # (2^bits,) float32, sorted

    @property
    def bits(self) -> int:
        return int(np.ceil(np.log2(len(self.centroids))))

    def quantize(self, x: torch.Tensor) -> torch.Tensor:
        """Index of the nearest centroid (int64), via the midpoints between sorted centroids."""
        mids = (self.centroids[1:] + self.centroids[:-1]) / 2
        return torch.bucketize(x.to(torch.float32), mids)

    def dequantize(self, idx: torch.Tensor) -> torch.Tensor:
        return self.centroids[idx]

    def fake_quantize(self, x: torch.Tensor) -> torch.Tensor:
        return self.dequantize(self.quantize(x))

    def overhead_bits(self, numel: int, centroid_bits: int = 32) -> float:
        """Bits per value spent on the codebook itself."""
        return len(self.centroids) * centroid_bits / numel


def kmeans_codebook(x: torch.Tensor, bits: int, max_points: int = 20_000, n_init: int = 3,
                    seed: int = 0) -> Codebook:
    """Fit 2^bits centroids to the values of `x` with K-means (on a random subsample of `max_points`)."""
    if not 1 <= bits <= 8:
        raise ValueError(f"bits must be in 1..8, got {bits}")
    v = x.detach().reshape(-1).to(torch.float64).numpy()
    if not np.isfinite(v).all():
        raise ValueError("tensor contains NaN or inf")
    rng = np.random.default_rng(seed)
    if len(v) > max_points:
        v = rng.choice(v, max_points, replace=False)
    k = min(1 << bits, len(np.unique(v)))
    km = KMeans(n_clusters=k, n_init=n_init, seed=seed).fit(v[:, None])
    return Codebook(torch.tensor(np.sort(km.cluster_centers_[:, 0]), dtype=torch.float32))
