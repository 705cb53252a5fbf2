"""modules.sd_samplers_cfg_denoiser: the CFG denoiser with the 1.10 behaviours CFG++ depends on.

Rows of ``x_out``: every cond of every image (AND-prompts give an image several), then one
uncond row per image; edit models add an image-cond third. Skipped-uncond steps (Skip early CFG,
NGMS) substitute each image's first cond row for its uncond row and combine with scale 1.
Inpainting blends the guided prediction with the init latent after combining (scripts may change
the blend). ``on_cfg_denoiser`` sees this object as ``params.denoiser``; ``step`` counts calls.
"""

from __future__ import annotations

import torch

from modules import prompt_parser, sd_samplers_common, shared
from modules.script_callbacks import (
    AfterCFGCallbackParams,
    CFGDenoisedParams,
    CFGDenoiserParams,
    cfg_after_cfg_callback,
    cfg_denoised_callback,
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
        self.cond_scale_miltiplier = 1.0
        self.need_last_noise_uncond = False
        self.last_noise_uncond = None
        self.mask_before_denoising = False

    @property
    def inner_model(self):
        raise NotImplementedError()

    def combine_denoised(self, x_out, conds_list, uncond, cond_scale):
        uncond_rows = x_out[-uncond.shape[0] :]
        denoised = uncond_rows.clone()
        for i, conds in enumerate(conds_list):
            for index, weight in conds:
                denoised[i] += (x_out[index] - uncond_rows[i]) * (weight * cond_scale)
        return denoised

    def combine_denoised_for_edit_model(self, x_out, cond_scale):
        cond, img_cond, uncond = x_out.chunk(3)
        return uncond + cond_scale * (cond - img_cond) + self.image_cfg_scale * (img_cond - uncond)

    def update_inner_model(self):
        self.model_wrap = None
        c, uc = self.p.get_conds()
        self.sampler.sampler_extra_args["cond"] = c
        self.sampler.sampler_extra_args["uncond"] = uc

    def forward(self, x, sigma, uncond, cond, cond_scale, s_min_uncond, image_cond):
        state, opts = shared.state, shared.opts
        if state.interrupted or state.skipped:
            raise sd_samplers_common.InterruptedException
        if sd_samplers_common.apply_refiner(self, sigma):
            cond = self.sampler.sampler_extra_args["cond"]
            uncond = self.sampler.sampler_extra_args["uncond"]

        is_edit_model = (
            shared.sd_model.cond_stage_key == "edit"
            and self.image_cfg_scale is not None
            and self.image_cfg_scale != 1.0
        )
        conds_list, tensor = prompt_parser.reconstruct_multicond_batch(cond, self.step)
        uncond = prompt_parser.reconstruct_cond_batch(uncond, self.step)
        batch_size = len(conds_list)
        repeats = [len(c) for c in conds_list]

        def per_cond(t):
            return [torch.stack([t[i]] * n) for i, n in enumerate(repeats)]

        if not is_edit_model:
            x_in = torch.cat(per_cond(x) + [x])
            sigma_in = torch.cat(per_cond(sigma) + [sigma])
            image_cond_in = torch.cat(per_cond(image_cond) + [image_cond])
        else:
            x_in = torch.cat(per_cond(x) + [x, x])
            sigma_in = torch.cat(per_cond(sigma) + [sigma, sigma])
            image_cond_in = torch.cat(per_cond(image_cond) + [image_cond, torch.zeros_like(self.init_latent)])

        params = CFGDenoiserParams(
            x_in, image_cond_in, sigma_in, state.sampling_step, state.sampling_steps, tensor, uncond, self
        )
        cfg_denoiser_callback(params)
        x_in, image_cond_in, sigma_in = params.x, params.image_cond, params.sigma
        tensor, uncond = params.text_cond, params.text_uncond

        skip_uncond = False
        if opts.skip_early_cond != 0.0 and self.step / self.total_steps <= opts.skip_early_cond:
            skip_uncond = True
            self.p.extra_generation_params["Skip Early CFG"] = opts.skip_early_cond
        elif (
            (self.step % 2 or opts.s_min_uncond_all)
            and s_min_uncond > 0
            and sigma[0] < s_min_uncond
            and not is_edit_model
        ):
            skip_uncond = True
            self.p.extra_generation_params["NGMS"] = s_min_uncond
        if skip_uncond:
            x_in, sigma_in = x_in[:-batch_size], sigma_in[:-batch_size]

        if is_edit_model:
            cond_in = torch.cat([tensor, uncond, uncond])
        elif skip_uncond:
            cond_in = tensor
        else:
            cond_in = torch.cat([tensor, uncond])

        def condition(c_crossattn, c_concat):
            return {"c_crossattn": [c_crossattn], "c_concat": [c_concat]}

        if opts.batch_cond_uncond:
            x_out = self.inner_model(x_in, sigma_in, cond=condition(cond_in, image_cond_in))
        else:
            x_out = torch.zeros_like(x_in)
            for a in range(0, x_out.shape[0], batch_size):
                b = a + batch_size
                x_out[a:b] = self.inner_model(
                    x_in[a:b], sigma_in[a:b], cond=condition(cond_in[a:b], image_cond_in[a:b])
                )

        first_rows = [c[0][0] for c in conds_list]
        if skip_uncond:
            x_out = torch.cat([x_out, torch.cat([x_out[i : i + 1] for i in first_rows])])

        cfg_denoised_callback(
            CFGDenoisedParams(x_out, state.sampling_step, state.sampling_steps, self.inner_model)
        )
        if self.need_last_noise_uncond:
            self.last_noise_uncond = torch.clone(x_out[-uncond.shape[0] :])

        if is_edit_model:
            denoised = self.combine_denoised_for_edit_model(x_out, cond_scale * self.cond_scale_miltiplier)
        elif skip_uncond:
            denoised = self.combine_denoised(x_out, conds_list, uncond, 1.0)
        else:
            denoised = self.combine_denoised(
                x_out, conds_list, uncond, cond_scale * self.cond_scale_miltiplier
            )

        if not self.mask_before_denoising and self.mask is not None:
            blended = denoised * self.nmask + self.init_latent * self.mask
            if self.p.scripts is not None:
                from modules import scripts

                mba = scripts.MaskBlendArgs(
                    denoised, self.nmask, self.init_latent, self.mask, blended, denoiser=self, sigma=sigma
                )
                self.p.scripts.on_mask_blend(self.p, mba)
                blended = mba.blended_latent
            denoised = blended

        self.sampler.last_latent = torch.cat([x_out[i : i + 1] for i in first_rows])
        after = AfterCFGCallbackParams(denoised, state.sampling_step, state.sampling_steps)
        cfg_after_cfg_callback(after)
        self.step += 1
        return after.x
