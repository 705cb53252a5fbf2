"""The "CFG++ inversion" accordion in the fake A1111 1.10 img2img (scripts/cfgpp_inversion.py).

The closed-form model (webui_env.ClosedFormDenoiser: data ~ N(m(prompt), 1)) lets the start latent
be checked against `invert_cfgpp` run directly on the same formulas, and round trips be measured;
a tiny real UNet checks the round trip on a non-linear model, with and without HiDiffusion.
"""

from __future__ import annotations

import functools
import os

import gradio as gr
import pytest
import torch
from modules import processing, prompt_parser, script_callbacks, sd_samplers, sd_samplers_common, shared

from lib_hidiff import cfgpp
from lib_hidiff.webui import generation, inversion_args, inversion_infotext, messages
from tests.inversion_checks import clean_latent, closed_form_inversion, output, rel

from . import webui_env
from .webui_env import ClosedFormModel, HybridModel, TinyLatentDiffusion, WebUI, closed_form_mean

INVERSION_SCRIPT = os.path.join(webui_env.REPO, "scripts", "cfgpp_inversion.py")
TITLE = "CFG++ inversion"
SIZE = {"width": 64, "height": 64}  # an 8×8 latent


@pytest.fixture
def env(monkeypatch):
    monkeypatch.setattr(webui_env, "SCRIPT_FILES", [*webui_env.SCRIPT_FILES, INVERSION_SCRIPT])
    e = WebUI()
    e.start()
    try:
        yield e
    finally:
        e.stop()


@pytest.fixture
def model(env):
    shared.sd_model = ClosedFormModel()
    return shared.sd_model


@pytest.fixture
def starts(monkeypatch):
    """The latent every sampler function is handed (the WebUI's xi), in order."""
    seen: list[torch.Tensor] = []
    create = sd_samplers.create_sampler

    def create_recording(name, model):
        sampler = create(name, model)
        func = sampler.func

        @functools.wraps(func)
        def recording(model_wrap, x, *args, **kwargs):
            seen.append(x.detach().clone())
            return func(model_wrap, x, *args, **kwargs)

        sampler.func = recording
        return sampler

    monkeypatch.setattr(sd_samplers, "create_sampler", create_recording)
    return seen


def inversion_args_list(env, values, hidiffusion=None):
    args = env.script_args(hidiffusion, tab="img2img")
    script = env.script(TITLE, tab="img2img")
    for i, value in enumerate(values):
        args[script.args_from + i] = value
    return args


def run(env, values, init, hidiffusion=None, **kwargs):
    kwargs = {
        **SIZE,
        "steps": 6,
        "sampler_name": "Euler CFG++",
        "cfg_scale": 7.0,
        "batch_size": init.shape[0],
        **kwargs,
    }
    p = processing.StableDiffusionProcessingImg2Img(
        scripts=env.runners["img2img"],
        script_args=inversion_args_list(env, values, hidiffusion),
        init_latent=init,
        **kwargs,
    )
    return p, processing.process_images(p)


# -- what the accordion does -----------------------------------------------------------------------
def reference_inversion(p, init, source, ascending, iterations):
    """invert_cfgpp on the closed-form formulas (source prompt as cond, negative prompt as uncond)."""
    zero = torch.zeros(init.shape[0], 5, 1, 1)
    m_src = closed_form_mean(prompt_parser.encode(source)[None].expand(init.shape[0], -1, -1), zero)
    m_neg = closed_form_mean(
        prompt_parser.encode(p.negative_prompt)[None].expand(init.shape[0], -1, -1), zero
    )
    lam = cfgpp.lambda_from_cfg(p.cfg_scale, "cfg/12.5")
    return closed_form_inversion(init, m_src, m_neg, ascending, lam, iterations)


def expected_start(model, p, init, source, iterations, strength):
    """The reference inversion over the sigmas the k-diffusion sampler uses."""
    steps = p.steps
    t_enc = int(min(strength, 0.999) * steps)
    sched = p.sampler.get_sigmas(p, steps)[steps - t_enc - 1 :]  # the sampler's own schedule
    return reference_inversion(p, init, source, sched.flip(0), iterations), sched


@pytest.mark.parametrize("sampler", ["Euler CFG++", "Euler", "DPM++ 2M"])
def test_the_inverted_latent_replaces_init_plus_noise(env, model, starts, sampler):
    init = clean_latent()
    p, res = run(
        env, [True, "a photo", 0, 3], init, prompt="a cat", sampler_name=sampler, denoising_strength=0.75
    )
    y, _ = expected_start(model, p, init, "a photo", 3, 0.75)
    assert len(starts) == 1
    assert rel(starts[0], y) <= 1e-5
    assert inversion_infotext.ENABLED in res.infotexts[0]


def test_extra_noise_is_compensated(env, model, starts):
    shared.opts.data["img2img_extra_noise"] = 0.3
    init = clean_latent()
    p, res = run(env, [True, "a photo", 0, 2], init, denoising_strength=0.6)
    y, _ = expected_start(model, p, init, "a photo", 2, 0.6)
    assert rel(starts[0], y) <= 1e-5
    assert "Extra noise" in res.infotexts[0]


def test_off_by_default_and_untouched(env, model, starts):
    init = clean_latent()
    run(env, [], init, denoising_strength=0.75)
    run(env, [False, "a photo", 0, 3], init, denoising_strength=0.75)
    assert torch.equal(starts[0], starts[1])
    noise = torch.stack([torch.randn(4, 8, 8, generator=torch.Generator().manual_seed(s)) for s in (1, 2)])
    sched = model.denoiser.get_sigmas(6)[6 - 4 - 1 :]
    assert rel(starts[0], init + noise * sched[0]) <= 1e-6  # the WebUI's own init + noise


@pytest.mark.parametrize("strength", [1.0, 0.5])
def test_round_trip_reproduces_the_init_latent(env, model, strength):
    """Prompt = source prompt, Euler CFG++, same CFG: the image comes back."""
    init = clean_latent()
    errors = {}
    for iterations in (0, 1, 3, 10):
        _, res = run(env, [True, "a cat", 0, iterations], init, prompt="a cat", denoising_strength=strength)
        errors[iterations] = rel(output(res), init)
    _, plain = run(env, [], init, prompt="a cat", denoising_strength=strength)
    errors["no inversion"] = rel(output(plain), init)
    print(
        f"\n[cfgpp inversion glue] closed form, strength {strength}: "
        + ", ".join(f"{k}: {v:.1e}" for k, v in errors.items())
    )
    assert errors[10] <= 1e-5
    assert errors[0] < errors["no inversion"]


def test_inpainting_changes_only_the_masked_area(env, model):
    init = clean_latent()
    latent_mask = torch.zeros(1, 4, 8, 8)
    latent_mask[..., :4] = 1.0  # repaint the left half
    _, res = run(
        env, [True, "a photo", 0, 2], init, prompt="a cat", denoising_strength=0.8, latent_mask=latent_mask
    )
    out = output(res)
    assert torch.equal(out[..., 4:], init[..., 4:])
    assert rel(out[..., :4], init[..., :4]) > 0.01  # the edit happened where it was asked for
    # with source = prompt the masked area comes back too
    _, same = run(
        env, [True, "a cat", 0, 10], init, prompt="a cat", denoising_strength=0.8, latent_mask=latent_mask
    )
    assert torch.equal(output(same)[..., 4:], init[..., 4:])
    assert rel(output(same), init) <= 1e-5


def inversion_calls(model):
    """Rows of the inner-model calls the inversion made (cond + uncond rows of each call)."""
    return [c["x"].shape[0] for c in model.denoiser.calls]


def test_one_inversion_per_distinct_init_image(env, model, starts):
    a, b = clean_latent(1, seed=1), clean_latent(1, seed=2)
    init = torch.cat([a, a, b])
    p, _ = run(env, [True, "a photo", 0, 0], init, n_iter=2, batch_size=3)
    rows = inversion_calls(model)
    sampling = 2 * 6 * 6  # two batches × 6 steps × (3 cond + 3 uncond rows)... counted by rows below
    assert rows.count(4) > 0 and all(r in (4, 6) for r in rows)  # inversion: 2 distinct images
    inversion_rows = sum(r for r in rows if r == 4)
    assert inversion_rows == 4 * 1 * 5  # 5 steps (strength 0.75 of 6), 1 call each, once for both batches
    assert torch.equal(starts[0][0], starts[0][1]) and not torch.equal(starts[0][0], starts[0][2])
    assert torch.equal(starts[0], starts[1])  # the second batch reuses the inversion
    del sampling


def test_progress_counts_the_inversion_steps(env, model):
    seen = []
    script_callbacks.on_cfg_denoiser(
        lambda params: seen.append((params.sampling_step, params.total_sampling_steps, shared.state.textinfo))
    )
    run(env, [True, "a photo", 0, 0], clean_latent(), denoising_strength=1.0)
    inverting = [s for s in seen if s[2] == TITLE]
    assert [s[:2] for s in inverting] == [(0, 6)] + [(i, 6) for i in range(5)]  # set after each step
    assert len(seen) == len(inverting) + 6 and shared.state.textinfo is None  # sampling: 6 more calls


def test_progress_with_refinement_counts_every_phase(env, model):
    """iterations > 0: plain chain, refined chain and two round trips, 6 steps each: the bar runs over
    cfgpp.inversion_progress_steps = 24 steps, never backwards, and reaches its end."""
    seen = []
    script_callbacks.on_cfg_denoiser(
        lambda params: seen.append((params.sampling_step, params.total_sampling_steps, shared.state.textinfo))
    )
    run(env, [True, "a photo", 0, 2], clean_latent(), denoising_strength=1.0)
    inverting = [s for s in seen if s[2] == TITLE]
    total = cfgpp.inversion_progress_steps(6, 2)
    assert total == 24 and all(s[1] == total for s in inverting)
    steps = [s[0] for s in inverting]
    assert steps == sorted(steps) and set(steps) == set(range(total - 1))  # after step 23: no more calls
    assert 4 * 6 < len(inverting) <= cfgpp.inversion_max_model_calls(6, 2)
    assert len(seen) == len(inverting) + 6 and shared.state.textinfo is None


# -- arguments, infotext, API --------------------------------------------------------------------
def test_api_dict_and_positional_args_and_infotext_round_trip(env, model):
    init = clean_latent()
    p1, res1 = run(env, [{"source_prompt": "a red, fox", "iterations": 2, "cfg_scale": 5}], init)
    p2, res2 = run(env, [True, "a red, fox", 5, 2], init)
    assert torch.equal(output(res1), output(res2))
    info = res1.infotexts[0]
    assert 'CFGpp inversion prompt: "a red, fox"' in info and "CFGpp inversion iterations: 2" in info
    assert "CFGpp inversion CFG scale: 5" in info and "CFGpp inversion scale: 0.4" in info
    params, values = env.paste(info, tab="img2img")
    script = env.script(TITLE, tab="img2img")
    ours = dict(zip([f.name for f in inversion_args.FIELDS], values[-len(inversion_args.FIELDS) :]))
    assert ours == {"enabled": True, "source_prompt": "a red, fox", "cfg_scale": 5.0, "iterations": 2.0}
    assert inversion_infotext.args_from_infotext(params) == inversion_args.InversionArgs(
        True, "a red, fox", 5.0, 2
    )
    assert script.paste_field_names == list(inversion_infotext.PASTE_KEYS)
    # an infotext without the inversion unticks the box and leaves the rest alone
    _, values = env.paste("a cat\nSteps: 6, Sampler: Euler CFG++, CFG scale: 7", tab="img2img")
    assert values[-4:] == [False, None, None, None]
    # the API sees the settings in info (Processed.js)
    assert '"CFGpp inversion iterations": 2' in res1.js()


def _readme_inversion_api() -> tuple[dict, list]:
    """README "Editing with CFG++" > "HTTP API": the JSON request and the positional example."""
    import json
    import re

    with open(os.path.join(webui_env.REPO, "README.md"), encoding="utf-8") as f:
        readme = f.read()
    section = readme[readme.index("## Editing with CFG++") :]
    section = section[section.index("### HTTP API") : section.index("### Cost")]
    block = re.search(r"```json\n(POST /sdapi/v1/img2img)\n(.*?)```", section, re.S)
    positional = re.search(r'`(\{"args": \[true, .*?\]\})`', section)
    assert block is not None and positional is not None
    return json.loads(block.group(2)), json.loads(positional.group(1))["args"]


def test_readme_api_example_runs_the_inversion(env, model):
    """The README's request, its script name and args as A1111's API hands them to the script
    (modules/api/api.py@1.10.1:348-360 init_script_args: the script found by its title, lower-cased
    by script_name_to_index, :36-40, :308-313; args written over its slots), and its positional form: the
    same inversion."""
    request, positional = _readme_inversion_api()
    script = env.script(TITLE, tab="img2img")
    (name,) = request["alwayson_scripts"]
    assert name.lower() == script.title().lower()
    args = request["alwayson_scripts"][name]["args"]
    expected = inversion_args.InversionArgs(True, "a photo of a cat on a sofa", 0.0, 2)
    assert inversion_args.parse(args) == inversion_args.parse(positional) == expected
    assert set(args[0]) <= {f.name for f in inversion_args.FIELDS}
    init = clean_latent()
    kwargs = {k: request[k] for k in ("prompt", "sampler_name", "denoising_strength")}
    kwargs["cfg_scale"] = float(request["cfg_scale"])
    p, res = run(env, args, init, **kwargs)
    _, again = run(env, positional, init, **kwargs)
    assert torch.equal(output(res), output(again))
    info = res.infotexts[0]
    assert "CFGpp inversion: True" in info and "CFGpp inversion iterations: 2" in info
    assert 'CFGpp inversion prompt: "a photo of a cat on a sofa"' not in info  # no , or : -> unquoted
    assert "CFGpp inversion prompt: a photo of a cat on a sofa" in info
    assert not [c for c in p.comments if "CFG++ inversion" in c]


@pytest.mark.parametrize(
    "values, message",
    [
        (
            [True, "a photo", 0, 99],
            "CFG++ inversion argument 'iterations' must be an integer in [0, 20], got 99",
        ),
        (
            [{"iterations": 1.5}],
            "CFG++ inversion argument 'iterations' must be an integer in [0, 20], got 1.5",
        ),
        (
            [True, "a photo", -1, 0],
            "CFG++ inversion argument 'cfg_scale' must be a number in [0, 30], got -1",
        ),
        ([{"source": "x"}], "CFG++ inversion argument 'source' is unknown"),
        ([True, 3, 0, 0], "CFG++ inversion argument 'source_prompt' must be text, got 3"),
    ],
)
def test_bad_values_get_one_line_and_an_untouched_generation(env, model, values, message):
    init = clean_latent()
    p, res = run(env, values, init)
    _, plain = run(env, [], init)
    assert torch.equal(output(res), output(plain))
    lines = [c for c in p.comments if "CFG++ inversion" in c]
    assert (
        len(lines) == 1
        and lines[0].startswith(message)
        and lines[0].endswith("generating without CFG++ inversion")
    )
    assert messages.api_messages(p.extra_generation_params) == lines
    assert inversion_infotext.ENABLED not in res.infotexts[0]


def test_refiner_is_refused(env, model):
    init = clean_latent()
    p, res = run(env, [True, "a photo", 0, 0], init, refiner_checkpoint_info=object(), refiner_switch_at=2.0)
    assert any("does not run with a refiner" in c for c in p.comments)
    assert inversion_infotext.ENABLED not in res.infotexts[0]


def test_xyz_axes(env, model):
    xyz = env.xyz()
    labels = [o.label for o in xyz.axis_options]
    for label in (
        "[CFG++ inversion] Enabled",
        "[CFG++ inversion] Iterations",
        "[CFG++ inversion] Source prompt",
        "[CFG++ inversion] CFG scale",
    ):
        assert labels.count(label) == 1
    env.reload()
    assert [o.label for o in env.xyz().axis_options].count("[CFG++ inversion] Iterations") == 1
    init = clean_latent()
    p = processing.StableDiffusionProcessingImg2Img(
        scripts=env.runners["img2img"],
        script_args=inversion_args_list(env, [True, "a cat", 0, 0]),
        init_latent=init,
        prompt="a cat",
        steps=6,
        sampler_name="Euler CFG++",
        batch_size=2,
        **SIZE,
    )
    cells = env.xyz().run_cells(p, "[CFG++ inversion] Iterations", ["0", "10"])
    errors = [rel(output(res), init) for _, res in cells]
    assert errors[1] < 0.01 * errors[0]
    assert "CFGpp inversion iterations: 10" in cells[1][1].infotexts[0]
    with pytest.raises(ValueError):
        env.xyz().run_cells(p, "[CFG++ inversion] Iterations", ["21"])


# -- UI -------------------------------------------------------------------------------------------
def test_accordion_in_img2img_only(env):
    assert env.script(TITLE, tab="img2img") is not None
    assert env.script(TITLE, tab="txt2img") is None
    script = env.script(TITLE, tab="img2img")
    assert [type(c).__name__ for c in script.controls] == ["InputAccordion", "Textbox", "Slider", "Slider"]
    assert script.controls[0].value is False


def test_png_info_button_fills_the_source_prompt(env):
    script = env.script(TITLE, tab="img2img")
    image = gr.Image(elem_id="img2img_image")
    env.runners["img2img"].after_component(image)
    ((kind, fn, inputs, outputs),) = script.cfgpp_inversion_button.handlers
    assert kind == "click" and inputs == [image] and outputs == [script.controls[1]]

    class Png:
        info = {
            "parameters": "a red fox, snow\nNegative prompt: blurry\nSteps: 20, Sampler: Euler, CFG scale: 7"
        }

    assert fn(Png()) == "a red fox, snow"
    assert fn(None) == gr.update()

    class Plain:
        info = {}

    assert fn(Plain()) == gr.update()


# -- a real UNet ----------------------------------------------------------------------------------
def test_round_trip_on_a_tiny_unet(env):
    shared.sd_model = TinyLatentDiffusion(webui_env.tiny_sd15_unet(), "tiny")
    init = clean_latent(1)
    errors = {}
    for iterations in (0, 2, 5, 20):
        _, res = run(
            env, [True, "a cat", 0, iterations], init, prompt="a cat", denoising_strength=0.5, steps=6
        )
        errors[iterations] = rel(output(res), init)
    _, plain = run(env, [], init, prompt="a cat", denoising_strength=0.5, steps=6)
    errors["no inversion"] = rel(output(plain), init)
    print(
        "\n[cfgpp inversion glue] tiny UNet round trip by iterations: "
        + ", ".join(f"{k}: {v:.1e}" for k, v in errors.items())
    )
    values = [errors[k] for k in (0, 2, 5, 20)]
    assert values == sorted(values, reverse=True) and values[-1] <= 0.1 * values[0]
    assert values[0] < errors["no inversion"]


@pytest.mark.parametrize("inversion_first", [False, True])
def test_hidiffusion_runs_in_the_inversion_on_the_sampling_clock(monkeypatch, inversion_first):
    """With HiDiffusion on, every inversion call sees the step (and so the HiDiffusion model) the
    sampling uses at the same sigma, whichever script's hook runs first."""
    files = [f for f in webui_env.SCRIPT_FILES if f != INVERSION_SCRIPT]
    files = [INVERSION_SCRIPT, *files] if inversion_first else [*files, INVERSION_SCRIPT]
    monkeypatch.setattr(webui_env, "SCRIPT_FILES", files)
    env = WebUI()
    env.start()
    try:
        _check_hidiffusion_clock(env, monkeypatch)
    finally:
        env.stop()


def _check_hidiffusion_clock(env, monkeypatch):
    shared.sd_model = HybridModel(webui_env.tiny_sd15_unet(), "hybrid")
    readings: list[tuple[float, object]] = []
    forward = type(shared.sd_model.denoiser).forward

    def recording(self, x, sigma, cond):
        act = generation.current()
        readings.append((float(sigma[0]), None if act is None else act.progress()))
        return forward(self, x, sigma, cond)

    monkeypatch.setattr(type(shared.sd_model.denoiser), "forward", recording)
    p, res = run(env, [True, "a photo", 0, 2], clean_latent(), hidiffusion=[True], denoising_strength=0.75)
    assert "HiDiffusion" in res.infotexts[0] and generation.current() is None  # closed afterwards
    assert all(r is not None for _, r in readings)
    steps = [r for r in readings]
    sampling = steps[-5:]  # 5 sampling steps, one call each
    clock = {s: r for s, r in sampling}
    assert [r for _, r in sampling] == [(j, 5) for j in range(5)]
    for sigma, reading in steps[:-5]:
        assert reading == clock[sigma]


class TimestepSampler:
    """What img2img touches of A1111 1.10's timestep samplers (sd_samplers_timesteps.CompVisSampler:
    get_timesteps, and sample_img2img's start latent, which is returned as it is)."""

    def __init__(self, config):
        self.config = config
        self.last_latent = self.xi = None

    def get_timesteps(self, p, steps):
        return torch.clip(torch.asarray(list(range(0, 1000, 1000 // steps))) + 1, 0, 999)

    def sample_img2img(
        self, p, x, noise, conditioning, unconditional_conditioning, steps=None, image_conditioning=None
    ):
        steps, t_enc = sd_samplers_common.setup_img2img_steps(p, steps)
        a = shared.sd_model.alphas_cumprod[self.get_timesteps(p, steps)[t_enc]]
        self.xi = x * a.sqrt() + noise * (1 - a).sqrt()
        if shared.opts.img2img_extra_noise > 0:
            self.xi += noise * shared.opts.img2img_extra_noise * a.sqrt()
        return self.xi / a.sqrt()


@pytest.mark.parametrize("extra", [0.0, 0.2])
def test_timestep_samplers_start_from_the_inverted_latent(env, model, monkeypatch, extra):
    """VP start latent √ᾱ x + √(1−ᾱ) n: the same n = (y − x)/σ makes it √ᾱ y."""
    model.alphas_cumprod = webui_env.sd_alphas_cumprod()
    shared.opts.data["img2img_extra_noise"] = extra
    stub = TimestepSampler(sd_samplers.find_sampler_config("DDIM"))
    create = sd_samplers.create_sampler
    monkeypatch.setattr(
        sd_samplers, "create_sampler", lambda name, m: stub if name == "DDIM" else create(name, m)
    )
    init = clean_latent()
    p, _ = run(env, [True, "a photo", 0, 2], init, sampler_name="DDIM", denoising_strength=0.5)
    steps, t_enc = 6, 3
    ac = model.alphas_cumprod.double()[stub.get_timesteps(p, steps)[: t_enc + 1]]
    ascending = torch.cat([torch.zeros(1, dtype=torch.float64), ((1 - ac) / ac).sqrt()]).float()
    y = reference_inversion(p, init, "a photo", ascending, 2)
    assert rel(stub.xi, y * ac[-1].sqrt().float()) <= 1e-5


def test_float16_init_latent(env, model, starts):
    init = clean_latent()
    p, _ = run(env, [True, "a photo", 0, 2], init.half(), denoising_strength=0.75)
    y, _ = expected_start(model, p, init.half().float(), "a photo", 2, 0.75)
    assert starts[0].dtype == torch.float32 and rel(starts[0], y) <= 1e-4


def test_unsupported_host_gets_one_line(env, model, monkeypatch):
    from lib_hidiff.webui import hosts

    monkeypatch.setattr(type(hosts.current()), "cfgpp_inversion", False)
    init = clean_latent()
    p, res = run(env, [True, "a photo", 0, 2], init)
    _, plain = run(env, [], init)
    assert torch.equal(output(res), output(plain))
    assert [c for c in p.comments if "CFG++ inversion" in c] == [
        "CFG++ inversion is not available on AUTOMATIC1111 WebUI; generating without it"
    ]
