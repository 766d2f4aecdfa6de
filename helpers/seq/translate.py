"""Translation plumbing for the encoder–decoder (Module 0.5, Step 6): word vocabularies, batches, greedy and
beam-search decoding, and corpus BLEU with sacrebleu.

Decoding picks the target y maximising log p(y | x) = Σ_t log p(y_t | y_<t, x) — intractable exactly, so:
    greedy        the argmax token at every step (one hypothesis)
    beam search   keep the K best prefixes; each step extends all K by every word and keeps the K best
                  of the K·V candidates; finished hypotheses (ended by <eos>) keep their score; the winner
                  maximises score / length^α (α > 0 offsets the bias towards short outputs; GNMT uses ~0.6)
"""
from __future__ import annotations

import re
from collections import Counter

import torch

PAD, BOS, EOS, UNK = "<pad>", "<bos>", "<eos>", "<unk>"
_TOKEN = re.compile(r"\w+|[^\w\s]")


def tokenize(text: str) -> list[str]:
    """Lower-cased words and single punctuation marks: 'Ein Mann, der…' → ['ein', 'mann', ',', 'der', '…']."""
    return _TOKEN.findall(text.lower())


class Vocab:
    """Word ↔ id; ids 0..3 are <pad>, <bos>, <eos>, <unk>; words seen fewer than `min_freq` times are <unk>."""

    def __init__(self, sentences, min_freq: int = 2, max_size: int | None = None):
        counts = Counter(w for s in sentences for w in s)
        words = [w for w, c in counts.most_common(max_size) if c >= min_freq]
        self.itos = [PAD, BOS, EOS, UNK] + words
        self.stoi = {w: i for i, w in enumerate(self.itos)}
        self.pad, self.bos, self.eos, self.unk = 0, 1, 2, 3

    def __len__(self) -> int:
        return len(self.itos)

    def encode(self, tokens: list[str], add_bos_eos: bool = False) -> list[int]:
        ids = [self.stoi.get(w, self.unk) for w in tokens]
        return [self.bos] + ids + [self.eos] if add_bos_eos else ids

    def decode(self, ids) -> list[str]:
        """Ids → words, stopping at <eos>, dropping <bos>/<pad>."""
        out = []
        for i in ids:
            i = int(i)
            if i == self.eos:
                break
            if i not in (self.pad, self.bos):
                out.append(self.itos[i])
        return out


def pad_batch(seqs: list[list[int]], pad_id: int = 0) -> torch.Tensor:
    """Lists of ids → (B, T_max) long tensor, right-padded with pad_id."""
    if not seqs:
        raise ValueError("pad_batch needs at least one sequence")
    out = torch.full((len(seqs), max(len(s) for s in seqs)), pad_id, dtype=torch.long)
    for i, s in enumerate(seqs):
        out[i, :len(s)] = torch.as_tensor(s, dtype=torch.long)
    return out


@torch.no_grad()
def greedy_decode(model, src: torch.Tensor, max_len: int, bos: int = 1, eos: int = 2) -> torch.Tensor:
    """src (B, S) → (B, ≤ max_len + 1) target ids starting with <bos>; the argmax word at each step."""
    model.eval()
    memory, mask = model.encode(src)
    ys = torch.full((src.size(0), 1), bos, dtype=torch.long, device=src.device)  # (B, 1)
    done = torch.zeros(src.size(0), dtype=torch.bool, device=src.device)
    for _ in range(max_len):
        nxt = model.decode(ys, memory, mask)[:, -1].argmax(-1)  # (B,)
        nxt = nxt.masked_fill(done, eos)  # finished rows keep emitting <eos>
        ys = torch.cat([ys, nxt[:, None]], dim=1)
        done |= nxt == eos
        if done.all():
            break
    return ys


def beam_step(scores: torch.Tensor, logp: torch.Tensor, finished: torch.Tensor, eos: int):
    """One step of beam search for B sentences × K beams.

    scores (B, K) summed log-probabilities so far; logp (B, K, V) next-word log-probabilities;
    finished (B, K) beams that already emitted <eos>: they may only "extend" by <eos> at no cost.
    Returns new scores (B, K), the parent beam (B, K) and the chosen word (B, K) of the K best candidates.
    """
    B, K, V = logp.shape
    logp = logp.masked_fill(finished[..., None], float("-inf"))  # (B, K, V)
    logp[..., eos] = torch.where(finished, 0.0, logp[..., eos])  # a finished beam stays as it is
    cand = (scores[..., None] + logp).view(B, K * V)  # (B, K·V) every one-word extension
    new_scores, flat = cand.topk(K, dim=-1)  # (B, K)
    return new_scores, flat // V, flat % V


@torch.no_grad()
def beam_search(model, src: torch.Tensor, beam_size: int = 4, max_len: int = 40, alpha: float = 0.6,
                bos: int = 1, eos: int = 2, step=beam_step) -> torch.Tensor:
    """Batched beam search: src (B, S) → best target ids (B, T) starting with <bos> (<eos>-padded).

    The first step starts from one live beam per sentence (the others at −∞) so the K beams differ.
    `step` is the beam update (the notebook passes the learner's).
    """
    if beam_size < 1:
        raise ValueError(f"beam_size must be >= 1, got {beam_size}")
    model.eval()
    B, K = src.size(0), beam_size
    memory, mask = model.encode(src)  # (B, S, C), (B, S)
    memory = memory.repeat_interleave(K, dim=0)  # (B·K, S, C)
    mask = mask.repeat_interleave(K, dim=0)
    ys = torch.full((B, K, 1), bos, dtype=torch.long, device=src.device)  # (B, K, t)
    scores = torch.full((B, K), float("-inf"), device=src.device)
    scores[:, 0] = 0.0
    finished = torch.zeros(B, K, dtype=torch.bool, device=src.device)
    lengths = torch.zeros(B, K, device=src.device)  # words emitted, <eos> included
    for _ in range(max_len):
        logits = model.decode(ys.view(B * K, -1), memory, mask)[:, -1]  # (B·K, V)
        logp = torch.log_softmax(logits.float(), dim=-1).view(B, K, -1)
        scores, parent, word = step(scores, logp, finished, eos)
        ys = torch.cat([ys.gather(1, parent[..., None].expand(-1, -1, ys.size(2))), word[..., None]], dim=2)
        was_finished = finished.gather(1, parent)
        lengths = lengths.gather(1, parent) + (~was_finished).float()
        finished = was_finished | (word == eos)
        if finished.all():
            break
    best = (scores / lengths.clamp(min=1) ** alpha).argmax(dim=1)  # (B,) length-normalised winner
    return ys[torch.arange(B), best]


def detokenize(words: list[str]) -> str:
    """Words → a sentence: spaces joined, none before punctuation ('a dog .' → 'a dog.')."""
    return re.sub(r" ([.,!?;:'])", r"\1", " ".join(words))


def bleu(hypotheses: list[str], references: list[str]) -> float:
    """Corpus BLEU (sacrebleu, 13a tokenisation, lower-cased), 0-100."""
    import sacrebleu

    if len(hypotheses) != len(references):
        raise ValueError(f"{len(hypotheses)} hypotheses for {len(references)} references")
    return sacrebleu.corpus_bleu(hypotheses, [references], lowercase=True).score


def translate(model, sentences: list[str], src_vocab: Vocab, tgt_vocab: Vocab, beam_size: int = 1,
              max_len: int = 40, batch_size: int = 128, alpha: float = 0.6, step=beam_step) -> list[str]:
    """Source sentences → detokenised target sentences; beam_size 1 is greedy decoding."""
    device = next(model.parameters()).device
    out = []
    for i in range(0, len(sentences), batch_size):
        src = pad_batch([src_vocab.encode(tokenize(s), add_bos_eos=True) for s in sentences[i:i + batch_size]],
                        src_vocab.pad).to(device)
        ys = (greedy_decode(model, src, max_len, tgt_vocab.bos, tgt_vocab.eos) if beam_size == 1 else
              beam_search(model, src, beam_size, max_len, alpha, tgt_vocab.bos, tgt_vocab.eos, step))
        out += [detokenize(tgt_vocab.decode(row.tolist())) for row in ys]
    return out
