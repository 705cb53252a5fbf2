"""ControlNet residuals under RAU-Net in the fake ComfyUI: every residual reaches its map, area-resized
to the size RAU-Net leaves, through ComfyUI's own ``apply_control`` (never replaced)."""

from __future__ import annotations

import logging

import nodes
import pytest
import torch
import torch.nn.functional as F
from comfy.controlnet import FakeControlNet
from comfy.ldm.modules.diffusionmodules import openaimodel
from comfy.ldm.modules.diffusionmodules.openaimodel import from_ldm

from lib_hidiff.comfy.nodes import HiDiffusion
from lib_hidiff.comfy.targets import block_output

from .comfy_env import comfy_model, conditioning, latent, ldm_sd15_unet, nothing_left

SIZE = (72, 64)


@pytest.fixture(scope="module")
def unet():
    return from_ldm(ldm_sd15_unet()).eval()


def _maps(unet):
    """(channels, downscale) of each input block's output and the middle block's, vanilla."""
    shapes = []
    hooks = [
        block_output(b).register_forward_hook(lambda m, a, o: shapes.append(o.shape))
        for b in unet.input_blocks
    ]
    hooks.append(
        block_output(unet.middle_block).register_forward_hook(lambda m, a, o: shapes.append(o.shape))
    )
    try:
        with torch.no_grad():
            unet(torch.zeros(1, 4, *SIZE), torch.tensor([500.0]), context=torch.zeros(1, 4, 32))
    finally:
        for h in hooks:
            h.remove()
    return [(s[1], SIZE[0] // s[2]) for s in shapes]


def _sample(model, cnet):
    pos, neg = conditioning(1), conditioning(2)
    (pos,) = nodes.ControlNetApply().apply_controlnet(pos, cnet)
    (neg,) = nodes.ControlNetApply().apply_controlnet(neg, cnet)
    return nodes.common_ksampler(model, 5, 1, 5.0, "euler", "normal", pos, neg, latent(*SIZE))[0]["samples"]


def _controlnet(unet):
    maps = _maps(unet)
    *skips, (mid_ch, mid_down) = maps
    return FakeControlNet([c for c, _ in skips], [d for _, d in skips], mid_ch, strength=0.5, seed=3)


def test_every_residual_is_applied_at_the_rau_net_sizes(unet, caplog):
    cnet = _controlnet(unet)
    (model,) = HiDiffusion().patch(comfy_model(unet), custom_timing=True, t1=1.0)
    with caplog.at_level(logging.WARNING):
        _sample(model, cnet)
    assert not [r for r in caplog.records if "could not be applied" in r.getMessage()]
    assert nothing_left(unet)
    applied = openaimodel.APPLIED
    assert [name for name, _, _ in applied] == ["middle"] + ["output"] * 12
    # the residuals ComfyUI's ControlNet computed (full size) vs what apply_control added
    full = cnet.get_control(torch.zeros(2, 4, *SIZE), None, None, 2, {})
    wanted = [full["middle"][0], *reversed(full["output"])]
    smaller = 0
    for (_, shape, added), residual in zip(applied, wanted):
        if tuple(residual.shape[-2:]) != shape[-2:]:
            smaller += 1
            residual = F.interpolate(residual, size=shape[-2:], mode="area")
        assert torch.equal(added, residual)
    assert smaller == 10  # RAD shrinks every map below the first Downsample (skips 3..11 + middle)


def test_without_rau_net_the_residuals_are_untouched(unet):
    cnet = _controlnet(unet)
    plain = _sample(comfy_model(unet), cnet)
    plain_applied = [(n, s, r.clone()) for n, s, r in openaimodel.APPLIED]
    openaimodel.APPLIED.clear()
    (msw_only,) = HiDiffusion().patch(comfy_model(unet), raunet=False)
    with_msw = _sample(msw_only, cnet)
    assert len(plain_applied) == len(openaimodel.APPLIED) == 13
    for (n1, s1, r1), (n2, s2, r2) in zip(plain_applied, openaimodel.APPLIED):
        assert (n1, s1) == (n2, s2) and torch.equal(r1, r2)
    assert not torch.equal(plain, with_msw)  # MSW-MSA ran
    assert nothing_left(unet)
