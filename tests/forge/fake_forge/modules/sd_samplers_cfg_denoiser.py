"""modules.sd_samplers_cfg_denoiser: Forge's CFG denoiser (dfdcbab :34-228).

What the extension depends on, as Forge does it: ``forward`` (no ``**kwargs``) never calls
``combine_denoised``; it pre-mixes the noisy init latent into x when inpainting, fires
``on_cfg_denoiser`` with ``denoiser=self``, replaces ``cond_scale`` by ``p.hr_cfg`` in the hires
pass and by 1 for Skip-early-CFG / NGMS steps, runs ``sampling_function`` and, when
``need_last_noise_uncond``, keeps ``last_noise_uncond = (x - uncond_pred) / sigma``; then blends the
result with the init latent (scripts' ``on_mask_blend``). ``cond_scale_miltiplier`` is not read
(Forge has no such line; its "DDIM CFG++" sets it anyway).
"""

from __future__ import annotations

import torch
from backend.sampling.sampling_function import sampling_function

from modules import prompt_parser, sd_samplers_common, shared
from modules.script_callbacks import (
    AfterCFGCallbackParams,
    CFGDenoiserParams,
    cfg_after_cfg_callback,
    cfg_denoiser_callback,
)


class CFGDenoiser(torch.nn.Module):
    def __init__(self, sampler):
        super().__init__()
        self.model_wrap = None
        self.mask = None
        self.nmask = None
        self.init_latent = None
        self.steps = None
        self.total_steps = None
        self.step = 0
        self.image_cfg_scale = None
        self.sampler = sampler
        self.p = None
        self.need_last_noise_uncond = False
        self.last_noise_uncond = None
        self.mask_before_denoising = False
        self.classic_ddim_eps_estimation = False

    @property
    def inner_model(self):
        raise NotImplementedError()

    def combine_denoised(self, x_out, conds_list, uncond, cond_scale, timestep, x_in, cond):
        raise AssertionError("Forge's CFG denoiser never calls combine_denoised")

    def update_inner_model(self):
        self.model_wrap = None
        c, uc = self.p.get_conds()
        self.sampler.sampler_extra_args["cond"] = c
        self.sampler.sampler_extra_args["uncond"] = uc

    def forward(self, x, sigma, uncond, cond, cond_scale, s_min_uncond, image_cond):
        state, opts = shared.state, shared.opts
        if state.interrupted or state.skipped:
            raise sd_samplers_common.InterruptedException
        if sd_samplers_common.apply_refiner(self, x):
            cond = self.sampler.sampler_extra_args["cond"]
            uncond = self.sampler.sampler_extra_args["uncond"]
        cond_composition, cond = prompt_parser.reconstruct_multicond_batch(cond, self.step)
        uncond = prompt_parser.reconstruct_cond_batch(uncond, self.step) if uncond is not None else None

        if self.mask is not None:
            predictor = self.inner_model.inner_model.forge_objects.unet.model.predictor
            noise = torch.randn_like(self.init_latent)
            noisy = predictor.noise_scaling(sigma[:, None, None, None], noise, self.init_latent)
            x = x * self.nmask + noisy * self.mask

        params = CFGDenoiserParams(
            x, image_cond, sigma, state.sampling_step, state.sampling_steps, cond, uncond, self
        )
        cfg_denoiser_callback(params)

        if self.p.is_hr_pass:
            cond_scale = self.p.hr_cfg
        if opts.skip_early_cond > 0 and self.step / self.total_steps <= opts.skip_early_cond:
            cond_scale = 1.0
            self.p.extra_generation_params["Skip Early CFG"] = opts.skip_early_cond
        elif (self.step % 2 or opts.s_min_uncond_all) and s_min_uncond > 0 and sigma[0] < s_min_uncond:
            cond_scale = 1.0
            self.p.extra_generation_params["NGMS"] = s_min_uncond

        denoised, cond_pred, uncond_pred = sampling_function(
            self, denoiser_params=params, cond_scale=cond_scale, cond_composition=cond_composition
        )
        if self.need_last_noise_uncond:
            self.last_noise_uncond = (x - uncond_pred) / sigma[:, None, None, None]

        if self.mask is not None:
            blended = denoised * self.nmask + self.init_latent * self.mask
            if self.p.scripts is not None:
                from modules import scripts

                mba = scripts.MaskBlendArgs(
                    denoised, self.nmask, self.init_latent, self.mask, blended, denoiser=self, sigma=sigma
                )
                self.p.scripts.on_mask_blend(self.p, mba)
                blended = mba.blended_latent
            denoised = blended

        self.sampler.last_latent = denoised
        after = AfterCFGCallbackParams(denoised, state.sampling_step, state.sampling_steps)
        cfg_after_cfg_callback(after)
        self.step += 1
        return after.x
