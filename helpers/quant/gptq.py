"""GPTQ: quantize a linear layer's weight one input column at a time, pushing each rounding error onto the
columns not yet quantized (Frantar, Ashkboos, Hoefler & Alistarh, 2023, "GPTQ: Accurate Post-Training
Quantization for Generative Pre-trained Transformers", Algorithm 1).

The goal, per layer, is the weight Q on the grid that keeps the layer's *outputs* close on real inputs X (in, n):

    min_Q ||W X - Q X||²  =  Σ_rows (w - q) H (w - q)ᵀ / 2,      H = 2 X Xᵀ  (in, in)

Rows are independent and share H, so all rows are processed together. Quantizing column j of every row to
q_j makes an error w_j - q_j; the best change of the columns F not yet quantized (the OBS / OBQ update,
Hassibi & Stork 1993; Frantar & Alistarh 2022) is

    w_F  -=  (w_j - q_j) / [H_F⁻¹]_jj · [H_F⁻¹]_{j,F}                               (1)

and afterwards column j leaves F (H_F⁻¹ loses row/col j). GPTQ's three observations make this fast:
  1. every row may use the same column order (left to right), so H_F⁻¹ is shared by all rows;
  2. the rows of the upper Cholesky factor U of H⁻¹ (H⁻¹ = Uᵀ U) are exactly the rows
     [H_F⁻¹]_{j,F} / sqrt([H_F⁻¹]_jj) that (1) needs in turn, so the shrinking inverses are never formed;
  3. (1) only touches later columns, so the update for a block of `blocksize` columns is applied inside
     the block column by column and to the rest of the matrix once, as one matrix product ("lazy batch").
Extras of the reference implementation (github.com/IST-DASLab/gptq, gptq.py/quant.py) kept here: dead
inputs (H_ii = 0), dampening H + λI with λ = percdamp · mean(diag H), grids per group of input columns
chosen when the group is reached, and act-order (columns by decreasing H_ii, the most active inputs first).

`quantize_model_gptq` applies it to every linear of a Llama-style decoder, layer after layer, each layer's
Hessians collected on the inputs produced by the already-quantized layers before it.
"""
from __future__ import annotations

import time
from dataclasses import dataclass

import torch
from torch import nn

from .affine import QParams, QSpec, qrange, scale_zero_point
from .evaluate import sequential

# --- the Hessian H = 2 X Xᵀ / n of one linear layer's inputs ------------------------------------------


def _rows(x: torch.Tensor) -> torch.Tensor:
    """Inputs (..., in) as a matrix (n, in), float32 (or float64 if given)."""
    if not isinstance(x, torch.Tensor) or not x.is_floating_point() or x.ndim < 1:
        raise TypeError("expected a floating-point tensor of inputs shaped (..., in_features)")
    x = x.reshape(-1, x.shape[-1])
    return x if x.dtype == torch.float64 else x.float()


def hessian(x: torch.Tensor) -> torch.Tensor:
    """H = 2 Xᵀ X / n for inputs x (..., in) seen as n rows (tokens): the Hessian of the mean squared
    output error of a linear layer with respect to one row of its weight. Returns (in, in)."""
    x = _rows(x)                                                 # (n, in)
    return 2 * x.T @ x / x.shape[0]


class HessianAccumulator:
    """H = 2 Xᵀ X / n over all inputs a linear layer has seen, streamed batch by batch like the reference:

        H ← H · n / (n + m);  n ← n + m;  H ← H + (2 / n) xᵀ x     for a new batch x of m rows.

    Use as a forward hook: `handle = acc.attach(linear)`, run the calibration data, `handle.remove()`.
    (The reference counts sequences, not tokens, in n: H is then larger by the sequence length — GPTQ's
    result does not change, the dampening being relative to mean(diag H).)"""

    def __init__(self, in_features: int, dtype: torch.dtype = torch.float32):
        if not isinstance(in_features, int) or in_features < 1:
            raise ValueError(f"in_features must be a positive int, got {in_features!r}")
        self.H = torch.zeros(in_features, in_features, dtype=dtype)    # (in, in)
        self.n = 0

    def add(self, x: torch.Tensor) -> None:
        x = _rows(x).to(self.H.dtype)                            # (m, in)
        if x.shape[1] != self.H.shape[0]:
            raise ValueError(f"inputs have {x.shape[1]} features, the accumulator expects {self.H.shape[0]}")
        m = x.shape[0]
        self.H.addmm_(x.T, x, beta=self.n / (self.n + m), alpha=2 / (self.n + m))   # H·n/(n+m) + 2 xᵀx/(n+m)
        self.n += m

    def __call__(self, module: nn.Module, args: tuple, output) -> None:
        """Forward-hook signature: record the module's input."""
        self.add(args[0].detach())

    def attach(self, module: nn.Module):
        """Register on `module` (an nn.Linear); returns the hook handle (call .remove() when done)."""
        return module.register_forward_hook(self)


# --- GPTQ on one weight matrix -------------------------------------------------------------------------


@dataclass
class GPTQInfo:
    """What `gptq_quantize` chose. Column j of the weight uses the grid of group g_idx[j]:
    Q[:, j] = scale[:, g] · (codes[:, j] - zero_point[:, g]),  g = g_idx[j]."""

    loss: float                   # Σ_j (w_j - q_j)² / [H_F⁻¹]_jj / 2 over columns and rows = the final
                                  # Σ_rows (w - q) (H + λI) (w - q)ᵀ / 2 (the reference's "error")
    codes: torch.Tensor           # (out, in) int32 integer codes, original column order
    scale: torch.Tensor           # (out, n_groups) float32
    zero_point: torch.Tensor      # (out, n_groups) int32
    g_idx: torch.Tensor           # (in,) long, the group of every input column
    perm: torch.Tensor            # (in,) long, the order the columns were quantized in (identity without act-order)
    bits: int = 4
    group_size: int | None = None  # None: one grid per row

    def dequantize(self) -> torch.Tensor:
        """The weight (out, in) the codes stand for, float32."""
        s, z = self.scale[:, self.g_idx], self.zero_point[:, self.g_idx]
        return (self.codes - z).float() * s

    def nbytes(self, scale_bytes: int = 2) -> dict[str, int]:
        """Storage: `bits`-bit codes, one `scale_bytes` scale and one `bits`-bit zero-point per row and group,
        plus an int32 group index per column when the groups are not contiguous (act-order, dynamic groups)."""
        out = {"codes": (self.codes.numel() * self.bits + 7) // 8,
               "scales": self.scale.numel() * scale_bytes,
               "zeros": (self.zero_point.numel() * self.bits + 7) // 8}
        g = self.group_size or self.g_idx.numel()
        contiguous = torch.equal(self.g_idx, torch.arange(self.g_idx.numel()) // g)
        out["g_idx"] = 0 if contiguous else 4 * self.g_idx.numel()
        return out


def _grid(w: torch.Tensor, spec: QSpec) -> QParams:
    """Min-max grid of every row of w (out, k): a (scale, zero-point) per row, from affine's arithmetic.
    An all-zero row gets the range [-1, 1], as in the reference (any grid represents it exactly)."""
    lo = w.amin(dim=1, keepdim=True).clamp(max=0).float()        # (out, 1)
    hi = w.amax(dim=1, keepdim=True).clamp(min=0).float()
    empty = hi == lo
    lo, hi = torch.where(empty, -1.0, lo), torch.where(empty, 1.0, hi)
    scale, zero_point = scale_zero_point(lo, hi, spec.bits, spec.symmetric, spec.signed)
    return QParams(scale, zero_point, spec.bits, spec.signed, spec.symmetric, axis=0)


def _rule(qp: QParams) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(s, 1/s, z) as float vectors (out,): QParams.quantize's rule clamp(round(x · (1/s)) + z), dequantize's
    s (q - z), applied inline to one column at a time (the per-call checks of QParams would dominate)."""
    s = qp.scale[:, 0]
    return s, 1.0 / s, qp.zero_point[:, 0].float()


def _check_weight(W) -> None:
    if not isinstance(W, torch.Tensor) or not W.is_floating_point():
        raise TypeError(f"W must be a floating-point torch tensor, got {type(W).__name__}")
    if W.ndim != 2:
        raise ValueError(f"W must be a weight matrix (out, in), got shape {tuple(W.shape)}")
    if not bool(torch.isfinite(W).all()):
        raise ValueError("W contains NaN or inf")


def _check_hessian(H, W) -> None:
    if not isinstance(H, torch.Tensor) or not H.is_floating_point():
        raise TypeError(f"H must be a floating-point torch tensor, got {type(H).__name__}")
    if H.shape != (W.shape[1], W.shape[1]):
        raise ValueError(f"H must be (in, in) = {(W.shape[1], W.shape[1])} for W of shape {tuple(W.shape)}, "
                         f"got {tuple(H.shape)}: accumulate it on the inputs of this layer")
    if not bool(torch.isfinite(H).all()):
        raise ValueError("H contains NaN or inf")
    if float((H - H.T).abs().max()) > 1e-5 * float(H.abs().max()):
        raise ValueError("H must be symmetric (H = 2 X Xᵀ / n)")


def _group_size(spec, group_size) -> int | None:
    """Check the grid spec; the group size it implies (None: one grid per output row)."""
    if not isinstance(spec, QSpec):
        raise TypeError(f"spec must be a helpers.quant.QSpec, got {type(spec).__name__}")
    if spec.method != "minmax":
        raise ValueError(f"GPTQ here uses min-max grids like the reference; got method {spec.method!r}")
    if spec.granularity == "tensor":
        raise ValueError("GPTQ grids are per output row: use granularity 'channel' (or 'group')")
    if spec.granularity == "group":
        if group_size is not None and group_size != spec.group_size:
            raise ValueError(f"group_size {group_size} disagrees with spec.group_size {spec.group_size}")
        group_size = spec.group_size
    if group_size is not None and (not isinstance(group_size, int) or group_size < 1):
        raise ValueError(f"group_size must be a positive int or None, got {group_size!r}")
    return group_size


def _upper_cholesky_of_inverse(H: torch.Tensor) -> torch.Tensor:
    """U upper-triangular with H⁻¹ = Uᵀ U (H symmetric positive definite); clear error if it is not."""
    L, info = torch.linalg.cholesky_ex(H)
    if int(info) != 0:
        raise ValueError("H (after dampening) is not positive definite: increase percdamp, or collect H on "
                         "more calibration inputs (H must be 2 X Xᵀ / n of real inputs)")
    return torch.linalg.cholesky(torch.cholesky_inverse(L), upper=True)


def gptq_quantize(W: torch.Tensor, H: torch.Tensor, spec: QSpec | None = None, blocksize: int = 128,
                  percdamp: float = 0.01, act_order: bool = False, group_size: int | None = None,
                  static_groups: bool = False) -> tuple[torch.Tensor, GPTQInfo]:
    """GPTQ (Algorithm 1) of a weight W (out, in) given the Hessian H (in, in) of its inputs.

    spec: the grid (bits 2..8, symmetric or not, signed or unsigned codes; default 4-bit asymmetric, unsigned
    like the reference), min-max per output row, or per row and group of `group_size` input columns.
    Dynamic groups (default) pick a group's grid when its first column is reached, from the weights as
    updated so far; static_groups picks every group's grid up front from the original W (original column
    order — with act-order the group of a column is then its place in W, not in the processing order).
    act_order: process columns by decreasing H_ii; dynamic groups then follow this processing order.
    (One deliberate difference from the reference: a dynamic group starting inside a block takes its grid from
    the weights *with* the updates of that block's earlier columns — the reference reads the not yet updated
    copy — so the result does not depend on `blocksize`. The per-row grid is taken after zeroing dead inputs.)
    Returns (Q, info): Q the dequantized weight (out, in) in W's dtype, info a `GPTQInfo`.
    """
    spec = QSpec(bits=4, signed=False, granularity="channel") if spec is None else spec
    _check_weight(W)
    _check_hessian(H, W)
    group_size = _group_size(spec, group_size)
    if not isinstance(blocksize, int) or blocksize < 1:
        raise ValueError(f"blocksize must be a positive int, got {blocksize!r}")
    if not 0 <= percdamp < 1:
        raise ValueError(f"percdamp must be in [0, 1), got {percdamp}")
    w_dtype, dtype = W.dtype, (torch.float64 if W.dtype == torch.float64 else torch.float32)
    rows, cols = W.shape
    W, H = W.detach().to(dtype).clone(), H.detach().to(dtype).clone()      # (out, in), (in, in)

    dead = torch.diag(H) == 0                                    # inputs that are always 0: weight irrelevant
    H[dead, dead] = 1
    W[:, dead] = 0

    g = cols if group_size is None else group_size               # columns per grid
    static = [_grid(W[:, a:a + g], spec) for a in range(0, cols, g)] if static_groups or group_size is None \
        else None
    static_rules = None if static is None else [_rule(p) for p in static]
    perm = torch.argsort(torch.diag(H), descending=True, stable=True) if act_order else torch.arange(cols)
    W, H = W[:, perm], H[perm][:, perm]

    H += percdamp * torch.mean(torch.diag(H)) * torch.eye(cols, dtype=dtype)    # dampening λ I
    U = _upper_cholesky_of_inverse(H)                            # (in, in), H⁻¹ = Uᵀ U

    qmin, qmax = qrange(spec.bits, spec.signed)
    Q = torch.zeros_like(W)                                      # (out, in), processing order
    codes = torch.zeros(rows, cols, dtype=torch.int32)
    g_idx = torch.zeros(cols, dtype=torch.long)                  # group of each column, processing order
    grids, loss = [], 0.0
    for i1 in range(0, cols, blocksize):
        i2 = min(i1 + blocksize, cols)
        W1 = W[:, i1:i2].clone()                                 # (out, B) the block, updated as we go
        C1 = torch.zeros_like(W1, dtype=torch.float32)           # (out, B) its integer codes
        Err1 = torch.zeros_like(W1)                              # (out, B) scaled errors, for the lazy update
        U1 = U[i1:i2, i1:i2]
        for i in range(i2 - i1):
            j = i1 + i                                           # column j (processing order)
            if static is not None:
                g_idx[j] = int(perm[j]) // g                     # the group the column sits in in W
                s, inv_s, z = static_rules[g_idx[j]]
            elif j % g == 0:                                     # a group starts: grid from current weights
                cur = W[:, j:j + g].clone()                      # columns of later blocks lack this block's
                cur[:, :i2 - j] = W1[:, i:i + g]                 # update: add it (exact for any blocksize)
                cur[:, i2 - j:] -= Err1 @ U[i1:i2, i2:j + g]
                grids.append(_grid(cur, spec))
                s, inv_s, z = _rule(grids[-1])
            if static is None:
                g_idx[j] = len(grids) - 1
            w, d = W1[:, i], U1[i, i]                            # (out,), U_jj = sqrt([H_F⁻¹]_jj)
            c = torch.clamp(torch.round(w.float() * inv_s) + z, qmin, qmax)      # (out,) codes
            q = ((c - z) * s).to(dtype)                          # (out,) the grid point
            Q[:, j], C1[:, i] = q, c
            err = (w - q) / d                                    # (out,)
            W1[:, i:] -= torch.outer(err, U1[i, i:])             # update (1) inside the block
            Err1[:, i] = err
        codes[:, i1:i2] = C1.to(torch.int32)
        loss += float((Err1 ** 2).sum()) / 2                     # Σ (w - q)² / [H_F⁻¹]_jj / 2
        W[:, i2:] -= Err1 @ U[i1:i2, i2:]                        # lazy batch: update (1) for all later blocks

    inv = torch.argsort(perm)                                    # back to W's column order
    if static is not None:
        grids = static
    info = GPTQInfo(loss=loss, codes=codes[:, inv], scale=torch.cat([p.scale for p in grids], dim=1),
                    zero_point=torch.cat([p.zero_point for p in grids], dim=1), g_idx=g_idx[inv], perm=perm,
                    bits=spec.bits, group_size=group_size)
    return Q[:, inv].to(w_dtype), info


def rtn_quantize(W: torch.Tensor, spec: QSpec | None = None, group_size: int | None = None) -> torch.Tensor:
    """Round-to-nearest baseline on the same grid as `gptq_quantize` (min-max per row or per row and group),
    without error feedback. Returns the dequantized weight (out, in), float32."""
    spec = QSpec(bits=4, signed=False, granularity="channel") if spec is None else spec
    _check_weight(W)
    group_size = _group_size(spec, group_size)
    W = W.detach().float()
    g = W.shape[1] if group_size is None else group_size
    return torch.cat([_grid(W[:, a:a + g], spec).fake_quantize(W[:, a:a + g]) for a in range(0, W.shape[1], g)],
                     dim=1)


# --- the whole model, layer after layer ---------------------------------------------------------------

# A Llama decoder layer's linears in the order they see data; the linears of one group share their input,
# hence one Hessian (and one GPTQ call on their weights stacked by rows: rows are independent given H).
LLAMA_GROUPS = (("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj"), ("self_attn.o_proj",),
                ("mlp.gate_proj", "mlp.up_proj"), ("mlp.down_proj",))


class _Stop(Exception):
    """Raised by a hook once the inputs needed are recorded: the rest of the layer need not run."""


def _stop(module, args, output):
    raise _Stop


@torch.inference_mode()
def layer_hessians(layer: nn.Module, hidden: torch.Tensor, kwargs: dict, groups, batch_size: int = 8) -> dict:
    """{group: H} for each group of linears (names in `layer`), accumulated on the calibration batch
    hidden (n, T, C) run through `layer` a few windows at a time, stopping after the last group's input."""
    accs = {names: HessianAccumulator(layer.get_submodule(names[0]).in_features) for names in groups}
    handles = [acc.attach(layer.get_submodule(names[0])) for names, acc in accs.items()]
    handles.append(layer.get_submodule(groups[-1][0]).register_forward_hook(_stop))
    try:
        for b in range(0, len(hidden), batch_size):
            try:
                layer(hidden[b:b + batch_size], **kwargs)
            except _Stop:
                pass
    finally:
        for h in handles:
            h.remove()
    return {names: acc.H for names, acc in accs.items()}


def _relative_error(W: torch.Tensor, Q: torch.Tensor, H: torch.Tensor) -> float:
    """||(W - Q) X||² / ||W X||² from H alone: tr(D H Dᵀ) / tr(W H Wᵀ)."""
    D = W - Q
    return float(((D @ H) * D).sum() / ((W @ H) * W).sum())


@dataclass
class GPTQReport:
    """What `quantize_model_gptq` did: one row per group of linears, total time and storage."""

    rows: list[dict]              # layer, names, loss (+ rel_err of GPTQ, rtn_rel_err of RTN on the same grid)
    seconds: float                # wall-clock time of the whole pass
    cpu_seconds: float            # CPU time of this process during the pass
    nbytes: dict[str, int]        # codes, scales, zeros, g_idx of all quantized linears

    def __str__(self):
        text = f"GPTQ pass {self.seconds:.1f} s ({self.cpu_seconds:.1f} s CPU), " \
               f"{sum(self.nbytes.values()) / 2**20:.2f} MiB of codes + scales + zeros"
        if self.rows and "rel_err" in self.rows[0]:
            gptq = sum(r["rel_err"] for r in self.rows) / len(self.rows)
            rtn = sum(r["rtn_rel_err"] for r in self.rows) / len(self.rows)
            text += f", mean relative output error {gptq:.2e} (RTN {rtn:.2e})"
        return text


def quantize_model_gptq(model, calib: torch.Tensor, bits: int = 4, group_size: int | None = None,
                        act_order: bool = False, true_sequential: bool = True, static_groups: bool = False,
                        blocksize: int = 128, percdamp: float = 0.01, symmetric: bool = False,
                        layer_errors: bool = True, groups=LLAMA_GROUPS, desc: str = "GPTQ") -> GPTQReport:
    """GPTQ every linear of every decoder layer of a Llama-style `model` (`model.model.layers`), in place
    (fake quantization: each weight replaced by its dequantized GPTQ weight), calibrated on the token windows
    `calib` (n, T) — layer after layer with `evaluate.sequential`.

    true_sequential: within a layer, quantize q/k/v, then o, then gate/up, then down, each group's Hessian
    collected on the inputs produced by the groups already quantized (the reference's --true-sequential);
    False: all four Hessians from one pass through the float layer (cheaper, the reference's default).
    layer_errors: also measure each group's relative output error ||(W-Q)X||²/||WX||² for GPTQ and for RTN
    on the same grid (four extra (out, in) x (in, in) products per group: leave off when timing).
    """
    spec = QSpec(bits=bits, symmetric=symmetric, signed=False, granularity="channel")
    if group_size is not None:
        _group_size(spec, group_size)
    rows, nbytes = [], {"codes": 0, "scales": 0, "zeros": 0, "g_idx": 0}
    stages = [(names,) for names in groups] if true_sequential else [tuple(groups)]

    def quantize_layer(i, layer, hidden, kwargs):
        for stage in stages:
            hessians = layer_hessians(layer, hidden, kwargs, stage)
            for names, H in hessians.items():
                linears = [layer.get_submodule(n) for n in names]
                W = torch.cat([m.weight.detach().float() for m in linears])      # (Σ out, in)
                Q, info = gptq_quantize(W, H, spec, blocksize=blocksize, percdamp=percdamp, act_order=act_order,
                                        group_size=group_size, static_groups=static_groups)
                row = {"layer": i, "names": names, "loss": info.loss}
                if layer_errors:
                    row["rel_err"] = _relative_error(W, Q, H)
                    row["rtn_rel_err"] = _relative_error(W, rtn_quantize(W, spec, group_size), H)
                rows.append(row)
                for k, v in info.nbytes().items():
                    nbytes[k] += v
                with torch.no_grad():
                    for m, q in zip(linears, Q.split([m.out_features for m in linears])):
                        m.weight.copy_(q.to(m.weight.dtype))

    t0, c0 = time.perf_counter(), time.process_time()
    sequential(model, calib, quantize_layer, desc=desc)
    return GPTQReport(rows, time.perf_counter() - t0, time.process_time() - c0, nbytes)

