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
module arms the pass's scheduler: the pipeline's one ``add_noise`` (the img2img start, inside the
pass's own call, so after ``extra_networks.activate_filtered`` and SD.Next's prompt parsing,
processing_diffusers.py:150-172) first builds the pass's arguments for the *source* prompt with
SD.Next's own ``set_pipeline_args`` (the negative prompt, steps, strength, CFG, generators and
task args are the pass's), runs ``lib_hidiff.diffusers.invert_cfgpp`` with them on the same
pipeline and scheduler (its probe reads the image latent, the begin timestep and the
``[uncond, cond]`` conditioning; the inversion runs over the scheduler's sigmas from the begin
index, with uncond from the same UNet batch as cond), and returns the inverted latent instead of
image + noise. What SD.Next's own state that call touches (``p.ops``, infotext entries, the prompt
embedder the step callback reads for scheduled prompts) is put back. ``process_post`` disarms it.
Anything the inversion cannot serve: one line, and the pass is a plain img2img.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import Any

from ..inversion import EXTRA_NETWORK

__all__ = ["open_inversion"]

_CALLBACK_ARGS = ("callback_on_step_end", "callback_on_step_end_tensor_inputs", "callback", "callback_steps")


class _Skip(Exception):
    """The inversion cannot serve this pass (one line)."""


def open_inversion(p: Any, pipe: Any, unet: Any) -> Callable[[], Any] | None:
    """Arm the pass's img2img start with the inversion; returns the undo (or None: nothing armed)."""
    from .. import inversion

    a = getattr(p, inversion.P_ARGS, None)
    if a is None or not a.enabled or getattr(p, "is_hr_pass", False) or "detailer" in (p.ops or ()):
        return None
    reason = _refusal(p, pipe, unet)
    if reason is not None:
        _give_up(p, reason)
        return None
    scheduler = pipe.scheduler
    original = scheduler.add_noise
    had_own = "add_noise" in vars(scheduler)
    state = {"armed": True}

    def add_noise(samples, noise, timesteps, *args, **kwargs):
        if not state["armed"]:
            return original(samples, noise, timesteps, *args, **kwargs)
        state["armed"] = False  # once; the inversion's own probe passes through here too
        try:
            latents, lam = _invert(p, a, pipe)
            if tuple(latents.shape) != tuple(samples.shape):
                raise _Skip(f"the inverted latent {tuple(latents.shape)} does not fit {tuple(samples.shape)}")
        except Exception as e:  # never break SD.Next's pass: one line, plain img2img
            _give_up(p, e if isinstance(e, (_Skip, ValueError)) else f"{type(e).__name__}: {e}")
            return original(samples, noise, timesteps, *args, **kwargs)
        from .. import inversion_infotext

        p.extra_generation_params[inversion_infotext.LAMBDA] = round(lam, 4)
        return latents.to(device=samples.device, dtype=samples.dtype)

    scheduler.add_noise = add_noise

    def undo() -> None:
        state["armed"] = False
        if vars(scheduler).get("add_noise") is add_noise:
            if had_own:
                scheduler.add_noise = original
            else:
                del scheduler.add_noise

    return undo


def _give_up(p: Any, reason: Any) -> None:
    from .. import inversion, inversion_infotext
    from ..inversion_args import OWNER
    from ..messages import note

    text = str(reason)
    text = text[len(OWNER) + 2 :] if text.startswith(f"{OWNER}: ") else text
    note(p, f"{OWNER}: {text}; generating without {OWNER}")
    inversion_infotext.remove(p.extra_generation_params)
    setattr(p, inversion.P_ARGS, None)  # once per generation, not once per batch


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
    parser = sys.modules.get("modules.prompt_parser_diffusers")  # its embedder serves the pass's steps
    embedder = getattr(parser, "embedder", None)
    source = EXTRA_NETWORK.sub("", a.source_prompt)  # the pass's prompts are parsed by now
    try:
        # As process_base builds the pass's arguments (processing_diffusers.py:152-172), with the
        # source prompt; SD.Next's side effects on p (ops, infotext entries) are put back.
        args = set_pipeline_args(
            p=p,
            model=pipe,
            prompts=[source] * n,
            negative_prompts=p.negative_prompts,
            prompts_2=[p.refiner_prompt] if getattr(p, "refiner_prompt", "") else [source] * n,
            negative_prompts_2=(
                [p.refiner_negative] if getattr(p, "refiner_negative", "") else p.negative_prompts
            ),
            prompt_attention=getattr(p, "prompt_attention", None),
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
        if parser is not None:
            parser.embedder = embedder
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
        progress_bar=False,  # SD.Next shows the inversion in its own bar (Host.inversion_job)
        **args,
    )
    return latents, lam
