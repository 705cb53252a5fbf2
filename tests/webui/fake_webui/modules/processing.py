"""modules.processing: the processing object ``p`` and process_images, in the 1.10 hook order.

process -> per batch: seeds, process_batch, conds, p.sample -> (txt2img) process_before_every_sampling,
base sampling, [hires: before_hr, process_before_every_sampling, img2img sampling] -> postprocess.
As in the WebUI, an exception inside p.sample skips postprocess.
"""

from __future__ import annotations

import json

import torch
import torch.nn.functional as F

from modules import infotext_utils, prompt_parser, sd_models, sd_samplers, shared
from modules.sd_samplers_common import ImageRNG

LATENT_CHANNELS, OPT_F = 4, 8


class StableDiffusionProcessing:
    def __init__(
        self,
        prompt="a cat",
        negative_prompt="",
        seed=1,
        steps=4,
        cfg_scale=7.0,
        width=512,
        height=512,
        sampler_name="Euler",
        scheduler="Automatic",
        batch_size=1,
        n_iter=1,
        scripts=None,
        script_args=None,
        denoising_strength=0.75,
        eta=None,
        override_settings=None,
        token_merging_ratio=0.0,
        refiner_checkpoint_info=None,
        refiner_switch_at=None,
    ):
        self.prompt, self.negative_prompt = prompt, negative_prompt
        self.seed, self.steps, self.cfg_scale = seed, steps, cfg_scale
        self.width, self.height = width, height
        self.sampler_name, self.scheduler = sampler_name, scheduler
        self.hr_scheduler = None
        self.batch_size, self.n_iter = batch_size, n_iter
        self.scripts, self.script_args = scripts, list(script_args or [])
        self.denoising_strength, self.eta = denoising_strength, eta
        self.override_settings = dict(override_settings or {})
        self.token_merging_ratio, self.token_merging_ratio_hr = token_merging_ratio, 0.0
        self.refiner_checkpoint_info, self.refiner_switch_at = refiner_checkpoint_info, refiner_switch_at
        self.extra_generation_params: dict = {}
        self.comments: dict = {}
        self.is_hr_pass = False
        self.s_min_uncond = 0.0
        self.s_churn, self.s_tmin, self.s_tmax, self.s_noise = 0.0, 0.0, float("inf"), 1.0
        self.image_cfg_scale = None
        self.sampler = None
        self.all_seeds = self.seeds = None

    @property
    def sd_model(self):
        return shared.sd_model

    def comment(self, text):
        self.comments[text] = 1

    def get_token_merging_ratio(self, for_hr=False):
        if for_hr:
            return (
                self.token_merging_ratio_hr
                or shared.opts.token_merging_ratio_hr
                or self.token_merging_ratio
                or shared.opts.token_merging_ratio
            )
        return self.token_merging_ratio or shared.opts.token_merging_ratio

    def get_conds(self):
        return self.c, self.uc

    def image_conditioning_for(self, x):
        return x.new_zeros(x.shape[0], 5, 1, 1)


class StableDiffusionProcessingTxt2Img(StableDiffusionProcessing):
    def __init__(
        self,
        *,
        enable_hr=False,
        hr_scale=2.0,
        hr_second_pass_steps=0,
        hr_sampler_name=None,
        hr_checkpoint_info=None,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.enable_hr, self.hr_scale = enable_hr, hr_scale
        self.hr_second_pass_steps, self.hr_sampler_name = hr_second_pass_steps, hr_sampler_name
        self.hr_checkpoint_info = hr_checkpoint_info
        self.hr_upscale_to_x = self.hr_upscale_to_y = 0

    def calculate_target_resolution(self):
        # 1.10: the size the hires pass samples at (only "Upscale by" here; no "Resize width/height to")
        self.hr_upscale_to_x = int(self.width * self.hr_scale)
        self.hr_upscale_to_y = int(self.height * self.hr_scale)

    def sample(self, conditioning, unconditional_conditioning, seeds, subseeds, subseed_strength, prompts):
        self.sampler = sd_samplers.create_sampler(self.sampler_name, self.sd_model)
        x = self.rng.next()
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
        sd_models.reload_model_weights(info=self.hr_checkpoint_info)
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
            self.scripts.process_before_every_sampling(p=self, x=samples, noise=noise, c=self.c, uc=self.uc)
        samples = self.sampler.sample_img2img(
            self,
            samples,
            noise,
            self.c,
            self.uc,
            steps=self.hr_second_pass_steps or self.steps,
            image_conditioning=self.image_conditioning_for(samples),
        )
        self.sampler = None
        self.is_hr_pass = False
        return samples


class StableDiffusionProcessingImg2Img(StableDiffusionProcessing):
    def __init__(self, *, init_latent=None, latent_mask=None, **kwargs):
        super().__init__(**kwargs)
        self.init_latent = init_latent
        # As the WebUI: mask = 1 where the original is kept, nmask = 1 where it is repainted.
        self.mask = None if latent_mask is None else 1.0 - latent_mask
        self.nmask = latent_mask

    def image_conditioning_for(self, x):
        """1.10 img2img_image_conditioning: inpainting models ("hybrid") get the mask (1 = repaint)
        and the latent of the picture with the masked area removed (inpainting_image_conditioning,
        mask weight 1; the fake has no VAE, so the init latent stands for the encoded picture)."""
        if getattr(getattr(self.sd_model, "model", None), "conditioning_key", None) not in (
            "hybrid",
            "concat",
        ):
            return super().image_conditioning_for(x)
        init = self.init_latent
        mask = init.new_ones(1, 1, *init.shape[-2:]) if self.nmask is None else self.nmask[:, :1]
        mask = torch.round(mask).expand(init.shape[0], 1, *init.shape[-2:])
        return torch.cat([mask, init * (1.0 - mask)], dim=1)

    def sample(self, conditioning, unconditional_conditioning, seeds, subseeds, subseed_strength, prompts):
        self.sampler = sd_samplers.create_sampler(self.sampler_name, self.sd_model)
        self.image_conditioning = self.image_conditioning_for(self.init_latent)  # 1.10: in init()
        x = self.rng.next()
        if self.scripts is not None:
            self.scripts.process_before_every_sampling(
                p=self, x=self.init_latent, noise=x, c=conditioning, uc=unconditional_conditioning
            )
        samples = self.sampler.sample_img2img(
            self,
            self.init_latent,
            x,
            conditioning,
            unconditional_conditioning,
            image_conditioning=self.image_conditioning,
        )
        if self.mask is not None:
            samples = samples * self.nmask + self.init_latent * self.mask
        return samples


class Processed:
    """The 1.10 result object: what the UI shows, and ``js()``, the API response's ``info``."""

    def __init__(
        self,
        p,
        images_list,
        seed=-1,
        info="",
        subseed=None,
        all_prompts=None,
        all_negative_prompts=None,
        all_seeds=None,
        all_subseeds=None,
        index_of_first_image=0,
        infotexts=None,
        comments="",
    ):
        self.images = images_list
        self.prompt, self.negative_prompt = p.prompt, p.negative_prompt
        self.seed, self.subseed = seed, subseed if subseed is not None else -1
        self.subseed_strength = getattr(p, "subseed_strength", 0.0)
        self.info = info
        self.comments = "".join(f"{c}\n" for c in p.comments)  # shown under the image, not in js()
        self.width, self.height = p.width, p.height
        self.sampler_name, self.cfg_scale, self.steps = p.sampler_name, p.cfg_scale, p.steps
        self.batch_size = p.batch_size
        self.restore_faces, self.face_restoration_model = False, None
        self.sd_model_name = self.sd_model_hash = self.sd_vae_name = self.sd_vae_hash = None
        self.seed_resize_from_w = self.seed_resize_from_h = -1
        self.denoising_strength = getattr(p, "denoising_strength", None)
        self.extra_generation_params = p.extra_generation_params  # the same dict as p's
        self.index_of_first_image = index_of_first_image
        self.styles = []
        self.job_timestamp = "20240727000000"
        self.clip_skip = 1
        self.is_using_inpainting_conditioning = False
        self.all_prompts = all_prompts or getattr(p, "all_prompts", None) or [self.prompt]
        self.all_negative_prompts = (
            all_negative_prompts or getattr(p, "all_negative_prompts", None) or [self.negative_prompt]
        )
        self.all_seeds = all_seeds or p.all_seeds or [self.seed]
        self.all_subseeds = all_subseeds or getattr(p, "all_subseeds", None) or [self.subseed]
        self.infotexts = infotexts or [info] * len(images_list)
        self.version = "v1.10.1"

    def js(self):
        # The keys of 1.10.1's Processed.js(), in its order; values JSON can't write become null.
        obj = {
            "prompt": self.all_prompts[0],
            "all_prompts": self.all_prompts,
            "negative_prompt": self.all_negative_prompts[0],
            "all_negative_prompts": self.all_negative_prompts,
            "seed": self.seed,
            "all_seeds": self.all_seeds,
            "subseed": self.subseed,
            "all_subseeds": self.all_subseeds,
            "subseed_strength": self.subseed_strength,
            "width": self.width,
            "height": self.height,
            "sampler_name": self.sampler_name,
            "cfg_scale": self.cfg_scale,
            "steps": self.steps,
            "batch_size": self.batch_size,
            "restore_faces": self.restore_faces,
            "face_restoration_model": self.face_restoration_model,
            "sd_model_name": self.sd_model_name,
            "sd_model_hash": self.sd_model_hash,
            "sd_vae_name": self.sd_vae_name,
            "sd_vae_hash": self.sd_vae_hash,
            "seed_resize_from_w": self.seed_resize_from_w,
            "seed_resize_from_h": self.seed_resize_from_h,
            "denoising_strength": self.denoising_strength,
            "extra_generation_params": self.extra_generation_params,
            "index_of_first_image": self.index_of_first_image,
            "infotexts": self.infotexts,
            "styles": self.styles,
            "job_timestamp": self.job_timestamp,
            "clip_skip": self.clip_skip,
            "is_using_inpainting_conditioning": self.is_using_inpainting_conditioning,
            "version": self.version,
        }
        return json.dumps(obj, default=lambda o: None)


def create_infotext(p, index=0):
    # 1.10 calls a callable value with its locals (p, index, ...) and leaves out None values.
    params = {
        "Steps": p.steps,
        "Sampler": p.sampler_name,
        "Schedule type": p.scheduler,
        "CFG scale": p.cfg_scale,
        "Seed": p.all_seeds[index],
        "Size": f"{p.width}x{p.height}",
        **p.extra_generation_params,
    }
    for key, value in list(params.items()):
        if callable(value):
            params[key] = value(p=p, index=index)
    text = ", ".join(
        k if k == v else f"{k}: {infotext_utils.quote(v)}" for k, v in params.items() if v is not None
    )
    negative = f"\nNegative prompt: {p.negative_prompt}" if p.negative_prompt else ""
    return f"{p.prompt}{negative}\n{text}"


def process_images(p) -> Processed:
    stored = {k: shared.opts.data.get(k) for k in p.override_settings}
    for k, v in p.override_settings.items():
        shared.opts.set(k, v)
    try:
        return _process_images_inner(p)
    finally:
        for k, v in stored.items():
            shared.opts.data[k] = v


def _process_images_inner(p) -> Processed:
    count = p.n_iter * p.batch_size
    p.all_seeds = [int(p.seed) + i for i in range(count)]
    p.all_prompts = [p.prompt] * count
    p.all_negative_prompts = [p.negative_prompt] * count
    if p.scripts is not None:
        p.scripts.process(p)
    if getattr(p, "enable_hr", False):
        p.calculate_target_resolution()  # 1.10: in p.init(), after the scripts' process()
    images, infotexts = [], []
    for n in range(p.n_iter):
        p.iteration = n
        sd_models.reload_model_weights()
        batch = slice(n * p.batch_size, (n + 1) * p.batch_size)
        p.prompts, p.negative_prompts, p.seeds = (
            p.all_prompts[batch],
            p.all_negative_prompts[batch],
            p.all_seeds[batch],
        )
        p.rng = ImageRNG((LATENT_CHANNELS, p.height // OPT_F, p.width // OPT_F), p.seeds)
        if p.scripts is not None:
            p.scripts.process_batch(p, batch_number=n, prompts=p.prompts, seeds=p.seeds, subseeds=p.seeds)
        p.c = prompt_parser.get_multicond_learned_conditioning(p.prompts)
        p.uc = prompt_parser.get_learned_conditioning(p.negative_prompts)
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
        index_of_first_image=0,
        infotexts=infotexts,
    )
    if p.scripts is not None:
        p.scripts.postprocess(p, res)
    return res
