"""HiDiffusion on 9-channel inpainting models in the A1111 1.10 fake's img2img inpaint.

The path is 1.10's: the image conditioning is the mask plus the masked picture's latent
(processing.py img2img_image_conditioning -> inpainting_image_conditioning), concatenated to the
latent by ldm's "hybrid" wrapper; the CFG denoiser blends its prediction with the init latent where
the mask keeps the original, and the sample is blended once more after sampling. Oracle: the
unmasked area is the init latent bit for bit (what the WebUI keeps without HiDiffusion, by those
two blends), the masked area changes, RAU-Net's CA ran on the 9-channel UNet, and the same request
twice gives the same latent.
"""

from __future__ import annotations

import pytest
import torch
from modules import shared

import lib_hidiff.unet as hd
from tests.inpainting import (
    SETTINGS,
    CAProbe,
    check_inpainted,
    init_latent,
    latent_mask,
    latent_side,
    ldm_unet,
)

from .webui_env import TinyLatentDiffusion, hook_count


@pytest.mark.parametrize("family", ["sd1", "sdxl"])
def test_inpainting_model_with_hidiffusion(webui, family):
    unet = ldm_unet(family)
    shared.sd_model = TinyLatentDiffusion(unet, f"{family}-inpainting", arch=family)
    init, mask = init_latent(family), latent_mask(family)
    side = latent_side(family) * 8
    probe = CAProbe(unet, unet.input_blocks[5])
    try:
        outs = []
        for _ in range(2):
            _, res = webui.img2img(
                [SETTINGS],
                width=side,
                height=side,
                steps=2,
                denoising_strength=0.4,  # one model call
                init_latent=init,
                latent_mask=mask,
                seed=3,
            )
            assert "HiDiffusion: True" in res.infotexts[0]
            outs.append(res.images[0][None])
    finally:
        probe.remove()
    probe.check(family, calls=2)
    check_inpainted(outs[0], init)
    assert torch.equal(outs[0], outs[1])
    assert hd.installed(unet) is None and hook_count(unet) == 0
