"""Reference models: output shapes, parameter names, determinism, the registry's errors."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from prunekit import zoo


def test_model_names() -> None:
    assert zoo.model_names() == ["lenet5", "lenet_300_100", "resnet_small", "vgg_small_bn"]


@pytest.mark.parametrize("name", zoo.model_names())
def test_every_model_maps_mnist_images_to_ten_logits(name: str) -> None:
    model = zoo.get_model(name)
    out = model(torch.randn(2, 1, 28, 28))
    assert out.shape == (2, 10)
    assert torch.isfinite(out).all()
    out.sum().backward()
    assert all(p.grad is not None for p in model.parameters())  # every parameter is used


@pytest.mark.parametrize("name", zoo.model_names())
def test_models_are_deterministic_given_the_callers_seed(name: str) -> None:
    torch.manual_seed(7)
    a = zoo.get_model(name).state_dict()
    torch.manual_seed(7)
    b = zoo.get_model(name).state_dict()
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_lenet_300_100_parameter_names_and_shapes() -> None:
    shapes = {n: tuple(p.shape) for n, p in zoo.get_model("lenet_300_100").named_parameters()}
    assert shapes == {
        "fc1.weight": (300, 784),
        "fc1.bias": (300,),
        "fc2.weight": (100, 300),
        "fc2.bias": (100,),
        "fc3.weight": (10, 100),
        "fc3.bias": (10,),
    }
    assert list(shapes) == ["fc1.weight", "fc1.bias", "fc2.weight", "fc2.bias", "fc3.weight", "fc3.bias"]
    assert sum(p.numel() for p in zoo.get_model("lenet_300_100").parameters()) == 266_610


def test_lenet5_layers_and_parameter_count() -> None:
    model = zoo.get_model("lenet5", num_classes=7, in_channels=3)
    assert model(torch.randn(1, 3, 28, 28)).shape == (1, 7)
    assert model.fc1.in_features == 400 and model.conv1.out_channels == 6 and model.conv2.out_channels == 16
    assert sum(p.numel() for p in zoo.get_model("lenet5").parameters()) == 61_706


def test_lenet_300_100_takes_other_input_sizes() -> None:
    model = zoo.get_model("lenet_300_100", num_classes=3, in_features=64)
    assert model(torch.randn(5, 1, 8, 8)).shape == (5, 3)


def test_vgg_width_scales_channels() -> None:
    convs = [m for m in zoo.get_model("vgg_small_bn", width=0.5).modules() if isinstance(m, nn.Conv2d)]
    assert [c.out_channels for c in convs] == [16, 16, 32, 32, 64, 64]
    assert sum(isinstance(m, nn.BatchNorm2d) for m in zoo.get_model("vgg_small_bn").modules()) == 6
    with pytest.raises(ValueError, match="width must be a positive channel multiplier"):
        zoo.get_model("vgg_small_bn", width=0)


def test_resnet_has_residual_blocks_with_projection_shortcuts() -> None:
    model = zoo.get_model("resnet_small", widths=(8, 16), blocks_per_stage=2)
    blocks = [m for m in model.modules() if isinstance(m, zoo.BasicBlock)]
    assert len(blocks) == 4
    assert [isinstance(b.downsample, nn.Identity) for b in blocks] == [True, True, False, True]
    assert model(torch.randn(3, 1, 28, 28)).shape == (3, 10)


def test_resnet_block_adds_the_shortcut() -> None:
    block = zoo.BasicBlock(4, 4).eval()
    nn.init.zeros_(block.bn2.weight)  # residual branch outputs bn2.bias = 0, so out = relu(x)
    x = torch.randn(2, 4, 6, 6)
    assert torch.equal(block(x), torch.relu(x))


def test_unknown_model_lists_the_valid_names() -> None:
    with pytest.raises(ValueError, match="unknown model 'lenet'; valid models are: lenet5, lenet_300_100, "):
        zoo.get_model("lenet")


def test_bad_resnet_arguments_are_rejected() -> None:
    with pytest.raises(ValueError, match="blocks_per_stage must be a positive int, got 0"):
        zoo.get_model("resnet_small", blocks_per_stage=0)
    with pytest.raises(ValueError, match="widths must be a non-empty sequence of positive ints"):
        zoo.get_model("resnet_small", widths=())
