"""Independent float64 numpy references of the CFG++ update rules (CFGPP.md §1.2, §1.4).

Written from the published equations, in their published forms (the official code's forms for
Euler, Euler a, 2M and 2S a; VP form for DDIM; "unconditional step + guidance vector" for the
SDE definition), so that an algebra slip in the library cannot be mirrored here.

`guided(x, sigma) -> (D_λ, D_u)` is one model evaluation. `noise` is a NoiseQueue: `draw((σ, σ'))`
for a noise_sampler draw, `draw(None)` for a randn_like draw.
"""

from __future__ import annotations

import math

import numpy as np


def np_gaussian(mean: np.ndarray, std: float):
    def denoise(x, sigma):
        v = std**2
        return mean + v / (v + sigma**2) * (x - mean)

    return denoise


def np_mixture(means: np.ndarray, stds: np.ndarray, weights: np.ndarray):
    def denoise(x, sigma):
        out = np.empty_like(x)
        for b in range(x.shape[0]):
            logits, comps = [], []
            for mean, std, w in zip(means, stds, weights):
                total = std**2 + sigma**2
                diff = x[b] - mean
                logits.append(
                    math.log(w) - float((diff**2).sum()) / (2 * total) - diff.size / 2 * math.log(total)
                )
                comps.append(mean + std**2 / total * diff)
            logits = np.array(logits)
            r = np.exp(logits - logits.max())
            r /= r.sum()
            out[b] = sum(rk * ck for rk, ck in zip(r, comps))
        return out

    return denoise


def np_denoiser(torch_denoiser):
    """The numpy twin of an oracles.Gaussian / oracles.Mixture (same parameters)."""
    if hasattr(torch_denoiser, "means"):
        return np_mixture(
            torch_denoiser.means.numpy(), torch_denoiser.stds.numpy(), torch_denoiser.weights.numpy()
        )
    return np_gaussian(torch_denoiser.mean.numpy(), torch_denoiser.std)


def guided_fn(cond, uncond, lam: float, provide=None):
    """(D_λ, D_u) per call; on calls where provide(k) is False, D_u is replaced by D_λ (the
    library's documented fallback: the base sampler's step on the guided prediction)."""
    calls = []

    def guided(x, sigma):
        d_c, d_u = cond(x, sigma), uncond(x, sigma)
        d_lam = d_u + lam * (d_c - d_u)
        ok = provide is None or provide(len(calls))
        calls.append(sigma)
        return d_lam, (d_u if ok else d_lam)

    guided.calls = calls
    return guided


def anc(sigma, sigma_next, eta):
    """k-diffusion's ancestral split, from its formula."""
    if eta == 0:
        return sigma_next, 0.0
    up = min(sigma_next, eta * math.sqrt(sigma_next**2 * (sigma**2 - sigma_next**2) / sigma**2))
    return math.sqrt(sigma_next**2 - up**2), up


def ref_euler(guided, x, sigmas, noise, s_churn=0.0, s_tmin=0.0, s_tmax=math.inf, s_noise=1.0):
    n = len(sigmas) - 1
    for i in range(n):
        sigma, sigma_next = sigmas[i], sigmas[i + 1]
        gamma = min(s_churn / n, math.sqrt(2) - 1) if s_tmin <= sigma <= s_tmax else 0.0
        eps = noise.draw(None) * s_noise
        sigma_hat = sigma * (gamma + 1)
        if gamma > 0:
            x = x + eps * math.sqrt(sigma_hat**2 - sigma**2)
        d_lam, d_u = guided(x, sigma_hat)
        d = (x - d_u) / sigma_hat
        x = d_lam + d * sigma_next  # official: denoised + d * sigmas[i+1]
    return x


def ref_euler_a(guided, x, sigmas, noise, eta=1.0, s_noise=1.0):
    for i in range(len(sigmas) - 1):
        sigma, sigma_next = sigmas[i], sigmas[i + 1]
        d_lam, d_u = guided(x, sigma)
        sigma_down, sigma_up = anc(sigma, sigma_next, eta)
        x = d_lam + (x - d_u) / sigma * sigma_down
        if sigma_next > 0:
            x = x + noise.draw((sigma, sigma_next)) * s_noise * sigma_up
    return x


def ref_dpmpp_2m(guided, x, sigmas, noise, variant="A"):
    old_u = None
    for i in range(len(sigmas) - 1):
        sigma, sigma_next = sigmas[i], sigmas[i + 1]
        d_lam, d_u = guided(x, sigma)
        if old_u is None or sigma_next == 0:
            x = d_lam + (x - d_u) / sigma * sigma_next
        else:
            h = math.log(sigma) - math.log(sigma_next)
            r = (math.log(sigmas[i - 1]) - math.log(sigma)) / h
            second = (d_lam if variant == "A" else d_u) - old_u
            extra1 = -math.exp(-h) * d_u - (math.exp(-h) - 1) * second / (2 * r)
            extra2 = math.exp(-h) * x
            x = d_lam + extra1 + extra2
        old_u = d_u
    return x


def ref_dpmpp_2s_a(guided, x, sigmas, noise, eta=1.0, s_noise=1.0):
    for i in range(len(sigmas) - 1):
        sigma, sigma_next = sigmas[i], sigmas[i + 1]
        d_lam, d_u = guided(x, sigma)
        sigma_down, sigma_up = anc(sigma, sigma_next, eta)
        if sigma_down == 0:
            x = d_lam
        else:
            t, t_next = -math.log(sigma), -math.log(sigma_down)
            h = t_next - t
            s = t + h / 2
            x_2 = (math.exp(-s) / math.exp(-t)) * x - math.expm1(-h / 2) * d_u
            d_lam2, d_u2 = guided(x_2, math.exp(-s))
            x = d_lam2 - math.exp(-h) * d_u2 + (math.exp(-t_next) / math.exp(-t)) * x
        if sigma_next > 0:
            x = x + noise.draw((sigma, sigma_next)) * s_noise * sigma_up
    return x


def ref_dpmpp_sde(guided, x, sigmas, noise, eta=1.0, s_noise=1.0, r=0.5):
    """The project's definition as "unconditional DPM++ SDE step + (mixed) guidance vector"."""
    fac = 1 / (2 * r)
    for i in range(len(sigmas) - 1):
        sigma, sigma_next = sigmas[i], sigmas[i + 1]
        d_lam, d_u = guided(x, sigma)
        if sigma_next == 0:
            x = d_lam
            continue
        sigma_s = math.exp((1 - r) * math.log(sigma) + r * math.log(sigma_next))
        sd, su = anc(sigma, sigma_s, eta)
        x_2 = (sd / sigma) * x + (1 - sd / sigma) * d_u + noise.draw((sigma, sigma_s)) * s_noise * su
        d_lam2, d_u2 = guided(x_2, sigma_s)
        sd, su = anc(sigma, sigma_next, eta)
        u_mix = (1 - fac) * d_u + fac * d_u2
        g_mix = (1 - fac) * (d_lam - d_u) + fac * (d_lam2 - d_u2)
        x = (sd / sigma) * x + (1 - sd / sigma) * u_mix + g_mix
        x = x + noise.draw((sigma, sigma_next)) * s_noise * su
    return x


def ref_ddim(guided, x, sigmas, noise, eta=0.0, s_noise=1.0):
    """DDIM CFG++ in VP form (z = √ᾱ x, ᾱ = 1/(1+σ²)), noise drawn on every step that ends above 0."""
    for i in range(len(sigmas) - 1):
        sigma, sigma_next = sigmas[i], sigmas[i + 1]
        a, a_next = 1 / (1 + sigma**2), 1 / (1 + sigma_next**2)
        d_lam, d_u = guided(x, sigma)
        eps_lam, eps_u = (x - d_lam) / sigma, (x - d_u) / sigma
        z = math.sqrt(a) * x
        x0 = (z - math.sqrt(1 - a) * eps_lam) / math.sqrt(a)
        sigma_eta = eta * math.sqrt((1 - a_next) / (1 - a)) * math.sqrt(1 - a / a_next)
        z = math.sqrt(a_next) * x0 + math.sqrt(1 - a_next - sigma_eta**2) * eps_u
        if sigma_next > 0:
            z = z + sigma_eta * s_noise * noise.draw((sigma, sigma_next))
        x = z / math.sqrt(a_next)
    return x


def ref_invert_cfgpp(guided, x, sigmas):
    """The CFG++ paper's DDIM inversion (official `InversionDDIMCFGpp.inversion`), in VP form.

    `sigmas` ascends; ᾱ = 1/(1 + σ²), z = √ᾱ x. Per step the ε-model is read at the current latent z
    with the higher noise level (in VE terms at z / √ᾱ_t, σ_t); the ε's are frozen and
        x̂0 = (z − √(1−ᾱ_prev) ε_u) / √ᾱ_prev,   z ← √ᾱ_t x̂0 + √(1−ᾱ_t) ε_λ.
    Returns the VE latent at sigmas[-1].
    """
    a_prev = 1 / (1 + sigmas[0] ** 2)
    z = math.sqrt(a_prev) * x
    for i in range(len(sigmas) - 1):
        sigma_t = sigmas[i + 1]
        a_t = 1 / (1 + sigma_t**2)
        x_in = z / math.sqrt(a_t)
        d_lam, d_u = guided(x_in, sigma_t)
        eps_lam, eps_u = (x_in - d_lam) / sigma_t, (x_in - d_u) / sigma_t
        x0 = (z - math.sqrt(1 - a_prev) * eps_u) / math.sqrt(a_prev)
        z = math.sqrt(a_t) * x0 + math.sqrt(1 - a_t) * eps_lam
        a_prev = a_t
    return z / math.sqrt(a_prev)
