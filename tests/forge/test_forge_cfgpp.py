"""CFG++ on Forge: registration beside Forge's built-ins, the uncond from Forge's denoiser, λ.

The model is closed-form (forge_env.ClosedFormKModel): every row's x0 is known exactly, so the
unconditional prediction the sampler receives and whole generations are checked against
independent formulas.
"""

from __future__ import annotations

import logging

import k_diffusion.sampling
import pytest
import torch
from backend.modules.k_prediction import Prediction
from backend.sampling import sampling_function as forge_sampling
from modules import (
    processing,
    prompt_parser,
    script_callbacks,
    sd_samplers,
    sd_samplers_cfg_denoiser,
    sd_samplers_common,
    sd_samplers_kdiffusion,
    shared,
)
from modules.sd_samplers_common import ImageRNG

from lib_hidiff import cfgpp
from lib_hidiff.webui import hosts, samplers

from . import forge_env
from .forge_env import ForgeUI, closed_form_mean, closed_form_x0, hybrid_engine

OURS = ["Euler CFG++", "Euler a CFG++", "DPM++ 2M CFG++", "DPM++ 2S a CFG++", "DPM++ SDE CFG++"]
OUR_DDIM = "DDIM CFG++ (k-diffusion)"


@pytest.fixture
def model(forge):
    shared.sd_model = hybrid_engine(None)
    return shared.sd_model


# -- registration ------------------------------------------------------------------------------
def test_registers_ours_and_a_working_ddim_cfgpp_beside_forges(forge):
    names = [x.name for x in sd_samplers.all_samplers]
    assert all(names.count(n) == 1 for n in [*OURS, OUR_DDIM, "DDIM CFG++"])
    builtin = next(x for x in sd_samplers.all_samplers if x.name == "DDIM CFG++")
    assert builtin.aliases == ["ddim_cfgpp"]  # Forge's own entry stays as it is
    assert samplers.registered() == [*OURS, OUR_DDIM]
    assert set(OURS) | {OUR_DDIM} <= set(sd_samplers.visible_sampler_names())
    assert sd_samplers.samplers_map["ddim_cfg_pp"] == OUR_DDIM
    assert sd_samplers.get_sampler_and_scheduler(OUR_DDIM, None) == (OUR_DDIM, "Automatic")
    assert sd_samplers_kdiffusion.sampler_extra_params[cfgpp.sample_euler_cfgpp] == [
        "s_churn",
        "s_tmin",
        "s_tmax",
        "s_noise",
    ]


class ReadsTheMultiplier(sd_samplers_cfg_denoiser.CFGDenoiser):
    """A Forge whose CFG denoiser applies a sampler's scale multiplier, as A1111 1.10 does."""

    def forward(self, x, sigma, uncond, cond, cond_scale, s_min_uncond, image_cond):
        return super().forward(
            x, sigma, uncond, cond, cond_scale * self.cond_scale_miltiplier, s_min_uncond, image_cond
        )


def _started(monkeypatch, builtin=(), denoiser=None):
    if builtin:
        monkeypatch.setattr(forge_env, "_BUILTIN_SAMPLERS", [*forge_env._BUILTIN_SAMPLERS, *builtin])
    if denoiser is not None:
        monkeypatch.setattr(sd_samplers_cfg_denoiser, "CFGDenoiser", denoiser)
    env = ForgeUI()
    env.start()
    return env


def test_builtins_that_work_are_kept(monkeypatch):
    neo_euler = sd_samplers_common.SamplerData("Euler CFG++", lambda m: None, ["euler_cfg_pp"], {})
    env = _started(monkeypatch, builtin=[neo_euler], denoiser=ReadsTheMultiplier)
    try:
        assert sd_samplers.all_samplers_map["Euler CFG++"] is neo_euler  # Forge Neo's: λ = raw CFG
        assert samplers.registered() == [n for n in OURS if n != "Euler CFG++"]  # no DDIM beside it
    finally:
        env.stop()


def test_registration_is_idempotent_across_reload_and_another_extensions_add_sampler(forge):
    before = [x.name for x in sd_samplers.all_samplers]
    forge.reload()
    other = sd_samplers_common.SamplerData("Other", lambda m: None, [], {})
    sd_samplers.add_sampler(other)  # Forge's API rebinds all_samplers_map
    forge.reload()
    forge.reload()
    names = [x.name for x in sd_samplers.all_samplers]
    assert sorted(names) == sorted([*before, "Other"])  # each once (ours re-added after "Other")
    assert all(sd_samplers.all_samplers_map[n].name == n for n in [*OURS, OUR_DDIM])
    forge.stop()
    assert samplers.registered() == [] and not set(OURS) & set(sd_samplers.all_samplers_map)
    forge.start()
    assert [x.name for x in sd_samplers.all_samplers] == before


# -- the CFG denoiser ----------------------------------------------------------------------------
def _denoiser(name="Euler CFG++"):
    sampler = sd_samplers.create_sampler(name, shared.sd_model)
    p = processing.StableDiffusionProcessingTxt2Img()
    p.rng = ImageRNG((4, 8, 8), [1, 2])
    try:
        sampler.initialize(p)
    finally:
        k_diffusion.sampling.torch = torch  # initialize() points it at the job's RNG
    sampler.model_wrap_cfg.total_steps = 4
    return sampler.model_wrap_cfg, p


PROMPTS = ["a cat AND a dog :0.5", "a bird"]
NEGATIVES = ["", "blurry"]


def _call(den, x, sigma=3.0, negatives=NEGATIVES, scale=0.5):
    cond = prompt_parser.get_multicond_learned_conditioning(PROMPTS)
    uncond = None if negatives is None else prompt_parser.get_learned_conditioning(negatives)
    sigmas = torch.full((x.shape[0],), sigma)
    image_cond = torch.zeros(x.shape[0], 5, 1, 1)
    return den(x, sigmas, uncond=uncond, cond=cond, cond_scale=scale, s_min_uncond=0.0, image_cond=image_cond)


def _m(prompt):
    return closed_form_mean(prompt_parser.encode(prompt)[None])[0]


def _u(x, sigma=3.0):
    return torch.stack([closed_form_x0(x[i], sigma, _m(n)) for i, n in enumerate(NEGATIVES)])


def test_uncond_is_exact_with_and_prompts_and_a_batch(model):
    den, _ = _denoiser()
    x = torch.randn(2, 4, 8, 8)
    out = _call(den, x)
    u = _u(x)
    assert torch.allclose(den.last_denoised_uncond, u, atol=1e-6)  # x − σ·last_noise_uncond
    cat, dog, bird = (
        closed_form_x0(x[i], 3.0, _m(t)) for i, t in ((0, "a cat"), (0, "a dog"), (1, "a bird"))
    )
    expected = torch.stack([u[0] + 0.5 * ((cat - u[0]) + 0.5 * (dog - u[0])), u[1] + 0.5 * (bird - u[1])])
    assert torch.allclose(out, expected, atol=1e-6)


@pytest.mark.parametrize("case", ["lambda 1", "skip early CFG"])
def test_a_scale_of_one_still_runs_the_uncond_batch_and_leaves_the_patcher_as_it_was(model, case):
    options = model.forge_objects.unet.model_options
    before = repr(options)
    if case == "skip early CFG":
        shared.opts.data["skip_early_cond"] = 1.0  # Forge sets the scale to 1 on those steps
    den, _ = _denoiser()
    x = torch.randn(2, 4, 8, 8)
    _call(den, x, scale=1.0 if case == "lambda 1" else 0.5)
    assert torch.allclose(den.last_denoised_uncond, _u(x), atol=1e-6)  # Forge alone gives zeros here
    assert repr(options) == before


def test_no_negative_conditioning_gives_no_uncond(model):
    den, _ = _denoiser()
    _call(den, torch.randn(2, 4, 8, 8), negatives=None)  # Forge drops it at CFG 1
    assert den.last_denoised_uncond is None


def test_inpainting_blends_the_uncond_like_the_guided_prediction(model):
    den, p = _denoiser()
    latent_mask = torch.zeros(1, 1, 8, 8)
    latent_mask[..., :4] = 1.0  # repaint the left half
    den.mask, den.nmask = 1.0 - latent_mask, latent_mask
    den.init_latent = torch.randn(2, 4, 8, 8)

    class Runner:  # a script may change the blend; the guided and the uncond prediction both get it
        def on_mask_blend(self, p, mba):
            mba.blended_latent = mba.blended_latent + 0.25

    p.scripts = Runner()
    x = torch.randn(2, 4, 8, 8)
    out = _call(den, x)
    blended = _u(x) * den.nmask + den.init_latent * den.mask + 0.25
    assert torch.allclose(den.last_denoised_uncond, blended, atol=1e-6)
    keep = den.mask.bool().expand_as(out)
    assert torch.equal(out[keep], den.last_denoised_uncond[keep])


# -- whole generations ----------------------------------------------------------------------------
def _reference_euler_cfgpp(p, lam, steps):
    """Independent Euler CFG++ on the closed-form model: x' = D_λ + σ'/σ (x − D_u)."""
    sigmas = Prediction().schedule.get_sigmas(steps)
    x = ImageRNG((4, p.height // 8, p.width // 8), [p.seed]).next() * sigmas[0]
    m_c = closed_form_mean(prompt_parser.encode(p.prompt)[None])
    m_u = closed_form_mean(prompt_parser.encode(p.negative_prompt)[None])
    for i in range(steps):
        s, s_next = float(sigmas[i]), float(sigmas[i + 1])
        d_u, d_c = closed_form_x0(x, s, m_u), closed_form_x0(x, s, m_c)
        x = d_u + lam * (d_c - d_u) + s_next / s * (x - d_u)
    return x[0]


@pytest.mark.parametrize(("mode", "lam"), [("cfg/12.5", 0.56), ("raw", 7.0)])
def test_generation_matches_the_formula_and_records_lambda(forge, model, mode, lam):
    shared.opts.data["cfgpp_scale_mode"] = mode
    p, res = forge.txt2img(
        [False], sampler_name="Euler CFG++", steps=5, cfg_scale=7.0, width=64, height=64, seed=3
    )
    assert torch.allclose(res.images[0], _reference_euler_cfgpp(p, lam, 5), atol=1e-5)
    assert f"CFGpp scale: {lam}" in res.infotexts[0] and f"CFGpp scale mode: {mode}" in res.infotexts[0]


def test_cfg_one_without_negative_prompt_falls_back_to_the_base_step(forge, model, caplog):
    shared.opts.data["cfgpp_scale_mode"] = "raw"
    with caplog.at_level(logging.WARNING, logger="lib_hidiff.cfgpp"):
        _, res = forge.txt2img(
            [False], sampler_name="Euler CFG++", steps=4, cfg_scale=1.0, width=64, height=64
        )
    _, plain = forge.txt2img([False], sampler_name="Euler", steps=4, cfg_scale=1.0, width=64, height=64)
    assert torch.allclose(res.images[0], plain.images[0], atol=1e-5)
    assert sum("no unconditional prediction" in r.getMessage() for r in caplog.records) == 1


@pytest.fixture
def scales(monkeypatch):
    seen = []
    inner = forge_sampling.sampling_function_inner

    def spy(model, x, timestep, uncond, cond, cond_composition, cond_scale, model_options):
        seen.append(round(float(cond_scale), 6))
        return inner(model, x, timestep, uncond, cond, cond_composition, cond_scale, model_options)

    monkeypatch.setattr(forge_sampling, "sampling_function_inner", spy)
    return seen


HIRES = {"enable_hr": True, "hr_scale": 2.0, "hr_second_pass_steps": 2, "denoising_strength": 0.5}


def test_hires_lambda_comes_from_forges_hires_cfg(forge, model, scales):
    p, res = forge.txt2img(
        [False], sampler_name="Euler CFG++", steps=2, width=64, height=64, hr_cfg=5.0, **HIRES
    )
    # Forge's denoiser would guide the hires pass with hr_cfg itself (5.0): λ = 5 / 12.5 instead
    assert scales == [0.56, 0.56, 0.4, 0.4]
    assert p.hr_cfg == 5.0  # lent to the denoiser per call only
    assert "CFGpp scale: 0.56" in res.infotexts[0] and "Hires CFG Scale: 5.0" in res.infotexts[0]


def test_hires_lambda_setting_wins(forge, model, scales):
    shared.opts.data["cfgpp_hires_scale"] = 0.3
    _, res = forge.txt2img(
        [False], sampler_name="Euler CFG++", steps=2, width=64, height=64, hr_cfg=5.0, **HIRES
    )
    assert scales == [0.56, 0.56, 0.3, 0.3]
    assert "CFGpp hires scale: 0.3" in res.infotexts[0] and "CFGpp scale: 0.56" in res.infotexts[0]


@pytest.mark.parametrize("name", [*OURS, OUR_DDIM])
def test_every_sampler_gets_the_uncond_of_every_call(forge, model, name, caplog):
    with caplog.at_level(logging.WARNING, logger="lib_hidiff.cfgpp"):
        _, res = forge.txt2img([False], sampler_name=name, steps=3, width=64, height=64, batch_size=2)
    assert not [r for r in caplog.records if "no unconditional prediction" in r.getMessage()]
    assert torch.isfinite(torch.stack(res.images)).all() and "CFGpp scale: 0.56" in res.infotexts[0]
    calls = model.forge_objects.unet.model.calls
    assert calls and all(c["x"].shape[0] == 4 for c in calls)  # 2 cond + 2 uncond rows every call


def test_foreign_spellings_map_to_ours_with_raw_lambda(forge):
    text = "a cat\nSteps: 20, Sampler: Euler Ancestral CFG++, CFG scale: 1.5, Seed: 1, Size: 512x512"
    params, _ = forge.paste(text)
    assert params["Sampler"] == "Euler a CFG++" and params["CFGpp scale mode"] == "raw"
    assert hosts.current().registered_samplers() == samplers.registered()
    assert script_callbacks.callback_map["callbacks_infotext_pasted"]
