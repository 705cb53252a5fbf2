"""CFG++ in the WebUI: registration, the uncond-exposing CFG denoiser, λ, infotext and paste.

The model is closed-form (webui_env.ClosedFormDenoiser): every row's x0 is known exactly, so the
unconditional prediction the sampler receives and whole generations are checked against
independent formulas.
"""

from __future__ import annotations

import k_diffusion.sampling
import pytest
import torch
from modules import (
    infotext_utils,
    processing,
    prompt_parser,
    script_callbacks,
    sd_samplers,
    sd_samplers_kdiffusion,
    sd_samplers_timesteps,
    shared,
)
from modules.sd_samplers_common import ImageRNG

from lib_hidiff import cfgpp
from lib_hidiff.webui import hosts, samplers

from .webui_env import ClosedFormModel, WebUI, closed_form_mean, closed_form_x0

OURS = ["Euler CFG++", "Euler a CFG++", "DPM++ 2M CFG++", "DPM++ 2S a CFG++", "DPM++ SDE CFG++"]


@pytest.fixture
def model(webui):
    shared.sd_model = ClosedFormModel()
    return shared.sd_model


# -- registration ------------------------------------------------------------------------------
def test_registers_the_names_the_webui_lacks(webui):
    names = [x.name for x in sd_samplers.all_samplers]
    assert all(names.count(n) == 1 for n in OURS)
    builtin = next(x for x in sd_samplers_timesteps.samplers_data_timesteps if x.name == "DDIM CFG++")
    assert names.count("DDIM CFG++") == 1 and sd_samplers.all_samplers_map["DDIM CFG++"] is builtin
    assert samplers.registered() == OURS
    # dropdowns, XYZ's Sampler axis and /sdapi/v1/samplers all read these
    assert set(OURS) <= set(sd_samplers.visible_sampler_names())
    assert sd_samplers.samplers_map["k_euler_a_cfgpp"] == "Euler a CFG++"
    for data in sd_samplers.all_samplers:
        assert all(isinstance(v, (str, bool)) for v in data.options.values())
    assert sd_samplers_kdiffusion.sampler_extra_params[cfgpp.sample_euler_cfgpp] == [
        "s_churn",
        "s_tmin",
        "s_tmax",
        "s_noise",
    ]


@pytest.mark.parametrize("name", OURS)
def test_names_survive_the_schedule_suffix_parser(webui, name):
    assert sd_samplers.get_sampler_and_scheduler(name, "Exponential") == (name, "Exponential")
    assert sd_samplers.get_sampler_and_scheduler(f"{name} Exponential", None) == (name, "Exponential")


def test_older_webui_gets_our_ddim_cfgpp():
    env = WebUI(without_builtin=("DDIM CFG++",))
    env.start()
    try:
        assert "DDIM CFG++" in samplers.registered()
        assert sd_samplers.all_samplers_map["DDIM CFG++"].options["scheduler"] == "ddim"
    finally:
        env.stop()


def test_our_ddim_cfgpp_takes_the_ddim_eta_setting(model):
    env = WebUI(without_builtin=("DDIM CFG++",))
    env.start()
    try:
        shared.sd_model = model
        shared.opts.data["eta_ddim"] = 0.0
        shared.opts.data["eta_ancestral"] = 1.0
        _, res = env.txt2img([False], sampler_name="DDIM CFG++", steps=3, width=64, height=64)
        sampler = sd_samplers.create_sampler("DDIM CFG++", model)
        assert sampler.eta_option_field == "eta_ddim" and sampler.eta_default == 0.0
        assert "Eta DDIM" not in res.infotexts[0] and "Eta:" not in res.infotexts[0]
    finally:
        env.stop()


def test_registration_is_idempotent_across_reload_and_undone_on_unload(webui):
    before = [x.name for x in sd_samplers.all_samplers]
    webui.reload()
    webui.reload()
    assert [x.name for x in sd_samplers.all_samplers] == before
    webui.stop()
    assert samplers.registered() == []
    assert not set(OURS) & set(sd_samplers.all_samplers_map)
    webui.start()
    assert [x.name for x in sd_samplers.all_samplers] == before


# -- the CFG denoiser ----------------------------------------------------------------------------
def _denoiser(name="Euler CFG++", image_cfg_scale=None):
    sampler = sd_samplers.create_sampler(name, shared.sd_model)
    p = processing.StableDiffusionProcessingTxt2Img()
    p.image_cfg_scale = image_cfg_scale
    p.rng = ImageRNG((4, 8, 8), [1, 2])
    try:
        sampler.initialize(p)
    finally:
        k_diffusion.sampling.torch = torch  # initialize() points it at the job's RNG
    sampler.model_wrap_cfg.total_steps = 4
    return sampler.model_wrap_cfg, p


PROMPTS = ["a cat AND a dog :0.5", "a bird"]
NEGATIVES = ["", "blurry"]


def _call(den, x, sigma=3.0, prompts=PROMPTS, negatives=NEGATIVES, image_cond=None, scale=0.5):
    cond = prompt_parser.get_multicond_learned_conditioning(prompts)
    uncond = prompt_parser.get_learned_conditioning(negatives)
    image_cond = torch.zeros(x.shape[0], 5, 1, 1) if image_cond is None else image_cond
    sigmas = torch.full((x.shape[0],), sigma)
    return den(x, sigmas, uncond=uncond, cond=cond, cond_scale=scale, s_min_uncond=0.0, image_cond=image_cond)


def _m(prompt, image=None):
    return closed_form_mean(prompt_parser.encode(prompt)[None], image)[0]


def test_uncond_rows_with_and_prompts_and_a_batch(model):
    den, _ = _denoiser()
    x = torch.randn(2, 4, 8, 8)
    out = _call(den, x)
    u = torch.stack([closed_form_x0(x[i], 3.0, _m(n)) for i, n in enumerate(NEGATIVES)])
    assert torch.allclose(den.last_denoised_uncond, u, atol=1e-6)
    cat, dog, bird = (
        closed_form_x0(x[i], 3.0, _m(t)) for i, t in ((0, "a cat"), (0, "a dog"), (1, "a bird"))
    )
    expected = torch.stack([u[0] + 0.5 * ((cat - u[0]) + 0.5 * (dog - u[0])), u[1] + 0.5 * (bird - u[1])])
    assert torch.allclose(out, expected, atol=1e-6)


def test_skipped_uncond_steps_expose_the_cond_prediction(model):
    shared.opts.data["skip_early_cond"] = 1.0  # every step skips the negative prompt
    den, p = _denoiser()
    x = torch.randn(2, 4, 8, 8)
    out = _call(den, x)
    first = torch.stack([closed_form_x0(x[0], 3.0, _m("a cat")), closed_form_x0(x[1], 3.0, _m("a bird"))])
    assert torch.allclose(den.last_denoised_uncond, first, atol=1e-6)
    assert p.extra_generation_params["Skip Early CFG"] == 1.0
    # with uncond == cond the CFG++ step degenerates to the plain conditional step
    assert torch.allclose(out[1], first[1], atol=1e-6)


def test_edit_models_expose_the_fully_unconditional_third(model):
    model.cond_stage_key = "edit"
    den, p = _denoiser(image_cfg_scale=1.5)
    x = torch.randn(1, 4, 8, 8)
    den.init_latent = torch.zeros(1, 4, 8, 8)
    image = torch.ones(1, 4, 8, 8)  # edit models get the image latent as image cond
    out = _call(den, x, prompts=["a cat"], negatives=["blurry"], image_cond=image)
    u = closed_form_x0(x[0], 3.0, _m("blurry"))  # no text, no image
    ic = closed_form_x0(x[0], 3.0, _m("blurry", image))
    c = closed_form_x0(x[0], 3.0, _m("a cat", image))
    assert torch.allclose(den.last_denoised_uncond[0], u, atol=1e-6)
    assert torch.allclose(out[0], u + 0.5 * (c - ic) + 1.5 * (ic - u), atol=1e-6)


def test_inpainting_blends_the_uncond_like_the_guided_prediction(model):
    den, p = _denoiser()
    latent_mask = torch.zeros(1, 1, 8, 8)
    latent_mask[..., :4] = 1.0  # repaint the left half
    den.mask, den.nmask = 1.0 - latent_mask, latent_mask
    den.init_latent = torch.randn(2, 4, 8, 8)

    class Runner:  # a script such as soft inpainting may change the blend; both get the change
        def on_mask_blend(self, p, mba):
            assert mba.denoiser is den and mba.sigma is not None
            mba.blended_latent = mba.blended_latent + 0.25

    p.scripts = Runner()
    x = torch.randn(2, 4, 8, 8)
    out = _call(den, x)
    u = torch.stack([closed_form_x0(x[i], 3.0, _m(n)) for i, n in enumerate(NEGATIVES)])
    blended = u * den.nmask + den.init_latent * den.mask + 0.25
    assert torch.allclose(den.last_denoised_uncond, blended, atol=1e-6)
    keep = den.mask.bool().expand_as(out)
    assert torch.equal(out[keep], den.last_denoised_uncond[keep])  # the kept region is exactly init + 0.25


# -- whole generations ----------------------------------------------------------------------------
def _reference_euler_cfgpp(p, lam, steps):
    """Independent Euler CFG++ on the closed-form model: x' = D_λ + σ'/σ (x − D_u)."""
    sigmas = shared.sd_model.denoiser.get_sigmas(steps)
    x = ImageRNG((4, p.height // 8, p.width // 8), [p.seed]).next() * sigmas[0]
    zero = torch.zeros(1, 5, 1, 1)
    m_c = closed_form_mean(prompt_parser.encode(p.prompt)[None], zero)
    m_u = closed_form_mean(prompt_parser.encode(p.negative_prompt)[None], zero)
    for i in range(steps):
        s, s_next = float(sigmas[i]), float(sigmas[i + 1])
        d_u, d_c = closed_form_x0(x, s, m_u), closed_form_x0(x, s, m_c)
        x = d_u + lam * (d_c - d_u) + s_next / s * (x - d_u)
    return x[0]


@pytest.mark.parametrize(("mode", "lam"), [("cfg/12.5", 0.56), ("raw", 7.0)])
def test_generation_matches_the_formula_and_the_infotext(webui, model, mode, lam):
    shared.opts.data["cfgpp_scale_mode"] = mode
    p, res = webui.txt2img(
        [False], sampler_name="Euler CFG++", steps=5, cfg_scale=7.0, width=64, height=64, seed=3
    )
    assert torch.allclose(res.images[0], _reference_euler_cfgpp(p, lam, 5), atol=1e-5)
    assert f"CFGpp scale: {lam}" in res.infotexts[0] and f"CFGpp scale mode: {mode}" in res.infotexts[0]


def test_hires_lambda_override(webui, model, monkeypatch):
    denoiser_cls, _ = hosts.current().sampler_classes()
    scales = []
    original = denoiser_cls.combine_denoised

    def spy(self, x_out, conds_list, uncond, cond_scale):
        scales.append(round(cond_scale, 6))
        return original(self, x_out, conds_list, uncond, cond_scale)

    monkeypatch.setattr(denoiser_cls, "combine_denoised", spy)
    shared.opts.data["cfgpp_hires_scale"] = 0.3
    _, res = webui.txt2img(
        [False],
        sampler_name="Euler CFG++",
        steps=2,
        width=64,
        height=64,
        enable_hr=True,
        hr_scale=2.0,
        hr_second_pass_steps=2,
        denoising_strength=0.5,
    )
    assert scales[:2] == [0.56, 0.56] and set(scales[2:]) == {0.3}
    assert "CFGpp hires scale: 0.3" in res.infotexts[0] and "CFGpp scale: 0.56" in res.infotexts[0]


def test_dpmpp_2m_variant_setting(webui, model):
    outs = {}
    for variant in ("A", "B"):
        shared.opts.data["cfgpp_dpmpp_2m_variant"] = variant
        _, res = webui.txt2img([False], sampler_name="DPM++ 2M CFG++", steps=4, width=64, height=64)
        assert f"CFGpp 2M variant: {variant}" in res.infotexts[0]
        outs[variant] = res.images[0]
    assert not torch.allclose(outs["A"], outs["B"])


def test_xyz_sampler_axis_does_not_leak_cfgpp_keys(webui, model):
    p = webui.make_txt2img([False], steps=2, width=64, height=64)
    cells = webui.xyz().run_cells(p, "Sampler", ["Euler CFG++", "Euler", "Euler a CFG++"])
    texts = [res.infotexts[0] for _, res in cells]
    assert ["CFGpp scale" in t for t in texts] == [True, False, True]


# -- paste --------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("written", "ours"),
    [
        ("Euler Ancestral CFG++", "Euler a CFG++"),
        ("euler_ancestral_cfg_pp", "Euler a CFG++"),
        ("dpmpp_2m_cfg_pp", "DPM++ 2M CFG++"),
        ("DPM++ 2S Ancestral CFG++", "DPM++ 2S a CFG++"),
        ("euler_cfg_pp", "Euler CFG++"),
        ("Euler Ancestral CFG++ Karras", "Euler a CFG++ Karras"),
    ],
)
def test_foreign_spellings_map_to_ours_with_raw_lambda(webui, written, ours):
    text = f"a cat\nSteps: 20, Sampler: {written}, CFG scale: 1.5, Seed: 1, Size: 512x512"
    params = infotext_utils.parse_generation_parameters(text)
    script_callbacks.infotext_pasted_callback(text, params)
    assert params["Sampler"] == ours
    assert params["CFGpp scale mode"] == "raw"  # reForge / ComfyUI use the CFG value as λ
    assert ("CFGpp scale mode", "cfgpp_scale_mode", "raw") in infotext_utils.get_override_settings(params)
    assert sd_samplers.get_sampler_from_infotext(params) == ours.removesuffix(" Karras")


@pytest.mark.parametrize("written", ["Euler a CFG++", "DDIM CFG++", "Euler a", "Foo CFG++"])
def test_names_the_webui_knows_or_we_do_not_are_left_alone(webui, written):
    params = {"Sampler": written}
    script_callbacks.infotext_pasted_callback("", params)
    assert params == {"Sampler": written}


def test_our_infotext_restores_the_scale_mode_as_an_override(webui, model):
    shared.opts.data["cfgpp_scale_mode"] = "raw"
    _, res = webui.txt2img([False], sampler_name="Euler CFG++", steps=1, width=64, height=64)
    shared.opts.data["cfgpp_scale_mode"] = "cfg/12.5"
    params, _ = webui.paste(res.infotexts[0])
    assert params["Sampler"] == "Euler CFG++"
    assert infotext_utils.get_override_settings(params) == [("CFGpp scale mode", "cfgpp_scale_mode", "raw")]
