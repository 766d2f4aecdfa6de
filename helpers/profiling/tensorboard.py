"""TensorBoard histograms, written with torch.utils.tensorboard and read back with TensorBoard's own reader.

During quantization-aware training the question is not only "does the loss go down?" but "what do the
distributions look like?": do the fake-quantized weights sit on the grid, does an activation range clip (a spike
at the clip bound), does a layer die (everything at 0)? `SummaryWriter.add_histogram` stores, per step, a
histogram proto (bucket right edges `bucket_limit`, counts `bucket`, and min, max, num, sum, sum_squares) in an
event file; TensorBoard's HISTOGRAMS tab draws them over steps. `read_histograms` loads the same event file with
`tensorboard.backend.event_processing.event_accumulator.EventAccumulator` — what the TensorBoard server uses —
so a test can assert on what a person would see. (No TensorFlow needed.)
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch


def log_histograms(writer, tensors: dict, step: int, bins="tensorflow") -> None:
    """add_histogram(tag, values, step) for each {tag: tensor}; `bins` as SummaryWriter (or explicit edges)."""
    for tag, t in tensors.items():
        if not isinstance(t, torch.Tensor):
            raise TypeError(f"{tag}: expected a tensor, got {type(t).__name__}")
        writer.add_histogram(tag, t.detach().float().cpu().reshape(-1), step, bins=bins)


def read_histograms(logdir) -> dict[str, list[dict]]:
    """{tag: [{"step", "limits", "counts", "min", "max", "num", "sum"}, ...]} from the event files in `logdir`."""
    from tensorboard.backend.event_processing.event_accumulator import HISTOGRAMS, EventAccumulator

    if not Path(logdir).is_dir():
        raise FileNotFoundError(f"no log directory {logdir}")
    acc = EventAccumulator(str(logdir), size_guidance={HISTOGRAMS: 0})   # 0 = keep every step
    acc.Reload()
    out = {}
    for tag in acc.Tags()[HISTOGRAMS]:
        out[tag] = [{"step": ev.step, "limits": np.array(ev.histogram_value.bucket_limit),
                     "counts": np.array(ev.histogram_value.bucket), "min": ev.histogram_value.min,
                     "max": ev.histogram_value.max, "num": ev.histogram_value.num, "sum": ev.histogram_value.sum}
                    for ev in acc.Histograms(tag)]
    return out


def grid_edges(lo: float, hi: float, eps: float) -> np.ndarray:
    """Histogram edges with a bin [k - eps, k + eps) around every integer k in [lo, hi] and one bin for each gap
    between: the count in the even-numbered bins is the number of values within eps of the integer grid."""
    if not 0 < eps < 0.5:
        raise ValueError(f"eps must be in (0, 0.5), got {eps}")
    ks = np.arange(np.floor(lo), np.ceil(hi) + 1)
    return np.sort(np.concatenate([ks - eps, ks + eps]))
