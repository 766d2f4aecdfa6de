"""From-scratch convolution and pooling against torch, the output-size formula, and the CNN zoo's shapes."""
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

from helpers.conv import avg_pool2d, conv2d, conv_output_size, global_avg_pool2d, im2col, max_pool2d
from helpers.models.alexnet import AlexNet
from helpers.models.lenet import LeNet5
from helpers.models.resnet import BasicBlock, resnet18
from helpers.models.vgg import VGG


def n_params(m: torch.nn.Module) -> int:
    return sum(p.numel() for p in m.parameters())


@settings(max_examples=40, deadline=None)
@given(stride=st.integers(1, 3), padding=st.integers(0, 2), dilation=st.integers(1, 2),
       groups=st.sampled_from([1, 2, 3]), k=st.integers(1, 4), h=st.integers(7, 12), w=st.integers(7, 12),
       bias=st.booleans(), seed=st.integers(0, 2**16))
def test_conv2d_matches_torch(stride, padding, dilation, groups, k, h, w, bias, seed):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((2, 3 * groups, h, w))
    wt = rng.standard_normal((2 * groups, 3, k, k))
    b = rng.standard_normal(2 * groups) if bias else None
    ours = conv2d(x, wt, b, stride, padding, dilation, groups)
    ref = F.conv2d(torch.from_numpy(x), torch.from_numpy(wt), None if b is None else torch.from_numpy(b),
                   stride, padding, dilation, groups).numpy()
    assert ours.shape == ref.shape
    np.testing.assert_allclose(ours, ref, atol=1e-10)


def test_conv2d_rectangular_settings_and_float32():
    rng = np.random.default_rng(1)
    x = rng.standard_normal((1, 4, 10, 9)).astype(np.float32)
    wt = rng.standard_normal((6, 2, 3, 2)).astype(np.float32)
    ours = conv2d(x, wt, stride=(2, 1), padding=(1, 0), dilation=(1, 2), groups=2)
    ref = F.conv2d(torch.from_numpy(x), torch.from_numpy(wt), stride=(2, 1), padding=(1, 0), dilation=(1, 2),
                   groups=2).numpy()
    assert ours.dtype == np.float32
    np.testing.assert_allclose(ours, ref, atol=1e-5)


@settings(max_examples=30, deadline=None)
@given(k=st.integers(1, 4), stride=st.integers(1, 3), padding=st.integers(0, 2), seed=st.integers(0, 2**16))
def test_pooling_matches_torch(k, stride, padding, seed):
    padding = min(padding, k // 2)  # torch's rule
    x = np.random.default_rng(seed).standard_normal((2, 3, 9, 8))
    t = torch.from_numpy(x)
    np.testing.assert_allclose(max_pool2d(x, k, stride, padding), F.max_pool2d(t, k, stride, padding).numpy())
    np.testing.assert_allclose(avg_pool2d(x, k, stride, padding), F.avg_pool2d(t, k, stride, padding).numpy(),
                               atol=1e-12)
    np.testing.assert_allclose(global_avg_pool2d(x), F.adaptive_avg_pool2d(t, 1).numpy()[..., 0, 0])


def test_pool_default_stride_is_the_kernel():
    x = np.arange(16.0).reshape(1, 1, 4, 4)
    np.testing.assert_array_equal(max_pool2d(x, 2), [[[[5, 7], [13, 15]]]])
    np.testing.assert_array_equal(avg_pool2d(x, 2), [[[[2.5, 4.5], [10.5, 12.5]]]])


@pytest.mark.parametrize("n,k,s,p,d", [(32, 3, 1, 1, 1), (32, 5, 1, 0, 1), (28, 5, 2, 2, 1), (17, 3, 2, 0, 2),
                                       (7, 7, 1, 0, 1), (224, 11, 4, 2, 1), (10, 3, 3, 1, 3)])
def test_output_size_formula_matches_torch(n, k, s, p, d):
    out = F.conv2d(torch.zeros(1, 1, n, n), torch.zeros(1, 1, k, k), stride=s, padding=p, dilation=d)
    assert conv_output_size(n, k, s, p, d) == out.shape[-1]


def test_im2col_layout_is_c_i_j():
    x = np.arange(2 * 3 * 3, dtype=float).reshape(1, 2, 3, 3)
    cols = im2col(x, 2)  # (1, 2*2*2, 4)
    assert cols.shape == (1, 8, 4)
    np.testing.assert_array_equal(cols[0, :, 0], [0, 1, 3, 4, 9, 10, 12, 13])


def test_conv_bad_inputs():
    x, w = np.zeros((1, 4, 5, 5)), np.zeros((2, 4, 3, 3))
    with pytest.raises(ValueError, match="4-D"):
        conv2d(x[0], w)
    with pytest.raises(ValueError, match="groups"):
        conv2d(x, np.zeros((3, 2, 3, 3)), groups=2)
    with pytest.raises(ValueError, match="input channels per group"):
        conv2d(x, np.zeros((2, 3, 3, 3)))
    with pytest.raises(ValueError, match="does not fit"):
        conv2d(x, np.zeros((2, 4, 7, 7)))
    with pytest.raises(ValueError, match="stride"):
        conv2d(x, w, stride=0)
    with pytest.raises(ValueError, match="bias"):
        conv2d(x, w, bias=np.zeros(3))
    with pytest.raises(ValueError, match="padding"):
        max_pool2d(x, 2, padding=2)


@pytest.mark.parametrize("make,params", [
    (lambda: LeNet5(), 62_006), (lambda: LeNet5(in_channels=1), 61_706),
    (lambda: AlexNet(), 7_506_762), (lambda: VGG("vgg11"), 9_228_362),
    (lambda: resnet18(), 11_173_962),  # the number kuangliu/pytorch-cifar's ResNet18 prints
])
def test_standard_parameter_counts(make, params):
    assert n_params(make()) == params


@pytest.mark.parametrize("make", [lambda w: LeNet5(width=w), lambda w: AlexNet(width=w),
                                  lambda w: VGG(width=w), lambda w: resnet18(width=w)])
def test_forward_shapes_and_width_scaling(make):
    small, big = make(0.125), make(0.25)
    x = torch.randn(2, 3, 32, 32)
    assert small(x).shape == (2, 10) and big(x).shape == (2, 10)
    assert n_params(small) < n_params(big)


def test_lenet_takes_mnist_and_rejects_other_sizes():
    m = LeNet5(in_channels=1)
    assert m(torch.randn(3, 1, 28, 28)).shape == (3, 10)
    assert m(torch.randn(3, 1, 32, 32)).shape == (3, 10)
    with pytest.raises(ValueError, match="28"):
        m(torch.randn(3, 1, 24, 24))


def test_model_bad_arguments():
    with pytest.raises(ValueError, match="width"):
        resnet18(width=0)
    with pytest.raises(ValueError, match="vgg99"):
        VGG("vgg99")
    with pytest.raises(ValueError, match="32, 32"):
        AlexNet()(torch.randn(1, 3, 64, 64))


def test_basic_block_skip_and_projection():
    x = torch.randn(2, 8, 16, 16)
    down = BasicBlock(8, 16, stride=2)
    assert down(x).shape == (2, 16, 8, 8) and isinstance(down.shortcut, torch.nn.Sequential)
    same = BasicBlock(8, 8)
    for p in list(same.conv2.parameters()):  # zero residual branch → block is relu(x)
        torch.nn.init.zeros_(p)
    same.eval()
    torch.testing.assert_close(same(x), F.relu(x))
    plain = BasicBlock(8, 8, skip=False).eval()
    torch.nn.init.zeros_(plain.conv2.weight)
    assert torch.all(plain(x) == F.relu(plain.bn2.bias.view(1, -1, 1, 1).expand_as(x)))


def test_alexnet_tanh_and_no_dropout_variants():
    torch.manual_seed(0)
    relu, tanh, nodrop = AlexNet(width=0.125), AlexNet(width=0.125, activation="tanh"), AlexNet(width=0.125, dropout=0.0)
    assert n_params(relu) == n_params(tanh) == n_params(nodrop)
    assert any(isinstance(m, torch.nn.Tanh) for m in tanh.modules())
    assert not any(isinstance(m, torch.nn.ReLU) for m in tanh.modules())
    assert all(m.p == 0.0 for m in nodrop.modules() if isinstance(m, torch.nn.Dropout))
    assert tanh(torch.randn(2, 3, 32, 32)).shape == (2, 10)
    with pytest.raises(ValueError, match="activation"):
        AlexNet(activation="gelu")


def test_basic_block_gradient_is_gated_by_the_relu_after_the_sum():
    """v1 block y = relu(x + F(x)): dL/dx = (I + dF/dx)^T (relu'(x + F(x)) * dL/dy), not (I + dF/dx)^T dL/dy."""
    torch.manual_seed(0)
    block = BasicBlock(4, 4)
    x = torch.randn(2, 4, 6, 6, requires_grad=True)
    y = block(x)
    g = torch.randn_like(y)
    (dx,) = torch.autograd.grad(y, x, g)
    branch = block.bn2(block.conv2(torch.relu(block.bn1(block.conv1(x)))))
    dg = (x + branch > 0).to(g.dtype) * g
    formula = dg + torch.autograd.grad(branch, x, dg, retain_graph=True)[0]
    torch.testing.assert_close(dx, formula, atol=1e-5, rtol=1e-5)
    ungated = g + torch.autograd.grad(branch, x, g)[0]
    assert (ungated - dx).abs().max() > 0.1
