"""Layout inspection reads the structure of real ldm UNets, not flags."""

import copy

import pytest
import torch.nn as nn

import lib_hidiff as hd
from lib_hidiff import zoo

from .helpers import tiny


def test_sd1_layout(sd1):
    lay = hd.inspect_unet(sd1)
    assert lay.family == "sd1" and lay.native == (64, 64) and lay.n_blocks == 12
    assert (lay.rad_input, lay.rau_output, lay.ca_input, lay.ca_output) == (3, 8, 4, 7)
    assert lay.upsamples == ((2, 8), (5, 5), (8, 2))
    assert lay.msw_blocks == (("input", 1), ("input", 2), ("output", 9), ("output", 10), ("output", 11))
    assert lay.n_attn1 == 5


def test_sd2_layout_shares_indices_and_is_told_apart_by_linear_projections(sd1, sd2):
    a, b = hd.inspect_unet(sd1), hd.inspect_unet(sd2)
    assert b.family == "sd2"
    assert {**vars(a), "family": None} == {**vars(b), "family": None}


class _CastLinear(nn.Module):
    """A host's own Linear (Forge casts weights per call; its class is no nn.Linear)."""

    def __init__(self, linear: nn.Linear):
        super().__init__()
        self.weight, self.bias = linear.weight, linear.bias

    def forward(self, x):
        return nn.functional.linear(x, self.weight, self.bias)


def test_sd2_is_told_apart_from_sd1_also_with_a_host_linear_class(sd2):
    unet = copy.deepcopy(sd2)
    for m in unet.modules():
        if type(m).__name__ == "SpatialTransformer":
            m.proj_in, m.proj_out = _CastLinear(m.proj_in), _CastLinear(m.proj_out)
    assert hd.inspect_unet(unet).family == "sd2"


def test_sdxl_layout(sdxl):
    lay = hd.inspect_unet(sdxl)
    assert lay.family == "sdxl" and lay.native == (128, 128) and lay.n_blocks == 9
    assert (lay.rad_input, lay.rau_output, lay.ca_input, lay.ca_output) == (6, 2, 4, 4)
    assert lay.upsamples == ((2, 5), (5, 2))
    assert lay.msw_blocks == (("input", 4), ("input", 5), ("output", 3), ("output", 4), ("output", 5))
    assert lay.n_attn1 == 10  # both transformer depths of every level-1 block


def test_with_native_for_768_v_models(sd2):
    lay = hd.inspect_unet(sd2).with_native(96)
    assert lay.native == (96, 96) and lay.family == "sd2"


def test_sdxl_refiner_layout_is_refused():
    # Refiner: 4 levels like SD1.5 but attention only at levels 1-2.
    refiner = zoo.build_ldm_unet("sdxl_refiner", 32, heads=2, context_dim=32, depths=(0, 1, 1, 0))
    with pytest.raises(hd.UnsupportedUNet, match="refiner"):
        hd.inspect_unet(refiner)


def test_unknown_modules_are_refused_with_one_line():
    with pytest.raises(hd.UnsupportedUNet) as err:
        hd.inspect_unet(nn.Linear(3, 3))
    assert "\n" not in str(err.value) and "input_blocks" in str(err.value)


def test_uneven_blocks_per_level_are_refused():
    unet = tiny("sd1", seed=1)
    unet.input_blocks.insert(5, copy.deepcopy(unet.input_blocks[5]))
    unet.output_blocks.insert(6, copy.deepcopy(unet.output_blocks[6]))
    with pytest.raises(hd.UnsupportedUNet):
        hd.inspect_unet(unet)


def test_resblock_updown_variant_without_downsample_conv_is_refused():
    unet = tiny("sd1", seed=2)
    down = unet.input_blocks[3][0]
    down.op = nn.AvgPool2d(2)
    with pytest.raises(hd.UnsupportedUNet, match="conv"):
        hd.inspect_unet(unet)


def test_ssd1b_style_shallow_sdxl_is_supported_where_rules_hold():
    # SSD-1B / Vega drop transformer layers: here the level-1 output block 3 loses its attention.
    unet = zoo.build_ldm_unet("sdxl", 32, heads=2, context_dim=32, depths=(0, 2, 1))
    del unet.output_blocks[3][1]
    lay = hd.inspect_unet(unet)
    assert lay.family == "sdxl"
    assert ("output", 3) not in lay.msw_blocks and lay.n_attn1 == 8


def test_inpainting_models_are_recognised_by_their_input_conv():
    unet = zoo.build_ldm_unet("sdxl", 32, heads=2, context_dim=32, depths=(0, 1, 1))
    assert not hd.inspect_unet(unet).inpainting
    conv = unet.input_blocks[0][0]
    unet.input_blocks[0][0] = nn.Conv2d(9, conv.out_channels, 3, padding=1)
    lay = hd.inspect_unet(unet)
    assert lay.inpainting and lay.family == "sdxl"
