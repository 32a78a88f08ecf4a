"""Model shapes, parameter counts and construction rules."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from sparseopt.config import ModelConfig
from sparseopt.models import build_model, mlp, resnet20, resnet50, small_cnn


def n_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def test_resnet20_parameter_count_matches_the_architecture():
    conv = 3 * 16 * 9 + 6 * 16 * 16 * 9  # stem + stage 1
    conv += 16 * 32 * 9 + 5 * 32 * 32 * 9 + 16 * 32  # stage 2 (+ 1x1 shortcut)
    conv += 32 * 64 * 9 + 5 * 64 * 64 * 9 + 32 * 64  # stage 3 (+ 1x1 shortcut)
    bn = 2 * (16 + 6 * 16 + 7 * 32 + 7 * 64)  # 19 main BNs + 2 shortcut BNs, weight + bias
    fc = 64 * 10 + 10
    model = resnet20(10)
    assert n_params(model) == conv + bn + fc
    assert 0.26e6 < n_params(model) < 0.28e6


def test_resnet20_structure_bn_everywhere_and_option_b_shortcuts():
    model = resnet20(100)
    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
    bns = [m for m in model.modules() if isinstance(m, nn.BatchNorm2d)]
    assert len(convs) == len(bns) == 21
    for stage in (model.layer2, model.layer3):
        shortcut = stage[0].downsample
        assert isinstance(shortcut[0], nn.Conv2d) and shortcut[0].kernel_size == (1, 1)
        assert shortcut[0].stride == (2, 2)
    assert isinstance(model.layer1[0].downsample, nn.Identity)


def test_resnet20_output_shapes_and_width():
    x = torch.randn(2, 3, 32, 32)
    assert resnet20(100)(x).shape == (2, 100)
    wide = resnet20(10, width=2)
    assert wide(x).shape == (2, 10)
    assert wide.fc.in_features == 128


def test_resnet20_kaiming_init_scale():
    torch.manual_seed(0)
    conv = resnet20(10).layer3[1].conv1
    fan_out = conv.out_channels * 9
    assert conv.weight.std().item() == pytest.approx(math.sqrt(2.0 / fan_out), rel=0.05)


def test_resnet50_is_torchvision_architecture():
    model = resnet50(1000)
    assert n_params(model) == 25_557_032
    assert resnet50(7).eval()(torch.randn(1, 3, 64, 64)).shape == (1, 7)


def test_mlp_layers_with_and_without_batchnorm():
    with_bn = mlp(64, 10, hidden=32, depth=3)
    kinds = [type(m) for m in with_bn]
    assert kinds.count(nn.BatchNorm1d) == 3 and kinds.count(nn.Linear) == 4
    assert with_bn[1].bias is None
    without = mlp(64, 10, hidden=32, depth=2, batchnorm=False)
    assert not any(isinstance(m, nn.BatchNorm1d) for m in without)
    assert without[1].bias is not None
    assert with_bn(torch.randn(5, 1, 8, 8)).shape == (5, 10)


def test_small_cnn_on_digits_shape():
    model = small_cnn(10, in_channels=1, width=1)
    assert model(torch.randn(4, 1, 8, 8)).shape == (4, 10)
    assert sum(isinstance(m, nn.BatchNorm2d) for m in model) == 3


@pytest.mark.parametrize(
    ("name", "in_channels", "size"),
    [("resnet20", 3, 32), ("mlp", 1, 8), ("small_cnn", 1, 8), ("mlp", 3, 16)],
)
def test_build_model_sizes_for_the_dataset(name, in_channels, size):
    model = build_model(ModelConfig(name=name, hidden=16), 5, in_channels, size)
    assert model.eval()(torch.randn(2, in_channels, size, size)).shape == (2, 5)


def test_build_model_rejects_resnet_without_batchnorm():
    with pytest.raises(ValueError, match=r"model\.batchnorm"):
        build_model(ModelConfig(name="resnet20", batchnorm=False), 10, 3, 32)


def test_bad_sizes_name_the_argument():
    with pytest.raises(ValueError, match="num_classes"):
        resnet20(0)
    with pytest.raises(ValueError, match="hidden"):
        mlp(64, 10, hidden=0)


def test_resnet20_on_digits_has_cifar_resnet20_block_fan_ins_at_097_under_erk(capsys):
    """ResNet-20 built for the digits (1 channel, 8x8, 10 classes: the dataset's own meta) keeps
    CIFAR ResNet-20's mean active fan-in per row in every block conv at s = 0.97 under ERK
    (7.8-11.7, vs 7.6-11.3 on CIFAR-100): only the stem and the classifier differ."""
    import sparseopt
    from sparseopt.config import DataConfig
    from sparseopt.data import build_datasets

    meta = build_datasets(DataConfig(name="digits"), seed=0).meta
    assert (meta["in_channels"], meta["image_size"], meta["num_classes"]) == (1, 8, 10)
    spreads = {}
    for inputs, (channels, size, classes) in {
        "digits": (meta["in_channels"], meta["image_size"], meta["num_classes"]),
        "cifar100": (3, 32, 100),
    }.items():
        model = build_model(ModelConfig(name="resnet20"), classes, channels, size)
        assert model(torch.zeros(2, channels, size, size)).shape == (2, classes)
        state = sparseopt.attach(model, torch.optim.SGD(model.parameters(), lr=0.1),
                                 method="static", sparsity=0.97, distribution="erk")  # fmt: skip
        spreads[inputs] = {
            row["layer"]: row["mean_k"] for row in sparseopt.fan_in_spread(state.masks)
        }
    with capsys.disabled():
        print("\nmean active fan-in per row at s=0.97, ERK:  layer  digits  cifar100")
        for layer, mean_k in spreads["digits"].items():
            print(f"  {layer:24s} {mean_k:6.2f} {spreads['cifar100'][layer]:6.2f}")
    blocks = [layer for layer in spreads["digits"] if ".conv" in layer]
    assert len(blocks) == 18
    digits = [spreads["digits"][layer] for layer in blocks]
    assert min(digits) >= 7.8 and max(digits) <= 11.7
    for layer in blocks:
        assert 1.0 <= spreads["digits"][layer] / spreads["cifar100"][layer] <= 1.05, layer
