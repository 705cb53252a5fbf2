"""HiDiffusion on 9-channel inpainting UNets in the SD.Next fake's img2img inpaint (058a7f0c).

SD.Next's path: a mask switches the pipeline to diffusers' inpaint pipeline (processing_class.py
:753-754), which gets ``image`` / ``mask_image`` / ``strength`` (processing_args.py:108-126) and, for
a 9-channel UNet, concatenates the mask and the masked picture's latent to the latent itself;
afterwards the original picture outside the mask is pasted over the result as an overlay
(processing_class.py:787-822, processing.py:371-375). Oracle: the unmasked pixels are the original
ones bit for bit (what SD.Next keeps without HiDiffusion, by that overlay), the masked area changes,
RAU-Net's CA ran on the 9-channel UNet, and the same request twice gives the same picture.
The SDXL layout runs in the SD 1.5 pipeline class: the layout of the UNet is what HiDiffusion sees.
"""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
from PIL import Image

import lib_hidiff.unet as hd
from lib_hidiff import zoo
from tests.diffusers import pipes
from tests.inpainting import SETTINGS, CAProbe, check_inpainted, latent_mask, latent_side, ldm_unet

from .sdnext_env import hook_count, tiny_pipeline

VAE_SCALE = 2  # the tiny VAE halves the picture


def _vae_without_attention() -> torch.nn.Module:
    """The tiny VAE without its mid-block attention, which alone would cost most of a minute on a
    256x256 latent (it attends over every latent pixel); the UNet is what these tests are about."""
    vae = copy.deepcopy(pipes.tiny_vae())
    for coder in (vae.encoder, vae.decoder):
        coder.mid_block.attentions = torch.nn.ModuleList([None])  # UNetMidBlock2D skips a None
    return vae


@pytest.mark.parametrize("family", ["sd1", "sdxl"])
def test_inpainting_model_with_hidiffusion(sdnext, family):
    unet = zoo.diffusers_twin(ldm_unet(family), family)
    pipe = tiny_pipeline(f"tiny-{family}-inpainting", unet=unet)
    pipe.register_modules(vae=_vae_without_attention())
    sdnext.load_model(pipe)
    side = latent_side(family) * VAE_SCALE
    rng = np.random.default_rng(5)
    picture = Image.fromarray(rng.integers(0, 256, (side, side, 3), dtype=np.uint8))
    mask = torch.nn.functional.interpolate(latent_mask(family), scale_factor=VAE_SCALE)[0, 0]
    mask_image = Image.fromarray((mask.numpy() * 255).astype(np.uint8), mode="L")
    original = torch.from_numpy(np.array(picture, dtype=np.float32) / 255.0).permute(2, 0, 1)
    probe = CAProbe(unet, unet.down_blocks[1].resnets[1])
    try:
        outs = []
        for _ in range(2):
            p, res = sdnext.img2img(
                [SETTINGS],
                width=side,
                height=side,
                sampler_name="Euler",
                steps=1,
                denoising_strength=0.5,  # SD.Next asks for 1 / 0.5 steps: one model call
                init_images=[picture],
                mask=mask_image,
                mask_blur=0,
                seed=3,
            )
            assert "inpaint" in p.ops and "HiDiffusion: True" in res.infotexts[0]
            outs.append(res.images[0][None])
    finally:
        probe.remove()
    probe.check(family, calls=2)
    check_inpainted(outs[0], original[None])
    assert torch.equal(outs[0], outs[1])
    assert hd.installed(unet) is None and hook_count(unet) == 0
