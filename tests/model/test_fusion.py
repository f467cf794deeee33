from __future__ import annotations

import pytest
import torch

from simcrop.model.fusion import FusionLayer


@pytest.fixture
def layer():
    torch.manual_seed(0)
    return FusionLayer(text_dim=24, patch_dim=18, num_heads=6).eval()


def test_shapes_and_gradients(layer):
    words = torch.randn(2, 7, 24, requires_grad=True)
    patches = torch.randn(2, 5, 18, requires_grad=True)
    out = layer(words, patches, torch.ones(2, 7, dtype=torch.long))
    assert out.shape == (2, 7, 24)
    out.sum().backward()
    assert words.grad.abs().sum() > 0 and patches.grad.abs().sum() > 0
    assert layer.instance_proj.weight.grad.abs().sum() > 0 and layer.patch_proj.weight.grad.abs().sum() > 0


def test_padding_does_not_leak_into_real_tokens(layer):
    words, patches = torch.randn(2, 6, 24), torch.randn(2, 4, 18)
    mask = torch.tensor([[1, 1, 1, 1, 0, 0], [1, 1, 1, 1, 1, 1]])
    a = layer(words, patches, mask)
    changed = words.clone()
    changed[0, 4:] = torch.randn(2, 24) * 10
    b = layer(changed, patches, mask)
    assert torch.allclose(a[0, :4], b[0, :4], atol=1e-5) and torch.allclose(a[1], b[1])
    unmasked = layer(changed, patches, None)
    assert not torch.allclose(a[0, :4], unmasked[0, :4], atol=1e-5)        # the mask is what protects them


def test_each_sample_attends_to_its_own_patches(layer):
    words, patches = torch.randn(2, 3, 24), torch.randn(2, 4, 18)
    a = layer(words, patches)
    other = patches.clone()
    other[1] = torch.randn(4, 18)
    b = layer(words, other)
    assert torch.allclose(a[0], b[0], atol=1e-6) and not torch.allclose(a[1], b[1])
    # patch order does not matter (no positions on the key side)
    perm = layer(words, patches[:, torch.tensor([3, 1, 0, 2])])
    assert torch.allclose(a, perm, atol=1e-5)
