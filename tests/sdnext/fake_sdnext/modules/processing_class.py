"""SD.Next's processing objects (modules/processing_class.py@058a7f0c), reduced.

The attributes the extension reads keep SD.Next's names and defaults (:26-602): ``hidiffusion``
(SD.Next's own HiDiffusion for this generation), ``cfg_scale`` / ``cfg_end`` / ``cfg_true`` /
``cfg_image``, ``is_hr_pass``, ``per_script_args``, ``task_args``, ``ops``. ``sd_model`` is a
property returning ``shared.sd_model`` (:654-656). ``init()`` switches the pipeline to the task
(txt2img :711-720, img2img and inpaint :746-836). ``comment()`` stores text nothing ever shows (:681-682).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from modules import sd_models, shared


class StableDiffusionProcessing:
    def __init__(
        self,
        sd_model: Any = None,
        prompt: str = "",
        negative_prompt: str = "",
        styles: list | None = None,
        seed: int = -1,
        subseed: int = -1,
        subseed_strength: float = 0,
        sampler_name: str | None = None,
        hr_sampler_name: str | None = None,
        batch_size: int = 1,
        n_iter: int = 1,
        steps: int = 20,
        cfg_scale: float = 6.0,
        cfg_end: float = 1,
        cfg_rescale: float = 0.0,
        cfg_true: float = 0.0,
        cfg_adaptive: float = 0.5,
        cfg_image: float | None = None,
        clip_skip: int = 1,
        width: int = 1024,
        height: int = 1024,
        hidiffusion: bool = False,
        guidance_name: str = "Default",
        enable_hr: bool = False,
        hr_scale: float = 2.0,
        hr_upscaler: str = "Latent",
        hr_force: bool = False,
        hr_second_pass_steps: int = 0,
        hr_denoising_strength: float = 0.0,
        hr_resize_mode: int = 0,
        hr_resize_x: int = 0,
        hr_resize_y: int = 0,
        denoising_strength: float = 0.3,
        init_images: list | None = None,
        mask: Any = None,
        mask_blur: int = 4,
        mask_apply_overlay: bool | None = None,
        scheduler_eta: float | None = None,
        override_settings: dict | None = None,
        script_args: list | None = None,
        detailer_enabled: bool = False,
        xyz: bool = False,
        **kwargs: Any,
    ):
        if kwargs:
            raise TypeError(f"unexpected processing arguments: {sorted(kwargs)}")
        self.prompt, self.negative_prompt, self.styles = prompt, negative_prompt, styles or []
        self.seed, self.subseed, self.subseed_strength = seed, subseed, subseed_strength
        self.seed_resize_from_w = self.seed_resize_from_h = 0
        self.sampler_name = sampler_name or "Default"
        self.hr_sampler_name = (
            hr_sampler_name if hr_sampler_name not in (None, "Same as primary") else self.sampler_name
        )
        self.batch_size, self.n_iter, self.steps = batch_size, n_iter, steps
        self.cfg_scale, self.cfg_end, self.cfg_rescale = cfg_scale, cfg_end, cfg_rescale
        self.cfg_true, self.cfg_adaptive, self.cfg_image = cfg_true, cfg_adaptive, cfg_image
        self.clip_skip, self.width, self.height = clip_skip, width, height
        self.hidiffusion, self.guidance_name = hidiffusion, guidance_name
        self.enable_hr, self.hr_scale, self.hr_upscaler, self.hr_force = (
            enable_hr,
            hr_scale,
            hr_upscaler,
            hr_force,
        )
        self.hr_second_pass_steps, self.hr_denoising_strength = hr_second_pass_steps, hr_denoising_strength
        self.hr_resize_mode, self.hr_resize_x, self.hr_resize_y = hr_resize_mode, hr_resize_x, hr_resize_y
        self.hr_upscale_to_x = self.hr_upscale_to_y = 0
        self.denoising_strength, self.init_images = denoising_strength, init_images
        self.mask = self.image_mask = mask
        self.mask_blur, self.mask_apply_overlay = mask_blur, mask_apply_overlay
        self.mask_for_overlay = self.paste_to = None
        self.overlay_images: list | None = None
        self.scheduler_eta = scheduler_eta
        self.override_settings = dict(override_settings or {})
        self.override_settings_restore_afterwards = True
        self.script_args = script_args or []
        self.per_script_args: dict[str, Any] = {}
        self.scripts = None
        self.detailer_enabled, self.xyz = detailer_enabled, xyz
        self.refiner_steps, self.refiner_start, self.refiner_prompt, self.refiner_negative = 0, 0, "", ""
        self.extra_generation_params: dict[str, Any] = {}
        self.task_args: dict[str, Any] = {}
        self.ops: list[str] = []
        self.skip: list[str] = []
        self.state = ""
        self.is_hr_pass = False
        self.is_refiner_pass = False
        self.is_control = False
        self.vae_type = "Full"
        self.all_prompts = self.all_negative_prompts = self.all_seeds = self.all_subseeds = None
        self.prompts: list[str] = []
        self.negative_prompts: list[str] = []
        self.seeds: list[int] = []
        self.subseeds: list[int] = []
        self.iteration = 0
        self.network_data: dict = {}
        self.comments: dict[str, int] = {}
        self.abort = False
        self.disable_extra_networks = False

    @property
    def sd_model(self) -> Any:
        return shared.sd_model

    def comment(self, text: str) -> None:
        self.comments[text] = 1

    def init(self, all_prompts=None, all_seeds=None, all_subseeds=None) -> None:
        pass

    def close(self) -> None:
        self.scripts = None


class StableDiffusionProcessingTxt2Img(StableDiffusionProcessing):
    def init(self, all_prompts=None, all_seeds=None, all_subseeds=None) -> None:
        shared.sd_model = sd_models.set_diffuser_pipe(self.sd_model, sd_models.DiffusersTaskType.TEXT_2_IMAGE)
        self.ops.append("txt2img")

    def init_hr(self, scale: float | None = None, upscaler: str | None = None, force: bool = False) -> None:
        scale = scale or self.hr_scale
        self.hr_upscale_to_x = int(self.width * scale)
        self.hr_upscale_to_y = int(self.height * scale)


class StableDiffusionProcessingImg2Img(StableDiffusionProcessing):
    """processing_class.py:740-836: a mask switches to the inpaint pipeline; the original picture
    outside the mask becomes an overlay pasted over the result (full-image inpaint; the fake does not
    blur the mask -- tests pass ``mask_blur=0`` -- nor crop for "inpaint full res")."""

    def init(self, all_prompts=None, all_seeds=None, all_subseeds=None) -> None:
        if self.image_mask is not None:
            if self.mask_blur:
                raise NotImplementedError("the SD.Next fake does not blur masks: pass mask_blur=0")
            shared.sd_model = sd_models.set_diffuser_pipe(
                self.sd_model, sd_models.DiffusersTaskType.INPAINTING
            )
            self.ops.append("inpaint")
            mask = torch.from_numpy(np.array(self.image_mask.convert("L"), dtype=np.float32) / 255.0)
            self.mask_for_overlay = (mask * 2).clamp(0, 1)  # :787-789
            self.overlay_images = []
            for img in self.init_images:  # :814-822: the original where the mask is not
                picture = torch.from_numpy(np.array(img.convert("RGB"), dtype=np.float32) / 255.0)
                self.overlay_images.append((picture.permute(2, 0, 1), 1.0 - self.mask_for_overlay))
            self.overlay_images = self.overlay_images * self.batch_size
        elif self.init_images:
            shared.sd_model = sd_models.set_diffuser_pipe(
                self.sd_model, sd_models.DiffusersTaskType.IMAGE_2_IMAGE
            )
            self.ops.append("img2img")


class StableDiffusionProcessingControl(StableDiffusionProcessingImg2Img):
    """processing_class.py:839-862: the Control tab's ``p``; ``control_run`` has already put the
    ControlNet pipeline in place (control/run.py:67-143) and the control image into
    ``p.task_args["image"]`` (control/processor.py:274), and runs it with
    ``p.scripts = scripts_manager.scripts_control`` (control/run.py:297-303)."""
