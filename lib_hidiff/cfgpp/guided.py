"""One call of the guided model: the guided x0 and the unconditional x0 of that same call.

Contract: `model(x, sigma * s_in, **extra_args)` returns D_λ = D_u + λ (D_c − D_u) with
λ = extra_args["cond_scale"], and afterwards holds D_u in `model.last_denoised_uncond`.
"""

from __future__ import annotations

import logging

import torch

UNCOND_ATTR = "last_denoised_uncond"

logger = logging.getLogger("lib_hidiff.cfgpp")


def _forget_uncond(model) -> None:
    # A value left over from an earlier call must never be mistaken for this call's.
    if getattr(model, UNCOND_ATTR, None) is not None:
        try:
            setattr(model, UNCOND_ATTR, None)
        except (AttributeError, TypeError):
            pass


class GuidedDenoiser:
    """Calls `model` and returns (guided x0, unconditional x0).

    When the model gave no unconditional prediction for a call (attribute missing, None, or of the
    wrong shape, e.g. an extension replaced the CFG denoiser's forward), the guided prediction
    stands in for it: every CFG++ update then reduces to its base sampler's update on the guided
    model, never to garbage. The first such call in a run is logged.
    """

    def __init__(self, model, x: torch.Tensor, extra_args: dict | None, sampler: str):
        self.model = model
        self.extra_args = {} if extra_args is None else extra_args
        self.s_in = x.new_ones([x.shape[0]])
        self.sampler = sampler
        self.fallback_calls = 0

    def __call__(self, x: torch.Tensor, sigma: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        _forget_uncond(self.model)
        denoised = self.model(x, sigma * self.s_in, **self.extra_args)
        uncond = getattr(self.model, UNCOND_ATTR, None)
        if isinstance(uncond, torch.Tensor) and uncond.shape == denoised.shape:
            return denoised, uncond.to(dtype=denoised.dtype)
        if self.fallback_calls == 0:
            logger.warning(
                "%s: the model gave no unconditional prediction (model.%s); using the guided "
                "prediction, i.e. the base sampler's step, where it is missing",
                self.sampler,
                UNCOND_ATTR,
            )
        self.fallback_calls += 1
        return denoised, denoised
