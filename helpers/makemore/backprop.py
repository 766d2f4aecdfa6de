"""Lecture 5, "Becoming a backprop ninja": the MLP + BatchNorm + cross-entropy, gradients by hand.

`forward` spells the network out one primitive at a time and keeps every intermediate in a cache;
`backward` walks the same list in reverse, one line of calculus per line of the forward pass. The
fused versions (`cross_entropy_backward`, `batchnorm_backward`) are the simplified closed forms
derived on paper; `backward_fused` uses them and is what a hand-written training loop runs.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

EPS = 1e-5


def init_params(vocab_size: int, block_size: int, n_embd: int, n_hidden: int,
                generator: torch.Generator | None = None) -> dict[str, torch.Tensor]:
    """Karpathy's init for this lecture: small non-zero biases and BN params, so a wrong gradient can't hide."""
    g = generator
    r = lambda *s: torch.randn(s, generator=g)  # noqa: E731
    fan_in = n_embd * block_size
    p = {"C": r(vocab_size, n_embd),
         "W1": r(fan_in, n_hidden) * (5 / 3) / fan_in ** 0.5, "b1": r(n_hidden) * 0.1,  # b1 is useless (BN) but kept
         "W2": r(n_hidden, vocab_size) * 0.1, "b2": r(vocab_size) * 0.1,
         "bngain": r(1, n_hidden) * 0.1 + 1.0, "bnbias": r(1, n_hidden) * 0.1}
    for t in p.values():
        t.requires_grad = True
    return p


def forward(p: dict, Xb: torch.Tensor, Yb: torch.Tensor) -> tuple[torch.Tensor, dict]:
    """The loss, and every intermediate (the names of Karpathy's notebook), broken into primitive ops."""
    n = Xb.shape[0]
    c = {}
    c["emb"] = p["C"][Xb]  # (n, T, E)
    c["embcat"] = c["emb"].view(n, -1)  # (n, T*E)
    c["hprebn"] = c["embcat"] @ p["W1"] + p["b1"]  # (n, H)
    # BatchNorm, one op per line
    c["bnmeani"] = 1 / n * c["hprebn"].sum(0, keepdim=True)  # (1, H)
    c["bndiff"] = c["hprebn"] - c["bnmeani"]  # (n, H)
    c["bndiff2"] = c["bndiff"] ** 2
    c["bnvar"] = 1 / (n - 1) * c["bndiff2"].sum(0, keepdim=True)  # (1, H), Bessel's correction
    c["bnvar_inv"] = (c["bnvar"] + EPS) ** -0.5
    c["bnraw"] = c["bndiff"] * c["bnvar_inv"]  # (n, H)
    c["hpreact"] = p["bngain"] * c["bnraw"] + p["bnbias"]
    c["h"] = torch.tanh(c["hpreact"])  # (n, H)
    c["logits"] = c["h"] @ p["W2"] + p["b2"]  # (n, V)
    # cross-entropy, one op per line
    c["logit_maxes"] = c["logits"].max(1, keepdim=True).values  # (n, 1), for numerical stability
    c["norm_logits"] = c["logits"] - c["logit_maxes"]
    c["counts"] = c["norm_logits"].exp()
    c["counts_sum"] = c["counts"].sum(1, keepdim=True)  # (n, 1)
    c["counts_sum_inv"] = c["counts_sum"] ** -1
    c["probs"] = c["counts"] * c["counts_sum_inv"]  # (n, V)
    c["logprobs"] = c["probs"].log()
    loss = -c["logprobs"][range(n), Yb].mean()
    return loss, c


@torch.no_grad()
def backward(p: dict, c: dict, Xb: torch.Tensor, Yb: torch.Tensor) -> dict[str, torch.Tensor]:
    """d loss / d (every intermediate and parameter), by hand, in reverse order of `forward`."""
    n = Xb.shape[0]
    d = {}
    d["logprobs"] = torch.zeros_like(c["logprobs"])
    d["logprobs"][range(n), Yb] = -1.0 / n  # loss = -mean of the picked entries
    d["probs"] = d["logprobs"] / c["probs"]  # log' = 1/x
    d["counts_sum_inv"] = (c["counts"] * d["probs"]).sum(1, keepdim=True)  # broadcast in fwd -> sum in bwd
    d["counts"] = c["counts_sum_inv"] * d["probs"]
    d["counts_sum"] = -c["counts_sum"] ** -2 * d["counts_sum_inv"]
    d["counts"] = d["counts"] + d["counts_sum"]  # second use of counts: the row sum copies the grad to each entry
    d["norm_logits"] = c["counts"] * d["counts"]  # exp' = exp
    d["logit_maxes"] = -d["norm_logits"].sum(1, keepdim=True)  # ~0: the max does not change the loss
    d["logits"] = d["norm_logits"] + F.one_hot(c["logits"].max(1).indices, c["logits"].shape[1]) * d["logit_maxes"]
    d["h"] = d["logits"] @ p["W2"].T
    d["W2"] = c["h"].T @ d["logits"]
    d["b2"] = d["logits"].sum(0)
    d["hpreact"] = (1.0 - c["h"] ** 2) * d["h"]  # tanh' = 1 - tanh^2
    d["bngain"] = (c["bnraw"] * d["hpreact"]).sum(0, keepdim=True)
    d["bnbias"] = d["hpreact"].sum(0, keepdim=True)
    d["bnraw"] = p["bngain"] * d["hpreact"]
    d["bnvar_inv"] = (c["bndiff"] * d["bnraw"]).sum(0, keepdim=True)
    d["bndiff"] = c["bnvar_inv"] * d["bnraw"]
    d["bnvar"] = -0.5 * (c["bnvar"] + EPS) ** -1.5 * d["bnvar_inv"]
    d["bndiff2"] = torch.ones_like(c["bndiff2"]) / (n - 1) * d["bnvar"]
    d["bndiff"] = d["bndiff"] + 2 * c["bndiff"] * d["bndiff2"]  # second use of bndiff
    d["bnmeani"] = -d["bndiff"].sum(0, keepdim=True)
    d["hprebn"] = d["bndiff"] + torch.ones_like(c["hprebn"]) / n * d["bnmeani"]
    d["embcat"] = d["hprebn"] @ p["W1"].T
    d["W1"] = c["embcat"].T @ d["hprebn"]
    d["b1"] = d["hprebn"].sum(0)
    d["emb"] = d["embcat"].view(c["emb"].shape)
    d["C"] = torch.zeros_like(p["C"])
    d["C"].index_add_(0, Xb.reshape(-1), d["emb"].reshape(-1, d["emb"].shape[-1]))  # scatter-add: a row per use
    return d


def cross_entropy_backward(logits: torch.Tensor, Yb: torch.Tensor) -> torch.Tensor:
    """d mean(-log softmax(logits)[y]) / d logits = (softmax(logits) - one_hot(y)) / n."""
    n = logits.shape[0]
    dlogits = F.softmax(logits, dim=1)
    dlogits[range(n), Yb] -= 1
    return dlogits / n


def batchnorm_backward(dhpreact: torch.Tensor, bngain: torch.Tensor, bnvar_inv: torch.Tensor,
                       bnraw: torch.Tensor) -> torch.Tensor:
    """d loss / d hprebn for hpreact = gain * (x - mean) / sqrt(var_unbiased + eps) + bias, in one line:

    dx = gain * var_inv / n * (n * dy - sum(dy) - n/(n-1) * xhat * sum(dy * xhat))
    """
    n = dhpreact.shape[0]
    return bngain * bnvar_inv / n * (n * dhpreact - dhpreact.sum(0) - n / (n - 1) * bnraw * (dhpreact * bnraw).sum(0))


@torch.no_grad()
def backward_fused(p: dict, c: dict, Xb: torch.Tensor, Yb: torch.Tensor) -> dict[str, torch.Tensor]:
    """Parameter gradients only, with the fused cross-entropy and BatchNorm backward passes."""
    dlogits = cross_entropy_backward(c["logits"], Yb)
    g = {"W2": c["h"].T @ dlogits, "b2": dlogits.sum(0)}
    dhpreact = (1.0 - c["h"] ** 2) * (dlogits @ p["W2"].T)
    g["bngain"] = (c["bnraw"] * dhpreact).sum(0, keepdim=True)
    g["bnbias"] = dhpreact.sum(0, keepdim=True)
    dhprebn = batchnorm_backward(dhpreact, p["bngain"], c["bnvar_inv"], c["bnraw"])
    g["W1"], g["b1"] = c["embcat"].T @ dhprebn, dhprebn.sum(0)
    demb = (dhprebn @ p["W1"].T).view(c["emb"].shape)
    g["C"] = torch.zeros_like(p["C"]).index_add_(0, Xb.reshape(-1), demb.reshape(-1, demb.shape[-1]))
    return g
