"""makemore (helpers/makemore): bigram counts, datasets, layers, manual backprop vs autograd, WaveNet causality."""
import math

import pytest
import torch
import torch.nn.functional as F

from helpers.makemore import backprop as bp
from helpers.makemore import bigram as bg
from helpers.makemore.conv import causal_conv_logits, causality_violations
from helpers.makemore.data import build_dataset, build_vocab, split_words
from helpers.makemore.layers import BatchNorm1d, FlattenConsecutive, Linear
from helpers.makemore.models import deep_mlp, mlp, wavenet
from helpers.makemore.train import evaluate, lr_range_sweep, pick_lr, sample, step_schedule, train

WORDS = ["emma", "ava", "bob", "abba"]


def g(seed=0):
    return torch.Generator().manual_seed(seed)


def test_vocab_and_dataset_by_hand():
    stoi, itos = build_vocab(WORDS)
    assert stoi == {".": 0, "a": 1, "b": 2, "e": 3, "m": 4, "o": 5, "v": 6}
    assert itos[0] == "." and len(itos) == 7
    X, Y = build_dataset(["emma"], 3, stoi)
    ctx = ["".join(itos[i] for i in row.tolist()) for row in X]
    assert ctx == ["...", "..e", ".em", "emm", "mma"]
    assert "".join(itos[i] for i in Y.tolist()) == "emma."
    with pytest.raises(ValueError, match="block_size"):
        build_dataset(WORDS, 0, stoi)
    with pytest.raises(ValueError, match="not in the vocabulary"):
        build_dataset(["zed"], 3, stoi)
    with pytest.raises(ValueError, match="boundary"):
        build_vocab(["a.b"])


def test_split_is_karpathys():
    import random
    words = [f"w{i}" for i in range(1000)]
    tr, va, te = split_words(words)
    ref = list(words)
    random.seed(42)
    random.shuffle(ref)
    assert tr + va + te == ref and (len(tr), len(va), len(te)) == (800, 100, 100)


def test_bigram_counts_on_a_tiny_word_list():
    stoi, itos = build_vocab(WORDS)
    xs, ys = bg.bigram_pairs(WORDS, stoi)
    N = bg.bigram_counts(xs, ys, len(stoi))
    assert int(N.sum()) == sum(len(w) + 1 for w in WORDS)
    c = lambda a, b: int(N[stoi[a], stoi[b]])  # noqa: E731
    assert c(".", "a") == 2 and c(".", "e") == 1 and c(".", "b") == 1  # ava, abba / emma / bob
    assert c("b", "b") == 1 and c("a", ".") == 3 and c("m", "m") == 1 and c("o", "b") == 1
    P = bg.count_model(N, alpha=1.0)
    assert torch.allclose(P.sum(1), torch.ones(len(stoi), dtype=P.dtype))
    assert bg.nll(P, xs, ys) == pytest.approx(bg.dict_bigram_nll(WORDS, alpha=1.0), abs=1e-12)
    # unsmoothed: the MLE; "a" is followed 5 times, 3 of them by "."
    assert bg.count_model(N, alpha=0.0)[stoi["a"], 0].item() == pytest.approx(3 / 5)
    with pytest.raises(ValueError):
        bg.count_model(N, alpha=-1)


def test_bigram_net_converges_to_smoothed_counts():
    stoi, _ = build_vocab(WORDS)
    xs, ys = bg.bigram_pairs(WORDS, stoi)
    N = bg.bigram_counts(xs, ys, len(stoi))
    W, losses = bg.train_bigram_net(N, alpha=1.0, steps=200, generator=g())
    assert losses[-1] < losses[0]
    assert torch.allclose(W.softmax(1), bg.count_model(N, 1.0), atol=2e-3)
    assert bg.bigram_net_loss_grouped(W, N).item() == pytest.approx(bg.bigram_net_loss(W, xs, ys).item(), abs=1e-12)


@pytest.mark.parametrize("n", [32, 5])
def test_manual_backprop_matches_autograd(n):
    torch.manual_seed(0)
    p = bp.init_params(vocab_size=7, block_size=3, n_embd=4, n_hidden=8, generator=g(1))
    X = torch.randint(0, 7, (n, 3), generator=g(2))
    Y = torch.randint(0, 7, (n,), generator=g(3))
    loss, cache = bp.forward(p, X, Y)
    for t in cache.values():
        t.retain_grad()
    loss.backward()
    assert loss.item() == pytest.approx(F.cross_entropy(cache["logits"], Y).item(), abs=1e-6)
    grads = bp.backward(p, cache, X, Y)
    assert set(grads) == set(cache) | set(p)  # every intermediate and every parameter
    for name, d in grads.items():
        ref = cache[name].grad if name in cache else p[name].grad
        assert d.shape == ref.shape, name
        assert torch.allclose(d, ref, atol=1e-6), (name, (d - ref).abs().max())
    fused = bp.backward_fused(p, cache, X, Y)
    for name, d in fused.items():
        assert torch.allclose(d, p[name].grad, atol=1e-6), name
    dlogits = bp.cross_entropy_backward(cache["logits"].detach(), Y)
    assert torch.allclose(dlogits, cache["logits"].grad, atol=1e-7)


def test_layers_shapes_and_errors():
    lin = Linear(6, 4, generator=g())
    assert lin(torch.randn(5, 6)).shape == (5, 4)
    with pytest.raises(ValueError, match="last dim 6"):
        lin(torch.randn(5, 7))
    f = FlattenConsecutive(2)
    x = torch.arange(2 * 8 * 3.0).view(2, 8, 3)
    assert f(x).shape == (2, 4, 6) and torch.equal(f(x)[0, 0], torch.cat([x[0, 0], x[0, 1]]))
    assert FlattenConsecutive(8)(x).shape == (2, 24)
    with pytest.raises(ValueError, match="divisible"):
        FlattenConsecutive(3)(x)
    bn = BatchNorm1d(3)
    with pytest.raises(ValueError):
        bn(torch.randn(2, 3, 4, 5))
    out = bn(torch.randn(16, 8, 3) * 5 + 2)  # (B, T, C): normalised over batch and time
    assert torch.allclose(out.mean((0, 1)), torch.zeros(3), atol=1e-5)


def test_wavenet_shapes_params_and_errors():
    m = wavenet(27, 8, 24, 128, generator=g())
    assert m.num_params() == 76579  # Karpathy's count
    X = torch.randint(0, 27, (5, 8), generator=g(1))
    assert m(X).shape == (5, 27)
    assert [tuple(layer.out.shape) for layer in m.layers if isinstance(layer, FlattenConsecutive)] == \
        [(5, 4, 48), (5, 2, 256), (5, 256)]
    with pytest.raises(ValueError, match="power of 2"):
        wavenet(27, 6)
    assert mlp(27, 3, 10, 200).num_params() == 11897  # Lecture 3's count


def _trained_wavenet():
    m = wavenet(7, 8, 6, 16, generator=g())
    X = torch.randint(0, 7, (256, 8), generator=g(1))
    Y = torch.randint(0, 7, (256,), generator=g(2))
    train(m, X, Y, steps=20, batch_size=32, lr_at=step_schedule(0.1, 20), generator=g(3), progress=False)
    return m


def test_wavenet_conv_form_equals_window_model_and_is_causal():
    m = _trained_wavenet()
    seq = torch.randint(1, 7, (4, 11), generator=g(4))
    conv = causal_conv_logits(m, seq)
    assert conv.shape == (4, 11, 7)
    m.eval()
    padded = F.pad(seq, (7, 0))
    with torch.no_grad():
        window = torch.stack([m(padded[:, t:t + 8]) for t in range(11)], dim=1)
    assert torch.allclose(conv, window, atol=1e-5)
    assert causality_violations(lambda s: causal_conv_logits(m, s), seq, g(5), vocab_size=7) == 0
    assert causality_violations(lambda s: causal_conv_logits(m, s, causal=False), seq, g(5), vocab_size=7) > 0
    with pytest.raises(ValueError):
        causal_conv_logits(m, seq[0])
    with pytest.raises(ValueError):
        causal_conv_logits(mlp(7, 8, 4, 8), seq)


def test_training_sweep_evaluate_and_sample():
    stoi, itos = build_vocab(WORDS)
    X, Y = build_dataset(WORDS * 20, 3, stoi)
    m = deep_mlp(len(stoi), 3, 4, 16, n_layers=2, generator=g())
    before = evaluate(m, X, Y)
    assert before == pytest.approx(math.log(len(stoi)), abs=0.3)  # near-uniform start
    h = train(m, X, Y, steps=60, batch_size=32, lr_at=step_schedule(0.5, 60), generator=g(1), progress=False)
    assert evaluate(m, X, Y) < before - 0.5 and len(h["loss"]) == 60
    with pytest.raises(ValueError):
        train(m, X, Y[:-1], steps=1, batch_size=4, lr_at=lambda i: 0.1, progress=False)
    lrs = 10 ** torch.linspace(-3, 1, 100)
    losses = lr_range_sweep(mlp(len(stoi), 3, 4, 16, generator=g(2)), X, Y, lrs, 32, generator=g(3))
    lr = pick_lr(lrs, losses, window=10)
    assert 1e-3 <= lr <= 10
    names = sample(m, 10, 3, itos, generator=g(4))
    assert len(names) == 10 and all(set(n) <= set("abemov") for n in names)
    assert step_schedule(0.1, 100)(74) == 0.1 and step_schedule(0.1, 100)(75) == pytest.approx(0.01)


def test_ngram_counts_match_a_dense_table_and_scale_to_long_contexts():
    words = ["emma", "ava", "bob", "abba", "anna", "bea", "mae"]
    stoi, _ = build_vocab(words)
    V = len(stoi)
    Xtr, Ytr = build_dataset(words[:5], 2, stoi)
    Xva, Yva = build_dataset(words[5:], 2, stoi)
    N = torch.zeros(V, V, V, dtype=torch.float64)  # dense trigram table, by a python loop
    for (a, b), y in zip(Xtr.tolist(), Ytr.tolist()):
        N[a, b, y] += 1
    P = (N + 0.1) / (N.sum(2, keepdim=True) + 0.1 * V)
    dense = -sum(math.log(P[a, b, y]) for (a, b), y in zip(Xva.tolist(), Yva.tolist())) / len(Yva)
    assert bg.ngram_val_nll(Xtr, Ytr, Xva, Yva, V, alpha=0.1) == pytest.approx(dense, abs=1e-12)
    X8, Y8 = build_dataset(words, 8, stoi)  # a 9-gram: 7^9 cells, only the seen ones are stored
    assert bg.ngram_val_nll(X8, Y8, X8, Y8, V) < bg.ngram_val_nll(*build_dataset(words, 1, stoi), *build_dataset(words, 1, stoi), V)
    with pytest.raises(ValueError, match="int64"):
        bg.ngram_val_nll(torch.zeros(1, 14, dtype=torch.long), torch.zeros(1, dtype=torch.long),
                         torch.zeros(1, 14, dtype=torch.long), torch.zeros(1, dtype=torch.long), 27)


def test_example_losses_and_sample_chain():
    from helpers.makemore.train import example_losses

    m = mlp(7, 3, 4, 8, generator=g())
    X, Y = torch.randint(0, 7, (50, 3), generator=g(1)), torch.randint(0, 7, (50,), generator=g(2))
    per = example_losses(m, X, Y, chunk=16)
    assert per.shape == (50,) and evaluate(m, X, Y) == pytest.approx(per.mean().item(), abs=1e-6)
    assert torch.allclose(per, F.cross_entropy(m.eval()(X), Y, reduction="none"), atol=1e-6)
    P = torch.tensor([[0.0, 1.0, 0.0], [0.0, 0.0, 1.0], [1.0, 0.0, 0.0]])  # 0 -> 1 -> 2 -> 0, no choice
    assert bg.sample_chain(P, 5, start=0) == [1, 2, 0, 1, 2]
    assert bg.sample_chain(P, 5, start=0, stop=0) == [1, 2]  # the stop id ends the walk and is not kept


def test_layer_names_count_within_each_type():
    from helpers.makemore.diagnostics import layer_names

    m = deep_mlp(7, 3, 4, 8, n_layers=2, batchnorm=True, generator=g())
    assert layer_names(m) == ["Embedding", "FlattenConsecutive", "Linear 1", "BatchNorm1d 1", "Tanh 1",
                              "Linear 2", "BatchNorm1d 2", "Tanh 2", "Linear 3", "BatchNorm1d 3"]


def test_sequential_to_moves_weights_and_buffers_and_train_returns_the_model_home():
    stoi, _ = build_vocab(WORDS)
    X, Y = build_dataset(WORDS * 20, 8, stoi)
    m = wavenet(len(stoi), 8, 4, 8, generator=g())
    params = m.parameters()
    assert m.to("cpu").parameters()[0] is params[0]  # already there: nothing replaced
    ref = wavenet(len(stoi), 8, 4, 8, generator=g())
    h_cpu = train(ref, X, Y, steps=20, batch_size=16, lr_at=lambda i: 0.1, generator=g(1), progress=False)
    h_dev = train(m, X, Y, steps=20, batch_size=16, lr_at=lambda i: 0.1, generator=g(1), progress=False, device="cpu",
                  track_ud=True)
    assert h_cpu["loss"] == h_dev["loss"] and len(h_dev["ud"]) == 20 and len(h_dev["ud"][0]) == 5  # emb + 3 levels + out
    assert m.device == torch.device("cpu")
    m.to("meta")  # another device (no data): every weight and BatchNorm buffer moves, trained tensors stay leaves
    bn = m.layers[3]
    assert all(p.device.type == "meta" and p.is_leaf and p.requires_grad for p in m.parameters())
    assert bn.running_mean.device.type == "meta" and not bn.running_var.requires_grad
