"""An encoder–decoder (Sutskever et al. 2014) with an optional attention (Bahdanau 2015 / Luong 2015).

Encoder: a GRU reads the source; without attention its last state is the only thing the decoder gets —
the fixed-size bottleneck. Decoder: a GRU cell fed the previous target token (teacher forcing in training,
its own prediction in `greedy`), started from the encoder's final state.
    none:      s_t = GRU([y_{t-1}], s_{t-1});            logits = W_o s_t
    bahdanau:  c_t = attn(s_{t-1}, enc);  s_t = GRU([y_{t-1}; c_t], s_{t-1});  logits = W_o [s_t; c_t]
    luong:     s_t = GRU([y_{t-1}], s_{t-1});  c_t = attn(s_t, enc);  logits = W_o tanh(W_c [s_t; c_t])
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .attention import AdditiveAttention, MultiplicativeAttention
from .gru import GRU, gru_cell


class Seq2Seq(nn.Module):
    KINDS = ("none", "bahdanau", "luong")

    def __init__(self, vocab_size: int, emb: int, hidden: int, attention: str = "none"):
        super().__init__()
        if attention not in self.KINDS:
            raise ValueError(f"attention must be one of {self.KINDS}, got {attention!r}")
        self.attention = attention
        self.embed = nn.Embedding(vocab_size, emb)
        self.encoder = GRU(emb, hidden)
        dec_in = emb + (hidden if attention == "bahdanau" else 0)
        self.decoder = GRU(dec_in, hidden)
        if attention == "bahdanau":
            self.attn = AdditiveAttention(hidden, hidden, hidden)
            self.out = nn.Linear(2 * hidden, vocab_size)
        elif attention == "luong":
            self.attn = MultiplicativeAttention(hidden, hidden, "general")
            self.combine = nn.Linear(2 * hidden, hidden)
            self.out = nn.Linear(hidden, vocab_size)
        else:
            self.out = nn.Linear(hidden, vocab_size)

    def encode(self, src, src_lengths=None):
        """src (B, S) → encoder states (B, S, H), final state (B, H), source mask (B, S) or None."""
        enc, h = self.encoder(self.embed(src), lengths=src_lengths)
        mask = None
        if src_lengths is not None:
            mask = torch.arange(src.shape[1], device=src.device)[None] < torch.as_tensor(src_lengths, device=src.device)[:, None]
        return enc, h[-1], mask

    def decode_step(self, y_prev, s, enc, mask):
        """One decoder step: previous token (B,), state (B, H) → logits (B, V), new state, attention weights (B, S)."""
        e = self.embed(y_prev)  # (B, E)
        weights = None
        if self.attention == "bahdanau":
            ctx, weights = self.attn(s, enc, mask)  # (B, H), (B, S)
            s = gru_cell(torch.cat([e, ctx], -1), s, *self.decoder.weights(0))
            logits = self.out(torch.cat([s, ctx], -1))
        elif self.attention == "luong":
            s = gru_cell(e, s, *self.decoder.weights(0))
            ctx, weights = self.attn(s, enc, mask)
            logits = self.out(torch.tanh(self.combine(torch.cat([s, ctx], -1))))
        else:
            s = gru_cell(e, s, *self.decoder.weights(0))
            logits = self.out(s)
        return logits, s, weights

    def forward(self, src, tgt_in, src_lengths=None):
        """Teacher forcing: src (B, S), tgt_in (B, T) (BOS + target[:-1]) → logits (B, T, V), weights (B, T, S) or None."""
        enc, s, mask = self.encode(src, src_lengths)
        logits, weights = [], []
        for t in range(tgt_in.shape[1]):
            lg, s, w = self.decode_step(tgt_in[:, t], s, enc, mask)
            logits.append(lg)
            weights.append(w)
        return torch.stack(logits, 1), (torch.stack(weights, 1) if weights[0] is not None else None)

    @torch.no_grad()
    def greedy(self, src, steps: int, bos: int, src_lengths=None):
        """Decode `steps` tokens, each fed back as the next input → tokens (B, steps), weights (B, steps, S) or None."""
        enc, s, mask = self.encode(src, src_lengths)
        y = torch.full((src.shape[0],), bos, dtype=torch.long, device=src.device)
        toks, weights = [], []
        for _ in range(steps):
            lg, s, w = self.decode_step(y, s, enc, mask)
            y = lg.argmax(-1)
            toks.append(y)
            weights.append(w)
        return torch.stack(toks, 1), (torch.stack(weights, 1) if weights[0] is not None else None)


def seq2seq_loss(model, src, tgt, bos: int, pad: int, src_lengths=None):
    """Cross-entropy of the teacher-forced decoder on tgt (B, T), padding ignored."""
    tgt_in = torch.cat([torch.full_like(tgt[:, :1], bos), tgt[:, :-1]], 1)  # (B, T)
    logits, _ = model(src, tgt_in, src_lengths)
    return F.cross_entropy(logits.flatten(0, 1), tgt.flatten(), ignore_index=pad)
