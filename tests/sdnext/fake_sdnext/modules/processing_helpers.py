"""SD.Next's processing helpers (modules/processing_helpers.py@058a7f0c), reduced.

* ``update_sampler`` (:583-616): the pass's sampler (``hr_sampler_name`` on the second pass) is
  built by ``sd_samplers.create_sampler`` onto ``sd_model.scheduler``; ``p.sampler_name`` becomes
  'Default' only when the name is unknown or no scheduler came back -- a rejected sampler that
  fell back to the default scheduler keeps its name.
* ``get_sampler_name`` (:158-170): the dropdown index into ``sd_samplers.samplers``; separator rows
  mean 'Default'.
* step counts (:451-489): img2img / hires passes ask the pipeline for ``steps // strength + 1``
  steps, of which the strength runs.
"""

from __future__ import annotations

from typing import Any

import torch.nn.functional as F

from modules import sd_models, sd_samplers, shared
from modules.logger import log


def is_txt2img() -> bool:
    return sd_models.get_diffusers_task(shared.sd_model) == sd_models.DiffusersTaskType.TEXT_2_IMAGE


def is_refiner_enabled(p: Any) -> bool:
    return False  # no refiner model in the fake


def get_sampler_name(sampler_index: int | None = None, img: bool = False) -> str:
    sampler_index = sampler_index or 0
    if len(sd_samplers.samplers) > sampler_index:
        name = sd_samplers.samplers[sampler_index].name
    else:
        name = "Default"
        log.warning(f"Sampler not found: index={sampler_index}")
    return "Default" if sd_samplers.is_separator(name) else name


def update_sampler(p: Any, sd_model: Any, second_pass: bool = False) -> None:
    selection = p.hr_sampler_name if second_pass else p.sampler_name
    if not hasattr(sd_model, "scheduler") or selection == "None":
        return
    sampler = sd_samplers.find_sampler(selection)
    resolved = sampler is not None
    if not resolved:
        log.warning(f'Sampler: name="{selection}" not found')
    scheduler = sd_samplers.create_sampler(sampler.name if resolved else selection, sd_model)
    if scheduler is None or not resolved or selection == "Default":
        if second_pass:
            p.hr_sampler = "Default"
        else:
            p.sampler_name = "Default"


def calculate_base_steps(p: Any, use_denoise_start: bool = False, use_refiner_start: bool = False) -> int:
    if not is_txt2img() and p.denoising_strength > 0:
        return max(1, int(p.steps // p.denoising_strength + 1))
    return max(1, int(p.steps))


def calculate_hires_steps(p: Any) -> int:
    if p.hr_second_pass_steps > 0:
        steps = p.hr_second_pass_steps // p.denoising_strength + 1
    elif p.denoising_strength > 0:
        steps = p.steps // p.denoising_strength + 1
    else:
        steps = 0
    return max(1, int(steps))


def resize_hires(p: Any, latents: Any) -> Any:
    """Latent upscaler: the base latents resized to the hires size."""
    scale = sd_models_vae_scale()
    return F.interpolate(
        latents, size=(p.hr_upscale_to_y // scale, p.hr_upscale_to_x // scale), mode="nearest"
    )


def sd_models_vae_scale() -> int:
    from modules import sd_vae

    return sd_vae.get_vae_scale_factor()


def get_job_name(p: Any, model: Any) -> str:
    return "Text" if is_txt2img() else "Image"
