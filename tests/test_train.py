"""The shared training loop: it learns, it reports, it evaluates correctly; and the image preprocessing."""
import numpy as np
import pytest
import torch
from torch import nn

from helpers.train import History, channel_stats, evaluate, fit, random_crop_flip, to_nchw

CPU = torch.device("cpu")


def blobs(n=256, seed=0):
    g = torch.Generator().manual_seed(seed)
    y = torch.randint(0, 3, (n,), generator=g)
    centers = torch.tensor([[2.0, 0.0], [-2.0, 0.0], [0.0, 2.5]])
    return centers[y] + 0.5 * torch.randn(n, 2, generator=g), y


def test_fit_reduces_loss_and_returns_a_history():
    torch.manual_seed(0)
    x, y = blobs()
    model = nn.Sequential(nn.Linear(2, 16), nn.ReLU(), nn.Linear(16, 3))
    sched = lambda opt, n: torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=0.05, total_steps=n)  # noqa: E731
    hist = fit(model, (x, y), blobs(128, seed=1), epochs=5, batch_size=32, device=CPU, progress=False,
               optimizer=lambda p: torch.optim.SGD(p, lr=0.05, momentum=0.9), scheduler=sched)
    assert isinstance(hist, History)
    assert all(len(v) == 5 for v in hist.as_dict().values())
    assert hist.train_loss[-1] < 0.5 * hist.train_loss[0]
    assert hist.val_acc[-1] > 0.9 and hist.total_seconds > 0


def test_fit_accepts_a_dataloader_and_numpy_arrays():
    torch.manual_seed(0)
    x, y = blobs()
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x, y), batch_size=64, shuffle=True)
    model = nn.Linear(2, 3)
    hist = fit(model, loader, (x.numpy(), y.numpy()), epochs=3, device=CPU, progress=False)
    assert len(hist.val_loss) == 3 and hist.val_loss[-1] < hist.val_loss[0] + 1e-9


def test_fit_bad_inputs():
    x, y = blobs(16)
    with pytest.raises(ValueError, match="epochs"):
        fit(nn.Linear(2, 3), (x, y), epochs=0, device=CPU)
    with pytest.raises(ValueError, match="equally long"):
        fit(nn.Linear(2, 3), (x, y[:5]), epochs=1, device=CPU, progress=False)


class Fixed(nn.Module):
    """Predicts class = round(x[:, 0]) with confident logits."""

    def forward(self, x):
        return 10.0 * nn.functional.one_hot(x[:, 0].round().long(), 4).float()


def test_evaluate_accuracy_on_a_known_case():
    x = torch.tensor([[0.0], [1.0], [2.0], [3.0], [1.0]])
    y = torch.tensor([0, 1, 2, 0, 3])  # 3 of 5 right
    loss, acc = evaluate(Fixed(), (x, y), batch_size=2, device=CPU)
    assert acc == pytest.approx(0.6)
    expected = nn.functional.cross_entropy(Fixed()(x), y).item()
    assert loss == pytest.approx(expected, rel=1e-6)


def test_evaluate_restores_training_mode():
    m = nn.Sequential(nn.Linear(2, 3), nn.Dropout(0.5))
    m.train()
    evaluate(m, blobs(8), device=CPU)
    assert m.training


def test_preprocessing_normalises_with_train_stats():
    rng = np.random.default_rng(0)
    imgs = rng.integers(0, 256, (20, 8, 8, 3), dtype=np.uint8)
    mean, std = channel_stats(imgs)
    x = to_nchw(imgs, mean, std)
    assert x.shape == (20, 3, 8, 8) and x.dtype == torch.float32
    torch.testing.assert_close(x.mean((0, 2, 3)), torch.zeros(3), atol=1e-5, rtol=0)
    torch.testing.assert_close(x.std((0, 2, 3), correction=0), torch.ones(3), atol=1e-5, rtol=0)
    with pytest.raises(ValueError, match="NHWC"):
        channel_stats(imgs[0])
    with pytest.raises(ValueError):
        to_nchw(imgs, mean[:2], std[:2])


def test_random_crop_flip_is_a_shifted_possibly_mirrored_window():
    torch.manual_seed(0)
    x = torch.randn(64, 2, 6, 6)
    out = random_crop_flip(x, padding=2)
    assert out.shape == x.shape
    xp = nn.functional.pad(x, (2, 2, 2, 2))
    for b in range(64):  # every output is one of the 5x5x2 windows of the padded input
        hits = [(t, l, f) for t in range(5) for l in range(5) for f in (False, True)
                if torch.equal(out[b], (xp[b, :, t:t + 6, l:l + 6].flip(-1) if f else xp[b, :, t:t + 6, l:l + 6]))]
        assert hits, f"image {b} is not a crop of its padded input"
    same = random_crop_flip(x, padding=0)  # no padding: each image is itself or its mirror image
    flipped = sum(torch.equal(same[b], x[b].flip(-1)) for b in range(64))
    kept = sum(torch.equal(same[b], x[b]) for b in range(64))
    assert flipped + kept == 64 and 16 <= flipped <= 48
    with pytest.raises(ValueError):
        random_crop_flip(x[0])
