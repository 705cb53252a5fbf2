"""Where the samplers' noise comes from, and how an ancestral step splits a noise level.

Noise is drawn only through a `noise_sampler(sigma, sigma_next)` or through
`k_diffusion.sampling.torch.randn_like`, looked up at call time: the WebUI replaces
`k_diffusion.sampling.torch` to give each image of a batch its own seed. k-diffusion is imported on
first use, so the rest of the package imports without it.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

NoiseSampler = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def _kdiffusion_sampling():
    import k_diffusion.sampling

    return k_diffusion.sampling


def randn_like(x: torch.Tensor) -> torch.Tensor:
    """Standard normal noise shaped like x, through k-diffusion's (possibly replaced) torch."""
    return _kdiffusion_sampling().torch.randn_like(x)


def default_noise_sampler(x: torch.Tensor) -> NoiseSampler:
    """k-diffusion's default: fresh `randn_like(x)` on every draw."""
    return lambda sigma, sigma_next: randn_like(x)


def brownian_noise_sampler(x: torch.Tensor, sigmas: torch.Tensor) -> NoiseSampler:
    """k-diffusion's BrownianTreeNoiseSampler over the schedule's range, as its SDE samplers default to.

    Unseeded (the seed is drawn from torch's global generator); the WebUI passes a seeded one.
    """
    sigma_min, sigma_max = sigmas[sigmas > 0].min(), sigmas.max()
    return _kdiffusion_sampling().BrownianTreeNoiseSampler(x, sigma_min, sigma_max)


def ancestral_step(
    sigma: torch.Tensor, sigma_next: torch.Tensor, eta: float = 1.0
) -> tuple[torch.Tensor, torch.Tensor | float]:
    """(sigma_down, sigma_up) of an ancestral step from sigma to sigma_next, as k-diffusion splits it.

    The deterministic part goes down to sigma_down; fresh noise of size sigma_up brings the level
    back to sigma_next (sigma_down² + sigma_up² = sigma_next²). eta = 0 gives a deterministic step.
    """
    if not eta:
        return sigma_next, 0.0
    sigma, sigma_next = torch.as_tensor(sigma), torch.as_tensor(sigma_next)
    sigma_up = torch.minimum(sigma_next, eta * (sigma_next**2 * (sigma**2 - sigma_next**2) / sigma**2) ** 0.5)
    sigma_down = (sigma_next**2 - sigma_up**2) ** 0.5
    return sigma_down, sigma_up
