"""The img2img "CFG++ inversion" accordion in the fake SD.Next (058a7f0c): the real script file, the
adapter's inversion at the end of the base pass's process_pre, and the pass starting there.

Oracle: the round trip. With prompt = source prompt and Euler CFG++ (or DDIM CFG++) the pass's
final latent is the init image's latent (as the pipeline encodes it with the job's seed) far more
closely than the plain img2img of the same job. `pytest -s` prints the numbers.
"""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
from modules import processing, processing_vae, shared

from lib_hidiff.webui import inversion_infotext

from .sdnext_env import hook_count, shown, tiny_pipeline, tiny_unet

TITLE = "CFG++ inversion"


@pytest.fixture
def pipe(sdnext):
    return sdnext.load_model()


@pytest.fixture
def smooth(sdnext):
    """The tiny UNet with its output scaled by 0.05: a near-linear (Gaussian-like) denoiser, for which
    the round trip reaches rounding level; the random UNet's ε is huge and needs many iterations."""
    unet = copy.deepcopy(tiny_unet())
    with torch.no_grad():
        unet.conv_out.weight.mul_(0.05)
        unet.conv_out.bias.mul_(0.05)
    return sdnext.load_model(tiny_pipeline(unet=unet))


@pytest.fixture
def latents_out(monkeypatch):
    """The final latents of every generation (what SD.Next hands its VAE decode)."""
    seen: list[torch.Tensor] = []
    original = processing_vae.vae_decode

    def decode(latents, model, *args, **kwargs):
        seen.append(latents.detach().clone())
        return original(latents, model, *args, **kwargs)

    monkeypatch.setattr(processing_vae, "vae_decode", decode)
    return seen


def _image(size=32, seed=5):
    from PIL import Image

    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 256, (size, size, 3), dtype=np.uint8))


def _img2img(sdnext, inversion=None, **kwargs):
    """An img2img job from the UI with the inversion's slots set (None: the UI defaults)."""
    kwargs = {
        "prompt": "a cat",
        "negative_prompt": "blurry",
        "width": 32,
        "height": 32,
        "steps": 4,
        "seed": 1,
        "cfg_scale": 7.0,
        "denoising_strength": 1.0,
        "sampler_name": "Euler CFG++",
        "init_images": [_image()],
        **kwargs,
    }
    p = processing.StableDiffusionProcessingImg2Img(sd_model=shared.sd_model, **kwargs)
    p.scripts = sdnext.runner("img2img")
    args = sdnext.default_args("img2img")
    if inversion is not None:
        script = sdnext.script(TITLE, "img2img")
        for i, value in enumerate(inversion):
            args[script.args_from + i] = value
    p.script_args = args
    return p, processing.process_images(p)


def _clean_latent(pipe, image, seed):
    """The init latent diffusers' img2img encodes for that seed (sample of the VAE posterior, scaled)."""
    pixels = pipe.image_processor.preprocess(image)
    with torch.no_grad():
        dist = pipe.vae.encode(pixels).latent_dist
    return dist.sample(generator=torch.Generator().manual_seed(seed)) * pipe.vae.config.scaling_factor


def _relative(a, b):
    return float((a.float() - b.float()).norm() / b.float().norm())


def test_accordion_shown_in_img2img_only(sdnext):
    assert sdnext.script(TITLE, "img2img") is not None
    assert all(s.title() != TITLE for s in sdnext.runner("txt2img").scripts)


@pytest.mark.parametrize(
    "sampler, strength, iterations, bound",
    [("Euler CFG++", 0.5, 2, 1e-4), ("DDIM CFG++", 0.5, 2, 1e-4), ("Euler CFG++", 1.0, 0, 0.05)],
)
def test_round_trip_on_a_smooth_model(sdnext, smooth, latents_out, sampler, strength, iterations, bound):
    clean = _clean_latent(smooth, _image(), seed=1)
    # SD.Next's default noise multiplier (eta) is 1 (ui_definitions.py:775): DDIM retraces at eta 0
    job = {"sampler_name": sampler, "denoising_strength": strength, "scheduler_eta": 0.0}
    p, res = _img2img(sdnext, [True, "a cat", 0, iterations], **job)
    assert p.extra_generation_params.get(inversion_infotext.ENABLED) is True
    back = _relative(latents_out[-1], clean)
    _img2img(sdnext, None, **job)
    plain = _relative(latents_out[-1], clean)
    print(
        f"\nsmooth model, {sampler} strength {strength}, {iterations} it: round trip {back:.1e}; plain {plain:.1e}"
    )
    assert back <= bound * plain
    assert hook_count(smooth.unet) == 0 and "add_noise" not in vars(shared.sd_model.scheduler)


def test_round_trip_far_closer_than_plain_img2img(sdnext, pipe, latents_out):
    """The random tiny UNet (huge ε, 4 steps): the inversion still lands far closer than img2img."""
    clean = _clean_latent(pipe, _image(), seed=1)
    _img2img(sdnext, [True, "a cat", 0, 3], denoising_strength=0.5)
    back = _relative(latents_out[-1], clean)
    _img2img(sdnext, None, denoising_strength=0.5)
    plain = _relative(latents_out[-1], clean)
    print(f"\nrandom UNet, Euler CFG++ strength 0.5, 3 it: round trip {back:.2e}; plain img2img {plain:.2e}")
    assert back < plain / 4


def test_same_request_twice_identical_and_plain_img2img_unchanged(sdnext, pipe, latents_out):
    _img2img(sdnext, None)
    before = latents_out[-1]
    p1, res1 = _img2img(sdnext, [True, "a cat", 0, 1])
    p2, res2 = _img2img(sdnext, [True, "a cat", 0, 1])
    assert torch.equal(latents_out[-2], latents_out[-1])
    assert res1.infotexts == res2.infotexts
    _img2img(sdnext, None)
    assert torch.equal(latents_out[-1], before)
    assert not torch.equal(latents_out[-2], before)  # the inversion changed the start
    assert hook_count(pipe.unet) == 0 and "add_noise" not in vars(shared.sd_model.scheduler)
    assert not [m for m in shown() if TITLE in m]


def test_edited_prompt_changes_the_picture(sdnext, pipe, latents_out):
    _img2img(sdnext, [True, "a cat", 0, 0])
    _img2img(sdnext, [True, "a cat", 0, 0], prompt="a dog")
    assert _relative(latents_out[-1], latents_out[-2]) > 0.05


def test_infotext_written_and_read_back_through_sdnext_parser(sdnext, pipe):
    p, res = _img2img(sdnext, [True, "a cat, sitting", 9.5, 3])
    info = res.infotexts[0]
    assert 'CFGpp inversion prompt: "a cat, sitting"' in info
    assert "CFGpp inversion CFG scale: 9.5" in info and "CFGpp inversion iterations: 3" in info
    assert "CFGpp inversion scale: 0.76" in info  # λ = 9.5 / 12.5
    params, _, values = sdnext.paste(info, tab="img2img")
    pasted = dict(zip([id(c) for c, _ in sdnext.runner("img2img").infotext_fields], values))
    got = [pasted[id(c)] for c, _ in sdnext.script(TITLE, "img2img").infotext_fields]
    assert got == [True, "a cat, sitting", 9.5, 3]


def test_api_args_as_dict(sdnext, pipe, latents_out):
    _img2img(sdnext, [True, "a cat", 0, 0])
    ui = latents_out[-1]
    p = processing.StableDiffusionProcessingImg2Img(
        sd_model=shared.sd_model,
        prompt="a cat",
        negative_prompt="blurry",
        width=32,
        height=32,
        steps=4,
        seed=1,
        cfg_scale=7.0,
        denoising_strength=1.0,
        sampler_name="Euler CFG++",
        init_images=[_image()],
    )
    p.scripts = sdnext.runner("img2img")
    p.script_args = sdnext.default_args("img2img")
    p.per_script_args[TITLE] = [{"source_prompt": "a cat", "iterations": 0}]  # SD.Next's API (script.py:100)
    processing.process_images(p)
    assert torch.equal(latents_out[-1], ui)


@pytest.mark.parametrize(
    "inversion, message",
    [
        ([True, "a cat", 0, 99], "'iterations'"),
        ([True, "a cat", -3, 0], "'cfg_scale'"),
    ],
)
def test_bad_values_one_line_and_plain_img2img(sdnext, pipe, latents_out, inversion, message):
    _img2img(sdnext, None)
    plain = latents_out[-1]
    p, res = _img2img(sdnext, inversion)
    assert torch.equal(latents_out[-1], plain)
    lines = [m for m in shown() if TITLE in m]
    assert len(lines) == 1 and message in lines[0] and "\n" not in lines[0]
    assert inversion_infotext.ENABLED not in res.infotexts[0]
    assert hook_count(pipe.unet) == 0


def test_cfg_one_one_line_and_plain_img2img(sdnext, pipe, latents_out):
    """CFG 1: the pipeline runs no unconditional pass, so there is nothing to invert with."""
    _img2img(sdnext, None, cfg_scale=1.0, sampler_name="Euler")
    plain = latents_out[-1]
    p, res = _img2img(sdnext, [True, "a cat", 0, 0], cfg_scale=1.0, sampler_name="Euler")
    assert torch.equal(latents_out[-1], plain)
    lines = [m for m in shown() if TITLE in m]
    assert len(lines) == 1 and "guidance_scale must be > 1" in lines[0]
    assert inversion_infotext.ENABLED not in res.infotexts[0]


def test_txt2img_job_refused_with_one_line(sdnext, pipe):
    # The accordion is img2img-only; an API request could still send its args to a txt2img job.
    from lib_hidiff.webui import inversion

    p = sdnext.make_txt2img()
    inversion.process(p, [True, "a cat", 0, 0])
    assert getattr(p, inversion.P_ARGS) is None
    assert [m for m in shown() if "works in img2img only" in m]


def test_failure_inside_the_pass_one_line_plain_img2img_nothing_left(sdnext, pipe, latents_out, monkeypatch):
    from lib_hidiff.diffusers import inversion as library

    _img2img(sdnext, None)
    plain = latents_out[-1]

    def broken(*args, **kwargs):
        raise RuntimeError("out of memory (simulated)")

    monkeypatch.setattr(library, "invert_cfgpp", broken)
    p, res = _img2img(sdnext, [True, "a cat", 0, 1])
    assert torch.equal(latents_out[-1], plain)
    lines = [m for m in shown() if TITLE in m]
    assert len(lines) == 1 and "out of memory (simulated)" in lines[0]
    assert inversion_infotext.ENABLED not in res.infotexts[0]
    assert hook_count(pipe.unet) == 0 and "add_noise" not in vars(shared.sd_model.scheduler)


def test_lora_in_the_prompt_is_active_in_the_inversion_too(sdnext, smooth, latents_out):
    """SD.Next activates the prompt's networks after process_pre (processing_diffusers.py:150-151):
    the inversion runs inside the pass, so it inverts the same (LoRA-changed) model."""
    clean = _clean_latent(smooth, _image(), seed=1)
    bias = smooth.unet.conv_out.bias.detach().clone()
    job = {"prompt": "<lora:style:4>a cat", "denoising_strength": 0.5}  # parsed: "a cat"
    _img2img(sdnext, [True, "a cat", 0, 2], **job)
    back = _relative(latents_out[-1], clean)
    _img2img(sdnext, [True, "a cat", 0, 2], denoising_strength=0.5)
    without = latents_out[-1]
    _img2img(sdnext, None, **job)
    plain = _relative(latents_out[-1], clean)
    print(f"\nwith a LoRA: round trip {back:.1e}; plain {plain:.1e}")
    assert back <= 1e-4 * plain
    assert torch.equal(smooth.unet.conv_out.bias, bias)  # deactivated after the generation
    _img2img(sdnext, None, denoising_strength=0.5)
    assert not torch.equal(latents_out[-1], latents_out[-2])  # the LoRA does change the model
    assert _relative(without, clean) <= 1e-4 * plain


def test_png_info_button_fills_the_source_prompt(sdnext):
    """SD.Next runs every script's after_component (scripts_manager.py:776-790): the button gets the
    init image (elem_id img2img_image, ui_img2img.py:77) and reads its infotext with SD.Next's parser."""
    import gradio as gr
    from PIL import Image

    script = sdnext.script(TITLE, "img2img")
    image = gr.Image(elem_id="img2img_image")
    script.after_component(image, elem_id="img2img_image")
    clicks = [h for h in script.cfgpp_inversion_button.handlers if h[0] == "click"]
    assert len(clicks) == 1
    _, fn, inputs, outputs = clicks[0]
    assert inputs == [image] and outputs == [script.cfgpp_inversion_source]
    picture = Image.new("RGB", (8, 8))
    picture.info["parameters"] = "a cat, sitting\nNegative prompt: blurry\nSteps: 20, Seed: 1, Sampler: Euler"
    assert fn(picture) == "a cat, sitting"
