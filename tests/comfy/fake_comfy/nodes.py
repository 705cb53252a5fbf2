"""nodes.py (a125cd84): KSampler / KSamplerAdvanced through common_ksampler (:1476-1497, :1499-1560),
ControlNetApply (:822, reduced: the ControlNet goes into both conds), and load_custom_node (:2111-2166: the folder's
``__init__.py`` loaded as a module named after its path, NODE_CLASS_MAPPINGS registered)."""

from __future__ import annotations

import importlib.util
import os
import sys

import comfy.sample
import comfy.utils
import latent_preview
import torch

NODE_CLASS_MAPPINGS: dict = {}
NODE_DISPLAY_NAME_MAPPINGS: dict = {}


def common_ksampler(
    model,
    seed,
    steps,
    cfg,
    sampler_name,
    scheduler,
    positive,
    negative,
    latent,
    denoise=1.0,
    disable_noise=False,
    start_step=None,
    last_step=None,
    force_full_denoise=False,
):
    latent_image = comfy.sample.fix_empty_latent_channels(model, latent["samples"])
    if disable_noise:
        noise = torch.zeros(
            latent_image.size(), dtype=latent_image.dtype, layout=latent_image.layout, device="cpu"
        )
    else:
        noise = comfy.sample.prepare_noise(latent_image, seed, latent.get("batch_index"))
    callback = latent_preview.prepare_callback(model, steps)
    samples = comfy.sample.sample(
        model,
        noise,
        steps,
        cfg,
        sampler_name,
        scheduler,
        positive,
        negative,
        latent_image,
        denoise=denoise,
        disable_noise=disable_noise,
        start_step=start_step,
        last_step=last_step,
        force_full_denoise=force_full_denoise,
        noise_mask=latent.get("noise_mask"),
        callback=callback,
        disable_pbar=not comfy.utils.PROGRESS_BAR_ENABLED,
        seed=seed,
    )
    out = latent.copy()
    out["samples"] = samples
    return (out,)


class KSampler:
    def sample(
        self, model, seed, steps, cfg, sampler_name, scheduler, positive, negative, latent_image, denoise=1.0
    ):
        return common_ksampler(
            model,
            seed,
            steps,
            cfg,
            sampler_name,
            scheduler,
            positive,
            negative,
            latent_image,
            denoise=denoise,
        )


class KSamplerAdvanced:
    def sample(
        self,
        model,
        add_noise,
        noise_seed,
        steps,
        cfg,
        sampler_name,
        scheduler,
        positive,
        negative,
        latent_image,
        start_at_step,
        end_at_step,
        return_with_leftover_noise,
        denoise=1.0,
    ):
        return common_ksampler(
            model,
            noise_seed,
            steps,
            cfg,
            sampler_name,
            scheduler,
            positive,
            negative,
            latent_image,
            denoise=denoise,
            disable_noise=add_noise == "disable",
            start_step=start_at_step,
            last_step=end_at_step,
            force_full_denoise=return_with_leftover_noise != "enable",
        )


class ControlNetApply:
    def apply_controlnet(self, conditioning, control_net, image=None, strength=1.0):
        return (
            [[t, {**d, "control": control_net, "control_apply_to_uncond": True}] for t, d in conditioning],
        )


def load_custom_node(module_path: str, ignore=frozenset()) -> bool:
    sys_module_name = module_path.replace(".", "_x_")
    spec = importlib.util.spec_from_file_location(sys_module_name, os.path.join(module_path, "__init__.py"))
    module = importlib.util.module_from_spec(spec)
    sys.modules[sys_module_name] = module
    spec.loader.exec_module(module)
    if getattr(module, "NODE_CLASS_MAPPINGS", None) is not None:
        for name, node_cls in module.NODE_CLASS_MAPPINGS.items():
            if name not in ignore:
                NODE_CLASS_MAPPINGS[name] = node_cls
        NODE_DISPLAY_NAME_MAPPINGS.update(getattr(module, "NODE_DISPLAY_NAME_MAPPINGS", None) or {})
        return True
    return False
