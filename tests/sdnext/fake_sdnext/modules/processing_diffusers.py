"""SD.Next's diffusers processing (modules/processing_diffusers.py@058a7f0c:71-365, :560-659), reduced.

Each sampling pass (base, hires) is:
``update_sampler`` -> ``process_pre(p)`` (SD.Next's own HiDiffusion ``apply``, PAG's pipeline swap,
modular conversion) -> base pass: extra networks parsed out of the prompts and activated (:150-151)
-> ``set_pipeline_args`` -> ``shared.sd_model(**args)`` -> ``process_post(p)``
in a ``finally`` (HiDiffusion ``unapply``, PAG restore). AssertionError (interrupt), ValueError and
RuntimeError raised by the pipeline are caught and set ``shared.state.interrupted``; other
exceptions propagate. The hires pass sets ``p.is_hr_pass``, switches to an img2img pipeline (same
UNet) and builds the hires sampler before its ``process_pre``.
"""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

from modules import errors, extra_networks, processing_vae, sd_models, shared
from modules.logger import log
from modules.processing_args import set_pipeline_args
from modules.processing_helpers import (
    calculate_base_steps,
    calculate_hires_steps,
    resize_hires,
    update_sampler,
)

output_type = "latent"
calls: list[dict[str, Any]] = []  # (fake only) the arguments of every pipeline call, for oracle runs


def process_pre(p: Any) -> None:
    from modules import hidiffusion, modular, pag

    try:
        hidiffusion.apply(p, shared.sd_model_type)
        pag.apply(p)
    except Exception as e:
        log.error(f"Processing apply: {e}")
        errors.display(e, "apply")
    if modular.is_compatible(shared.sd_model):
        shared.sd_model = modular.convert_to_modular(shared.sd_model)
    if modular.is_guider(shared.sd_model):
        from modules import modular_guiders

        modular_guiders.set_guider(p)


def process_post(p: Any) -> None:
    from modules import hidiffusion, pag

    try:
        hidiffusion.unapply()
        pag.unapply()
    except Exception as e:
        log.error(f"Processing unapply: {e}")
        errors.display(e, "unapply")


def _run(p: Any, args: dict, step: str) -> Any:
    calls.append({"pipe": shared.sd_model, "step": step, **args})
    try:
        output = shared.sd_model(**args)
        return SimpleNamespace(images=output.images)
    except AssertionError as e:
        log.info(e)
    except (ValueError, RuntimeError) as e:
        shared.state.interrupted = True
        log.error(f"Processing: step={step} {e}")
        errors.display(e, "Processing")
    return None


def process_base(p: Any) -> Any:
    shared.state.begin("Base")
    update_sampler(p, shared.sd_model)
    process_pre(p)
    p.prompts, p.network_data = extra_networks.parse_prompts(p.prompts, p.network_data)  # :150-151
    extra_networks.activate_filtered(p)
    args = set_pipeline_args(
        p=p,
        model=shared.sd_model,
        prompts=p.prompts,
        negative_prompts=p.negative_prompts,
        num_inference_steps=calculate_base_steps(p),
        eta=p.scheduler_eta if p.scheduler_eta is not None else shared.opts.scheduler_eta,
        guidance_scale=p.cfg_scale if p.cfg_scale is not None and p.cfg_scale > -1 else None,
        guidance_rescale=p.cfg_rescale if p.cfg_rescale is not None and p.cfg_rescale > -1 else None,
        output_type=output_type,
        desc="Base",
    )
    shared.state.update("Base", args.get("num_inference_steps", p.steps), 1)
    try:
        output = _run(p, args, "base")
    finally:
        process_post(p)
    return output


def process_hires(p: Any, output: Any) -> Any:
    if output is None or not p.enable_hr:
        return output
    p.is_hr_pass = True
    p.init_hr(p.hr_scale, p.hr_upscaler, force=p.hr_force)
    output.images = resize_hires(p, output.images)
    strength = p.hr_denoising_strength if p.hr_denoising_strength > 0 else p.denoising_strength
    if p.hr_upscaler.lower().startswith("latent") and strength > 0:
        p.ops.append("hires")
        p.hr_force = True
    if p.hr_force:
        shared.sd_model = sd_models.set_diffuser_pipe(
            shared.sd_model, sd_models.DiffusersTaskType.IMAGE_2_IMAGE
        )
        update_sampler(p, shared.sd_model, second_pass=True)
        orig_denoise, p.denoising_strength = p.denoising_strength, strength
        process_pre(p)
        args = set_pipeline_args(
            p=p,
            model=shared.sd_model,
            prompts=p.prompts,
            negative_prompts=p.negative_prompts,
            num_inference_steps=calculate_hires_steps(p),
            eta=p.scheduler_eta if p.scheduler_eta is not None else shared.opts.scheduler_eta,
            guidance_scale=p.cfg_image if p.cfg_image is not None and p.cfg_image > -1 else p.cfg_scale,
            output_type=output_type,
            image=output.images,
            strength=strength,
            desc="Hires",
        )
        try:
            output = _run(p, args, "hires")
        finally:
            process_post(p)
        p.denoising_strength = orig_denoise
    p.is_hr_pass = False
    return output


def process_decode(p: Any, output: Any) -> list:
    if output is None or output.images is None:
        return []
    return processing_vae.vae_decode(output.images, shared.sd_model)


def process_diffusers(p: Any) -> list:
    orig_pipeline = shared.sd_model
    output = process_base(p)
    if shared.state.interrupted or shared.state.skipped:
        shared.sd_model = orig_pipeline
        return []
    output = process_hires(p, output)
    if shared.state.interrupted or shared.state.skipped:
        shared.sd_model = orig_pipeline
        return []
    extra_networks.deactivate(p)  # :647
    results = process_decode(p, output)
    shared.sd_model = orig_pipeline
    return results
