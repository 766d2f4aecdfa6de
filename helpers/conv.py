"""2-D convolution and pooling from scratch in numpy (NCHW), by im2col: every window becomes a column.

`im2col` turns convolution into one matrix product: for an (N, C, H, W) input and a kh x kw kernel it
gathers each receptive-field patch into a column of length C·kh·kw, so that

    out[n, o, :] = W.reshape(O, C·kh·kw) @ cols[n]          # (O, OH·OW)

which is how cuDNN/oneDNN's GEMM-based kernels work too. Like `torch.nn.functional.conv2d`, `conv2d`
computes a cross-correlation (the kernel is not flipped). Stride, zero padding, dilation and groups
follow torch's definitions, so the results can be compared with it number for number.
"""
from __future__ import annotations

import numpy as np


def _pair(v, name: str, minimum: int) -> tuple[int, int]:
    a, b = (v, v) if np.isscalar(v) else tuple(v)
    if int(a) != a or int(b) != b or a < minimum or b < minimum:
        raise ValueError(f"{name} must be integers >= {minimum}, got {v!r}")
    return int(a), int(b)


def conv_output_size(n: int, kernel: int, stride: int = 1, padding: int = 0, dilation: int = 1) -> int:
    """Output length along one axis: floor((n + 2p - d·(k-1) - 1) / s) + 1."""
    return (n + 2 * padding - dilation * (kernel - 1) - 1) // stride + 1


def im2col(x: np.ndarray, kernel, stride=1, padding=0, dilation=1, pad_value: float = 0.0) -> np.ndarray:
    """(N, C, H, W) → (N, C·kh·kw, OH·OW): column l holds the patch under output position l.

    Rows are ordered (c, i, j) — channel, kernel row, kernel column — the order of `W.reshape(O, -1)`.
    """
    if x.ndim != 4:
        raise ValueError(f"im2col expects (N, C, H, W), got shape {x.shape}")
    kh, kw = _pair(kernel, "kernel", 1)
    sh, sw = _pair(stride, "stride", 1)
    ph, pw = _pair(padding, "padding", 0)
    dh, dw = _pair(dilation, "dilation", 1)
    N, C, H, W = x.shape
    OH, OW = conv_output_size(H, kh, sh, ph, dh), conv_output_size(W, kw, sw, pw, dw)
    if OH < 1 or OW < 1:
        raise ValueError(f"kernel {kh}x{kw} (dilation {dh},{dw}) does not fit a {H}x{W} input "
                         f"padded by {ph},{pw}: output would be {OH}x{OW}")
    xp = np.pad(x, ((0, 0), (0, 0), (ph, ph), (pw, pw)), constant_values=pad_value)
    cols = np.empty((N, C, kh, kw, OH, OW), dtype=x.dtype)
    for i in range(kh):                        # one strided slice per kernel offset (i, j)
        for j in range(kw):
            r, c = i * dh, j * dw
            cols[:, :, i, j] = xp[:, :, r:r + sh * (OH - 1) + 1:sh, c:c + sw * (OW - 1) + 1:sw]  # (N, C, OH, OW)
    return cols.reshape(N, C * kh * kw, OH * OW)


def conv2d(x: np.ndarray, weight: np.ndarray, bias: np.ndarray | None = None,
           stride=1, padding=0, dilation=1, groups: int = 1) -> np.ndarray:
    """`torch.nn.functional.conv2d` in numpy: x (N, C, H, W), weight (O, C/groups, kh, kw) → (N, O, OH, OW)."""
    if x.ndim != 4 or weight.ndim != 4:
        raise ValueError(f"x and weight must be 4-D, got shapes {x.shape} and {weight.shape}")
    N, C, H, W = x.shape
    O, Cg, kh, kw = weight.shape
    if groups < 1 or C % groups or O % groups:
        raise ValueError(f"groups={groups} must divide in_channels={C} and out_channels={O}")
    if Cg != C // groups:
        raise ValueError(f"weight has {Cg} input channels per group, x has {C}/{groups}={C // groups}")
    if bias is not None and bias.shape != (O,):
        raise ValueError(f"bias must have shape ({O},), got {bias.shape}")
    cols = im2col(x, (kh, kw), stride, padding, dilation)        # (N, C·kh·kw, L)
    L = cols.shape[-1]
    cols = cols.reshape(N, groups, Cg * kh * kw, L)                # (N, G, Cg·kh·kw, L)
    w = weight.reshape(groups, O // groups, Cg * kh * kw)          # (G, O/G, Cg·kh·kw)
    out = np.einsum("gok,ngkl->ngol", w, cols, optimize=True)      # (N, G, O/G, L): one GEMM per group
    out = out.reshape(N, O, L)
    if bias is not None:
        out = out + bias.reshape(1, O, 1)
    sh, sw = _pair(stride, "stride", 1)
    ph, pw = _pair(padding, "padding", 0)
    dh, dw = _pair(dilation, "dilation", 1)
    return out.reshape(N, O, conv_output_size(H, kh, sh, ph, dh), conv_output_size(W, kw, sw, pw, dw))


def _pool(x: np.ndarray, kernel, stride, padding, pad_value: float, reduce) -> np.ndarray:
    if x.ndim != 4:
        raise ValueError(f"pooling expects (N, C, H, W), got shape {x.shape}")
    kh, kw = _pair(kernel, "kernel", 1)
    stride = (kh, kw) if stride is None else stride            # torch's default: stride = kernel
    ph, pw = _pair(padding, "padding", 0)
    if 2 * ph > kh or 2 * pw > kw:
        raise ValueError(f"padding {padding!r} must be at most half the kernel {kernel!r} (as in torch)")
    N, C, H, W = x.shape
    cols = im2col(x.reshape(N * C, 1, H, W), (kh, kw), stride, padding, pad_value=pad_value)  # (N·C, kh·kw, L)
    sh, sw = _pair(stride, "stride", 1)
    return reduce(cols, axis=1).reshape(N, C, conv_output_size(H, kh, sh, ph), conv_output_size(W, kw, sw, pw))


def max_pool2d(x: np.ndarray, kernel, stride=None, padding=0) -> np.ndarray:
    """Max over each window, per channel; padding counts as -inf (torch's `max_pool2d`)."""
    return _pool(x, kernel, stride, padding, -np.inf, np.max)


def avg_pool2d(x: np.ndarray, kernel, stride=None, padding=0) -> np.ndarray:
    """Mean over each window, per channel; padding counts as zeros in the mean (torch's default
    `count_include_pad=True`)."""
    return _pool(x, kernel, stride, padding, 0.0, np.mean)


def global_avg_pool2d(x: np.ndarray) -> np.ndarray:
    """(N, C, H, W) → (N, C): the mean of each feature map, the head of ResNet and most modern CNNs."""
    if x.ndim != 4:
        raise ValueError(f"global_avg_pool2d expects (N, C, H, W), got shape {x.shape}")
    return x.mean(axis=(2, 3))
