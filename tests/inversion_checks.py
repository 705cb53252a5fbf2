"""Host-neutral helpers of the CFG++ inversion glue tests (tests/webui, tests/forge): latents,
errors, and the closed-form reference inversion every host's accordion must reproduce.

Pure torch and lib_hidiff.cfgpp: no fake WebUI is imported here, so both fakes' tests can use it.
"""

from __future__ import annotations

from typing import Any

import torch

from lib_hidiff import cfgpp


def clean_latent(batch: int = 2, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(batch, 4, 8, 8, generator=g)


def output(res: Any) -> torch.Tensor:
    return torch.stack(list(res.images))


def rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).norm() / b.norm())


def closed_form_inversion(
    init: torch.Tensor,
    m_src: torch.Tensor,
    m_neg: torch.Tensor,
    ascending: torch.Tensor,
    lam: float,
    iterations: int,
) -> torch.Tensor:
    """invert_cfgpp on data ~ N(m, 1): D(x, σ) = (x + σ² m) / (1 + σ²), source prompt's mean as
    cond, the negative prompt's as uncond, over ``ascending`` sigmas (0 first)."""

    class Ref:
        last_denoised_uncond = None

        def __call__(self, x, sigma, cond_scale):
            s2 = sigma.view(-1, 1, 1, 1) ** 2
            d_c, d_u = (x + s2 * m_src) / (1 + s2), (x + s2 * m_neg) / (1 + s2)
            self.last_denoised_uncond = d_u
            return d_u + cond_scale * (d_c - d_u)

    return cfgpp.invert_cfgpp(Ref(), init, ascending, {"cond_scale": lam}, disable=True, iterations=iterations)
