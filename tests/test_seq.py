"""helpers.seq: recurrent cells equal torch's with copied weights, attention masks, clear errors on bad input."""
import math

import pytest
import torch
from torch import nn

from helpers.seq import (GRU, LSTM, RNN, AdditiveAttention, Bidirectional, CharLM, MultiplicativeAttention, Seq2Seq,
                         masked_softmax, rnn_bptt)
from helpers.seq.bidirectional import reverse_padded
from helpers.seq.charlm import hidden_for_budget, param_count
from helpers.seq.gradient_flow import state_jacobian_norms
from helpers.seq.rnn import rnn_forward
from helpers.seq.seq2seq import seq2seq_loss
from helpers.seq.tasks import BOS, PAD, adding_problem, reverse_batch

PAIRS = [(RNN, nn.RNN), (LSTM, nn.LSTM), (GRU, nn.GRU)]
IDS = ["rnn", "lstm", "gru"]


def _h(state):
    return state[0] if isinstance(state, tuple) else state


@pytest.mark.parametrize("ours_cls,torch_cls", PAIRS, ids=IDS)
@pytest.mark.parametrize("layers", [1, 3])
def test_forward_and_gradients_equal_torch(ours_cls, torch_cls, layers):
    torch.manual_seed(0)
    ref = torch_cls(4, 6, num_layers=layers, batch_first=True).double()
    ours = ours_cls(4, 6, layers).double()
    ours.load_state_dict(ref.state_dict())
    x = torch.randn(2, 5, 4, dtype=torch.float64)
    outs = []
    for m in (ours, ref):
        xi = x.clone().requires_grad_()
        out, state = m(xi)
        assert out.shape == (2, 5, 6) and _h(state).shape == (layers, 2, 6)
        (out.sin().sum() + _h(state).pow(2).sum()).backward()
        outs.append((out.detach(), [p.grad for p in m.parameters()] + [xi.grad]))
    assert torch.allclose(outs[0][0], outs[1][0], atol=1e-12, rtol=0)
    for a, b in zip(outs[0][1], outs[1][1]):
        assert torch.allclose(a, b, atol=1e-12, rtol=0)


@pytest.mark.parametrize("ours_cls,torch_cls", PAIRS, ids=IDS)
def test_initial_state_and_lengths_match_packed_torch(ours_cls, torch_cls):
    torch.manual_seed(1)
    ref = torch_cls(3, 5, num_layers=2, batch_first=True).double()
    ours = ours_cls(3, 5, 2).double()
    ours.load_state_dict(ref.state_dict())
    x = torch.randn(3, 7, 3, dtype=torch.float64)
    h0 = torch.randn(2, 3, 5, dtype=torch.float64)
    state0 = (h0, torch.randn_like(h0)) if ours_cls is LSTM else h0
    lengths = torch.tensor([7, 1, 4])
    out, state = ours(x, state0, lengths=lengths)
    packed = nn.utils.rnn.pack_padded_sequence(x, lengths, batch_first=True, enforce_sorted=False)
    out_ref, state_ref = ref(packed, state0)
    out_ref, _ = nn.utils.rnn.pad_packed_sequence(out_ref, batch_first=True, total_length=7)
    assert torch.allclose(out, out_ref, atol=1e-12, rtol=0)
    assert torch.allclose(_h(state), _h(state_ref), atol=1e-12, rtol=0)
    assert (out[1, 1:] == 0).all()  # padding positions output zeros


@pytest.mark.parametrize("ours_cls,torch_cls", PAIRS, ids=IDS)
def test_bidirectional_equals_torch(ours_cls, torch_cls):
    torch.manual_seed(2)
    ref = torch_cls(3, 4, batch_first=True, bidirectional=True).double()
    bi = Bidirectional(lambda: ours_cls(3, 4)).double().load_torch(ref)
    x = torch.randn(2, 5, 3, dtype=torch.float64)
    out, _ = bi(x)
    assert out.shape == (2, 5, 8)
    assert torch.allclose(out, ref(x)[0], atol=1e-12, rtol=0)
    lengths = torch.tensor([2, 5])
    packed = nn.utils.rnn.pack_padded_sequence(x, lengths, batch_first=True, enforce_sorted=False)
    out_ref, _ = nn.utils.rnn.pad_packed_sequence(ref(packed)[0], batch_first=True, total_length=5)
    assert torch.allclose(bi(x, lengths=lengths)[0], out_ref, atol=1e-12, rtol=0)


def test_reverse_padded():
    x = torch.tensor([[1, 2, 3, 0], [4, 5, 6, 7]])
    assert reverse_padded(x, torch.tensor([3, 4])).tolist() == [[3, 2, 1, 0], [7, 6, 5, 4]]
    assert reverse_padded(x, None).tolist() == [[0, 3, 2, 1], [7, 6, 5, 4]]


def test_manual_bptt_equals_autograd():
    g = torch.Generator().manual_seed(3)
    W_ih, W_hh = torch.randn(5, 2, generator=g, dtype=torch.float64), torch.randn(5, 5, generator=g, dtype=torch.float64)
    b_ih, b_hh = torch.randn(5, generator=g, dtype=torch.float64), torch.randn(5, generator=g, dtype=torch.float64)
    params = [p.requires_grad_() for p in (W_ih, W_hh, b_ih, b_hh)]
    x = torch.randn(3, 8, 2, generator=g, dtype=torch.float64, requires_grad=True)
    h0 = torch.randn(3, 5, generator=g, dtype=torch.float64, requires_grad=True)
    hs = rnn_forward(x, h0, *params)
    assert hs.shape == (3, 9, 5)
    w = torch.randn(3, 8, 5, generator=g, dtype=torch.float64)
    (hs[:, 1:] * w).sum().backward()
    grads = rnn_bptt(x.detach(), hs.detach(), w, W_ih.detach(), W_hh.detach())
    for name, ref in (("W_ih", W_ih.grad), ("W_hh", W_hh.grad), ("b_ih", b_ih.grad), ("b_hh", b_hh.grad),
                      ("h0", h0.grad), ("x", x.grad)):
        assert torch.allclose(grads[name], ref, atol=1e-12, rtol=0), name


@pytest.mark.parametrize("cls", [RNN, LSTM, GRU], ids=IDS)
def test_bad_input_gives_clear_errors(cls):
    m = cls(3, 4)
    x = torch.randn(2, 5, 3)
    with pytest.raises(ValueError, match="one entry per sequence"):
        m(x, lengths=torch.tensor([5, 4, 3]))
    with pytest.raises(ValueError, match=r"lie in \[1, 5\]"):
        m(x, lengths=torch.tensor([6, 2]))
    with pytest.raises(ValueError, match=r"lie in \[1, 5\]"):
        m(x, lengths=torch.tensor([0, 2]))
    with pytest.raises(ValueError, match="expected input"):
        m(torch.randn(2, 5, 4))
    with pytest.raises(ValueError, match="expected input"):
        m(torch.randn(5, 3))
    with pytest.raises(ValueError):
        cls(0, 4)


def test_rnn_rejects_unknown_nonlinearity():
    with pytest.raises(ValueError, match="nonlinearity"):
        RNN(2, 3, nonlinearity="sigmoid")


def test_masked_softmax_zero_on_masked_and_error_on_all_masked():
    scores = torch.randn(2, 4)
    mask = torch.tensor([[True, True, False, False], [True, False, True, True]])
    w = masked_softmax(scores, mask)
    assert (w[~mask] == 0).all() and torch.allclose(w.sum(-1), torch.ones(2))
    assert not torch.isnan(w).any()
    with pytest.raises(ValueError, match="every key masked"):
        masked_softmax(scores, torch.tensor([[True, False, False, False], [False] * 4]))
    with pytest.raises(ValueError, match="does not match"):
        masked_softmax(scores, torch.ones(3, 4, dtype=torch.bool))


@pytest.mark.parametrize("attn", [lambda: AdditiveAttention(5, 3, 7), lambda: MultiplicativeAttention(5, 3, "general")],
                         ids=["additive", "multiplicative"])
def test_attention_shapes_masks_and_errors(attn):
    torch.manual_seed(4)
    a = attn()
    keys = torch.randn(2, 6, 3)
    mask = torch.arange(6)[None] < torch.tensor([6, 3])[:, None]
    ctx, w = a(torch.randn(2, 5), keys, mask)  # one query per sequence
    assert ctx.shape == (2, 3) and w.shape == (2, 6)
    assert (w[1, 3:] == 0).all() and torch.allclose(w.sum(-1), torch.ones(2))
    assert torch.allclose(ctx, (w[..., None] * keys).sum(1), atol=1e-6)
    ctx2, w2 = a(torch.randn(2, 4, 5), keys, mask)  # one query per step
    assert ctx2.shape == (2, 4, 3) and w2.shape == (2, 4, 6) and (w2[1, :, 3:] == 0).all()
    # padding keys do not influence the context
    keys2 = keys.clone()
    keys2[1, 3:] = 100.0
    assert torch.allclose(a(torch.ones(2, 5), keys, mask)[0][1], a(torch.ones(2, 5), keys2, mask)[0][1])
    with pytest.raises(ValueError, match="every key masked"):
        a(torch.randn(2, 5), keys, torch.zeros(2, 6, dtype=torch.bool))
    with pytest.raises(ValueError, match="batch size"):
        a(torch.randn(3, 5), keys)


def test_dot_attention_needs_equal_sizes():
    with pytest.raises(ValueError, match="query_size == key_size"):
        MultiplicativeAttention(4, 3, "dot")
    with pytest.raises(ValueError, match="kind"):
        MultiplicativeAttention(4, 4, "cosine")


@pytest.mark.parametrize("kind", ["none", "bahdanau", "luong"])
def test_seq2seq_shapes_and_padding(kind):
    torch.manual_seed(5)
    m = Seq2Seq(12, 8, 16, kind)
    src, tgt, lengths = reverse_batch(4, 3, 7, 10, torch.Generator().manual_seed(0))
    tgt_in = torch.cat([torch.full_like(tgt[:, :1], BOS), tgt[:, :-1]], 1)
    logits, w = m(src, tgt_in, lengths)
    assert logits.shape == (4, 7, 12)
    if kind == "none":
        assert w is None
    else:
        assert w.shape == (4, 7, 7)
        pad = torch.arange(7)[None, None] >= lengths[:, None, None]
        assert (w.masked_select(pad.expand_as(w)) == 0).all()
    loss = seq2seq_loss(m, src, tgt, BOS, PAD, lengths)
    assert math.isfinite(loss.item())
    toks, _ = m.greedy(src, 7, BOS, lengths)
    assert toks.shape == (4, 7)
    with pytest.raises(ValueError):
        Seq2Seq(12, 8, 16, "cosine")


def test_reverse_batch_and_adding_problem():
    src, tgt, lengths = reverse_batch(50, 2, 9, 5, torch.Generator().manual_seed(1))
    for s, t, n in zip(src, tgt, lengths):
        assert t[:n].tolist() == s[:n].flip(0).tolist()
        assert (s[n:] == PAD).all() and (t[n:] == PAD).all()
    x, y = adding_problem(100, 10, torch.Generator().manual_seed(2))
    assert x.shape == (100, 10, 2) and y.shape == (100,)
    assert (x[:, :5, 1].sum(1) == 1).all() and (x[:, 5:, 1].sum(1) == 1).all()
    assert torch.allclose(y, (x[..., 0] * x[..., 1]).sum(1))
    with pytest.raises(ValueError):
        adding_problem(3, 1)
    with pytest.raises(ValueError):
        reverse_batch(3, 5, 4, 10)


@pytest.mark.parametrize("kind", ["rnn", "lstm", "gru", "attention-lstm"])
def test_charlm_params_closed_form_causality_and_generation(kind):
    torch.manual_seed(6)
    for layers in (1, 2):
        m = CharLM(kind, 11, 5, 9, layers)
        assert sum(p.numel() for p in m.parameters()) == param_count(kind, 11, 5, 9, layers)
    x = torch.randint(0, 11, (2, 10))
    logits, loss = m(x, x)
    assert logits.shape == (2, 10, 11) and math.isfinite(loss.item())
    x2 = x.clone()
    x2[:, 6:] = (x2[:, 6:] + 1) % 11
    with torch.no_grad():
        assert torch.equal(m(x)[0][:, :6], m(x2)[0][:, :6])  # causal: the future does not leak
    out = m.generate(x[:, :3], 5, temperature=1.0, generator=torch.Generator().manual_seed(0))
    assert out.shape == (2, 8) and torch.equal(out[:, :3], x[:, :3])
    greedy = m.generate(x[:, :3], 4, temperature=0)
    with torch.no_grad():  # greedy generation = argmax of the parallel forward on the generated text
        assert torch.equal(m(greedy[:, :-1])[0][:, 2:].argmax(-1), greedy[:, 3:])


def test_hidden_for_budget_picks_the_closest_size():
    budget = param_count("lstm", 65, 32, 96)
    h = hidden_for_budget("gru", 65, 32, budget)
    assert all(abs(param_count("gru", 65, 32, h) - budget) <= abs(param_count("gru", 65, 32, k) - budget)
               for k in (h - 1, h + 1))
    with pytest.raises(ValueError):
        CharLM("transformer", 10, 4, 4)


def test_gradient_flow_norms():
    torch.manual_seed(7)
    x = torch.randn(4, 12, 3)
    for cls in (RNN, LSTM, GRU):
        n = state_jacobian_norms(cls(3, 5), x)
        assert n.shape == (12,) and torch.isclose(n[-1], torch.tensor(1.0, dtype=n.dtype))
        assert torch.isfinite(n).all() and (n[:-1] < 1).all()


def test_filter_logits_top_k_and_top_p():
    from helpers.seq.charlm import filter_logits

    logits = torch.log(torch.tensor([[0.5, 0.3, 0.15, 0.05]]))
    assert torch.isinf(filter_logits(logits, top_k=2)[0, 2:]).all() and torch.isfinite(filter_logits(logits, top_k=2)[0, :2]).all()
    kept = torch.isfinite(filter_logits(logits, top_p=0.7)[0])
    assert kept.tolist() == [True, True, False, False]
    shuffled = logits[:, [2, 0, 3, 1]]
    assert torch.isfinite(filter_logits(shuffled, top_p=0.7)[0]).tolist() == [False, True, False, True]
