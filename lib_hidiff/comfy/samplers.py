"""CFG++ samplers ComfyUI lacks, and the CFG++ inversion, as ComfyUI ``KSAMPLER`` functions.

ComfyUI (a125cd84) ships euler_cfg_pp, euler_ancestral_cfg_pp, dpmpp_2s_ancestral_cfg_pp,
dpmpp_2m_cfg_pp, res_multistep(_ancestral)_cfg_pp and gradient_estimation_cfg_pp
(comfy/samplers.py:730-734); those are not duplicated. Added here: DDIM CFG++ with η and DPM++ SDE
CFG++ (the core's rules, lib_hidiff.cfgpp), and the inversion that Euler CFG++ / DDIM CFG++ (η = 0)
take back to the source latent. λ is ComfyUI's cfg as given (its *_cfg_pp convention).

Noise comes from ComfyUI's own seeded samplers (``default_noise_sampler(x, seed)``, and a
Brownian tree for the SDE sampler, as its dpmpp_sde does), seeded with the sampling seed.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

from lib_hidiff import cfgpp

from .guidance import UncondCapture, check_model_sampling

__all__ = ["invert_sampler_function", "sample_ddim_cfgpp", "sample_dpmpp_sde_cfgpp"]


def _k_sampling():
    import comfy.k_diffusion.sampling as k_sampling

    return k_sampling


def sample_ddim_cfgpp(
    model, x, sigmas, extra_args=None, callback=None, disable=None, eta=0.0, s_noise=1.0, noise_sampler=None
):
    """DDIM CFG++ (η in [0, 1]) on ComfyUI's sampler model."""
    check_model_sampling(model, "DDIM CFG++")
    guided = UncondCapture(model, extra_args)
    if noise_sampler is None:
        noise_sampler = _k_sampling().default_noise_sampler(x, seed=guided.extra_args.get("seed"))
    return cfgpp.sample_ddim_cfgpp(
        guided,
        x,
        sigmas,
        guided.extra_args,
        callback,
        disable,
        eta=eta,
        s_noise=s_noise,
        noise_sampler=noise_sampler,
    )


def sample_dpmpp_sde_cfgpp(
    model,
    x,
    sigmas,
    extra_args=None,
    callback=None,
    disable=None,
    eta=1.0,
    s_noise=1.0,
    noise_sampler=None,
    r=0.5,
):
    """DPM++ SDE CFG++ on ComfyUI's sampler model (Brownian-tree noise, as ComfyUI's dpmpp_sde)."""
    check_model_sampling(model, "DPM++ SDE CFG++")
    if len(sigmas) <= 1:
        return x
    guided = UncondCapture(model, extra_args)
    if noise_sampler is None:
        positive = sigmas[sigmas > 0]
        noise_sampler = _k_sampling().BrownianTreeNoiseSampler(
            x, positive.min(), sigmas.max(), seed=guided.extra_args.get("seed"), cpu=True
        )
    return cfgpp.sample_dpmpp_sde_cfgpp(
        guided,
        x,
        sigmas,
        guided.extra_args,
        callback,
        disable,
        eta=eta,
        s_noise=s_noise,
        noise_sampler=noise_sampler,
        r=r,
    )


def invert_sampler_function(iterations: int) -> Callable[..., torch.Tensor]:
    """A KSAMPLER function that *inverts* over the schedule it is given (descending, as sampled).

    Run through a CFGGuider with zero noise, ComfyUI hands it the clean source latent as ``x``
    (``noise_scaling`` of zeros adds nothing); it returns the latent at ``sigmas[0]`` that Euler
    CFG++ / DDIM CFG++ (η = 0) over the same ``sigmas`` takes back to the source.
    """

    def sample_cfgpp_inversion(model, x, sigmas, extra_args=None, callback=None, disable=None, **_: Any):
        check_model_sampling(model, "CFG++ inversion")
        guided = UncondCapture(model, extra_args)
        return cfgpp.invert_cfgpp(
            guided,
            x,
            sigmas.flip(0),
            guided.extra_args,
            callback=callback,
            disable=disable,
            iterations=iterations,
        )

    return sample_cfgpp_inversion
