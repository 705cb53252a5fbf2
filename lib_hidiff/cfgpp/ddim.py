"""DDIM CFG++ in k-diffusion's calling convention, and the WebUI's DDIM timestep grid.

DDIM with CFG++ (official rule; eta as the WebUI 1.10 built-in adds it), in VP form with
ᾱ = 1 / (1 + σ²):
    x̂0 = (z − √(1−ᾱ) ε_λ) / √ᾱ
    z' = √ᾱ' x̂0 + √(1 − ᾱ' − σ_η²) ε_u + σ_η ξ,   σ_η = η √((1−ᾱ')/(1−ᾱ)) √(1 − ᾱ/ᾱ')
Divided by √ᾱ' (VE, x = z / √ᾱ, x̂0 = D_λ, ε_u = (x − D_u)/σ) the coefficients become
    σ_η / √ᾱ' = η σ' √(σ² − σ'²) / σ  and  √(1 − ᾱ' − σ_η²) / √ᾱ' = √(σ'² − (σ_η/√ᾱ')²),
which is how they are computed here (no 1 − ᾱ cancellation at small σ in float32).
"""

from __future__ import annotations

import torch
from tqdm.auto import trange

from .guided import GuidedDenoiser
from .noise import NoiseSampler, default_noise_sampler


def ddim_timesteps(steps: int, num_timesteps: int = 1000) -> list[int]:
    """The WebUI's DDIM timesteps, ascending: 1, 1 + k, 1 + 2k, ... below num_timesteps (k = T // steps).

    As in the WebUI 1.10 DDIM sampler and its "DDIM" schedule type; there are more than `steps`
    of them when steps does not divide num_timesteps (e.g. 31 for 30 steps).
    """
    if isinstance(steps, bool) or not isinstance(steps, int) or not 1 <= steps <= num_timesteps:
        raise ValueError(f"DDIM steps must be an integer in [1, {num_timesteps}]; got {steps!r}")
    return list(range(1, num_timesteps, num_timesteps // steps))


def ddim_sigmas(alphas_cumprod: torch.Tensor, steps: int, final_zero: bool = True) -> torch.Tensor:
    """Descending VE sigmas σ_t = √((1 − ᾱ_t)/ᾱ_t) on the DDIM timesteps (float64).

    final_zero=True appends σ = 0: the WebUI's "DDIM" schedule type, ending on a clean x0.
    final_zero=False ends at t = 1 like the WebUI's built-in timestep DDIM samplers.
    """
    ac = torch.as_tensor(alphas_cumprod).detach().to(device="cpu", dtype=torch.float64).flatten()
    timesteps = torch.tensor(ddim_timesteps(steps, ac.numel()))
    sigmas = ((1 - ac[timesteps]) / ac[timesteps]).sqrt().flip(0)
    return torch.cat([sigmas, sigmas.new_zeros([1])]) if final_zero else sigmas


@torch.no_grad()
def sample_ddim_cfgpp(
    model,
    x: torch.Tensor,
    sigmas: torch.Tensor,
    extra_args: dict | None = None,
    callback=None,
    disable: bool | None = None,
    eta: float = 0.0,
    s_noise: float = 1.0,
    noise_sampler: NoiseSampler | None = None,
) -> torch.Tensor:
    """DDIM CFG++ on any VE schedule; on the DDIM grid (`ddim_sigmas`) it is the WebUI 1.10 built-in.

    x' = D_λ + c_dir (x − D_u) / σ + s_noise c_noise ξ with the DDIM coefficients (module docstring).
    One noise draw per step that does not end at σ = 0 (also at eta = 0, as the built-in draws).
    """
    if not 0 <= eta <= 1:
        raise ValueError(f"DDIM CFG++ eta must be in [0, 1]; got {eta!r}")
    denoise = GuidedDenoiser(model, x, extra_args, "DDIM CFG++")
    noise_sampler = default_noise_sampler(x) if noise_sampler is None else noise_sampler
    for i in trange(len(sigmas) - 1, disable=disable):
        sigma, sigma_next = sigmas[i], sigmas[i + 1]
        denoised, uncond = denoise(x, sigma)
        if callback is not None:
            callback({"x": x, "i": i, "sigma": sigma, "sigma_hat": sigma, "denoised": denoised})
        c_noise = eta * sigma_next * ((sigma**2 - sigma_next**2) ** 0.5) / sigma
        c_dir = (sigma_next**2 - c_noise**2) ** 0.5
        x = denoised + (c_dir / sigma) * (x - uncond)
        if sigma_next > 0:
            x = x + noise_sampler(sigma, sigma_next) * s_noise * c_noise
    return x
