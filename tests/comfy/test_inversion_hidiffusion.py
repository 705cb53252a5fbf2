"""CFG++ inversion of a HiDiffusion MODEL: the window shifts of MSW-MSA are seeded with the sampling
seed (lib_hidiff/comfy/hidiffusion.py reads ``seed`` from ``CFGGuider.outer_sample``), so the
inversion node's ``seed`` must be the edit sampler's noise_seed. On a real tiny UNet (the closed-form
denoiser plus the UNet's own blocks, comfy_env.HybridUNet; a pure UNet's round trip has no closed
form), "invert with prompt A -> sample with prompt A" gives the source back with HiDiffusion on as
well as without it when the seeds agree -- also through the NOISE output, whose seed
SamplerCustomAdvanced samples with -- and does not when they differ."""

from __future__ import annotations

import pytest
from comfy_extras.nodes_custom_sampler import (
    BasicScheduler,
    CFGGuider,
    KSamplerSelect,
    SamplerCustom,
    SamplerCustomAdvanced,
)

import lib_hidiff.unet as hd
from lib_hidiff.comfy.hidiffusion import HiDiffusionWrappers
from lib_hidiff.comfy.nodes import CFGppInversion

from .comfy_env import comfy_model, conditioning, hybrid_unet, latent, nothing_left

LAM, STEPS, ITERATIONS, SEED = 0.8, 8, 4, 3


@pytest.fixture(scope="module")
def setup():
    plain = comfy_model(hybrid_unet())
    hidiff = plain.clone()
    # gate off: HiDiffusion on a 16x16 latent (below SD 1.5's native size), to keep the test small
    HiDiffusionWrappers(hd.HiDiffusionSettings(gate=False)).attach(hidiff)
    sigmas = BasicScheduler().get_sigmas(plain, "normal", STEPS, 1.0)[0]
    prompts = conditioning(1, scale=2.0), conditioning(2, scale=2.0)
    return plain, hidiff, sigmas, prompts, latent(16, 16, seed=4)


def _sample(model, seed, start, sigmas, prompts):
    euler = KSamplerSelect().get_sampler("euler_cfg_pp")[0]
    return SamplerCustom().sample(model, False, seed, LAM, *prompts, euler, sigmas, start)[0]["samples"]


def _err(a, b):
    return float((a - b).abs().max())


def test_round_trip_with_hidiffusion_needs_the_sampling_seed(setup):
    plain, hidiff, sigmas, prompts, source = setup
    euler = KSamplerSelect().get_sampler("euler_cfg_pp")[0]
    noised = [
        SamplerCustom().sample(m, True, SEED, LAM, *prompts, euler, sigmas, source)[0]["samples"]
        for m in (plain, hidiff)
    ]
    assert _err(*noised) > 0.1  # HiDiffusion changes this UNet's samples

    inverted, _ = CFGppInversion().invert(plain, *prompts, source, sigmas, LAM, ITERATIONS, SEED)
    without = _err(_sample(plain, SEED, inverted, sigmas, prompts), source["samples"])

    inverted, noise = CFGppInversion().invert(hidiff, *prompts, source, sigmas, LAM, ITERATIONS, SEED)
    matching = _err(_sample(hidiff, SEED, inverted, sigmas, prompts), source["samples"])
    other = _err(_sample(hidiff, SEED + 1, inverted, sigmas, prompts), source["samples"])
    (guider,) = CFGGuider().get_guider(hidiff, *prompts, LAM)
    from_noise = SamplerCustomAdvanced().sample(noise, guider, euler, sigmas, source)[0]["samples"]
    via_noise = _err(from_noise, source["samples"])

    assert without < 5e-3
    assert matching < 2 * without + 1e-3  # as well as without HiDiffusion
    assert via_noise < 2 * without + 1e-3 and noise.seed == SEED
    assert other > 50 * matching  # another seed shifts other windows: no way back
    assert nothing_left(hidiff.model.diffusion_model)
