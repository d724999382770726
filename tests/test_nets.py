"""Shared networks: shapes for several image sizes, bad shapes, and K batched MLPs
against K separate ones."""
import pytest
import torch
from torch import nn

from dcl_lib.nets import BatchedMLP, ConvGenerator, ConvHead, mlp


@pytest.mark.parametrize("shape", [(1, 28, 28), (3, 32, 32), (1, 16, 16)])
def test_conv_generator_and_head_shapes(shape):
    G = ConvGenerator(12, shape, hidden=32, channels=(4, 8))
    D = ConvHead(shape, 5, hidden=32, channels=(4, 8))
    with torch.no_grad():
        x = G(torch.randn(3, 7), torch.randn(3, 5))  # parts are concatenated: 12 inputs
    assert x.shape == (3, *shape) and 0 <= float(x.min()) and float(x.max()) <= 1
    assert D(x).shape == (3, 5)


def test_conv_nets_refuse_sizes_not_divisible_by_4():
    with pytest.raises(ValueError, match="divisible by 4"):
        ConvHead((1, 30, 30), 1, hidden=8, channels=(2, 2))


def test_batched_mlp_equals_separate_mlps():
    torch.manual_seed(0)
    K, sizes = 3, [4, 16, 16, 2]
    bm = BatchedMLP(K, sizes, act=lambda: nn.LeakyReLU(0.2))
    nets = [mlp(sizes, act=lambda: nn.LeakyReLU(0.2)) for _ in range(K)]
    with torch.no_grad():
        for k, net in enumerate(nets):
            for i, lin in enumerate(l for l in net if isinstance(l, nn.Linear)):
                lin.weight.copy_(bm.weights[i][k].T)
                lin.bias.copy_(bm.biases[i][k, 0])
    x = torch.randn(K, 10, 4)
    y = bm(x)
    for k in range(K):
        assert torch.allclose(y[k], nets[k](x[k]), atol=1e-6)
    # gradients stay per model: a loss on model 1 only touches model 1's weights
    bm(x)[1].sum().backward()
    assert bm.weights[0].grad[0].abs().sum() == 0 and bm.weights[0].grad[1].abs().sum() > 0
    with pytest.raises(ValueError, match=r"expects \(K=3, B, d\)"):
        bm(torch.randn(10, 4))


def test_batched_mlp_initialised_like_linear():
    bm = BatchedMLP(50, [100, 7])
    bound, w = 1 / 100 ** 0.5, bm.weights[0].detach()
    # uniform on +-bound: max |w| <= bound, std = bound / sqrt(3)
    assert float(w.abs().max()) <= bound and abs(float(w.std()) - bound / 3 ** 0.5) < 0.05 * bound
