"""DPM++ 2M, DPM++ 2S a and DPM++ SDE with CFG++ (t = −log σ, h = t_{n+1} − t_n, e^{−h} = σ_{n+1}/σ_n).

Each lands on guided x0 predictions and re-noises along unconditional directions; with
cond ≡ uncond, or λ = 0, each is exactly its k-diffusion base sampler.
"""

from __future__ import annotations

import torch
from tqdm.auto import trange

from .guided import GuidedDenoiser
from .noise import NoiseSampler, ancestral_step, brownian_noise_sampler, default_noise_sampler

DPMPP_2M_VARIANTS = ("A", "B")
"""DPM++ 2M CFG++ second-order term, with D_u^prev the previous step's unconditional x0.

"A": (1 − e^{−h}) / (2r) · (D_λ − D_u^prev): the official SD1.5 code after its 2024-08-13 fix, as
     in ComfyUI and reForge. The default.
"B": (1 − e^{−h}) / (2r) · (D_u − D_u^prev): the official SDXL code (a strictly unconditional
     higher-order term; the guidance vector enters once per step).
"""


def _t(sigma: torch.Tensor) -> torch.Tensor:
    return sigma.log().neg()


def _sigma(t: torch.Tensor) -> torch.Tensor:
    return t.neg().exp()


def _check_variant(variant: str) -> str:
    value = str(variant).upper()
    if value not in DPMPP_2M_VARIANTS:
        raise ValueError(f"DPM++ 2M CFG++ variant must be 'A' or 'B'; got {variant!r}")
    return value


@torch.no_grad()
def sample_dpmpp_2m_cfgpp(
    model,
    x: torch.Tensor,
    sigmas: torch.Tensor,
    extra_args: dict | None = None,
    callback=None,
    disable: bool | None = None,
    variant: str = "A",
) -> torch.Tensor:
    """DPM++ 2M CFG++: x' = D_λ + e^{−h} (x − D_u) + (1 − e^{−h}) / (2r) · (D_λ or D_u − D_u^prev).

    r = h_{n−1} / h_n. The first step and a step to σ = 0 are Euler CFG++ steps. The history holds
    unconditional predictions in both variants (see DPMPP_2M_VARIANTS).
    """
    guided_term = _check_variant(variant) == "A"
    denoise = GuidedDenoiser(model, x, extra_args, "DPM++ 2M CFG++")
    old_uncond = None
    for i in trange(len(sigmas) - 1, disable=disable):
        sigma, sigma_next = sigmas[i], sigmas[i + 1]
        denoised, uncond = denoise(x, sigma)
        if callback is not None:
            callback({"x": x, "i": i, "sigma": sigma, "sigma_hat": sigma, "denoised": denoised})
        if old_uncond is None or sigma_next == 0:
            x = denoised + (sigma_next / sigma) * (x - uncond)
        else:
            h = _t(sigma_next) - _t(sigma)
            r = (_t(sigma) - _t(sigmas[i - 1])) / h
            weight = -torch.expm1(-h) / (2 * r)
            x = denoised + (sigma_next / sigma) * (x - uncond)
            x = x + weight * ((denoised if guided_term else uncond) - old_uncond)
        old_uncond = uncond
    return x


@torch.no_grad()
def sample_dpmpp_2s_ancestral_cfgpp(
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
    """DPM++ 2S a CFG++ (the official rule): an unconditional half step, then CFG++ at the midpoint.

    σ_s = √(σ σ_down); x_2 = D_u + (σ_s / σ)(x − D_u); x' = D_λ(x_2) + (σ_down / σ)(x − D_u(x_2))
    plus s_noise σ_up ξ. A step with σ_down = 0 is an Euler CFG++ step (x' = D_λ).
    """
    denoise = GuidedDenoiser(model, x, extra_args, "DPM++ 2S a CFG++")
    noise_sampler = default_noise_sampler(x) if noise_sampler is None else noise_sampler
    for i in trange(len(sigmas) - 1, disable=disable):
        sigma, sigma_next = sigmas[i], sigmas[i + 1]
        denoised, uncond = denoise(x, sigma)
        sigma_down, sigma_up = ancestral_step(sigma, sigma_next, eta)
        if callback is not None:
            callback({"x": x, "i": i, "sigma": sigma, "sigma_hat": sigma, "denoised": denoised})
        if sigma_down == 0:
            x = denoised + (sigma_down / sigma) * (x - uncond)
        else:
            t, t_next = _t(sigma), _t(sigma_down)
            sigma_s = _sigma(t + (t_next - t) / 2)
            x_2 = uncond + (sigma_s / sigma) * (x - uncond)
            denoised_2, uncond_2 = denoise(x_2, sigma_s)
            x = denoised_2 + (sigma_down / sigma) * (x - uncond_2)
        if sigma_next > 0:
            x = x + noise_sampler(sigma, sigma_next) * s_noise * sigma_up
    return x


@torch.no_grad()
def sample_dpmpp_sde_cfgpp(
    model,
    x: torch.Tensor,
    sigmas: torch.Tensor,
    extra_args: dict | None = None,
    callback=None,
    disable: bool | None = None,
    eta: float = 1.0,
    s_noise: float = 1.0,
    noise_sampler: NoiseSampler | None = None,
    r: float = 0.5,
) -> torch.Tensor:
    """DPM++ SDE CFG++ (extension-defined; there is no official version; see docs/cfgpp.md).

    Stage 1 is k-diffusion's stochastic step to σ_s = σ^{1−r} σ_{n+1}^r on the *unconditional*
    prediction, as the official 2S a CFG++ half step is. Stage 2 mixes the two evaluations with
    f = 1/(2r) and applies the CFG++ rule: x' = D̄_λ + (σ_down / σ)(x − D̄_u) + s_noise σ_up ξ, where
    D̄ = (1 − f) D(x) + f D(x_2). Noise: two draws per step, as in k-diffusion's DPM++ SDE (default: an
    unseeded Brownian tree). A step to σ = 0 is an Euler CFG++ step (x' = D_λ).
    """
    if not 0 < r <= 1:
        raise ValueError(f"DPM++ SDE CFG++ r must be in (0, 1]; got {r!r}")
    denoise = GuidedDenoiser(model, x, extra_args, "DPM++ SDE CFG++")
    noise_sampler = brownian_noise_sampler(x, sigmas) if noise_sampler is None else noise_sampler
    fac = 1 / (2 * r)
    for i in trange(len(sigmas) - 1, disable=disable):
        sigma, sigma_next = sigmas[i], sigmas[i + 1]
        denoised, uncond = denoise(x, sigma)
        if callback is not None:
            callback({"x": x, "i": i, "sigma": sigma, "sigma_hat": sigma, "denoised": denoised})
        if sigma_next == 0:
            x = denoised + (sigma_next / sigma) * (x - uncond)
            continue
        # sigma_fn(t_fn(·)) round trips as k-diffusion's: the Brownian tree sees the same times.
        t, t_next = _t(sigma), _t(sigma_next)
        sigma_t, sigma_s, sigma_n = _sigma(t), _sigma(t + (t_next - t) * r), _sigma(t_next)

        sigma_down, sigma_up = ancestral_step(sigma_t, sigma_s, eta)
        x_2 = uncond + (sigma_down / sigma_t) * (x - uncond)
        x_2 = x_2 + noise_sampler(sigma_t, sigma_s) * s_noise * sigma_up
        denoised_2, uncond_2 = denoise(x_2, sigma_s)

        sigma_down, sigma_up = ancestral_step(sigma_t, sigma_n, eta)
        denoised_mix = (1 - fac) * denoised + fac * denoised_2
        uncond_mix = (1 - fac) * uncond + fac * uncond_2
        x = denoised_mix + (sigma_down / sigma_t) * (x - uncond_mix)
        x = x + noise_sampler(sigma_t, sigma_n) * s_noise * sigma_up
    return x
