"""HiDiffusion on 9-channel inpainting models in the Forge fake's img2img inpaint (dfdcbab).

Forge's path: an ``is_inpaint`` engine gets the mask plus the masked picture's latent as image
conditioning (processing.py:321-367), the sampling function hands it to ``KModel.apply_model`` as
``c_concat`` when it matches the latent (sampling_function.py:338-347), which concatenates it
(k_model.py:25-45); the CFG denoiser pre-mixes the noisy init latent into x and blends its result
with the init latent where the mask keeps the original (sd_samplers_cfg_denoiser.py:178-212), and
the sample is blended again after sampling. Oracle: the unmasked area is the init latent bit for
bit, the masked area changes, RAU-Net's CA ran on the 9-channel UNet, the same request twice gives
the same latent, and nothing is left on the UNet or the patcher.
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

from .forge_env import forge_unet, hook_count, unet_engine


@pytest.mark.parametrize("family", ["sd1", "sdxl"])
def test_inpainting_model_with_hidiffusion(forge, family):
    unet = forge_unet(ldm_unet(family))
    engine = shared.sd_model = unet_engine(unet, f"{family}-inpainting", kind=family)
    assert engine.is_inpaint
    init, mask = init_latent(family), latent_mask(family)
    side = latent_side(family) * 8
    probe = CAProbe(unet, unet.input_blocks[5])
    try:
        outs = []
        for _ in range(2):
            torch.manual_seed(0)  # Forge's denoiser draws the inpainting pre-mix noise from the global RNG
            _, res = forge.img2img(
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
    loaded = engine.forge_objects_after_applying_lora.unet
    assert repr(loaded.model_options) == repr({"transformer_options": {}})
