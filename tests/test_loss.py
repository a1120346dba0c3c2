"""Chan-Vese loss against values computed by hand."""

import pytest
import torch

from unsupseg.train.loss import chan_vese_loss, fidelity, region_means, total_variation

# I = [[0, 1], [1, 1]], u = [[0, 1], [1, 0.5]]
#   a = sum(I u) / sum(u) = 2.5 / 2.5 = 1;  b = sum(I (1-u)) / sum(1-u) = 0.5 / 1.5 = 1/3
#   fidelity = (1/4) [ (0-1/3)^2 + 0 + 0 + 0.5 (1-1/3)^2 ] = (1/4)(1/9 + 2/9) = 1/12
#   TV: rows |1-0| + |0.5-1| = 1.5, columns |1-0| + |0.5-1| = 1.5  -> 3 / 4 = 0.75
IMAGE = torch.tensor([[[[0.0, 1.0], [1.0, 1.0]]]])
U = torch.tensor([[[[0.0, 1.0], [1.0, 0.5]]]])


def test_region_means_by_hand():
    a, b = region_means(IMAGE, U)
    assert a.item() == pytest.approx(1.0)
    assert b.item() == pytest.approx(1 / 3)


def test_fidelity_by_hand():
    assert fidelity(IMAGE, U).item() == pytest.approx(1 / 12)


def test_tv_by_hand_forward_differences_neumann():
    assert total_variation(U).item() == pytest.approx(0.75)


def test_tv_is_zero_for_constant_and_counts_each_edge_once():
    assert total_variation(torch.full((1, 1, 5, 7), 0.3)).item() == 0.0
    # a vertical step between columns 1 and 2 of a 4x4 map: 4 unit differences / 16 pixels
    u = torch.zeros(1, 1, 4, 4)
    u[..., 2:] = 1.0
    assert total_variation(u).item() == pytest.approx(4 / 16)


def test_loss_combines_terms_with_alpha():
    loss, fid, tv = chan_vese_loss(IMAGE, U, alpha=0.1)
    assert fid.item() == pytest.approx(1 / 12)
    assert tv.item() == pytest.approx(0.75)
    assert loss.item() == pytest.approx(1 / 12 + 0.1 * 0.75)


def test_loss_averages_over_batch():
    image = torch.cat([IMAGE, torch.zeros_like(IMAGE)])
    u = torch.cat([U, torch.zeros_like(U)])
    # second image: constant 0 image, u all 0 -> fidelity 0, tv 0
    loss, fid, tv = chan_vese_loss(image, u, alpha=0.1)
    assert fid.item() == pytest.approx(1 / 24)
    assert tv.item() == pytest.approx(0.375)


@pytest.mark.parametrize("value", [0.0, 1.0])
def test_loss_is_finite_with_an_empty_region(value):
    image = torch.rand(2, 1, 8, 8)
    u = torch.full_like(image, value, requires_grad=True)
    loss, fid, _ = chan_vese_loss(image, u, alpha=0.001)
    loss.backward()
    assert torch.isfinite(loss)
    assert torch.isfinite(u.grad).all()
    # the occupied region's mean is the image mean, so fidelity is the image variance
    var = image.var(dim=(1, 2, 3), unbiased=False).mean()
    assert fid.item() == pytest.approx(var.item(), rel=1e-5)
