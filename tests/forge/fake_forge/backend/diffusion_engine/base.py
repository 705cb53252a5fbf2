"""backend.diffusion_engine.base: ForgeObjects and the engine (``shared.sd_model``) (dfdcbab base.py).

``shallow_copy`` copies the container only: the UnetPatcher inside is the same object.
"""

from __future__ import annotations


class ForgeObjects:
    def __init__(self, unet, clip, vae, clipvision):
        self.unet, self.clip, self.vae, self.clipvision = unet, clip, vae, clipvision

    def shallow_copy(self):
        return ForgeObjects(self.unet, self.clip, self.vae, self.clipvision)


class ForgeDiffusionEngine:
    def __init__(self, forge_objects=None):
        self.forge_objects = forge_objects
        self.forge_objects_original = None if forge_objects is None else forge_objects.shallow_copy()
        self.forge_objects_after_applying_lora = (
            None if forge_objects is None else forge_objects.shallow_copy()
        )
        self.is_sd1 = self.is_sd2 = self.is_sdxl = self.is_sd3 = False
        self.is_inpaint = False
        self.use_distilled_cfg_scale = False
        self.extra_generation_params = {}
        self.comments = []
