"""modules.sd_samplers_kdiffusion: k-diffusion samplers on Forge's CFG denoiser (dfdcbab :14-244).

``KDiffusionSampler(funcname, sd_model, options=None)``; the denoiser's inner model links the
predictor of ``shared.sd_model.forge_objects.unet`` (Forge's ``ForgeScheduleLinker``, which the
PyPI k-diffusion lacks: :class:`ScheduleLinker` here); ``sample`` / ``sample_img2img`` call
``sampling_prepare`` / ``sampling_cleanup`` around ``launch_sampling`` and scale noise with the
predictor; ``sampler_extra_args`` = {cond, image_cond, uncond, cond_scale: p.cfg_scale, s_min_uncond}.

``sample_img2img`` in dfdcbab's order (:136-194): sampling_prepare (the model is loaded here) ->
setup_img2img_steps -> ``get_sigmas`` (which calls ``p.sampler_noise_scheduler_override`` when set,
:98-99, and drops the next-to-last sigma for "discard" samplers, :82-87, :131-132) -> init cast to
the noise -> start latent ``predictor.noise_scaling(sigma_sched[0], noise, x)`` (+ noise × extra
noise, :149-154, without the extra-noise callback) -> initialize -> launch_sampling.
"""

from __future__ import annotations

import inspect

import k_diffusion.sampling
import torch
from backend.sampling.sampling_function import sampling_cleanup, sampling_prepare

from modules import sd_samplers_cfg_denoiser, sd_samplers_common, sd_schedulers, shared
from modules.sd_samplers_cfg_denoiser import CFGDenoiser  # noqa: F401

samplers_k_diffusion = [
    ("DPM++ 2M", "sample_dpmpp_2m", ["k_dpmpp_2m"], {"scheduler": "karras"}),
    ("Euler a", "sample_euler_ancestral", ["k_euler_a", "k_euler_ancestral"], {"uses_ensd": True}),
    ("Euler", "sample_euler", ["k_euler"], {}),
]

samplers_data_k_diffusion = [
    sd_samplers_common.SamplerData(
        label, lambda model, funcname=funcname: KDiffusionSampler(funcname, model), aliases, options
    )
    for label, funcname, aliases, options in samplers_k_diffusion
]

sampler_extra_params = {
    "sample_euler": ["s_churn", "s_tmin", "s_tmax", "s_noise"],
}


class ScheduleLinker(torch.nn.Module):
    """k_diffusion.external.ForgeScheduleLinker: sigmas and sigma<->t from the predictor."""

    def __init__(self, predictor):
        super().__init__()
        self.predictor = predictor
        self.inner_model = None

    @property
    def sigmas(self):
        return self.predictor.sigmas

    def get_sigmas(self, n=None):
        return self.predictor.schedule.get_sigmas(n)

    def sigma_to_t(self, sigma, quantize=None):
        return self.predictor.timestep(sigma)

    def t_to_sigma(self, t):
        return self.predictor.sigma(t)


class CFGDenoiserKDiffusion(sd_samplers_cfg_denoiser.CFGDenoiser):
    @property
    def inner_model(self):
        if self.model_wrap is None:
            self.model_wrap = ScheduleLinker(shared.sd_model.forge_objects.unet.model.predictor)
            self.model_wrap.inner_model = shared.sd_model
        return self.model_wrap


class KDiffusionSampler(sd_samplers_common.Sampler):
    def __init__(self, funcname, sd_model, options=None):
        super().__init__(funcname)
        self.extra_params = sampler_extra_params.get(funcname, [])
        self.options = options or {}
        self.func = funcname if callable(funcname) else getattr(k_diffusion.sampling, funcname)
        self.model_wrap_cfg = CFGDenoiserKDiffusion(self)
        self.model_wrap = self.model_wrap_cfg.inner_model

    def get_sigmas(self, p, steps):
        discard = self.config is not None and self.config.options.get("discard_next_to_last_sigma", False)
        if shared.opts.always_discard_next_to_last_sigma and not discard:
            discard = True
            p.extra_generation_params["Discard penultimate sigma"] = True
        steps += 1 if discard else 0
        name = (p.hr_scheduler if p.is_hr_pass else p.scheduler) or "Automatic"
        if name == "Automatic":
            name = self.config.options.get("scheduler", None)
        scheduler = sd_schedulers.schedulers_map.get(name)
        sigma_min, sigma_max = self.model_wrap.sigmas[0].item(), self.model_wrap.sigmas[-1].item()
        if p.sampler_noise_scheduler_override:
            sigmas = p.sampler_noise_scheduler_override(steps)
        elif scheduler is None or scheduler.function is None:
            sigmas = self.model_wrap.get_sigmas(steps)
        else:
            kwargs = {"sigma_min": sigma_min, "sigma_max": sigma_max}
            if scheduler.need_inner_model:
                kwargs["inner_model"] = self.model_wrap
            sigmas = scheduler.function(n=steps, **kwargs, device="cpu")
        if discard:
            sigmas = torch.cat([sigmas[:-2], sigmas[-1:]])
        return sigmas.cpu()

    def create_noise_sampler(self, x, sigmas, p):
        return k_diffusion.sampling.BrownianTreeNoiseSampler(
            x, sigmas[sigmas > 0].min(), sigmas.max(), seed=list(p.seeds)
        )

    def _kwargs(self, p, x, sigmas):
        kwargs = self.initialize(p)
        if "sigmas" in inspect.signature(self.func).parameters:
            kwargs["sigmas"] = sigmas
        if self.config.options.get("brownian_noise", False):
            kwargs["noise_sampler"] = self.create_noise_sampler(x, sigmas, p)
        return kwargs

    def _extra_args(self, p, conditioning, unconditional_conditioning, image_conditioning):
        return {
            "cond": conditioning,
            "image_cond": image_conditioning,
            "uncond": unconditional_conditioning,
            "cond_scale": p.cfg_scale,
            "s_min_uncond": self.s_min_uncond,
        }

    def sample(self, p, x, conditioning, unconditional_conditioning, steps=None, image_conditioning=None):
        unet_patcher = self.model_wrap.inner_model.forge_objects.unet
        sampling_prepare(unet_patcher, x=x)
        steps = steps or p.steps
        sigmas = self.get_sigmas(p, steps)
        x = self.model_wrap.predictor.noise_scaling(sigmas[0], x, torch.zeros_like(x))
        kwargs = self._kwargs(p, x, sigmas)
        self.last_latent = x
        self.sampler_extra_args = self._extra_args(
            p, conditioning, unconditional_conditioning, image_conditioning
        )
        samples = self.launch_sampling(
            steps,
            lambda: self.func(
                self.model_wrap_cfg,
                x,
                extra_args=self.sampler_extra_args,
                disable=True,
                callback=self.callback_state,
                **kwargs,
            ),
        )
        sampling_cleanup(unet_patcher)
        return samples

    def sample_img2img(
        self, p, x, noise, conditioning, unconditional_conditioning, steps=None, image_conditioning=None
    ):
        unet_patcher = self.model_wrap.inner_model.forge_objects.unet
        sampling_prepare(unet_patcher, x=x)
        steps, t_enc = sd_samplers_common.setup_img2img_steps(p, steps)
        sigmas = self.get_sigmas(p, steps)
        sigma_sched = sigmas[steps - t_enc - 1 :]
        x = x.to(noise)
        xi = self.model_wrap.predictor.noise_scaling(sigma_sched[0], noise, x)
        if shared.opts.img2img_extra_noise > 0:
            p.extra_generation_params["Extra noise"] = shared.opts.img2img_extra_noise
            xi += noise * shared.opts.img2img_extra_noise
        kwargs = self._kwargs(p, x, sigma_sched)
        self.model_wrap_cfg.init_latent = x
        self.last_latent = x
        self.sampler_extra_args = self._extra_args(
            p, conditioning, unconditional_conditioning, image_conditioning
        )
        samples = self.launch_sampling(
            t_enc + 1,
            lambda: self.func(
                self.model_wrap_cfg,
                xi,
                extra_args=self.sampler_extra_args,
                disable=True,
                callback=self.callback_state,
                **kwargs,
            ),
        )
        sampling_cleanup(unet_patcher)
        return samples
