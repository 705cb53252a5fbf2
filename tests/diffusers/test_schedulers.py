"""diffusers CFG++ schedulers in a real (tiny, random) StableDiffusionPipeline.

Oracle: lib_hidiff.cfgpp's k-diffusion CFG++ sampler driving the same UNet over the diffusers
scheduler's own sigmas (DDIM: the VE sigmas of its timesteps), with the same noise draws.
Degenerate: with cond == uncond each CFG++ scheduler is its base diffusers scheduler.
`pytest -s` prints the measured differences.
"""

from __future__ import annotations

import re

import diffusers
import pytest
import torch
from diffusers.utils.torch_utils import randn_tensor

from lib_hidiff import cfgpp as kcfgpp
from lib_hidiff.diffusers import cfgpp, make_cfgpp_scheduler

from . import pipes
from .kdiff import GuidedUNet, ddim_grid

ORACLE_TOL = 1e-4
BASE_TOL = 1e-5
LAM, W, STEPS = 0.7, 5.0, 6

# case: (sampler, config overrides, pipeline kwargs, k-diffusion sampler, its kwargs, base class)
CASES = {
    "euler": ("euler", {}, {}, kcfgpp.sample_euler_cfgpp, {}, "EulerDiscreteScheduler"),
    "euler_a": (
        "euler_a",
        {},
        {},
        kcfgpp.sample_euler_ancestral_cfgpp,
        {},
        "EulerAncestralDiscreteScheduler",
    ),
    "ddim": ("ddim", {}, {}, kcfgpp.sample_ddim_cfgpp, {}, "DDIMScheduler"),
    "ddim_eta": ("ddim", {}, {"eta": 0.6}, kcfgpp.sample_ddim_cfgpp, {"eta": 0.6}, "DDIMScheduler"),
    "dpmpp_2m_A": ("dpmpp_2m", {}, {}, kcfgpp.sample_dpmpp_2m_cfgpp, {}, "DPMSolverMultistepScheduler"),
    "dpmpp_2m_B": (
        "dpmpp_2m",
        {"cfgpp_variant": "B"},
        {},
        kcfgpp.sample_dpmpp_2m_cfgpp,
        {"variant": "B"},
        "DPMSolverMultistepScheduler",
    ),
    "dpmpp_2m_karras": (
        "dpmpp_2m",
        {"use_karras_sigmas": True},
        {},
        kcfgpp.sample_dpmpp_2m_cfgpp,
        {},
        "DPMSolverMultistepScheduler",
    ),
}
VP = {"ddim", "dpmpp_2m"}  # diffusers samples in VP coordinates (z = x / √(1 + σ²))


def _base(name: str, scheduler):
    """The diffusers base scheduler with the CFG++ scheduler's config (CFG++ keys left out)."""
    config = {k: v for k, v in scheduler.config.items() if not k.startswith("cfgpp_")}
    return getattr(diffusers, name).from_config(config)


def _run(pipe, embeds, lat, seed=5, **kwargs):
    cond, uncond = embeds
    g = torch.Generator().manual_seed(seed)
    out = pipe(
        prompt_embeds=cond,
        negative_prompt_embeds=uncond,
        num_inference_steps=kwargs.pop("steps", STEPS),
        guidance_scale=kwargs.pop("guidance_scale", W),
        output_type="latent",
        latents=lat.clone(),
        height=16,
        width=16,
        generator=g,
        **kwargs,
    )
    return out.images, g


def _kdiffusion(pipe, scheduler, sampler, kdiff, kd_kwargs, embeds, lat, prediction, seed=5):
    """The same sampling as lib_hidiff.cfgpp's k-diffusion sampler (VE), in the pipeline's coordinates."""
    if sampler == "ddim":
        sigmas, timesteps = ddim_grid(scheduler)
    else:
        sigmas, timesteps = scheduler.sigmas, scheduler.timesteps
    cond, uncond = embeds
    model = GuidedUNet(pipe.unet, cond, uncond, sigmas, timesteps, LAM, prediction)
    x = lat * scheduler.init_noise_sigma
    if sampler in VP:
        x = x * (1 + sigmas[0] ** 2) ** 0.5
    g = torch.Generator().manual_seed(seed)

    def noise(sigma, sigma_next):
        return randn_tensor(lat.shape, generator=g, dtype=lat.dtype)

    kwargs = dict(kd_kwargs)
    if sampler in ("euler_a", "ddim"):
        kwargs["noise_sampler"] = noise
    x = kdiff(model, x, sigmas, disable=True, **kwargs)
    if sampler in VP:
        x = x / (1 + sigmas[-1] ** 2) ** 0.5
    return x, model.calls


# diffusers' EulerAncestralDiscreteScheduler has no "sample" prediction.
ORACLE_GRID = [
    (case, prediction)
    for prediction in ("epsilon", "v_prediction", "sample")
    for case in CASES
    if not (case == "euler_a" and prediction == "sample")
]


@pytest.mark.parametrize("case, prediction", ORACLE_GRID)
def test_equals_kdiffusion_cfgpp_sampler(sd_pipe, fresh_scheduler, case, prediction):
    sampler, overrides, call_kwargs, kdiff, kd_kwargs, base_name = CASES[case]
    sd_pipe.scheduler = pipes.scheduler(prediction_type=prediction)
    embeds, lat = pipes.embeds(), pipes.latents()
    with cfgpp(sd_pipe, sampler, LAM, **overrides) as scheduler:
        ours, _ = _run(sd_pipe, embeds, lat, **call_kwargs)
        assert scheduler.cfgpp_fallback_steps == 0
    ref, calls = _kdiffusion(sd_pipe, scheduler, sampler, kdiff, kd_kwargs, embeds, lat, prediction)
    assert len(calls) == STEPS
    diff = float((ours - ref).abs().max())
    print(
        f"\n{case} {prediction}: max |diffusers CFG++ - k-diffusion CFG++| = {diff:.2e} "
        f"(latent max {float(ref.abs().max()):.1f})"
    )
    assert diff <= ORACLE_TOL
    # Not vacuous: plain CFG with the base scheduler lands somewhere else.
    sd_pipe.scheduler = _base(base_name, scheduler)
    plain, _ = _run(sd_pipe, embeds, lat, **call_kwargs)
    assert float((plain - ours).abs().max()) > 1e-2


def test_dpmpp_variants_differ(sd_pipe, fresh_scheduler):
    embeds, lat = pipes.embeds(), pipes.latents()
    results = {}
    for variant in "AB":
        with cfgpp(sd_pipe, "dpmpp_2m", LAM, cfgpp_variant=variant):
            results[variant], _ = _run(sd_pipe, embeds, lat)
    assert float((results["A"] - results["B"]).abs().max()) > 1e-3


@pytest.mark.parametrize("case", list(CASES))
def test_cond_equal_uncond_is_base_scheduler(sd_pipe, fresh_scheduler, case):
    sampler, overrides, call_kwargs, _, _, base_name = CASES[case]
    cond, _ = pipes.embeds()
    same = (cond, cond.clone())
    lat = pipes.latents()
    with cfgpp(sd_pipe, sampler, 0.8, **overrides) as scheduler:
        ours, g_ours = _run(sd_pipe, same, lat, **call_kwargs)
        assert scheduler.cfgpp_fallback_steps == 0
    sd_pipe.scheduler = _base(base_name, scheduler)
    base, g_base = _run(sd_pipe, same, lat, **call_kwargs)
    diff = float((ours - base).abs().max())
    print(f"\n{case}: cond == uncond, max |CFG++ - {base_name}| = {diff:.2e}")
    assert diff <= BASE_TOL
    # Same number of generator draws as the base scheduler: the generators end in the same state.
    assert torch.equal(g_ours.get_state(), g_base.get_state())


def test_ancestral_seed_reproduces(sd_pipe, fresh_scheduler):
    embeds, lat = pipes.embeds(), pipes.latents()
    with cfgpp(sd_pipe, "euler_a", LAM):
        a, _ = _run(sd_pipe, embeds, lat, seed=11)
        b, _ = _run(sd_pipe, embeds, lat, seed=11)
        c, _ = _run(sd_pipe, embeds, lat, seed=12)
    assert torch.equal(a, b)
    assert float((a - c).abs().max()) > 1e-3


@pytest.mark.parametrize("sampler", ["euler", "dpmpp_2m", "ddim"])
def test_img2img_begin_index(sd_img2img, fresh_scheduler, sampler):
    """img2img (strength 0.5): the run starts at the scheduler's begin index; same as k-diffusion."""
    pipe = sd_img2img
    pipe.scheduler = pipes.scheduler()
    cond, uncond = pipes.embeds()
    image = pipes.latents(seed=7)
    steps, strength = 8, 0.5
    with cfgpp(pipe, sampler, LAM) as scheduler:
        out = pipe(
            prompt_embeds=cond,
            negative_prompt_embeds=uncond,
            image=image,
            strength=strength,
            num_inference_steps=steps,
            guidance_scale=W,
            output_type="latent",
            generator=torch.Generator().manual_seed(3),
        ).images
        assert scheduler.cfgpp_fallback_steps == 0
    t_start = steps - int(steps * strength)
    noise = randn_tensor(image.shape, generator=torch.Generator().manual_seed(3), dtype=image.dtype)
    if sampler == "ddim":
        sigmas, timesteps = ddim_grid(scheduler)
    else:
        sigmas, timesteps = scheduler.sigmas, scheduler.timesteps
    sigmas, timesteps = sigmas[t_start:], timesteps[t_start:]
    x = image + noise * sigmas[0]  # add_noise, in VE coordinates (VP: z = x / √(1 + σ²))
    kdiff = {"euler": kcfgpp.sample_euler_cfgpp, "dpmpp_2m": kcfgpp.sample_dpmpp_2m_cfgpp}.get(
        sampler, kcfgpp.sample_ddim_cfgpp
    )
    model = GuidedUNet(pipe.unet, cond, uncond, sigmas, timesteps, LAM)
    ref = kdiff(model, x, sigmas, disable=True)
    if sampler in VP:
        ref = ref / (1 + sigmas[-1] ** 2) ** 0.5
    assert len(model.calls) == steps - t_start
    diff = float((out - ref).abs().max())
    print(f"\nimg2img {sampler} (strength {strength}): max |diffusers - k-diffusion| = {diff:.2e}")
    assert diff <= ORACLE_TOL


def test_lambda_recorded_exactly(tmp_path):
    lam = 0.1 + 0.2  # 0.30000000000000004: not a "round" number
    for info in ("euler", "euler_a", "ddim", "dpmpp_2m"):
        scheduler = make_cfgpp_scheduler(pipes.SD_SCHEDULER, info, lam)
        assert scheduler.config.cfgpp_scale == lam and scheduler.cfgpp_scale == lam
        folder = tmp_path / info
        scheduler.save_config(folder)
        again = type(scheduler).from_pretrained(folder)
        assert again.config.cfgpp_scale == lam
        assert again.config.prediction_type == scheduler.config.prediction_type
        # Built again from a saved CFG++ config (another λ given explicitly wins).
        assert make_cfgpp_scheduler(again.config, info, 0.25).config.cfgpp_scale == 0.25
    dpm = make_cfgpp_scheduler(pipes.SD_SCHEDULER, "DPM++ 2M CFG++", 0.5, cfgpp_variant="b")
    assert dpm.config.cfgpp_variant == "B"


@pytest.mark.parametrize(
    "call, message",
    [
        (lambda p: cfgpp(p, "nope", 0.5), "CFG++ sampler must be one of"),
        (lambda p: cfgpp(p, "euler", -1.0), "cfgpp_scale) must be a finite number >= 0"),
        (lambda p: cfgpp(p, "euler", float("nan")), "cfgpp_scale) must be a finite number >= 0"),
        (
            lambda p: cfgpp(p, "dpmpp_2m", 0.5, cfgpp_variant="C"),
            "variant (cfgpp_variant) must be 'A' or 'B'",
        ),
        (lambda p: cfgpp(p, "dpmpp_2m", 0.5, algorithm_type="sde-dpmsolver++"), "needs algorithm_type"),
        (lambda p: cfgpp(p, "euler", 0.5, prediction_type="flow_prediction"), "not flow matching"),
    ],
)
def test_bad_input_one_line_and_untouched(sd_pipe, fresh_scheduler, call, message):
    before = sd_pipe.scheduler
    hooks = dict(sd_pipe.unet._forward_hooks)
    with pytest.raises(ValueError, match=re.escape(message)) as err:
        with call(sd_pipe):
            pass
    assert "\n" not in str(err.value)
    assert sd_pipe.scheduler is before
    assert dict(sd_pipe.unet._forward_hooks) == hooks
