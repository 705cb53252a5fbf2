"""nodes.py (a125cd84): KSampler / KSamplerAdvanced through common_ksampler (:1476-1497, :1499-1560),
ControlNetApply (:822, reduced: the ControlNet goes into both conds), and load_custom_node (:2111-2196: the folder's
``__init__.py`` loaded as a module named after its path; its NODE_CLASS_MAPPINGS registered if it has them (:2157-2165),
only otherwise its V3 ``comfy_entrypoint``'s ComfyExtension node list, by schema node_id (:2166-2196))."""

from __future__ import annotations

import importlib.util
import inspect
import logging
import os
import sys

import comfy.sample
import comfy.utils
import latent_preview
import torch
from comfy_api.latest import ComfyExtension

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


async def load_custom_node(module_path: str, ignore=frozenset(), module_parent="custom_nodes") -> bool:
    sys_module_name = module_path.replace(".", "_x_")
    spec = importlib.util.spec_from_file_location(sys_module_name, os.path.join(module_path, "__init__.py"))
    module = importlib.util.module_from_spec(spec)
    sys.modules[sys_module_name] = module
    spec.loader.exec_module(module)
    relative = f"{module_parent}.{os.path.basename(module_path)}"
    if getattr(module, "NODE_CLASS_MAPPINGS", None) is not None:  # V1 first
        for name, node_cls in module.NODE_CLASS_MAPPINGS.items():
            if name not in ignore:
                NODE_CLASS_MAPPINGS[name] = node_cls
                node_cls.RELATIVE_PYTHON_MODULE = relative
        NODE_DISPLAY_NAME_MAPPINGS.update(getattr(module, "NODE_DISPLAY_NAME_MAPPINGS", None) or {})
        return True
    if hasattr(module, "comfy_entrypoint"):  # V3, only without NODE_CLASS_MAPPINGS
        entrypoint = module.comfy_entrypoint
        if not callable(entrypoint):
            logging.warning(f"comfy_entrypoint in {module_path} is not callable, skipping.")
            return False
        try:
            extension = await entrypoint() if inspect.iscoroutinefunction(entrypoint) else entrypoint()
            if not isinstance(extension, ComfyExtension):
                logging.warning(
                    f"comfy_entrypoint in {module_path} did not return a ComfyExtension, skipping."
                )
                return False
            node_list = await extension.get_node_list()
            if not isinstance(node_list, list):
                logging.warning(
                    f"comfy_entrypoint in {module_path} did not return a list of nodes, skipping."
                )
                return False
            for node_cls in node_list:
                schema = node_cls.GET_SCHEMA()
                if schema.node_id not in ignore:
                    NODE_CLASS_MAPPINGS[schema.node_id] = node_cls
                    node_cls.RELATIVE_PYTHON_MODULE = relative
                if schema.display_name is not None:
                    NODE_DISPLAY_NAME_MAPPINGS[schema.node_id] = schema.display_name
            return True
        except Exception as e:
            logging.warning(f"Error while calling comfy_entrypoint in {module_path}: {e}")
            return False
    logging.warning(
        f"Skip {module_path} module for custom nodes due to the lack of NODE_CLASS_MAPPINGS or NODES_LIST"
    )
    return False
