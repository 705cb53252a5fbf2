"""modules.sd_samplers_kdiffusion: k-diffusion samplers on the CFG denoiser (1.10 call shapes).

``KDiffusionSampler(funcname, sd_model, options=None)`` takes a k-diffusion function name or a
callable; the function is called as ``func(model_wrap_cfg, x, extra_args=..., disable=False,
callback=..., **extra_params_kwargs)`` with ``extra_args = {cond, image_cond, uncond, cond_scale,
s_min_uncond}``; keyword parameters (eta, sigmas, noise_sampler, ...) are offered only when the
function's signature names them.
"""

from __future__ import annotations

import inspect

import k_diffusion.external
import k_diffusion.sampling

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


class CFGDenoiserKDiffusion(sd_samplers_cfg_denoiser.CFGDenoiser):
    @property
    def inner_model(self):
        if self.model_wrap is None:
            create = getattr(shared.sd_model, "create_denoiser", None)
            if create is not None:
                self.model_wrap = create()
            else:
                self.model_wrap = k_diffusion.external.CompVisDenoiser(
                    shared.sd_model, quantize=shared.opts.enable_quantization
                )
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
        name = (p.hr_scheduler if p.is_hr_pass else p.scheduler) or "Automatic"
        if name == "Automatic":
            name = self.config.options.get("scheduler", None)
        scheduler = sd_schedulers.schedulers_map.get(name)
        sigma_min, sigma_max = self.model_wrap.sigmas[0].item(), self.model_wrap.sigmas[-1].item()
        if scheduler is None or scheduler.function is None:
            sigmas = self.model_wrap.get_sigmas(steps)
        else:
            kwargs = {"sigma_min": sigma_min, "sigma_max": sigma_max}
            if scheduler.need_inner_model:
                kwargs["inner_model"] = self.model_wrap
            sigmas = scheduler.function(n=steps, **kwargs, device="cpu")
        return sigmas.cpu()

    def _offer(self, kwargs, parameters, sigmas, x, p):
        if "sigmas" in parameters:
            kwargs["sigmas"] = sigmas
        if self.config.options.get("brownian_noise", False) and "noise_sampler" in parameters:
            kwargs["noise_sampler"] = k_diffusion.sampling.BrownianTreeNoiseSampler(
                x, sigmas[sigmas > 0].min(), sigmas.max(), seed=list(p.seeds)
            )
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
        steps = steps or p.steps
        sigmas = self.get_sigmas(p, steps)
        x = x * sigmas[0]
        kwargs = self.initialize(p)
        kwargs = self._offer(kwargs, inspect.signature(self.func).parameters, sigmas, x, p)
        self.last_latent = x
        self.sampler_extra_args = self._extra_args(
            p, conditioning, unconditional_conditioning, image_conditioning
        )
        return self.launch_sampling(
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

    def sample_img2img(
        self, p, x, noise, conditioning, unconditional_conditioning, steps=None, image_conditioning=None
    ):
        steps, t_enc = sd_samplers_common.setup_img2img_steps(p, steps)
        sigmas = self.get_sigmas(p, steps)
        sigma_sched = sigmas[steps - t_enc - 1 :]
        xi = x + noise * sigma_sched[0]
        if shared.opts.img2img_extra_noise > 0:  # 1.10 (without the extra-noise callback)
            p.extra_generation_params["Extra noise"] = shared.opts.img2img_extra_noise
            xi += noise * shared.opts.img2img_extra_noise
        kwargs = self.initialize(p)
        parameters = inspect.signature(self.func).parameters
        kwargs = self._offer(kwargs, parameters, sigma_sched, x, p)
        self.model_wrap_cfg.init_latent = x
        self.last_latent = x
        self.sampler_extra_args = self._extra_args(
            p, conditioning, unconditional_conditioning, image_conditioning
        )
        return self.launch_sampling(
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
