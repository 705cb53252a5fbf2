"""Forge's built-in ControlNet extension, reduced to how it reaches the UNet
(dfdcbab extensions-builtin/sd_forge_controlnet/scripts/controlnet.py:425-511, :559-563 and
modules_forge/supported_controlnet.py:148-166).

Each enabled unit, in ``process_before_every_sampling`` (so again before the hires pass), takes
its control image at the pass's size (the hires one in the hires pass, :451-456) and replaces
``p.sd_model.forge_objects.unet`` by a clone with the unit's control object linked in
(``apply_controlnet_advanced``): several units stack on the patcher's linked list. The units
travel in the script's argument slots as the API's ``alwayson_scripts`` args do; a unit is a dict:
``model`` (a ControlNet or T2IAdapter of backend.patcher.controlnet), ``image`` (1, 3, H, W in
[0, 1]), ``weight``, ``guidance_start``, ``guidance_end``, ``hr`` (apply in the hires pass,
default True).
"""

from __future__ import annotations

import gradio as gr
import torch.nn.functional as F
from backend.patcher.controlnet import apply_controlnet_advanced
from modules import scripts

UNITS = 3  # Forge's default "control_net_unit_count"


class ControlNetForForgeOfficial(scripts.Script):
    def title(self):
        return "ControlNet"

    def show(self, is_img2img):
        return scripts.AlwaysVisible

    def ui(self, is_img2img):
        return [gr.Image(value=None, label=f"ControlNet Unit {i}") for i in range(UNITS)]

    def process_before_every_sampling(self, p, *units, **kwargs):
        is_hr_pass = getattr(p, "is_hr_pass", False)
        for unit in units:
            if not unit or (is_hr_pass and not unit.get("hr", True)):
                continue
            if is_hr_pass:
                size = (p.hr_upscale_to_y, p.hr_upscale_to_x)
            else:
                size = (p.height, p.width)
            cond = F.interpolate(unit["image"], size=size, mode="bilinear", align_corners=False)
            p.sd_model.forge_objects.unet = apply_controlnet_advanced(
                unet=p.sd_model.forge_objects.unet,
                controlnet=unit["model"],
                image_bchw=cond,
                strength=float(unit.get("weight", 1.0)),
                start_percent=float(unit.get("guidance_start", 0.0)),
                end_percent=float(unit.get("guidance_end", 1.0)),
            )
