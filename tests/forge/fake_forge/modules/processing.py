"""modules.processing: ``p`` and process_images in Forge 2.x's order (dfdcbab processing.py).

process_images: forge_model_reload -> process -> p.init (img2img: the sampler and the image
conditioning, dfdcbab :913, :1684-1689, :1842) -> per batch: forge_model_reload, forge_objects reset
(from ``forge_objects_original``), process_batch, forge_objects reset (from
``..._after_applying_lora``), conds, p.sample -> postprocess (skipped when sampling raises).
txt2img p.sample: sampler, forge_objects reset, ToMe, process_before_every_sampling, base pass;
hires: [hires checkpoint reload], before_hr, process_before_every_sampling, forge_objects reset,
ToMe, process_before_every_sampling **again**, img2img pass with ``hr_cfg``. CFG 1 drops the
negative prompt (``uc = None``); hires CFG 1 drops ``hr_uc``. ``hr_cfg`` defaults to 1.0.
The ``p`` base class, ``Processed`` (and its ``js()``) and ``create_infotext`` are A1111's: the
A1111 fake's code.
"""

# ruff: noqa: F821 -- names defined by the A1111 fake's file executed below

from __future__ import annotations

import torch
import torch.nn.functional as F

from modules import sd_models, sd_samplers, shared
from modules.sd_models import apply_token_merging
from modules.sd_samplers_common import ImageRNG
from tests.forge.reuse import run_a1111_fake

run_a1111_fake("modules/processing.py", globals())
_A1111Processing = StableDiffusionProcessing


class StableDiffusionProcessing(_A1111Processing):
    def __init__(self, *, refiner_checkpoint=None, **kwargs):
        info = None if refiner_checkpoint is None else sd_models.CheckpointInfo(refiner_checkpoint)
        super().__init__(refiner_checkpoint_info=info, **kwargs)
        self.modified_noise = None
        self.sampler_noise_scheduler_override = None  # :233; k-diffusion get_sigmas calls it
        self.initial_noise_multiplier = 1.0

    def init(self):
        pass

    def setup_conds(self):
        self.c = prompt_parser.get_multicond_learned_conditioning(self.prompts)
        self.uc = (
            None if self.cfg_scale == 1 else prompt_parser.get_learned_conditioning(self.negative_prompts)
        )


class StableDiffusionProcessingTxt2Img(StableDiffusionProcessing):
    def __init__(
        self,
        *,
        enable_hr=False,
        hr_scale=2.0,
        hr_second_pass_steps=0,
        hr_sampler_name=None,
        hr_checkpoint_name=None,
        hr_cfg=1.0,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.enable_hr, self.hr_scale = enable_hr, hr_scale
        self.hr_second_pass_steps, self.hr_sampler_name = hr_second_pass_steps, hr_sampler_name
        self.hr_checkpoint_name = hr_checkpoint_name
        self.hr_cfg = hr_cfg
        self.hr_c = self.hr_uc = None
        self.hr_upscale_to_x = self.hr_upscale_to_y = 0

    def calculate_target_resolution(self):
        self.hr_upscale_to_x = int(self.width * self.hr_scale)
        self.hr_upscale_to_y = int(self.height * self.hr_scale)

    def setup_conds(self):
        super().setup_conds()
        if self.enable_hr:
            self.extra_generation_params["Hires CFG Scale"] = self.hr_cfg
            self.hr_c = self.c
            self.hr_uc = (
                None if self.hr_cfg == 1 else prompt_parser.get_learned_conditioning(self.negative_prompts)
            )

    def get_conds(self):
        return (self.hr_c, self.hr_uc) if self.is_hr_pass else super().get_conds()

    def sample(self, conditioning, unconditional_conditioning, seeds, subseeds, subseed_strength, prompts):
        self.sampler = sd_samplers.create_sampler(self.sampler_name, self.sd_model)
        x = self.rng.next()
        self.sd_model.forge_objects = self.sd_model.forge_objects_after_applying_lora.shallow_copy()
        apply_token_merging(self.sd_model, self.get_token_merging_ratio())
        if self.scripts is not None:
            self.scripts.process_before_every_sampling(
                p=self, x=x, noise=x, c=conditioning, uc=unconditional_conditioning
            )
        samples = self.sampler.sample(
            self,
            x,
            conditioning,
            unconditional_conditioning,
            image_conditioning=self.image_conditioning_for(x),
        )
        if not self.enable_hr:
            return samples
        if self.hr_checkpoint_name:
            first_pass = sd_models.model_data.forge_loading_parameters
            try:
                sd_models.select_checkpoint(self.hr_checkpoint_name)
                sd_models.forge_model_reload()
            finally:  # Forge restores the options, not the model (it stays until the next reload)
                sd_models.model_data.forge_loading_parameters = first_pass
        return self.sample_hr_pass(samples)

    def sample_hr_pass(self, samples):
        self.is_hr_pass = True
        self.sampler = sd_samplers.create_sampler(self.hr_sampler_name or self.sampler_name, self.sd_model)
        size = (self.hr_upscale_to_y // OPT_F, self.hr_upscale_to_x // OPT_F)
        samples = F.interpolate(samples, size=size, mode="nearest")
        self.rng = ImageRNG(samples.shape[1:], self.seeds)
        noise = self.rng.next()
        if self.scripts is not None:
            self.scripts.before_hr(self)
            self.scripts.process_before_every_sampling(
                p=self, x=samples, noise=noise, c=self.hr_c, uc=self.hr_uc
            )
        self.sd_model.forge_objects = self.sd_model.forge_objects_after_applying_lora.shallow_copy()
        apply_token_merging(self.sd_model, self.get_token_merging_ratio(for_hr=True))
        if self.scripts is not None:
            self.scripts.process_before_every_sampling(
                p=self, x=samples, noise=noise, c=self.hr_c, uc=self.hr_uc
            )
        samples = self.sampler.sample_img2img(
            self,
            samples,
            noise,
            self.hr_c,
            self.hr_uc,
            steps=self.hr_second_pass_steps or self.steps,
            image_conditioning=self.image_conditioning_for(samples),
        )
        self.sampler = None
        self.is_hr_pass = False
        return samples


class StableDiffusionProcessingImg2Img(StableDiffusionProcessing):
    """img2img as dfdcbab :1684-1880: the sampler is made once in ``init``; ``sample`` draws the
    noise, resets forge_objects, applies ToMe, runs process_before_every_sampling (noise = the
    tensor sample_img2img gets, unless a script set ``modified_noise``), samples, blends a mask."""

    def __init__(self, *, init_latent=None, latent_mask=None, **kwargs):
        super().__init__(**kwargs)
        self.init_latent = init_latent
        # mask = 1 where the original is kept, nmask = 1 where it is repainted.
        self.mask = None if latent_mask is None else 1.0 - latent_mask
        self.nmask = latent_mask
        self.image_conditioning = None

    def init(self):
        self.extra_generation_params["Denoising strength"] = self.denoising_strength
        self.image_cfg_scale = None
        self.sampler = sd_samplers.create_sampler(self.sampler_name, self.sd_model)
        self.image_conditioning = self.image_conditioning_for(self.init_latent)

    def image_conditioning_for(self, x):
        """img2img_image_conditioning (processing.py:360-367): inpainting engines (``is_inpaint``)
        get the mask (1 = repaint) and the latent of the picture with the masked area removed
        (inpainting_image_conditioning :321-358, mask weight 1; no VAE here: the init latent stands
        for the encoded picture); the sampler concatenates it to the latent (c_concat)."""
        if not getattr(self.sd_model, "is_inpaint", False):
            return super().image_conditioning_for(x)
        init = self.init_latent
        mask = init.new_ones(1, 1, *init.shape[-2:]) if self.nmask is None else self.nmask[:, :1]
        mask = torch.round(mask).expand(init.shape[0], 1, *init.shape[-2:])
        return torch.cat([mask, init * (1.0 - mask)], dim=1)

    def sample(self, conditioning, unconditional_conditioning, seeds, subseeds, subseed_strength, prompts):
        x = self.rng.next()
        if self.initial_noise_multiplier != 1.0:
            self.extra_generation_params["Noise multiplier"] = self.initial_noise_multiplier
            x *= self.initial_noise_multiplier
        self.sd_model.forge_objects = self.sd_model.forge_objects_after_applying_lora.shallow_copy()
        apply_token_merging(self.sd_model, self.get_token_merging_ratio())
        if self.scripts is not None:
            self.scripts.process_before_every_sampling(
                p=self, x=self.init_latent, noise=x, c=conditioning, uc=unconditional_conditioning
            )
        if self.modified_noise is not None:
            x = self.modified_noise
            self.modified_noise = None
        samples = self.sampler.sample_img2img(
            self,
            self.init_latent,
            x,
            conditioning,
            unconditional_conditioning,
            image_conditioning=self.image_conditioning,
        )
        if self.mask is not None:
            blended = samples * self.nmask + self.init_latent * self.mask
            if self.scripts is not None:
                from modules import scripts

                mba = scripts.MaskBlendArgs(samples, self.nmask, self.init_latent, self.mask, blended)
                self.scripts.on_mask_blend(self, mba)
                blended = mba.blended_latent
            samples = blended
        return samples


def process_images(p) -> Processed:
    stored = {k: shared.opts.data.get(k) for k in p.override_settings}
    for k, v in p.override_settings.items():
        shared.opts.set(k, v)
    try:
        sd_models.forge_model_reload()
        return _process_images_inner(p)
    finally:
        for k, v in stored.items():
            shared.opts.data[k] = v


def _process_images_inner(p) -> Processed:
    count = p.n_iter * p.batch_size
    p.all_seeds = [int(p.seed) + i for i in range(count)]
    p.all_prompts = [p.prompt] * count
    p.all_negative_prompts = [p.negative_prompt] * count
    p.sd_model.extra_generation_params = {}
    if p.scripts is not None:
        p.scripts.process(p)
    p.init()
    if getattr(p, "enable_hr", False):
        p.calculate_target_resolution()  # in p.init(), after the scripts' process()
    images, infotexts = [], []
    for n in range(p.n_iter):
        p.iteration = n
        sd_models.forge_model_reload()
        p.sd_model.forge_objects = p.sd_model.forge_objects_original.shallow_copy()
        batch = slice(n * p.batch_size, (n + 1) * p.batch_size)
        p.prompts, p.negative_prompts, p.seeds = (
            p.all_prompts[batch],
            p.all_negative_prompts[batch],
            p.all_seeds[batch],
        )
        p.rng = ImageRNG((LATENT_CHANNELS, p.height // OPT_F, p.width // OPT_F), p.seeds)
        if p.scripts is not None:
            p.scripts.process_batch(p, batch_number=n, prompts=p.prompts, seeds=p.seeds, subseeds=p.seeds)
        p.sd_model.forge_objects = p.sd_model.forge_objects_after_applying_lora.shallow_copy()
        p.setup_conds()
        with torch.no_grad():
            samples = p.sample(
                conditioning=p.c,
                unconditional_conditioning=p.uc,
                seeds=p.seeds,
                subseeds=p.seeds,
                subseed_strength=0.0,
                prompts=p.prompts,
            )
        for i in range(samples.shape[0]):
            images.append(samples[i])
            infotexts.append(create_infotext(p, n * p.batch_size + i))
    res = Processed(
        p,
        images_list=images,
        seed=p.all_seeds[0],
        info=infotexts[0] if infotexts else "",
        subseed=p.all_seeds[0],
        infotexts=infotexts,
    )
    if p.scripts is not None:
        p.scripts.postprocess(p, res)
    return res
