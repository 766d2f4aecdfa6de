"""Character-level language models: embedding → recurrent layer → (optional attention) → next-char logits.

One class, four variants with the same interface as the course GPT (`model(idx, targets) → (logits, loss)`,
`configure_optimizer`, `generate`), so `helpers.lm.train / evaluate_nll / generate_text` drive them unchanged.
Teacher forcing: within a training window every position is fed the true previous character.
"attention-lstm": after the LSTM, each position t attends (Luong "general", causal mask) over the hidden
states h_1..h_t of its window and predicts from tanh(W_c [h_t; context]) — a short-range memory the
recurrent state need not carry (Cheng et al. 2016, "LSTM networks for machine reading", in spirit).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .attention import MultiplicativeAttention
from .gru import GRU
from .lstm import LSTM
from .rnn import RNN

CELLS = {"rnn": RNN, "lstm": LSTM, "gru": GRU, "attention-lstm": LSTM}


def param_count(kind: str, vocab: int, emb: int, hidden: int, layers: int = 1) -> int:
    """Closed form of CharLM's parameter count: embedding + recurrent layers + (attention) + head."""
    gates = {"rnn": 1, "gru": 3, "lstm": 4, "attention-lstm": 4}[kind]
    n = vocab * emb + gates * (hidden * emb + hidden * hidden + 2 * hidden) + hidden * vocab + vocab
    n += (layers - 1) * gates * (2 * hidden * hidden + 2 * hidden)
    if kind == "attention-lstm":
        n += hidden * hidden + (2 * hidden * hidden + hidden)  # W of the score, combine layer W_c, b_c
    return n


def hidden_for_budget(kind: str, vocab: int, emb: int, budget: int, layers: int = 1) -> int:
    """The hidden size whose parameter count is closest to `budget`."""
    return min(range(8, 2048), key=lambda h: abs(param_count(kind, vocab, emb, h, layers) - budget))


def filter_logits(logits: torch.Tensor, top_k: int | None = None, top_p: float | None = None) -> torch.Tensor:
    """Keep the top-k logits and/or the smallest set whose probability reaches top_p; the rest → -inf."""
    if top_k is not None:
        kth = torch.topk(logits, min(top_k, logits.shape[-1])).values[..., -1:]  # (B, 1)
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if top_p is not None:
        sorted_logits, order = logits.sort(-1, descending=True)
        cum = sorted_logits.softmax(-1).cumsum(-1)
        drop = cum - sorted_logits.softmax(-1) >= top_p  # tokens after the mass reached top_p
        logits = logits.masked_fill(drop.scatter(-1, order, drop), float("-inf"))
    return logits


class CharLM(nn.Module):
    def __init__(self, kind: str, vocab_size: int, emb: int, hidden: int, layers: int = 1):
        super().__init__()
        if kind not in CELLS:
            raise ValueError(f"kind must be one of {sorted(CELLS)}, got {kind!r}")
        self.kind = kind
        self.embed = nn.Embedding(vocab_size, emb)
        self.rnn = CELLS[kind](emb, hidden, layers)
        if kind == "attention-lstm":
            self.attn = MultiplicativeAttention(hidden, hidden, "general")
            self.combine = nn.Linear(2 * hidden, hidden)
        self.head = nn.Linear(hidden, vocab_size)

    def features(self, h: torch.Tensor) -> torch.Tensor:
        """Recurrent outputs h (B, T, H) → the features the head reads (B, T, H)."""
        if self.kind != "attention-lstm":
            return h
        T = h.shape[1]
        causal = torch.ones(T, T, dtype=torch.bool, device=h.device).tril()[None]  # (1, T, T): t sees 1..t
        ctx, _ = self.attn(h, h, causal)  # (B, T, H)
        return torch.tanh(self.combine(torch.cat([h, ctx], -1)))

    def forward(self, idx, targets=None):
        """idx (B, T) → logits (B, T, V), mean cross-entropy (nats/char) against targets (B, T) or None."""
        h, _ = self.rnn(self.embed(idx))  # (B, T, H)
        logits = self.head(self.features(h))  # (B, T, V)
        loss = None if targets is None else F.cross_entropy(logits.flatten(0, 1), targets.flatten())
        return logits, loss

    def configure_optimizer(self, lr: float, weight_decay: float = 0.0, betas=(0.9, 0.99)):
        """AdamW; weight decay on matrices only (as for the course GPT)."""
        params = [p for p in self.parameters() if p.requires_grad]
        groups = [{"params": [p for p in params if p.dim() >= 2], "weight_decay": weight_decay},
                  {"params": [p for p in params if p.dim() < 2], "weight_decay": 0.0}]
        return torch.optim.AdamW(groups, lr=lr, betas=betas)

    @torch.no_grad()
    def generate(self, idx, max_new_tokens: int, temperature: float = 1.0, top_k: int | None = None,
                 top_p: float | None = None, generator: torch.Generator | None = None, window: int = 64):
        """Append sampled characters to idx (B, T), carrying the recurrent state (one step per character).

        The attention variant attends over the last `window` hidden states (its training window length).
        """
        state = None
        hs = []
        x = idx
        for _ in range(max_new_tokens):
            out, state = self.rnn(self.embed(x), state)  # (B, t, H), final state
            hs = (hs + list(out.unbind(1)))[-window:]
            feats = self.features(torch.stack(hs, 1))[:, -1] if self.kind == "attention-lstm" else out[:, -1]
            logits = self.head(feats)  # (B, V)
            if temperature == 0:
                nxt = logits.argmax(-1, keepdim=True)
            else:
                probs = F.softmax(filter_logits(logits / temperature, top_k, top_p), -1)  # (B, V)
                nxt = torch.multinomial(probs, 1, generator=generator)  # (B, 1)
            idx = torch.cat([idx, nxt], 1)
            x = nxt
        return idx
