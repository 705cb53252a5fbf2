"""SD.Next's modular pipelines (modules/modular.py@058a7f0c:7-80): with ``model_modular_enable``
a compatible pipeline is converted to a diffusers ModularPipeline whose ``guider`` runs the UNet
once per condition. SD.Next maps SDXL/Flux/Wan/Qwen classes only; this fake also maps the tiny SD
1.x pipeline so the path can run, and its "modular" pipeline is the same pipeline carrying a
``guider`` under a modular class name.
"""

from __future__ import annotations

from typing import Any

from diffusers import StableDiffusionPipeline

from modules import sd_models, shared

modular_map = {"StableDiffusionXLPipeline": "StableDiffusionXLAutoBlocks", "StableDiffusionPipeline": "fake"}


class StableDiffusionModularPipeline(StableDiffusionPipeline):
    guider = None


def is_compatible(pipe: Any) -> bool:
    return bool(shared.opts.model_modular_enable) and pipe.__class__.__name__ in modular_map


def is_guider(pipe: Any) -> bool:
    return getattr(pipe, "guider", None) is not None


def convert_to_modular(pipe: Any) -> Any:
    new = sd_models.switch_pipe(StableDiffusionModularPipeline, pipe)
    new.guider = {"name": "ClassifierFreeGuidance"}
    new.original_pipe = pipe
    return new
