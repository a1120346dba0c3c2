"""Network shapes, gradients, the notebook architecture and cost accounting."""

import pytest
import torch

from unsupseg.train.model import ModelConfig, SeedNet, build_model, count_flops


@pytest.mark.parametrize("arch", ["seed", "unet"])
@pytest.mark.parametrize("hw", [(32, 32), (8, 8), (64, 40), (136, 200)])
def test_output_shape_range_and_no_nan(arch, hw):
    model = build_model(ModelConfig(arch=arch, width=4)).eval()
    x = torch.rand(2, 1, *hw)
    with torch.no_grad():
        u = model(x)
    assert u.shape == (2, 1, *hw)
    assert torch.isfinite(u).all()
    assert (u >= 0).all() and (u <= 1).all()


@pytest.mark.parametrize("arch", ["seed", "unet"])
def test_every_parameter_gets_a_gradient(arch):
    from unsupseg.train.loss import chan_vese_loss

    torch.manual_seed(0)
    model = build_model(ModelConfig(arch=arch, width=4)).train()
    x = torch.rand(4, 1, 32, 32)
    loss, _, _ = chan_vese_loss(x, model(x), alpha=0.1)
    loss.backward()
    for name, p in model.named_parameters():
        assert p.grad is not None, name
        assert torch.isfinite(p.grad).all(), name
        assert p.grad.abs().sum() > 0, name


def test_seed_architecture_is_the_notebooks():
    net = SeedNet(64)
    convs = [m for m in net.modules() if isinstance(m, torch.nn.Conv2d)]
    assert [(c.in_channels, c.out_channels, c.stride[0]) for c in convs] == [
        (1, 64, 2), (64, 128, 2), (128, 256, 2), (256, 128, 1), (128, 64, 1), (64, 1, 1),
    ]  # fmt: skip
    bns = [m for m in net.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    assert [b.num_features for b in bns] == [64, 128, 256, 128, 64]
    ups = [m for m in net.modules() if isinstance(m, torch.nn.Upsample)]
    assert len(ups) == 3 and all(u.mode == "bilinear" and u.align_corners is False for u in ups)
    assert isinstance(list(net.modules())[-1], torch.nn.Sigmoid)
    # convs: 640 + 73,856 + 295,168 + 295,040 + 73,792 + 577; BatchNorm affine: 2 x 640
    assert sum(p.numel() for p in net.parameters()) == 740_353


def test_seed_init_sets_biases_and_batchnorm_to_one():
    model = build_model(ModelConfig(arch="seed", width=8, init="seed"))
    for m in model.modules():
        if isinstance(m, torch.nn.Conv2d):
            assert torch.all(m.bias == 1)
        if isinstance(m, torch.nn.BatchNorm2d):
            assert torch.all(m.weight == 1) and torch.all(m.bias == 1)


def test_bad_config_is_rejected_with_the_choices():
    with pytest.raises(ValueError, match="seed, unet"):
        ModelConfig(arch="resnet")


def test_flops_scale_with_pixels_and_width():
    small = count_flops(ModelConfig("unet", 8), 32, 32)
    assert count_flops(ModelConfig("unet", 8), 64, 64) == 4 * small
    assert 3.5 * small < count_flops(ModelConfig("unet", 16), 32, 32) < 4.2 * small
