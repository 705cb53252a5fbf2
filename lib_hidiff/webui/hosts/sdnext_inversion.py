"""CFG++ inversion on SD.Next's img2img pass (the SD.Next adapter's part of webui/inversion.py).

SD.Next (vladmandic/sdnext 058a7f0c) runs img2img as one diffusers img2img pipeline call:
``StableDiffusionProcessingImg2Img.init`` switches ``shared.sd_model`` to the task's pipeline
(processing_class.py:746-760), ``process_base`` then runs ``update_sampler`` -> ``process_pre(p)``
-> ``set_pipeline_args(...)`` -> ``shared.sd_model(**base_args)`` (processing_diffusers.py:136-175),
and the arguments carry ``image`` = ``p.init_images`` and ``strength`` = ``p.denoising_strength``
(processing_args.py:61-75, ``task_specific_kwargs``) with ``(steps // strength) + 1`` inference
steps (processing_helpers.py:451-473). The pipeline itself encodes the image, sets the scheduler's
timesteps and begin index and adds the noise (diffusers' img2img ``prepare_latents``).

At the end of the base pass's ``process_pre`` (the adapter's wrapper, after CFG++ is set up) this
module builds the pass's arguments for the *source* prompt with SD.Next's own
``set_pipeline_args`` (so the source prompt goes through SD.Next's prompt parser, and the negative
prompt, steps, strength, CFG, generators and task args are the pass's), runs
``lib_hidiff.diffusers.invert_cfgpp`` with them on the pass's pipeline and scheduler (its probe
reads the image latent, begin timestep and ``[uncond, cond]`` conditioning from the pipeline; the
inversion uses the scheduler's sigmas from the begin index and uncond from the same UNet batch),
and attaches the inverted latent as the pass's start (``attach_start``: the pipeline's one
``add_noise`` returns it). ``process_post`` takes it off. Anything the inversion cannot serve: one
line, and the pass is a plain img2img.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

__all__ = ["open_inversion"]

_CALLBACK_ARGS = ("callback_on_step_end", "callback_on_step_end_tensor_inputs", "callback", "callback_steps")


class _Skip(Exception):
    """The inversion cannot serve this pass (one line)."""


def open_inversion(p: Any, pipe: Any, unet: Any) -> Callable[[], Any] | None:
    """Invert the pass's init images and make the pass start there; returns the undo (or None)."""
    from .. import inversion, inversion_infotext
    from ..inversion_args import OWNER
    from ..messages import note

    a = getattr(p, inversion.P_ARGS, None)
    if a is None or not a.enabled or getattr(p, "is_hr_pass", False) or "detailer" in (p.ops or ()):
        return None
    from lib_hidiff.diffusers.inversion import attach_start

    try:
        reason = _refusal(p, pipe, unet)
        if reason is not None:
            raise _Skip(reason)
        latents, lam = _invert(p, a, pipe)
    except (_Skip, ValueError, RuntimeError) as e:
        text = str(e)
        text = text[len(OWNER) + 2 :] if text.startswith(f"{OWNER}: ") else text
        note(p, f"{OWNER}: {text}; generating without {OWNER}")
        inversion_infotext.remove(p.extra_generation_params)
        setattr(p, inversion.P_ARGS, None)  # once per generation, not once per batch
        return None
    p.extra_generation_params[inversion_infotext.LAMBDA] = round(lam, 4)
    return attach_start(pipe, latents)


def _refusal(p: Any, pipe: Any, unet: Any) -> str | None:
    import inspect

    if unet is None:
        return "this model has no UNet"
    name = type(pipe).__name__
    if "Modular" in name or "PAG" in name:
        return f"{name} does not run plain [uncond, cond] UNet batches"
    try:
        params = inspect.signature(type(pipe).__call__).parameters
    except (TypeError, ValueError):
        params = {}
    if "image" not in params or "strength" not in params or "Inpaint" in name:
        return f"{name} is not an img2img pipeline (inpainting is not covered)"
    refiner_start = getattr(p, "refiner_start", 0) or 0
    if 0 < refiner_start < 1:
        return "a denoising start (refiner start) adds no noise to invert"
    if not getattr(p, "init_images", None):
        return "no init image"
    return None


def _invert(p: Any, a: Any, pipe: Any) -> tuple[Any, float]:
    from modules import processing_helpers, shared
    from modules.processing_args import set_pipeline_args

    from lib_hidiff.diffusers.inversion import invert_cfgpp

    from .. import samplers

    lam, _ = samplers.lambda_for(p, a.cfg_scale or float(p.cfg_scale))
    n = max(len(p.prompts or ()), 1)
    eta = p.scheduler_eta if p.scheduler_eta is not None else getattr(shared.opts, "scheduler_eta", None)
    ops, params = list(p.ops), dict(p.extra_generation_params)
    try:
        # As process_base builds the pass's arguments (processing_diffusers.py:152-172), with the
        # source prompt; SD.Next's side effects on p (ops, infotext entries) are put back.
        args = set_pipeline_args(
            p=p,
            model=pipe,
            prompts=[a.source_prompt] * n,
            negative_prompts=p.negative_prompts,
            num_inference_steps=processing_helpers.calculate_base_steps(
                p, use_denoise_start=False, use_refiner_start=False
            ),
            eta=eta,
            guidance_scale=p.cfg_scale if p.cfg_scale is not None and p.cfg_scale > -1 else None,
            output_type="latent",
            clip_skip=p.clip_skip,
            desc="CFG++ inversion",
        )
    finally:
        p.ops[:] = ops
        p.extra_generation_params.clear()
        p.extra_generation_params.update(params)
    for key in _CALLBACK_ARGS:
        args.pop(key, None)  # nothing steps: the probe stops at the first UNet call
    image, strength = args.pop("image", None), args.pop("strength", None)
    steps = args.pop("num_inference_steps", None)
    if image is None or strength is None or steps is None:
        raise _Skip("the pass has no image / strength / steps to invert over")
    prompt, negative = args.pop("prompt", None), args.pop("negative_prompt", None)
    latents = invert_cfgpp(
        pipe,
        image,
        prompt,
        negative,
        num_inference_steps=int(steps),
        strength=float(strength),
        scale=lam,
        iterations=a.iterations,
        **args,
    )
    return latents, lam
