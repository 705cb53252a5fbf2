"""SchedulerClock: (step, total) of each UNet call, read from the pipeline's own scheduler.

Expected values are the official HiDiffusion's: call index i out of N = pipeline._num_timesteps
(the steps actually run; 2N−1 entries for Heun), counted independently here from the pipeline's
own loop (its `_num_timesteps` and the number of UNet calls).
"""

from __future__ import annotations

import pytest
import torch

from lib_hidiff.diffusers import SchedulerClock

from . import pipes


def _record(pipe, run) -> tuple[list[tuple[int, int]], int]:
    """Run `run()`; return the clock value seen inside each UNet call, and pipe._num_timesteps."""
    seen: list[tuple[int, int]] = []
    clock = SchedulerClock(pipe).attach(pipe.unet)
    # conv_in runs inside UNet.forward, after the clock's pre-hook: what HiDiffusion's patches see.
    probe = pipe.unet.conv_in.register_forward_pre_hook(lambda m, a: seen.append(clock()))
    try:
        run()
    finally:
        probe.remove()
        clock.detach()
    return seen, pipe._num_timesteps


def _txt2img(pipe, steps):
    cond, uncond = pipes.embeds()
    return lambda: pipe(
        prompt_embeds=cond,
        negative_prompt_embeds=uncond,
        num_inference_steps=steps,
        guidance_scale=3.0,
        output_type="latent",
        height=16,
        width=16,
        generator=torch.Generator().manual_seed(0),
    )


def _img2img(pipe, steps, strength):
    cond, uncond = pipes.embeds()
    return lambda: pipe(
        prompt_embeds=cond,
        negative_prompt_embeds=uncond,
        image=pipes.latents(seed=9),
        strength=strength,
        num_inference_steps=steps,
        guidance_scale=3.0,
        output_type="latent",
        generator=torch.Generator().manual_seed(0),
    )


SCHEDULERS = [
    "EulerDiscreteScheduler",  # step_index from scale_model_input
    "DPMSolverMultistepScheduler",  # no step_index before its first step
    "DDIMScheduler",  # no step_index, no begin_index on diffusers 0.27
    "HeunDiscreteScheduler",  # second order: timesteps repeated, 2N-1 UNet calls
    "KDPM2AncestralDiscreteScheduler",  # second order with interleaved midpoint timesteps
]


@pytest.mark.parametrize("name", SCHEDULERS)
def test_txt2img(sd_pipe, fresh_scheduler, name):
    sd_pipe.scheduler = pipes.scheduler(name)
    seen, n = _record(sd_pipe, _txt2img(sd_pipe, 5))
    assert n == len(sd_pipe.scheduler.timesteps)
    assert seen == [(i, n) for i in range(n)]
    if name.startswith(("Heun", "KDPM2")):
        assert n == 2 * 5 - 1


@pytest.mark.parametrize("name", SCHEDULERS)
def test_img2img_strength_half(sd_img2img, fresh_scheduler, name):
    sd_img2img.scheduler = pipes.scheduler(name)
    seen, n = _record(sd_img2img, _img2img(sd_img2img, 8, 0.5))
    runs = len(sd_img2img.scheduler.timesteps) - (8 - int(8 * 0.5)) * sd_img2img.scheduler.order
    assert n == runs and len(seen) == n
    assert seen == [(i, n) for i in range(n)]


def test_split_calls_per_step_share_the_step(unet):
    """Cond and uncond in two UNet calls per step (as some hosts do) give the same step twice."""
    scheduler = pipes.scheduler("DPMSolverMultistepScheduler")

    class Pipe:
        pass

    pipe = Pipe()
    pipe.scheduler, pipe.unet = scheduler, unet
    cond, uncond = pipes.embeds()
    seen = []
    clock = SchedulerClock(pipe).attach(unet)
    probe = unet.conv_in.register_forward_pre_hook(lambda m, a: seen.append(clock()))
    try:
        scheduler.set_timesteps(4)
        x = pipes.latents()
        with torch.no_grad():
            for t in scheduler.timesteps:
                e_u = unet(x, t, encoder_hidden_states=uncond).sample
                e_c = unet(x, t, encoder_hidden_states=cond).sample
                x = scheduler.step(e_u + 3 * (e_c - e_u), t, x).prev_sample
    finally:
        probe.remove()
        clock.detach()
    assert seen == [(i // 2, 4) for i in range(8)]  # no _num_timesteps on this object: 4 from the scheduler
    assert not unet._forward_pre_hooks and not unet.conv_in._forward_pre_hooks
