"""When a step has no [uncond, cond] batch, a CFG++ scheduler takes its base step, with one warning.

Also: cfgpp(pipe) puts back the exact scheduler object and leaves no hook, after an exception too.
"""

from __future__ import annotations

import logging

import diffusers
import pytest
import torch

from lib_hidiff.diffusers import UNetOutputCapture, cfgpp, make_cfgpp_scheduler

from . import pipes

STEPS = 4
LOGGER = "lib_hidiff.diffusers"


def _warnings(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == LOGGER and r.levelno == logging.WARNING]


def _run(pipe, guidance_scale=5.0, **kwargs):
    cond, uncond = pipes.embeds()
    return pipe(
        prompt_embeds=cond,
        negative_prompt_embeds=uncond,
        num_inference_steps=STEPS,
        guidance_scale=guidance_scale,
        output_type="latent",
        latents=pipes.latents(),
        height=16,
        width=16,
        generator=torch.Generator().manual_seed(4),
        **kwargs,
    ).images


def _hooks(module) -> dict:
    return {
        name: dict(getattr(module, name))
        for name in (
            "_forward_hooks",
            "_forward_hooks_with_kwargs",
            "_forward_pre_hooks",
            "_forward_pre_hooks_with_kwargs",
        )
    }


@pytest.mark.parametrize(
    "sampler, base", [("euler_a", "EulerAncestralDiscreteScheduler"), ("dpmpp_2m", None)]
)
def test_guidance_off_falls_back_with_one_warning(sd_pipe, fresh_scheduler, caplog, sampler, base):
    with cfgpp(sd_pipe, sampler, 0.6) as scheduler:
        with caplog.at_level(logging.WARNING, logger=LOGGER):
            ours = _run(sd_pipe, guidance_scale=1.0)
        assert scheduler.cfgpp_fallback_steps == STEPS
        config = {k: v for k, v in scheduler.config.items() if not k.startswith("cfgpp_")}
    messages = _warnings(caplog)
    assert len(messages) == 1
    assert "guidance_scale" in messages[0] and "\n" not in messages[0]
    base_cls = getattr(diffusers, base or "DPMSolverMultistepScheduler")
    sd_pipe.scheduler = base_cls.from_config(config)
    assert torch.equal(ours, _run(sd_pipe, guidance_scale=1.0))


def test_one_warning_per_run(sd_pipe, fresh_scheduler, caplog):
    with cfgpp(sd_pipe, "euler", 0.6), caplog.at_level(logging.WARNING, logger=LOGGER):
        _run(sd_pipe, guidance_scale=1.0)
        _run(sd_pipe, guidance_scale=1.0)
    assert len(_warnings(caplog)) == 2


def test_guidance_rescale_falls_back(sd_pipe, fresh_scheduler, caplog):
    """guidance_rescale changes ε_g after the CFG sum: the capture check refuses the batch."""
    with cfgpp(sd_pipe, "euler", 0.6) as scheduler, caplog.at_level(logging.WARNING, logger=LOGGER):
        ours = _run(sd_pipe, guidance_rescale=0.7)
        assert scheduler.cfgpp_fallback_steps == STEPS
    assert len(_warnings(caplog)) == 1 and "guidance_rescale" in _warnings(caplog)[0]
    sd_pipe.scheduler = diffusers.EulerDiscreteScheduler.from_config(pipes.SD_SCHEDULER)
    assert torch.equal(ours, _run(sd_pipe, guidance_rescale=0.7))


def _loop(unet, scheduler, rows: int, stale: bool = False) -> torch.Tensor:
    """A PAG-style denoising loop: UNet batch [uncond, cond, perturbed] (rows=3) or [uncond, cond]."""
    cond, uncond = pipes.embeds()
    context = torch.cat([uncond, cond, cond * 0.5][:rows])
    scheduler.set_timesteps(STEPS)
    x = pipes.latents() * scheduler.init_noise_sigma
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for i, t in enumerate(scheduler.timesteps):
            x_in = scheduler.scale_model_input(torch.cat([x] * rows), t)
            t_unet = scheduler.timesteps[i - 1] if stale and i > 0 else t
            out = unet(x_in, t_unet, encoder_hidden_states=context).sample
            parts = out.chunk(rows)
            eps = parts[0] + 5.0 * (parts[1] - parts[0])
            if rows == 3:
                eps = eps + 2.0 * (parts[1] - parts[2])
            x = scheduler.step(eps, t, x, generator=g).prev_sample
    return x


@pytest.mark.parametrize("rows, stale, reason", [(3, False, "3 rows"), (2, True, "another timestep")])
def test_foreign_batches_fall_back(unet, caplog, rows, stale, reason):
    """A 3-way batch, or a capture from another timestep: base step, one warning naming why."""
    scheduler = make_cfgpp_scheduler(pipes.SD_SCHEDULER, "euler_a", 0.6)
    capture = UNetOutputCapture().attach(unet)
    scheduler.cfgpp_capture = capture
    try:
        with caplog.at_level(logging.WARNING, logger=LOGGER):
            ours = _loop(unet, scheduler, rows, stale)
    finally:
        capture.detach()
    messages = _warnings(caplog)
    assert len(messages) == 1 and reason in messages[0]
    assert scheduler.cfgpp_fallback_steps == (STEPS if not stale else STEPS - 1)
    if not stale:
        base = diffusers.EulerAncestralDiscreteScheduler.from_config(pipes.SD_SCHEDULER)
        assert torch.equal(ours, _loop(unet, base, rows))


def test_no_capture_attached_falls_back(unet, caplog):
    scheduler = make_cfgpp_scheduler(pipes.SD_SCHEDULER, "ddim", 0.6)
    with caplog.at_level(logging.WARNING, logger=LOGGER):
        ours = _loop(unet, scheduler, 2)
    assert len(_warnings(caplog)) == 1 and "no unconditional capture" in _warnings(caplog)[0]
    base = diffusers.DDIMScheduler.from_config(pipes.SD_SCHEDULER)
    assert torch.equal(ours, _loop(unet, base, 2))


def test_restores_scheduler_and_hooks(sd_pipe, fresh_scheduler):
    before_scheduler, before_config = sd_pipe.scheduler, dict(sd_pipe.config)
    before_hooks = _hooks(sd_pipe.unet)
    sd_pipe.scheduler = diffusers.EulerDiscreteScheduler.from_config(pipes.SD_SCHEDULER)
    reference = _run(sd_pipe)
    sd_pipe.scheduler = before_scheduler
    with cfgpp(sd_pipe, "euler", 0.6) as scheduler:
        assert sd_pipe.scheduler is scheduler and scheduler.cfgpp_capture.attached
        assert _hooks(sd_pipe.unet) != before_hooks
        _run(sd_pipe)
    assert sd_pipe.scheduler is before_scheduler
    assert dict(sd_pipe.config) == before_config
    assert _hooks(sd_pipe.unet) == before_hooks
    assert scheduler.cfgpp_capture is None
    sd_pipe.scheduler = diffusers.EulerDiscreteScheduler.from_config(pipes.SD_SCHEDULER)
    assert torch.equal(_run(sd_pipe), reference)


def test_restores_after_exception(sd_pipe, fresh_scheduler):
    before_scheduler, before_hooks = sd_pipe.scheduler, _hooks(sd_pipe.unet)

    def stop(pipe, step, t, kwargs):
        raise KeyboardInterrupt  # an interrupted generation

    with pytest.raises(KeyboardInterrupt):
        with cfgpp(sd_pipe, "dpmpp_2m", 0.6):
            _run(sd_pipe, callback_on_step_end=stop)
    assert sd_pipe.scheduler is before_scheduler
    assert _hooks(sd_pipe.unet) == before_hooks


def test_attach_cfgpp_undo_is_idempotent(sd_pipe, fresh_scheduler):
    from lib_hidiff.diffusers import attach_cfgpp

    before_scheduler, before_hooks = sd_pipe.scheduler, _hooks(sd_pipe.unet)
    undo = attach_cfgpp(sd_pipe, "Euler a CFG++", 0.5)
    assert type(sd_pipe.scheduler).__name__ == "EulerAncestralCFGppScheduler"
    undo()
    undo()
    assert sd_pipe.scheduler is before_scheduler
    assert _hooks(sd_pipe.unet) == before_hooks
