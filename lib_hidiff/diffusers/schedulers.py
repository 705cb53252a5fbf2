"""CFG++ schedulers for diffusers pipelines: DDIM, Euler, Euler a and DPM++ 2M (variants A / B).

Each subclasses the diffusers scheduler of the same sampler, so timesteps, sigmas, input scaling,
`add_noise`, img2img begin index, noise draws and solver state all stay the base's. `step()` finds
this step's ε_u and ε_c in the captured UNet batch and applies the CFG++ rule of lib_hidiff.cfgpp:
land on the guided x0 D_λ (from ε_λ = ε_u + λ (ε_c − ε_u)) and re-noise along the unconditional
direction. In every case that is the base step on ε_u plus the x0-space guidance
G = D_λ − D_u scaled to the sample's coordinates at the next noise level:

    Euler, Euler a (VE):     x' = step(ε_u) + G
    DDIM (VP):               z' = step(ε_u) + √ᾱ' G
    DPM++ 2M B (VP):         z' = step(ε_u) + α' G
    DPM++ 2M A (VP):         z' = step(D_λ, history D_u) + α' (σ'/σ) G

(A: the multistep update on the guided x0 with the unconditional history, whose first-order part
is then moved from the guided onto the unconditional direction; this is docs/cfgpp.md's variant A,
and B is the variant with a strictly unconditional higher-order term.) The base step gets ε_u, so
the generator draws the same noise in the same order as the base scheduler, and with ε_c = ε_u the
step is the base step exactly. λ lives in the config as `cfgpp_scale` (and `cfgpp_variant`).
"""

from __future__ import annotations

from typing import Any

import torch
from diffusers import (
    DDIMScheduler,
    DPMSolverMultistepScheduler,
    EulerAncestralDiscreteScheduler,
    EulerDiscreteScheduler,
)

from lib_hidiff.cfgpp.dpmpp import DPMPP_2M_VARIANTS

from .scheduling import (
    CFGppSchedulerMixin,
    call_step,
    cfgpp_init,
    check_scale,
    finish_step,
    keep_signature,
)

__all__ = [
    "DDIMCFGppScheduler",
    "DPMSolverMultistepCFGppScheduler",
    "EulerAncestralCFGppScheduler",
    "EulerCFGppScheduler",
]

DEFAULT_SCALE = 0.6


def _check_scale_only(values: dict) -> dict:
    return {"cfgpp_scale": check_scale(values["cfgpp_scale"])}


def _check_dpm(values: dict) -> dict:
    variant = str(values["cfgpp_variant"]).upper()
    if variant not in DPMPP_2M_VARIANTS:
        raise ValueError(
            f"DPM++ 2M CFG++ variant (cfgpp_variant) must be 'A' or 'B'; got {values['cfgpp_variant']!r}"
        )
    return {"cfgpp_scale": check_scale(values["cfgpp_scale"]), "cfgpp_variant": variant}


def _with_guidance(out: Any, bound: Any, guidance: torch.Tensor, x0_shift: torch.Tensor | None) -> Any:
    """The base output moved by `guidance` (float32), cast back to the base output's dtype.

    `x0_shift` (= G) turns the base's unconditional x0 into the guided one where the output has it.
    """
    prev = (out.prev_sample.float() + guidance).to(out.prev_sample.dtype)
    x0 = getattr(out, "pred_original_sample", None)
    if x0 is not None and x0_shift is not None:
        x0 = (x0.float() + x0_shift).to(x0.dtype)
    return finish_step(out, bound.arguments["return_dict"], prev, x0)


def _euler_x0_gain(config: Any, sigma: torch.Tensor, sigma_hat: torch.Tensor) -> torch.Tensor | None:
    """d x0 / d(model output) in diffusers' Euler schedulers (VE), by prediction type."""
    if config.prediction_type == "epsilon":
        return -sigma_hat
    if config.prediction_type == "v_prediction":
        return -sigma / (sigma**2 + 1) ** 0.5
    if config.prediction_type in ("sample", "original_sample"):
        return torch.ones_like(sigma)
    return None


class EulerCFGppScheduler(CFGppSchedulerMixin, EulerDiscreteScheduler):
    """Euler CFG++: x' = D_λ + σ_{n+1} (x̂ − D_u) / σ̂ (with diffusers' optional churn)."""

    cfgpp_base = EulerDiscreteScheduler
    __init__ = cfgpp_init(EulerDiscreteScheduler, {"cfgpp_scale": DEFAULT_SCALE}, _check_scale_only)

    @keep_signature(EulerDiscreteScheduler.step)
    def step(self, *args, **kwargs):
        base, bound, split = self._cfgpp_begin(args, kwargs)
        if split is None:
            return base(*bound.args, **bound.kwargs)
        a = bound.arguments
        sigma = self.sigmas[self.step_index]
        churn = a.get("s_churn", 0.0)
        in_range = a.get("s_tmin", 0.0) <= sigma <= a.get("s_tmax", float("inf"))
        gamma = min(churn / (len(self.sigmas) - 1), 2**0.5 - 1) if in_range else 0.0
        gain = _euler_x0_gain(self.config, sigma, sigma * (gamma + 1))
        guided = split.guided(self.cfgpp_scale)
        out = call_step(base, bound, model_output=split.uncond)
        g = gain.to(out.prev_sample.device) * (guided.float() - split.uncond.float())
        return _with_guidance(out, bound, g, g)


class EulerAncestralCFGppScheduler(CFGppSchedulerMixin, EulerAncestralDiscreteScheduler):
    """Euler a CFG++: x' = D_λ + σ_down (x − D_u) / σ + σ_up ξ."""

    cfgpp_base = EulerAncestralDiscreteScheduler
    __init__ = cfgpp_init(EulerAncestralDiscreteScheduler, {"cfgpp_scale": DEFAULT_SCALE}, _check_scale_only)

    @keep_signature(EulerAncestralDiscreteScheduler.step)
    def step(self, *args, **kwargs):
        base, bound, split = self._cfgpp_begin(args, kwargs)
        if split is None:
            return base(*bound.args, **bound.kwargs)
        sigma = self.sigmas[self.step_index]
        gain = _euler_x0_gain(self.config, sigma, sigma)
        guided = split.guided(self.cfgpp_scale)
        out = call_step(base, bound, model_output=split.uncond)
        g = gain.to(out.prev_sample.device) * (guided.float() - split.uncond.float())
        return _with_guidance(out, bound, g, g)


class DDIMCFGppScheduler(CFGppSchedulerMixin, DDIMScheduler):
    """DDIM CFG++ (η as the pipeline passes it): z' = √ᾱ' D_λ + √(1 − ᾱ' − σ_η²) ε_u + σ_η ξ."""

    cfgpp_base = DDIMScheduler
    __init__ = cfgpp_init(DDIMScheduler, {"cfgpp_scale": DEFAULT_SCALE}, _check_scale_only)

    def _cfgpp_x0(self, model_output: torch.Tensor, sample: torch.Tensor, alpha_prod_t: torch.Tensor):
        """DDIMScheduler's predicted x0 (with its clipping / thresholding), from any model output."""
        kind = self.config.prediction_type
        beta_prod_t = 1 - alpha_prod_t
        if kind == "epsilon":
            x0 = (sample - beta_prod_t**0.5 * model_output) / alpha_prod_t**0.5
        elif kind == "sample":
            x0 = model_output
        elif kind == "v_prediction":
            x0 = alpha_prod_t**0.5 * sample - beta_prod_t**0.5 * model_output
        else:
            return None
        if self.config.thresholding:
            return self._threshold_sample(x0)
        if self.config.clip_sample:
            return x0.clamp(-self.config.clip_sample_range, self.config.clip_sample_range)
        return x0

    @keep_signature(DDIMScheduler.step)
    def step(self, *args, **kwargs):
        base, bound, split = self._cfgpp_begin(args, kwargs, needs_steps=True)
        if split is None:
            return base(*bound.args, **bound.kwargs)
        timestep, sample = bound.arguments["timestep"], bound.arguments["sample"]
        # DDIMScheduler.step's own alphas for this step and the next.
        prev_timestep = timestep - self.config.num_train_timesteps // self.num_inference_steps
        alpha_prod_t = self.alphas_cumprod[timestep]
        alpha_prod_prev = (
            self.alphas_cumprod[prev_timestep] if prev_timestep >= 0 else self.final_alpha_cumprod
        )
        guided = split.guided(self.cfgpp_scale)
        x0_u = self._cfgpp_x0(split.uncond, sample, alpha_prod_t)
        x0_g = self._cfgpp_x0(guided, sample, alpha_prod_t)
        out = call_step(base, bound, model_output=split.uncond)
        g = (x0_g.float() - x0_u.float()).to(out.prev_sample.device)
        scale = alpha_prod_prev.to(device=g.device, dtype=torch.float32) ** 0.5
        return _with_guidance(out, bound, scale * g, g)


class DPMSolverMultistepCFGppScheduler(CFGppSchedulerMixin, DPMSolverMultistepScheduler):
    """DPM++ 2M CFG++ on diffusers' multistep DPM-Solver++ (solver_order 1 or 2, dpmsolver++).

    cfgpp_variant "A" (default) or "B", as lib_hidiff.cfgpp.DPMPP_2M_VARIANTS defines them; the
    history holds unconditional x0 predictions in both.
    """

    cfgpp_base = DPMSolverMultistepScheduler
    __init__ = cfgpp_init(
        DPMSolverMultistepScheduler, {"cfgpp_scale": DEFAULT_SCALE, "cfgpp_variant": "A"}, _check_dpm
    )

    def _cfgpp_check_config(self) -> None:
        super()._cfgpp_check_config()
        if self.config.algorithm_type != "dpmsolver++" or self.config.solver_order not in (1, 2):
            raise ValueError(
                "DPM++ 2M CFG++ needs algorithm_type 'dpmsolver++' and solver_order 1 or 2; got "
                f"{self.config.algorithm_type!r}, order {self.config.solver_order}"
            )

    @keep_signature(DPMSolverMultistepScheduler.step)
    def step(self, *args, **kwargs):
        base, bound, split = self._cfgpp_begin(args, kwargs, needs_steps=True)
        if split is None:
            return base(*bound.args, **bound.kwargs)
        i, sample = self.step_index, bound.arguments["sample"]
        guided = split.guided(self.cfgpp_scale)
        x0_u = self.convert_model_output(split.uncond, sample=sample)
        x0_g = self.convert_model_output(guided, sample=sample)
        g = x0_g.float() - x0_u.float()
        # DPM-Solver++'s own α, σ of this and the next noise level; e^{-h} = (σ'/α') / (σ/α).
        alpha, sigma = self._sigma_to_alpha_sigma_t(self.sigmas[i])
        alpha_next, sigma_next = self._sigma_to_alpha_sigma_t(self.sigmas[i + 1])
        if self.config.cfgpp_variant == "B":
            out = call_step(base, bound, model_output=split.uncond)
            scale = alpha_next
        else:
            out = call_step(base, bound, model_output=guided)
            self.model_outputs[-1] = x0_u  # the history is unconditional in both variants
            scale = sigma_next * alpha / sigma  # α' e^{-h}
        scale = torch.as_tensor(scale, dtype=torch.float32, device=g.device)
        return _with_guidance(out, bound, scale * g.to(scale.device), None)
