"""comfy_extras/nodes_custom_sampler.py (a125cd84): BasicScheduler, KSamplerSelect, SamplerCustom (:615-667),
CFGGuider (:692-712), RandomNoise / DisableNoise and SamplerCustomAdvanced (:801-845)."""

from __future__ import annotations

import comfy.model_management
import comfy.sample
import comfy.samplers
import comfy.utils
import latent_preview
import torch


class BasicScheduler:
    def get_sigmas(self, model, scheduler, steps, denoise):
        total_steps = steps
        if denoise < 1.0:
            if denoise <= 0.0:
                return (torch.FloatTensor([]),)
            total_steps = int(steps / denoise)
        sigmas = comfy.samplers.calculate_sigmas(
            model.get_model_object("model_sampling"), scheduler, total_steps
        ).cpu()
        return (sigmas[-(steps + 1) :],)


class KSamplerSelect:
    def get_sampler(self, sampler_name):
        return (comfy.samplers.sampler_object(sampler_name),)


class Noise_EmptyNoise:
    seed = 0

    def generate_noise(self, input_latent):
        latent_image = input_latent["samples"]
        return torch.zeros(
            latent_image.shape, dtype=latent_image.dtype, layout=latent_image.layout, device="cpu"
        )


class Noise_RandomNoise:
    def __init__(self, seed):
        self.seed = seed

    def generate_noise(self, input_latent):
        return comfy.sample.prepare_noise(input_latent["samples"], self.seed, input_latent.get("batch_index"))


class SamplerCustom:
    def sample(self, model, add_noise, noise_seed, cfg, positive, negative, sampler, sigmas, latent_image):
        latent = latent_image.copy()
        latent_image = comfy.sample.fix_empty_latent_channels(model, latent["samples"])
        latent["samples"] = latent_image
        noise = (
            Noise_RandomNoise(noise_seed).generate_noise(latent)
            if add_noise
            else Noise_EmptyNoise().generate_noise(latent)
        )
        x0_output = {}
        callback = latent_preview.prepare_callback(model, sigmas.shape[-1] - 1, x0_output)
        samples = comfy.sample.sample_custom(
            model,
            noise,
            cfg,
            sampler,
            sigmas,
            positive,
            negative,
            latent_image,
            noise_mask=latent.get("noise_mask"),
            callback=callback,
            disable_pbar=not comfy.utils.PROGRESS_BAR_ENABLED,
            seed=noise_seed,
        )
        out = latent.copy()
        out["samples"] = samples
        return (out, out)


class CFGGuider:
    def get_guider(self, model, positive, negative, cfg):
        guider = comfy.samplers.CFGGuider(model)
        guider.set_conds(positive, negative)
        guider.set_cfg(cfg)
        return (guider,)


class SamplerCustomAdvanced:
    def sample(self, noise, guider, sampler, sigmas, latent_image):
        latent = latent_image.copy()
        latent_image = comfy.sample.fix_empty_latent_channels(guider.model_patcher, latent["samples"])
        latent["samples"] = latent_image
        callback = latent_preview.prepare_callback(guider.model_patcher, sigmas.shape[-1] - 1, {})
        samples = guider.sample(
            noise.generate_noise(latent),
            latent_image,
            sampler,
            sigmas,
            denoise_mask=latent.get("noise_mask"),
            callback=callback,
            disable_pbar=not comfy.utils.PROGRESS_BAR_ENABLED,
            seed=noise.seed,
        )
        out = latent.copy()
        out["samples"] = samples.to(comfy.model_management.intermediate_device())
        return (out, out)
