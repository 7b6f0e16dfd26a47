"""Encoder registry: every registered encoder in 2D and 3D, feature_info against real shapes."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from medfoundry.errors import ConfigError
from medfoundry.models import (
    EncoderDefaults,
    create_encoder,
    encoder_defaults,
    list_encoders,
    register_encoder,
)
from medfoundry.models.registry import _REGISTRY

ENCODERS = list_encoders()


def test_builtins_registered():
    assert {"resnet_small", "resnet_base", "convnext_small", "convnext_base"} <= set(ENCODERS)
    assert list_encoders("convnext*") == ["convnext_base", "convnext_small"]
    assert list_encoders("nothing*") == []


@pytest.mark.parametrize("name", ENCODERS)
@pytest.mark.parametrize("dims", [2, 3])
def test_encoder_shapes_match_feature_info(name, dims):
    torch.manual_seed(0)
    enc = create_encoder(name, spatial_dims=dims, in_channels=3)
    assert enc.spatial_dims == dims and enc.in_channels == 3
    assert enc.defaults.spatial_dims == dims and enc.defaults.in_channels == 3
    assert enc.defaults.license == "Apache-2.0" and enc.defaults.weights_source is None
    size = (32,) * dims if dims == 3 else (64, 48)  # non-square in 2D
    x = torch.randn(1, 3, *size)
    with torch.no_grad():
        feats = enc.forward_intermediates(x)
        last = enc.forward_features(x)
    assert len(feats) == len(enc.feature_info) == 4
    reductions = [f["reduction"] for f in enc.feature_info]
    assert reductions == sorted(reductions) and reductions[0] == 4
    for f, info in zip(feats, enc.feature_info):
        assert f.shape[1] == info["num_chs"]
        assert tuple(f.shape[2:]) == tuple(math.ceil(s / info["reduction"]) for s in size)
        assert torch.isfinite(f).all()
    assert torch.equal(last, feats[-1])
    assert enc.out_channels == enc.feature_info[-1]["num_chs"]


@pytest.mark.parametrize("name", ENCODERS)
def test_no_batchnorm(name):
    enc = create_encoder(name, spatial_dims=2)
    bad = [m for m in enc.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    assert not bad


def test_parameter_counts_in_expected_ranges():
    counts = {n: create_encoder(n, spatial_dims=2).num_parameters() / 1e6 for n in ENCODERS}
    assert 1.0 <= counts["resnet_small"] <= 3.0
    assert 1.0 <= counts["convnext_small"] <= 3.0
    assert 10.0 <= counts["resnet_base"] <= 12.5  # ResNet-18 has 11.7 M with its classifier
    assert 26.0 <= counts["convnext_base"] <= 29.0  # ConvNeXt-T has 28.6 M with its classifier
    for n in ENCODERS:
        assert abs(encoder_defaults(n).params_millions - counts[n]) / counts[n] < 0.05


def test_unknown_name_suggests_close_match():
    with pytest.raises(ConfigError, match="resnet_small"):
        create_encoder("resnet_smal")
    with pytest.raises(ConfigError, match="did you mean"):
        encoder_defaults("convnext_bas")


def test_bad_arguments():
    with pytest.raises(ConfigError, match="spatial_dims"):
        create_encoder("resnet_small", spatial_dims=4)
    with pytest.raises(ConfigError, match="pretrained"):
        create_encoder("resnet_small", pretrained=True)
    with pytest.raises(ConfigError, match="bad options"):
        create_encoder("resnet_small", no_such_option=1)
    enc = create_encoder("resnet_small", spatial_dims=2, in_channels=2)
    with pytest.raises(ValueError, match="C=2"):
        enc(torch.zeros(1, 3, 32, 32))


def test_register_and_duplicate():
    name = "test_only_tiny_resnet"
    try:
        @register_encoder(name=name, defaults=EncoderDefaults("resnet", description="test"))
        def _builder(spatial_dims=2, in_channels=16, **kw):
            from medfoundry.models import ResNetEncoder

            return ResNetEncoder(spatial_dims, in_channels, widths=(8, 8, 8, 8), depths=(1, 1, 1, 1))

        assert name in list_encoders("test_only*")
        enc = create_encoder(name, in_channels=1)
        assert enc.name == name and enc.out_channels == 8
        with pytest.raises(ConfigError, match="already registered"):
            register_encoder(name=name)(_builder)
        with pytest.raises(ConfigError, match="already registered"):
            @register_encoder
            def resnet_small(spatial_dims=2, in_channels=16):  # noqa: F811 - on purpose
                raise AssertionError("never built")
    finally:
        _REGISTRY.pop(name, None)


def test_architecture_options_are_applied():
    enc = create_encoder("convnext_small", widths=(8, 16, 24, 32), depths=(1, 1, 1, 1), kernel_size=3)
    assert [f["num_chs"] for f in enc.feature_info] == [8, 16, 24, 32]
    assert enc.build_kwargs["kernel_size"] == 3


@pytest.mark.parametrize("name", ["resnet_small", "convnext_small"])
@pytest.mark.parametrize("size", [(28, 28), (30, 17), (9, 20, 27)])
def test_odd_sizes_give_ceil_shapes(name, size):
    enc = create_encoder(name, spatial_dims=len(size), in_channels=1)
    with torch.no_grad():
        feats = enc(torch.randn(1, 1, *size))
    for f, info in zip(feats, enc.feature_info):
        assert tuple(f.shape[2:]) == tuple(math.ceil(s / info["reduction"]) for s in size)


@pytest.mark.parametrize("name,kw", [
    ("resnet_small", {"stem_strides": ((1, 2, 2), (1, 2, 2)), "stage_strides": (1, (1, 2, 2), 2, 2)}),
    ("convnext_small", {"stem_stride": (1, 4, 4), "stage_strides": ((1, 2, 2), 2, 2)}),
])
def test_anisotropic_strides_3d(name, kw):
    enc = create_encoder(name, spatial_dims=3, in_channels=1, **kw)
    assert [f["reduction_per_axis"] for f in enc.feature_info] == [(1, 4, 4), (1, 8, 8), (2, 16, 16), (4, 32, 32)]
    assert [f["reduction"] for f in enc.feature_info] == [4, 8, 16, 32]
    size = (8, 40, 36)
    with torch.no_grad():
        feats = enc(torch.randn(1, 1, *size))
    for f, info in zip(feats, enc.feature_info):
        assert tuple(f.shape[2:]) == tuple(math.ceil(s / r) for s, r in zip(size, info["reduction_per_axis"]))
    with pytest.raises(ConfigError, match="per axis"):
        create_encoder(name, spatial_dims=2, **kw)
