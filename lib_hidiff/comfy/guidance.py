"""The CFG++ model contract on ComfyUI's sampler model.

The core's CFG++ samplers and inversion call ``model(x, sigma, **extra_args)`` for the guided x0 and
then read ``model.last_denoised_uncond``. ComfyUI's sampler model (``KSamplerX0Inpaint`` around the
``CFGGuider``) returns the guided x0; the unconditional x0 of the same call reaches a
``sampler_post_cfg_function`` as ``args["uncond_denoised"]`` (comfy/samplers.py:368-371 at a125cd84),
which is how ComfyUI's own *_cfg_pp samplers get it (comfy/k_diffusion/sampling.py:1249-1255). The
uncond batch must also run at CFG 1 (``disable_cfg1_optimization``, comfy/samplers.py:378-381).
When inpainting, the uncond prediction is blended with the init latent like the guided one
(``KSamplerX0Inpaint``, comfy/samplers.py:409-410).
"""

from __future__ import annotations

from typing import Any

import torch

__all__ = ["UncondCapture", "check_model_sampling"]


class UncondCapture:
    """Wraps ComfyUI's sampler model: guided x0 on call, ``last_denoised_uncond`` afterwards."""

    def __init__(self, model: Any, extra_args: dict | None):
        self.model = model
        self.last_denoised_uncond: torch.Tensor | None = None
        self._uncond: torch.Tensor | None = None
        extra_args = {} if extra_args is None else extra_args
        options = dict(extra_args.get("model_options", {}))
        options["sampler_post_cfg_function"] = [*options.get("sampler_post_cfg_function", []), self._post_cfg]
        options["disable_cfg1_optimization"] = True
        self.extra_args = {**extra_args, "model_options": options}

    def _post_cfg(self, args: dict) -> torch.Tensor:
        self._uncond = args.get("uncond_denoised")
        return args["denoised"]

    def __call__(self, x: torch.Tensor, sigma: torch.Tensor, **extra_args: Any) -> torch.Tensor:
        self._uncond = None
        denoised = self.model(x, sigma, **extra_args)
        uncond = self._uncond
        mask = extra_args.get("denoise_mask")
        latent = getattr(self.model, "latent_image", None)
        if uncond is not None and mask is not None and latent is not None:
            uncond = uncond * mask + latent * (1.0 - mask)
        self.last_denoised_uncond = uncond
        return denoised


def check_model_sampling(model: Any, sampler: str) -> None:
    """Refuse models the VE-coordinate CFG++ rules do not hold for (flow matching, e.g. SD3/Flux)."""
    guider = getattr(model, "inner_model", None)
    inner = getattr(guider, "inner_model", None)
    sampling = getattr(inner, "model_sampling", None)
    names = {cls.__name__ for cls in type(sampling).__mro__} if sampling is not None else set()
    if "CONST" in names:
        raise ValueError(
            f"{sampler}: this model is flow-matching (CONST); the sampler supports SD 1.x/2.x/SDXL "
            "(eps / v-prediction) models"
        )
