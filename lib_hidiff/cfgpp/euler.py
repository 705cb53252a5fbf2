"""Euler CFG++ and Euler a CFG++ (the official CFG++ rules, in k-diffusion's VE coordinates).

One rule covers both: land on the guided x0 D_λ and re-noise along the *unconditional* direction
(x − D_u) / σ. Equivalently: the unconditional Euler step plus the x0-space guidance vector
λ (D_c − D_u), once per step.
"""

from __future__ import annotations

import torch
from tqdm.auto import trange

from .guided import GuidedDenoiser
from .noise import NoiseSampler, ancestral_step, default_noise_sampler, randn_like


@torch.no_grad()
def sample_euler_cfgpp(
    model,
    x: torch.Tensor,
    sigmas: torch.Tensor,
    extra_args: dict | None = None,
    callback=None,
    disable: bool | None = None,
    s_churn: float = 0.0,
    s_tmin: float = 0.0,
    s_tmax: float = float("inf"),
    s_noise: float = 1.0,
) -> torch.Tensor:
    """Euler CFG++: x' = D_λ + σ_{n+1} (x̂ − D_u) / σ̂, with k-diffusion's optional churn (σ̂ ≥ σ_n)."""
    denoise = GuidedDenoiser(model, x, extra_args, "Euler CFG++")
    steps = len(sigmas) - 1
    for i in trange(steps, disable=disable):
        sigma, sigma_next = sigmas[i], sigmas[i + 1]
        gamma = min(s_churn / steps, 2**0.5 - 1) if s_tmin <= sigma <= s_tmax else 0.0
        # Drawn on every step even without churn, as k-diffusion's Euler does, so seeds line up.
        eps = randn_like(x) * s_noise
        sigma_hat = sigma * (gamma + 1)
        if gamma > 0:
            x = x + eps * (sigma_hat**2 - sigma**2) ** 0.5
        denoised, uncond = denoise(x, sigma_hat)
        if callback is not None:
            callback({"x": x, "i": i, "sigma": sigma, "sigma_hat": sigma_hat, "denoised": denoised})
        x = denoised + (sigma_next / sigma_hat) * (x - uncond)
    return x


@torch.no_grad()
def sample_euler_ancestral_cfgpp(
    model,
    x: torch.Tensor,
    sigmas: torch.Tensor,
    extra_args: dict | None = None,
    callback=None,
    disable: bool | None = None,
    eta: float = 1.0,
    s_noise: float = 1.0,
    noise_sampler: NoiseSampler | None = None,
) -> torch.Tensor:
    """Euler a CFG++: x' = D_λ + σ_down (x − D_u) / σ + s_noise σ_up ξ (no noise on a step to 0)."""
    denoise = GuidedDenoiser(model, x, extra_args, "Euler a CFG++")
    noise_sampler = default_noise_sampler(x) if noise_sampler is None else noise_sampler
    for i in trange(len(sigmas) - 1, disable=disable):
        sigma, sigma_next = sigmas[i], sigmas[i + 1]
        denoised, uncond = denoise(x, sigma)
        sigma_down, sigma_up = ancestral_step(sigma, sigma_next, eta)
        if callback is not None:
            callback({"x": x, "i": i, "sigma": sigma, "sigma_hat": sigma, "denoised": denoised})
        x = denoised + (sigma_down / sigma) * (x - uncond)
        if sigma_next > 0:
            x = x + noise_sampler(sigma, sigma_next) * s_noise * sigma_up
    return x
