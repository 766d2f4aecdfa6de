"""Module 0.5's transformer helpers: attention against torch, masks, blocks, the three variants, decoding."""
import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from helpers.models.gpt import GPT, GPTConfig
from helpers.seq.positional import (LearnedPositions, SinusoidalPositions, alibi_bias, alibi_slopes,
                                    sinusoidal)
from helpers.seq.transformer import (CausalLM, DecoderBlock, EncoderBlock, EncoderClassifier,
                                     MultiHeadAttention, Seq2SeqTransformer, attention_weights, causal_mask,
                                     count_parameters, encoder_block_from_gpt, merge_heads, padding_mask,
                                     scaled_dot_product_attention, split_heads)
from helpers.seq.translate import Vocab, beam_search, beam_step, bleu, greedy_decode, pad_batch, tokenize


def _qkv(B=2, H=3, Tq=5, Tk=7, d=8, dv=6, seed=0):
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(B, H, Tq, d, generator=g, dtype=torch.float64),
            torch.randn(B, H, Tk, d, generator=g, dtype=torch.float64),
            torch.randn(B, H, Tk, dv, generator=g, dtype=torch.float64))


# ---- scaled dot-product attention ---------------------------------------------------------------------------

def test_sdpa_matches_torch_without_mask():
    q, k, v = _qkv()
    out = scaled_dot_product_attention(q, k, v)
    assert out.shape == (2, 3, 5, 6)
    assert torch.allclose(out, F.scaled_dot_product_attention(q, k, v), atol=1e-12)


def test_sdpa_matches_torch_with_padding_and_causal_masks():
    q, k, v = _qkv(Tq=7, Tk=7)
    key_mask = padding_mask([7, 4])[:, None, None, :]  # (B, 1, 1, Tk)
    ours = scaled_dot_product_attention(q, k, v, mask=key_mask, is_causal=True)
    ref = F.scaled_dot_product_attention(q, k, v, attn_mask=key_mask & causal_mask(7))
    assert torch.allclose(ours, ref, atol=1e-12)
    ours_c = scaled_dot_product_attention(q, k, v, is_causal=True)
    assert torch.allclose(ours_c, F.scaled_dot_product_attention(q, k, v, is_causal=True), atol=1e-12)


def test_masked_keys_get_zero_weight_and_rows_sum_to_one():
    q, k, v = _qkv(Tq=4, Tk=6)
    mask = padding_mask([6, 3])[:, None, None, :]
    _, w = scaled_dot_product_attention(q, k, v, mask=mask, return_weights=True)
    assert w.shape == (2, 3, 4, 6)
    assert (w[1, :, :, 3:] == 0).all()
    assert torch.allclose(w.sum(-1), torch.ones(2, 3, 4, dtype=w.dtype))


def test_all_masked_row_is_zero_not_nan_and_has_finite_gradients():
    q, k, v = (t.requires_grad_() for t in _qkv(B=1, H=1, Tq=3, Tk=4))
    mask = torch.tensor([[True, True, False, False], [False] * 4, [True] * 4])  # row 1: nothing allowed
    out, w = scaled_dot_product_attention(q, k, v, mask=mask, return_weights=True)
    assert not torch.isnan(out).any() and not torch.isnan(w).any()
    assert (w[0, 0, 1] == 0).all() and (out[0, 0, 1] == 0).all()
    out.sum().backward()
    assert all(torch.isfinite(t.grad).all() for t in (q, k, v))


def test_sdpa_bad_input_is_a_clear_error():
    q, k, v = _qkv()
    with pytest.raises(ValueError, match="different lengths"):
        scaled_dot_product_attention(q, k, v[..., :3, :])
    with pytest.raises(ValueError, match="sizes differ"):
        scaled_dot_product_attention(q, k[..., :4], v)
    with pytest.raises(TypeError, match="bool"):
        scaled_dot_product_attention(q, k, v, mask=torch.zeros(5, 7))
    with pytest.raises(ValueError, match="broadcast"):
        scaled_dot_product_attention(q, k, v, mask=torch.ones(5, 6, dtype=torch.bool))


def test_bias_is_added_to_scores():
    q, k, v = _qkv(Tq=4, Tk=4)
    bias = torch.randn(3, 4, 4, dtype=torch.float64)
    ref = F.scaled_dot_product_attention(q, k, v, attn_mask=bias)
    assert torch.allclose(scaled_dot_product_attention(q, k, v, bias=bias), ref, atol=1e-12)


def test_masks():
    assert causal_mask(3).tolist() == [[True, False, False], [True, True, False], [True, True, True]]
    assert causal_mask(2, 4).tolist() == [[True, True, True, False], [True, True, True, True]]
    assert padding_mask([2, 0], 3).tolist() == [[True, True, False], [False, False, False]]
    with pytest.raises(ValueError):
        padding_mask([4], 3)
    with pytest.raises(ValueError):
        padding_mask([-1])


# ---- multi-head attention ----------------------------------------------------------------------------------

def test_split_merge_heads_roundtrip():
    x = torch.randn(2, 5, 12)
    h = split_heads(x, 3)
    assert h.shape == (2, 3, 5, 4)
    assert torch.equal(h[:, 1], x[..., 4:8])
    assert torch.equal(merge_heads(h), x)


@pytest.mark.parametrize("causal", [False, True])
def test_mha_matches_torch_multihead_attention(causal):
    torch.manual_seed(0)
    ref = nn.MultiheadAttention(16, 4, batch_first=True).double().eval()
    ours = MultiHeadAttention(16, 4).double().load_torch(ref).eval()
    x = torch.randn(3, 6, 16, dtype=torch.float64)
    mem = torch.randn(3, 8, 16, dtype=torch.float64)
    kmask = padding_mask([8, 5, 2])
    if causal:
        y, _ = ours(x, key_mask=padding_mask([6, 4, 1]), is_causal=True)
        r, _ = ref(x, x, x, key_padding_mask=~padding_mask([6, 4, 1]), attn_mask=~causal_mask(6), need_weights=False)
        assert torch.allclose(y, r, atol=1e-12)
    else:
        y, w = ours(x, mem, key_mask=kmask, return_weights=True)
        r, rw = ref(x, mem, mem, key_padding_mask=~kmask, average_attn_weights=False)
        assert torch.allclose(y, r, atol=1e-12) and torch.allclose(w, rw, atol=1e-12)


def test_mha_bad_input():
    mha = MultiHeadAttention(8, 2)
    with pytest.raises(ValueError, match="divisible"):
        MultiHeadAttention(10, 3)
    with pytest.raises(ValueError, match="key_mask"):
        mha(torch.randn(2, 3, 8), key_mask=torch.ones(2, 4, dtype=torch.bool))
    with pytest.raises(ValueError, match="one B"):
        mha(torch.randn(2, 3, 8), torch.randn(3, 3, 8))


# ---- positions ---------------------------------------------------------------------------------------------

def test_sinusoidal_closed_form():
    pe = sinusoidal(50, 16)
    t, i = 17, 3
    assert math.isclose(pe[t, 2 * i].item(), math.sin(t / 10000 ** (2 * i / 16)), abs_tol=1e-6)
    assert math.isclose(pe[t, 2 * i + 1].item(), math.cos(t / 10000 ** (2 * i / 16)), abs_tol=1e-6)
    assert SinusoidalPositions(16)(torch.zeros(1, 50, 16)).allclose(pe)
    with pytest.raises(ValueError):
        sinusoidal(5, 7)


def test_learned_positions_refuse_longer_inputs():
    lp = LearnedPositions(8, 4)
    assert lp(torch.zeros(2, 8, 4)).shape == (2, 8, 4)
    with pytest.raises(ValueError, match="exceeds"):
        lp(torch.zeros(2, 9, 4))


def test_alibi():
    assert torch.allclose(alibi_slopes(8), torch.tensor([2.0 ** -(i + 1) for i in range(8)]))
    assert len(alibi_slopes(6)) == 6 and (alibi_slopes(6) > 0).all()
    b = alibi_bias(4, 5)
    assert b.shape == (4, 5, 5)
    assert b[0, 4, 1].item() == pytest.approx(-alibi_slopes(4)[0].item() * 3)
    assert (alibi_bias(2, 3, causal=False) == alibi_bias(2, 3, causal=False).transpose(1, 2)).all()


# ---- blocks and variants -----------------------------------------------------------------------------------

@pytest.mark.parametrize("norm_first", [True, False])
def test_blocks_shapes_and_padding_invariance(norm_first):
    torch.manual_seed(0)
    enc = EncoderBlock(16, 4, dropout=0.0, norm_first=norm_first).eval()
    x = torch.randn(2, 5, 16)
    y, w = enc(x, padding_mask([5, 3]), return_weights=True)
    assert y.shape == x.shape and w.shape == (2, 4, 5, 5)
    x2 = x.clone()
    x2[1, 3:] = 100.0  # changing padding must not change the real positions' outputs
    y2, _ = enc(x2, padding_mask([5, 3]))
    assert torch.allclose(y[1, :3], y2[1, :3], atol=1e-5)
    dec = DecoderBlock(16, 4, norm_first=norm_first).eval()
    z, (ws, wc) = dec(torch.randn(2, 4, 16), y, padding_mask([5, 3]), return_weights=True)
    assert z.shape == (2, 4, 16) and ws.shape == (2, 4, 4, 4) and wc.shape == (2, 4, 4, 5)
    assert (ws.triu(1) == 0).all() and (wc[1, ..., 3:] == 0).all()


def test_causal_block_does_not_see_the_future():
    torch.manual_seed(0)
    blk = EncoderBlock(16, 2, causal=True).eval()
    x = torch.randn(1, 6, 16)
    x2 = x.clone()
    x2[:, 4:] += 1.0
    assert torch.allclose(blk(x)[0][:, :4], blk(x2)[0][:, :4], atol=1e-6)


def test_encoder_block_from_gpt_equals_gpt_block():
    torch.manual_seed(0)
    gpt = GPT(GPTConfig(block_size=16, vocab_size=11, n_layer=1, n_head=2, n_embd=16)).eval()
    ours = encoder_block_from_gpt(gpt.transformer.h[0], n_head=2)
    x = torch.randn(2, 9, 16)
    assert torch.allclose(ours(x)[0], gpt.transformer.h[0](x)[0], atol=1e-6)


def test_encoder_classifier_ignores_padding():
    torch.manual_seed(0)
    m = EncoderClassifier(20, 2, d_model=16, n_head=2, n_layer=2, max_len=10).eval()
    a = torch.tensor([[5, 6, 7, 0, 0]])
    b = torch.tensor([[5, 6, 7]])
    assert m(a).shape == (1, 2)
    assert torch.allclose(m(a), m(b), atol=1e-5)
    logits, maps = m(a, return_weights=True)
    assert len(maps) == 2 and maps[0].shape == (1, 2, 6, 6)


@pytest.mark.parametrize("positions", ["sinusoidal", "learned", "alibi", "none"])
def test_causal_lm_trains_a_step_and_has_gpt_signature(positions):
    torch.manual_seed(0)
    m = CausalLM(10, d_model=16, n_head=2, n_layer=1, max_len=8, positions=positions)
    x = torch.randint(10, (3, 8))
    logits, loss = m(x, x)
    assert logits.shape == (3, 8, 10) and loss.item() == pytest.approx(math.log(10), abs=0.3)
    opt = m.configure_optimizer(1e-2)
    loss.backward()
    opt.step()
    with pytest.raises(ValueError):
        CausalLM(10, positions="rope")


def test_seq2seq_shapes_and_mismatch():
    torch.manual_seed(0)
    m = Seq2SeqTransformer(12, 9, d_model=16, n_head=2, n_enc=1, n_dec=1).eval()
    src, tgt = torch.randint(1, 12, (2, 5)), torch.randint(1, 9, (2, 4))
    assert m(src, tgt).shape == (2, 4, 9)
    with pytest.raises(ValueError, match="batches differ"):
        m(src, tgt[:1])
    assert count_parameters(m) < sum(p.numel() for p in m.state_dict().values())  # the tied matrix once


# ---- decoding and BLEU -------------------------------------------------------------------------------------

def test_vocab_and_tokenize():
    assert tokenize("Ein Mann, der läuft.") == ["ein", "mann", ",", "der", "läuft", "."]
    v = Vocab([["a", "b", "a"], ["a", "c"]], min_freq=2)
    assert v.itos[:5] == ["<pad>", "<bos>", "<eos>", "<unk>", "a"]
    assert v.encode(["a", "zzz"], add_bos_eos=True) == [1, 4, 3, 2]
    assert v.decode([1, 4, 3, 2, 4]) == ["a", "<unk>"]
    assert pad_batch([[1, 2], [3]]).tolist() == [[1, 2], [3, 0]]


def test_beam_step_picks_best_extensions_and_keeps_finished():
    scores = torch.tensor([[0.0, -1.0]])
    logp = torch.log(torch.tensor([[[0.1, 0.2, 0.7], [0.5, 0.25, 0.25]]]))
    finished = torch.tensor([[False, True]])
    new, parent, word = beam_step(scores, logp, finished, eos=1)
    assert parent.tolist() == [[0, 1]] and word.tolist() == [[2, 1]]
    assert torch.allclose(new, torch.tensor([[math.log(0.7), -1.0]]))


class _Echo(nn.Module):
    """A fake model whose next word is fixed by the position: tests the decoders' bookkeeping."""

    def __init__(self, table):
        super().__init__()
        self.table = table  # (T, V) log-probabilities
        self.dummy = nn.Parameter(torch.zeros(1))

    def encode(self, src):
        return torch.zeros(src.size(0), src.size(1), 1), src != 0

    def decode(self, tgt, memory, mask):
        B, T = tgt.shape
        return self.table[:T][None].expand(B, -1, -1)


def test_greedy_and_beam_search_on_a_known_distribution():
    # <bos> = 1, <eos> = 2. Greedy takes word 3 (p 0.5) and then keeps repeating it; beam search (K = 2)
    # finds 4 → <eos> with p 0.46 · 0.9 = 0.414, better than any continuation of 3 (≤ 0.5 · 0.36).
    first = torch.log(torch.tensor([0.01, 0.01, 0.02, 0.5, 0.46]))
    after = {3: torch.log(torch.tensor([0.01, 0.01, 0.3, 0.36, 0.32])),
             4: torch.log(torch.tensor([0.01, 0.01, 0.9, 0.04, 0.04]))}

    class Branch(_Echo):
        def decode(self, tgt, memory, mask):
            B, T = tgt.shape
            out = first.repeat(B, T, 1)
            for b in range(B):
                last = int(tgt[b, -1])
                if last in after:
                    out[b, -1] = after[last]
            return out

    m = Branch(None)
    src = torch.ones(1, 3, dtype=torch.long)
    assert greedy_decode(m, src, 3).tolist() == [[1, 3, 3, 3]]
    assert beam_search(m, src, beam_size=2, max_len=3, alpha=0.0)[0].tolist()[:3] == [1, 4, 2]
    assert beam_search(m, src, beam_size=1, max_len=3, alpha=0.0)[0].tolist() == [1, 3, 3, 3]


def test_bleu():
    assert bleu(["a man is walking ."], ["A man is walking."]) == pytest.approx(100.0)
    assert bleu(["x y z"], ["a man is walking ."]) < 1.0
    with pytest.raises(ValueError):
        bleu(["a"], [])


def test_translate_end_to_end_returns_one_sentence_per_source():
    torch.manual_seed(0)
    sv = Vocab([["ein", "hund"], ["ein", "hund"]], min_freq=1)
    tv = Vocab([["a", "dog"], ["a", "dog"]], min_freq=1)
    from helpers.seq.translate import translate
    m = Seq2SeqTransformer(len(sv), len(tv), d_model=16, n_head=2, n_enc=1, n_dec=1).eval()
    for k in (1, 3):
        out = translate(m, ["Ein Hund.", "ein"], sv, tv, beam_size=k, max_len=5)
        assert len(out) == 2 and all(isinstance(s, str) for s in out)
    with pytest.raises(ValueError):
        beam_search(m, torch.tensor([[1, 4, 2]]), beam_size=0)


def test_detokenize():
    from helpers.seq.translate import detokenize
    assert detokenize(["a", "dog", ",", "a", "cat", "."]) == "a dog, a cat."


def test_bidirectional_lm_and_alibi_classifier_see_both_directions():
    torch.manual_seed(0)
    lm = CausalLM(10, d_model=16, n_head=2, n_layer=1, max_len=8, causal=False).eval()
    x = torch.randint(10, (1, 6))
    x2 = x.clone()
    x2[0, 5] = (x[0, 5] + 1) % 10
    assert not torch.allclose(lm(x)[0][0, 0], lm(x2)[0][0, 0])  # position 0 sees the last token
    clf = EncoderClassifier(12, 3, d_model=16, n_head=2, n_layer=1, positions="alibi").eval()
    assert clf(torch.tensor([[4, 5, 6, 0]])).shape == (1, 3)
    assert torch.allclose(clf(torch.tensor([[4, 5, 6, 0]])), clf(torch.tensor([[4, 5, 6]])), atol=1e-5)
