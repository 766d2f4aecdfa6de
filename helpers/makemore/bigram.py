"""The bigram model two ways (Lecture 2): by counting, and as a one-layer neural net trained by gradient descent.

Both estimate P(next char | this char). With add-alpha smoothing the count model is the posterior mean
under a Dirichlet(alpha) prior on each row — equivalently the maximum a posteriori (MAP) estimate under
Dirichlet(alpha + 1); the MAP under the uniform Dirichlet(1) is the unsmoothed maximum-likelihood table.
Giving the net alpha pseudo-counts of every pair as a loss term (the log-density of Dirichlet(alpha + 1))
makes the two estimate the very same table, which is what the notebook checks.
"""
from __future__ import annotations

import math
from collections import Counter

import torch
import torch.nn.functional as F

from .data import BOUNDARY, build_dataset


def bigram_pairs(words: list[str], stoi: dict[str, int]) -> tuple[torch.Tensor, torch.Tensor]:
    """xs (N,), ys (N,): every (char, next char) pair of `.word.`."""
    X, Y = build_dataset(words, 1, stoi)  # (N, 1), (N,)
    return X[:, 0], Y


def bigram_counts(xs: torch.Tensor, ys: torch.Tensor, vocab_size: int) -> torch.Tensor:
    """N (V, V) int64: N[i, j] = how often j follows i (one bincount, no python loop)."""
    return torch.bincount(xs * vocab_size + ys, minlength=vocab_size * vocab_size).view(vocab_size, vocab_size)


def count_model(N: torch.Tensor, alpha: float = 1.0) -> torch.Tensor:
    """P (V, V): rows of (N + alpha) normalised; alpha > 0 keeps unseen pairs at a finite loss."""
    if alpha < 0:
        raise ValueError(f"smoothing alpha must be >= 0, got {alpha}")
    P = N.double() + alpha
    return P / P.sum(1, keepdim=True)


def nll(P: torch.Tensor, xs: torch.Tensor, ys: torch.Tensor) -> float:
    """Average negative log-likelihood (nats per character) of the pairs under the table P."""
    return -P[xs, ys].log().mean().item()


def sample_chain(P: torch.Tensor, n: int, start: int = 0, stop: int | None = None,
                 generator: torch.Generator | None = None) -> list[int]:
    """Walk the Markov chain P (V, V) from `start`: up to n sampled ids, ending early when `stop` is drawn."""
    ix, out = start, []
    for _ in range(n):
        ix = torch.multinomial(P[ix], 1, generator=generator).item()
        if ix == stop:
            break
        out.append(ix)
    return out


def dict_bigram_nll(words: list[str], alpha: float = 1.0) -> float:
    """The same smoothed-count NLL in pure python (dicts and math.log): an independent oracle."""
    chars = sorted(set("".join(words)) | {BOUNDARY})
    pairs = Counter()
    for w in words:
        s = BOUNDARY + w + BOUNDARY
        pairs.update(zip(s, s[1:]))
    row_total = Counter()
    for (a, _), n in pairs.items():
        row_total[a] += n
    total_logp = sum(n * math.log((n + alpha) / (row_total[a] + alpha * len(chars))) for (a, _), n in pairs.items())
    return -total_logp / sum(pairs.values())


def bigram_net_loss(W: torch.Tensor, xs: torch.Tensor, ys: torch.Tensor, alpha: float = 1.0) -> torch.Tensor:
    """Mean cross-entropy of the one-layer net logits = one_hot(xs) @ W (= W[xs]) plus the smoothing prior.

    The prior -(alpha / n) * sum_ij log softmax(W)_ij is what `alpha` pseudo-counts of every pair would
    add to the loss: minimising it gives exactly the add-alpha count table.
    """
    logits = W[xs]  # (n, V): a row lookup is the matmul with a one-hot vector, without the zeros
    prior = -F.log_softmax(W, dim=1).sum() * (alpha / len(xs))
    return F.cross_entropy(logits, ys) + prior


def bigram_net_loss_grouped(W: torch.Tensor, N: torch.Tensor, alpha: float = 1.0) -> torch.Tensor:
    """`bigram_net_loss` with identical examples grouped: sum_ij (N_ij + alpha) * -log softmax(W)_ij / n.

    The net sees a pair (i, j) N_ij times and each time adds the same term, so the loss over all
    n examples needs only the (V, V) count table: one 27x27 softmax per step instead of 228k rows.
    """
    return -((N + alpha) * F.log_softmax(W, dim=1)).sum() / N.sum()


def train_bigram_net(N: torch.Tensor, alpha: float = 1.0, steps: int = 300, lr: float = 0.3,
                     generator: torch.Generator | None = None) -> tuple[torch.Tensor, list[float]]:
    """Full-batch training of the net's W (V, V) from a random init; returns W and the loss per step.

    Adam, with lr decayed linearly to 0: plain gradient descent (Karpathy's lr=50) needs thousands of
    steps here because the rows of rare characters ('q', 'x') get tiny gradients.
    """
    V = N.shape[0]
    W = torch.randn(V, V, generator=generator, dtype=torch.float64, requires_grad=True)
    N = N.double()
    opt = torch.optim.Adam([W], lr=lr)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda k: 1 - k / steps)
    losses = []
    for _ in range(steps):
        loss = bigram_net_loss_grouped(W, N, alpha)
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
        losses.append(loss.item())
    return W.detach(), losses


def ngram_val_nll(Xtr: torch.Tensor, Ytr: torch.Tensor, Xva: torch.Tensor, Yva: torch.Tensor,
                  vocab_size: int, alpha: float = 0.1) -> float:
    """Add-alpha n-gram count model (n = context length + 1) fitted on (Xtr, Ytr), NLL on (Xva, Yva).

    Each context of k characters is one row of a (V^k, V) table: the table grows as 27^k and most
    rows are never seen, which is the n-gram's limitation that neural models remove. Only the rows
    that occur are stored (sorted unique keys + binary search), so even a 9-gram (27^9 cells) fits.
    """
    k = Xtr.shape[1]
    if vocab_size ** (k + 1) >= 2 ** 63:
        raise ValueError(f"a {k + 1}-gram over {vocab_size} symbols does not fit int64 keys")
    base = vocab_size ** torch.arange(k - 1, -1, -1)  # context -> row number (base-V digits)
    ctx_tr, ctx_va = Xtr @ base, Xva @ base  # (N,), (M,)
    pair_keys, pair_n = torch.unique(ctx_tr * vocab_size + Ytr, return_counts=True)  # sorted
    ctx_keys, ctx_n = torch.unique(ctx_tr, return_counts=True)

    def count(keys: torch.Tensor, n: torch.Tensor, query: torch.Tensor) -> torch.Tensor:
        i = torch.searchsorted(keys, query).clamp(max=len(keys) - 1)
        return torch.where(keys[i] == query, n[i], 0).double()

    n_pair = count(pair_keys, pair_n, ctx_va * vocab_size + Yva)  # N[context, next] for each val example
    n_ctx = count(ctx_keys, ctx_n, ctx_va)  # row totals
    return -((n_pair + alpha) / (n_ctx + alpha * vocab_size)).log().mean().item()
