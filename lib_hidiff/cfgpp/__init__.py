"""CFG++ samplers (Chung et al., arXiv 2406.08070) in k-diffusion's calling convention.

    x0 = sample_euler_cfgpp(model, x, sigmas, extra_args=None, callback=None, disable=None)

`model(x, sigma * s_in, **extra_args)` returns the guided x0 D_u + λ (D_c − D_u), λ being
extra_args["cond_scale"] as given, and then holds the unconditional x0 of that call in
`model.last_denoised_uncond`. Pure torch; k-diffusion is imported only to draw default noise.

    y = invert_cfgpp(model, x, sigmas_ascending, extra_args=None, callback=None, disable=None, iterations=0,
                     round_trip=None)

is the inverse of Euler CFG++ / DDIM CFG++ (η = 0): sampling from y over sigmas_ascending.flip(0) gives x.
With iterations > 0 no sample's round trip is worse than at iterations = 0 (measured and chosen per
sample); `invert_cfgpp_measured` also returns those measurements.
"""

from .ddim import ddim_sigmas, ddim_timesteps, sample_ddim_cfgpp
from .dpmpp import (
    DPMPP_2M_VARIANTS,
    sample_dpmpp_2m_cfgpp,
    sample_dpmpp_2s_ancestral_cfgpp,
    sample_dpmpp_sde_cfgpp,
)
from .euler import sample_euler_ancestral_cfgpp, sample_euler_cfgpp
from .guided import UNCOND_ATTR, GuidedDenoiser
from .inversion import (
    InversionResult,
    inversion_max_model_calls,
    inversion_progress_steps,
    invert_cfgpp,
    invert_cfgpp_measured,
)
from .noise import ancestral_step
from .registry import SAMPLERS, SAMPLERS_BY_KEY, SamplerInfo
from .scale import SCALE_MODES, cfg_from_lambda, equivalent_cfg_scales, lambda_from_cfg

__all__ = [
    "DPMPP_2M_VARIANTS",
    "SAMPLERS",
    "SAMPLERS_BY_KEY",
    "SCALE_MODES",
    "UNCOND_ATTR",
    "GuidedDenoiser",
    "InversionResult",
    "SamplerInfo",
    "ancestral_step",
    "cfg_from_lambda",
    "ddim_sigmas",
    "ddim_timesteps",
    "equivalent_cfg_scales",
    "invert_cfgpp",
    "invert_cfgpp_measured",
    "inversion_max_model_calls",
    "inversion_progress_steps",
    "lambda_from_cfg",
    "sample_ddim_cfgpp",
    "sample_dpmpp_2m_cfgpp",
    "sample_dpmpp_2s_ancestral_cfgpp",
    "sample_dpmpp_sde_cfgpp",
    "sample_euler_ancestral_cfgpp",
    "sample_euler_cfgpp",
]
