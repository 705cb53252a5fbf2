"""The HiDiffusion node on other model families (issue 18), through the fake ComfyUI's KSampler path
(a125cd84): a 9-channel SD 1.5 inpainting UNet fed ``c_concat`` (mask + masked latent, concatenated
to the input by BaseModel._apply_model, comfy/model_base.py:166-171, as BaseModel.concat_cond builds
it for ``concat_keys = ("mask", "masked_image")``, :212-256 and :340), an SD 2.x-layout UNet (linear
projections) and an SDXL-layout UNet fed the adm vector ``y`` (SDXL.encode_adm, :460-476, reaching
the UNet's label_emb through the extra conds, :186-199). Every UNet call must equal the A1111 path's (the core's block hooks on the ldm UNet with
the same weights, settings, clock and seed), RAU-Net must have acted, and nothing may be left."""

from __future__ import annotations

from dataclasses import dataclass

import nodes
import pytest
import torch
import torch.nn as nn
from comfy.ldm.modules.diffusionmodules.openaimodel import from_ldm

import lib_hidiff.unet as hd
from lib_hidiff import zoo
from lib_hidiff.comfy import hidiffusion
from lib_hidiff.comfy.nodes import HiDiffusion

from .comfy_env import comfy_model, conditioning, latent, nothing_left

ADM = 16  # the adm vector's width (2816 on the real SDXL: pooled CLIP-G + 6 size embeddings)


@dataclass(frozen=True)
class Case:
    family: str
    size: tuple[int, int]  # latent (h, w), above the family's native size so RAU-Net acts
    rad_block: int  # the input block whose Downsample RAU-Net replaces
    attn_block: int  # the first input block with attention (MSW-MSA's level)
    downsampled: tuple[int, int]  # that Downsample's output size with RAU-Net


CASES = {
    "sd15_inpaint": Case("sd1", (72, 64), 3, 1, (18, 16)),
    "sd2": Case("sd2", (72, 64), 3, 1, (18, 16)),  # linear projections in the transformers
    "sdxl": Case("sdxl", (136, 128), 6, 4, (17, 16)),
}


def _ldm(name: str) -> nn.Module:
    if name == "sd15_inpaint":
        return zoo.build_ldm_unet("sd1", 32, heads=4, context_dim=32, in_channels=9)
    if name == "sd2":
        return zoo.build_ldm_unet("sd2", 32, heads=4, context_dim=32)
    unet = zoo.build_ldm_unet("sdxl", 32, heads=4, context_dim=32)
    # The SDXL UNet's class embedding (ldm's num_classes="sequential": Linear, SiLU, Linear), which
    # the zoo leaves out; the seed fixes its default init.
    torch.manual_seed(0)
    dim = unet.time_embed[0].out_features
    unet.num_classes = "sequential"
    unet.label_emb = nn.Sequential(nn.Linear(ADM, dim), nn.SiLU(), nn.Linear(dim, dim)).eval()
    return unet


def _model_conds(name: str, size: tuple[int, int], seed: int) -> dict:
    gen = torch.Generator().manual_seed(seed)
    if name == "sd15_inpaint":
        mask = (torch.rand(1, 1, *size, generator=gen) > 0.5).float()
        masked = torch.randn(1, 4, *size, generator=gen) * (1 - mask)
        return {"c_concat": torch.cat([mask, masked], dim=1)}
    if name == "sd2":
        return {}
    return {"y": torch.randn(1, ADM, generator=gen)}


@pytest.mark.parametrize("name", list(CASES))
def test_unet_output_equals_the_a1111_path(name):
    case = CASES[name]
    ldm = _ldm(name)
    unet = from_ldm(ldm).eval()
    (patched,) = HiDiffusion().patch(comfy_model(unet), custom_timing=True, t1=1.0, t2=1.0)
    positive, negative = conditioning(1), conditioning(2)
    positive[0][1]["model_conds"] = _model_conds(name, case.size, 3)
    negative[0][1]["model_conds"] = _model_conds(name, case.size, 3)  # as InpaintModelConditioning
    calls, downsampled, attention_rows = [], [], []

    def record(module, args, kwargs, out):
        run = hidiffusion._RUNS[module]
        calls.append(
            (
                args[0],
                args[1],
                kwargs["context"],
                kwargs.get("y"),
                out,
                run.clock.value,
                run.settings,
                run.seed,
            )
        )

    spies = [
        unet.register_forward_hook(record, with_kwargs=True),
        unet.input_blocks[case.rad_block][0].register_forward_hook(
            lambda m, a, out: downsampled.append(tuple(out.shape[-2:]))
        ),
        unet.input_blocks[case.attn_block][1]
        .transformer_blocks[0]
        .attn1.to_q.register_forward_hook(lambda m, a, out: attention_rows.append(out.shape[0])),
    ]
    try:
        nodes.common_ksampler(patched, 7, 2, 5.0, "euler", "normal", positive, negative, latent(*case.size))
    finally:
        for spy in spies:
            spy.remove()
    assert nothing_left(unet)
    assert downsampled == [case.downsampled] * 2  # RAU-Net: /4 at its Downsample in both steps
    assert attention_rows == [8, 8]  # MSW-MSA: cond and uncond rows, 4 windows each
    assert [c[5] for c in calls] == [(0, 2), (1, 2)] and {c[7] for c in calls} == {7}
    extra = _model_conds(name, case.size, 3)
    for x, t, context, y, out, clock, settings, seed in calls:
        if name == "sd15_inpaint":  # the input is the scaled latent + mask + masked latent, 9 channels
            assert x.shape[1] == 9 and torch.equal(x[:, 4:], extra["c_concat"].expand(2, -1, -1, -1))
        elif name == "sdxl":
            assert torch.equal(y, extra["y"].expand(2, -1))
        with torch.no_grad(), zoo.sdpa_attention():
            with hd.apply_hidiffusion(ldm, settings, progress=lambda clock=clock: clock, seed=seed):
                # ldm's SpatialTransformer takes one context per transformer block (a list) once
                # there are several; SDXL's levels have 2 and 10 (sgm's takes the tensor as is).
                reference = ldm(x, t, context=[context] * 10 if y is not None else context, y=y)
        assert torch.equal(out, reference)
    assert hd.installed(ldm) is None
