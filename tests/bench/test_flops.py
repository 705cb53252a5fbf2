"""The bench's FLOP counter: layers with FLOPs known by hand, and a whole UNet against torch's counter."""

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.utils.flop_counter import FlopCounterMode

import lib_hidiff as hd
from lib_hidiff import zoo
from lib_hidiff.bench import count_flops


def test_conv2d_by_hand():
    conv = nn.Conv2d(3, 8, kernel_size=3, stride=2, padding=1)
    with count_flops() as fc:
        out = conv(torch.randn(2, 3, 16, 16))
    assert out.shape == (2, 8, 8, 8)
    # 2 FLOPs per multiply-add; each of the 2*8*8*8 outputs sums 3 channels x 3x3 taps.
    assert fc.conv == 2 * (2 * 8 * 8 * 8) * (3 * 3 * 3) == 55296
    assert fc.linear == fc.attention == 0


def test_grouped_dilated_stride4_conv_by_hand():
    # RAD's shape of conv: stride 4, padding 2, dilation 2; groups cut the taps per output.
    conv = nn.Conv2d(8, 8, kernel_size=3, stride=4, padding=2, dilation=2, groups=4)
    with count_flops() as fc:
        out = conv(torch.randn(2, 8, 16, 16))
    assert out.shape == (2, 8, 4, 4)
    assert fc.conv == 2 * (2 * 8 * 4 * 4) * (2 * 3 * 3) == 9216


def test_linear_by_hand():
    with count_flops() as fc:
        nn.Linear(5, 7)(torch.randn(2, 3, 5))
    assert fc.linear == 2 * (2 * 3) * 7 * 5 == 420


def test_attention_by_hand_and_output_unchanged():
    q, k = torch.randn(2, 4, 10, 8), torch.randn(2, 4, 6, 8)
    v = torch.randn(2, 4, 6, 16)
    want = F.scaled_dot_product_attention(q, k, v)
    with count_flops() as fc:
        got = F.scaled_dot_product_attention(q, k, v)
    # q @ k^T: 2*4 heads x 10x6 scores x 8 channels; attn @ v: 10x6 weights x 16 channels.
    assert fc.attention == 2 * (2 * 4) * 10 * 6 * 8 + 2 * (2 * 4) * 10 * 6 * 16 == 23040
    assert fc.attention_calls == [(8, 10, 6)]
    assert torch.equal(got, want)


def test_counter_removes_itself_after_an_error():
    sdpa = F.scaled_dot_product_attention
    with pytest.raises(RuntimeError), count_flops():
        raise RuntimeError("boom")
    assert F.scaled_dot_product_attention is sdpa
    with count_flops() as fc:
        pass
    nn.Linear(2, 2)(torch.randn(1, 2))  # after the block: the global hook is gone too
    F.scaled_dot_product_attention(*torch.randn(3, 1, 4, 2))
    assert fc.total == 0


@pytest.fixture(scope="module")
def unet():
    return zoo.build_ldm_unet("sd1", 32, heads=2, context_dim=32)


def _torch_count(fn) -> int:
    # The math SDPA backend runs attention as bmm's, which torch's own counter sees.
    with sdpa_kernel(SDPBackend.MATH), FlopCounterMode(display=False) as fm:
        fn()
    return fm.get_total_flops()


@pytest.mark.parametrize(("step", "parts"), [(None, "vanilla"), (0, "RAD+MSW"), (49, "MSW")])
def test_whole_unet_matches_torch_flop_counter(unet, step, parts):
    # 2x a native side of 8: the same phases as SD 1.5 at 1024 px, cheap enough for the math kernel.
    x, t, c = torch.randn(2, 4, 16, 16), torch.full((2,), 500.0), torch.randn(2, 7, 32)
    layout = hd.inspect_unet(unet).with_native(8)

    def forward():
        return unet(x, t, context=c)

    with torch.no_grad(), zoo.sdpa_attention():
        if step is None:
            with count_flops() as ours:
                forward()
            theirs = _torch_count(forward)
        else:
            settings = hd.HiDiffusionSettings(preset="sd15_1024")
            with hd.apply_hidiffusion(unet, settings, progress=lambda: (step, 50), layout=layout):
                with count_flops() as ours:
                    forward()
                theirs = _torch_count(forward)
    assert ours.total == theirs, parts
    assert ours.conv > 0 and ours.linear > 0 and ours.attention > 0


def test_windowed_attention_is_counted_as_four_windows(unet):
    x, t, c = torch.randn(2, 4, 32, 32), torch.full((2,), 500.0), torch.randn(2, 7, 32)
    layout = hd.inspect_unet(unet).with_native(16)
    settings = hd.HiDiffusionSettings(preset="sd15_1024", raunet=False)
    with torch.no_grad(), zoo.sdpa_attention():
        with count_flops() as plain:
            unet(x, t, context=c)
        with (
            hd.apply_hidiffusion(unet, settings, progress=lambda: (0, 50), layout=layout),
            count_flops() as msw,
        ):
            unet(x, t, context=c)
    full_self = [call for call in plain.attention_calls if call[1] == call[2] == 32 * 32]
    windowed = [
        call for call in msw.attention_calls if call[1] == call[2] == 16 * 16 and call[0] == 4 * 2 * 2
    ]
    assert len(full_self) == len(windowed) == 5  # the 5 top-level attn1 of SD 1.5
    assert all(w[0] == 4 * f[0] for f, w in zip(full_self, windowed))  # 4x the batch, 1/4 of the tokens
    # q.k^T and attn.v scale with batch x tokens^2: the top level's self-attention costs a quarter.
    per_call = (
        2 * (2 * 2) * (32 * 32) ** 2 * (16 + 16)
    )  # batch 2 x 2 heads; 16 channels per head in q.k and attn.v
    assert plain.attention - msw.attention == 5 * per_call * 3 // 4
    assert plain.conv == msw.conv and plain.linear == msw.linear
