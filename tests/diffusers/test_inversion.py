"""CFG++ inversion on diffusers img2img pipelines (lib_hidiff.diffusers.invert_cfgpp / start_from).

Oracles:
- the core: lib_hidiff.cfgpp.invert_cfgpp on the k-diffusion twin of the same UNet (kdiff.GuidedUNet)
  over the scheduler's own sigmas gives the same latent, and the pipeline's CFG++ pass from it equals
  the k-diffusion CFG++ sampler from it;
- the round trip (prompt = source prompt) against plain img2img of the same picture, and on a
  near-linear UNet (output scaled down: a Gaussian-like denoiser) down to rounding.
The README example ("Edit with diffusers") is run as written. `pytest -s` prints the numbers.
"""

from __future__ import annotations

import copy
import logging
import re

import numpy as np
import pytest
import torch
from diffusers.utils.torch_utils import randn_tensor

from lib_hidiff import cfgpp as kcfgpp
from lib_hidiff.diffusers import cfgpp, invert_cfgpp, start_from

from . import pipes
from .kdiff import GuidedUNet, ddim_grid

LAM, W = 0.7, 5.0
README = pipes.__file__.rsplit("/tests/", 1)[0] + "/README.md"


@pytest.fixture(scope="module")
def pipe(unet, tmp_path_factory):
    p = pipes.img2img(unet)
    p.tokenizer = pipes.tiny_tokenizer(tmp_path_factory.mktemp("tok"))
    p.register_to_config(tokenizer=("transformers", "CLIPTokenizer"))
    return p


@pytest.fixture(autouse=True)
def _plain_scheduler(pipe):
    pipe.scheduler = pipes.scheduler()
    yield
    pipe.scheduler = pipes.scheduler()


def _embeds(seed=1):
    cond, uncond = pipes.embeds(seed)
    return {"prompt_embeds": cond, "negative_prompt_embeds": uncond}


def _relative(a, b):
    return float((a.float() - b.float()).norm() / b.float().norm())


def _pass(pipe, image, steps, strength, seed=0, embeds=None, **kwargs):
    return pipe(
        image=image,
        strength=strength,
        num_inference_steps=steps,
        guidance_scale=W,
        output_type="latent",
        generator=torch.Generator().manual_seed(seed),
        **(embeds or _embeds()),
        **kwargs,
    ).images


def _invert_and_back(pipe, image, steps, strength, iterations, embeds):
    """Invert `image`, then run the img2img pass from the inverted latent (inside an active cfgpp())."""
    start = invert_cfgpp(
        pipe,
        image,
        None,
        num_inference_steps=steps,
        strength=strength,
        iterations=iterations,
        guidance_scale=W,
        **embeds,
    )
    with start_from(pipe, start):
        back = _pass(pipe, image, steps, strength, embeds=embeds)
    return start, back


def _round_trip(pipe, sampler, image, steps, strength, iterations, prediction="epsilon", embeds=None):
    pipe.scheduler = pipes.scheduler(prediction_type=prediction)
    embeds = embeds or _embeds()
    with cfgpp(pipe, sampler, LAM):
        start, back = _invert_and_back(pipe, image, steps, strength, iterations, embeds)
        plain = _pass(pipe, image, steps, strength, embeds=embeds)
    return start, back, plain


# -- the core's inversion, through the pipeline --------------------------------------------------
CORE_GRID = [
    ("euler", 1.0, "epsilon", {}),
    ("ddim", 1.0, "epsilon", {}),
    ("euler", 0.6, "epsilon", {}),
    ("ddim", 0.6, "epsilon", {}),
    ("euler", 0.6, "v_prediction", {}),
    ("ddim", 0.6, "sample", {}),
    # a VE schedule that ends above 0 (newer diffusers; 0.27.2 ends at 0 anyway)
    ("euler", 0.6, "epsilon", {"final_sigmas_type": "sigma_min"}),
]


@pytest.mark.parametrize("sampler, strength, prediction, config", CORE_GRID)
def test_equals_core_inversion_and_kdiffusion_pass(pipe, sampler, strength, prediction, config):
    image, steps, iterations = pipes.latents(seed=7), 8, 2
    pipe.scheduler = pipes.scheduler(prediction_type=prediction, **config)
    with cfgpp(pipe, sampler, LAM):
        start, back = _invert_and_back(pipe, image, steps, strength, iterations, _embeds())
    pipe.scheduler = pipes.scheduler(prediction_type=prediction, **config)
    with cfgpp(pipe, sampler, LAM) as sched:
        sched.set_timesteps(steps)
        t_start = steps - int(steps * strength)
        sigmas, timesteps = ddim_grid(sched) if sampler == "ddim" else (sched.sigmas, sched.timesteps)
    sigmas, timesteps = sigmas[t_start:], timesteps[t_start:]
    e = _embeds()
    model = GuidedUNet(
        pipe.unet, e["prompt_embeds"], e["negative_prompt_embeds"], sigmas, timesteps, LAM, prediction
    )
    vp = sampler == "ddim"
    x = image * (1 + sigmas[-1] ** 2) ** 0.5 if vp else image  # the pass's last sample, in VE
    y = kcfgpp.invert_cfgpp(model, x, sigmas.flip(0), disable=True, iterations=iterations)
    y_sample = y / (1 + sigmas[0] ** 2) ** 0.5 if vp else y
    inv_diff = _relative(start, y_sample)
    ref = kcfgpp.sample_euler_cfgpp(model, y, sigmas, disable=True)
    ref = ref / (1 + sigmas[-1] ** 2) ** 0.5 if vp else ref
    pass_diff = float((back - ref).abs().max() / ref.abs().max())
    print(
        f"\n{sampler} {prediction} strength {strength}: |y - core y| {inv_diff:.1e}, |pass - k-diffusion| {pass_diff:.1e}"
    )
    assert inv_diff <= 2e-5
    assert pass_diff <= 5e-5


# -- round trip ----------------------------------------------------------------------------------
@pytest.mark.parametrize("sampler", ["euler", "ddim"])
@pytest.mark.parametrize("prediction", ["epsilon", "v_prediction"])
def test_round_trip_far_closer_than_plain_img2img(pipe, sampler, prediction):
    image, steps, strength = pipes.latents(seed=7), 10, 0.6
    errors = {}
    for iterations in (0, 3):
        _, back, plain = _round_trip(pipe, sampler, image, steps, strength, iterations, prediction)
        errors[iterations] = _relative(back, image)
    plain_error = _relative(plain, image)
    print(
        f"\n{sampler} {prediction}: round trip {errors[0]:.2e} (0 it), {errors[3]:.2e} (3 it); plain {plain_error:.2e}"
    )
    assert errors[0] < plain_error / 4
    assert errors[3] < plain_error / 20
    assert errors[3] <= errors[0]


def test_gaussian_like_unet_round_trip_to_rounding(pipe, unet):
    """A UNet whose output is scaled down is near-linear (a Gaussian-like denoiser): exact to rounding."""
    damped = copy.deepcopy(unet)
    with torch.no_grad():
        damped.conv_out.weight.mul_(0.02)
        damped.conv_out.bias.mul_(0.02)
    p = pipes.img2img(damped)
    image = pipes.latents(seed=7)
    errors = {}
    for iterations in (0, 10):
        _, back, plain = _round_trip(p, "euler", image, 10, 1.0, iterations)
        errors[iterations] = _relative(back, image)
    plain_error = _relative(plain, image)
    print(
        f"\nnear-linear UNet, strength 1: {errors[0]:.1e} (0 it), {errors[10]:.1e} (10 it); plain {plain_error:.1e}"
    )
    assert errors[10] <= 1e-5
    assert errors[0] < plain_error / 10


def test_same_request_twice_identical_and_pipeline_untouched(pipe):
    image = pipes.latents(seed=7)
    pipe.scheduler = pipes.scheduler()
    before = _pass(pipe, image, 8, 0.5)
    hooks = (dict(pipe.unet._forward_pre_hooks), dict(pipe.unet._forward_hooks))
    a, back_a, _ = _round_trip(pipe, "euler", image, 8, 0.5, 1)
    b, back_b, _ = _round_trip(pipe, "euler", image, 8, 0.5, 1)
    assert torch.equal(a, b) and torch.equal(back_a, back_b)
    assert (dict(pipe.unet._forward_pre_hooks), dict(pipe.unet._forward_hooks)) == hooks
    pipe.scheduler = pipes.scheduler()
    assert "add_noise" not in vars(pipe.scheduler)
    assert torch.equal(_pass(pipe, image, 8, 0.5), before)


def test_progress_bar_follows_the_pipeline_or_the_caller(pipe, monkeypatch):
    """A host with its own progress bar (SD.Next) passes progress_bar=False: no second, raw bar."""
    from lib_hidiff.diffusers import inversion as inv_module

    seen = []
    real = inv_module._invert_kdiffusion

    def spy(*args, **kwargs):
        seen.append(kwargs["disable"])
        return real(*args, **kwargs)

    monkeypatch.setattr(inv_module, "_invert_kdiffusion", spy)
    image = pipes.latents(seed=7)
    pipe.scheduler = pipes.scheduler()
    with cfgpp(pipe, "euler", LAM):
        for progress_bar in (False, True, None):
            invert_cfgpp(
                pipe,
                image,
                None,
                num_inference_steps=4,
                strength=0.5,
                guidance_scale=W,
                progress_bar=progress_bar,
                **_embeds(),
            )
    pipeline_disabled = bool(getattr(pipe, "_progress_bar_config", {}).get("disable", False))
    assert seen == [True, False, pipeline_disabled]


def test_generator_given_back(pipe):
    g = torch.Generator().manual_seed(3)
    state = g.get_state()
    with cfgpp(pipe, "euler", LAM):
        invert_cfgpp(
            pipe,
            pipes.latents(seed=7),
            None,
            num_inference_steps=4,
            strength=0.5,
            guidance_scale=W,
            generator=g,
            **_embeds(),
        )
    assert torch.equal(g.get_state(), state)


def test_start_from_unused_warns_and_cleans_up(pipe, caplog):
    scheduler = pipe.scheduler
    with caplog.at_level(logging.WARNING, logger="lib_hidiff.diffusers"):
        with start_from(pipe, torch.zeros(3, 4, 8, 8)):
            _pass(pipe, pipes.latents(seed=7), 4, 0.5)  # another shape: the scheduler's own add_noise
    assert "add_noise" not in vars(scheduler)
    assert "the inverted latent was not used" in caplog.text


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"strength": 0.0}, "strength must be a number in (0, 1]"),
        ({"strength": 1.5}, "strength must be a number in (0, 1]"),
        ({"num_inference_steps": 0}, "num_inference_steps must be an integer >= 1"),
        ({"iterations": -1}, "iterations must be an integer in [0, 100]"),
        ({"iterations": 2.5}, "iterations must be an integer in [0, 100]"),
        ({"scale": -1.0}, "cfgpp_scale) must be a finite number >= 0"),
        ({"guidance_scale": 1.0}, "not [uncond, cond] (guidance_scale must be > 1)"),
        ({"scale": None, "_plain": True}, "give scale= (λ)"),
    ],
)
def test_bad_input_one_line_and_untouched(pipe, kwargs, message):
    kwargs = dict(kwargs)
    plain = kwargs.pop("_plain", False)
    call = {"num_inference_steps": 4, "strength": 0.5, "guidance_scale": W, **_embeds(), **kwargs}
    hooks = (dict(pipe.unet._forward_pre_hooks), dict(pipe.unet._forward_hooks))
    context = cfgpp(pipe, "euler", LAM) if not plain else _nothing()
    with context:
        scheduler = pipe.scheduler
        with pytest.raises(ValueError, match=re.escape(message)) as err:
            invert_cfgpp(pipe, pipes.latents(seed=7), None, **call)
        assert "add_noise" not in vars(scheduler)
    assert "\n" not in str(err.value)
    assert (dict(pipe.unet._forward_pre_hooks), dict(pipe.unet._forward_hooks)) == hooks


def test_txt2img_pipeline_is_refused_with_the_way_out(sd_pipe):
    with pytest.raises(ValueError, match=re.escape("AutoPipelineForImage2Image.from_pipe(pipe)")):
        invert_cfgpp(sd_pipe, pipes.latents(), "a cat", scale=0.5)


class _nothing:
    def __enter__(self):
        return None

    def __exit__(self, *exc):
        return False


# -- SDXL: added conditioning (pooled text embeds, time ids) ------------------------------------
def _tiny_sdxl_img2img():
    from diffusers import AutoencoderKL, StableDiffusionXLImg2ImgPipeline, UNet2DConditionModel

    torch.manual_seed(0)
    unet = UNet2DConditionModel(
        sample_size=8,
        in_channels=4,
        out_channels=4,
        layers_per_block=1,
        block_out_channels=(32, 64),
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        attention_head_dim=(2, 4),
        use_linear_projection=True,
        addition_embed_type="text_time",
        addition_time_embed_dim=8,
        transformer_layers_per_block=(1, 1),
        projection_class_embeddings_input_dim=6 * 8 + 32,
        cross_attention_dim=64,
        norm_num_groups=32,
    ).eval()
    torch.manual_seed(0)
    vae = AutoencoderKL(
        in_channels=3,
        out_channels=3,
        down_block_types=("DownEncoderBlock2D",) * 2,
        up_block_types=("UpDecoderBlock2D",) * 2,
        block_out_channels=(32, 32),
        latent_channels=4,
        norm_num_groups=32,
    ).eval()
    pipe = StableDiffusionXLImg2ImgPipeline(
        vae=vae,
        text_encoder=None,
        text_encoder_2=None,
        tokenizer=None,
        tokenizer_2=None,
        unet=unet,
        scheduler=pipes.scheduler("EulerDiscreteScheduler"),
    )
    pipe.set_progress_bar_config(disable=True)
    return pipe


def test_sdxl_img2img_round_trip(pipe):
    xl = _tiny_sdxl_img2img()
    g = torch.Generator().manual_seed(4)
    embeds = {
        "prompt_embeds": torch.randn(1, 5, 64, generator=g),
        "negative_prompt_embeds": torch.randn(1, 5, 64, generator=g),
        "pooled_prompt_embeds": torch.randn(1, 32, generator=g),
        "negative_pooled_prompt_embeds": torch.randn(1, 32, generator=g),
    }
    image = pipes.latents(seed=7)
    errors = {}
    for iterations in (0, 3):
        xl.scheduler = pipes.scheduler("EulerDiscreteScheduler")
        with cfgpp(xl, "euler", LAM):
            start = invert_cfgpp(
                xl,
                image,
                None,
                num_inference_steps=10,
                strength=0.6,
                guidance_scale=W,
                iterations=iterations,
                **embeds,
            )
            with start_from(xl, start):
                back = _pass(xl, image, 10, 0.6, embeds=embeds)
            plain = _pass(xl, image, 10, 0.6, embeds=embeds)
        errors[iterations] = _relative(back, image)
    plain_error = _relative(plain, image)
    print(f"\nSDXL: round trip {errors[0]:.2e} (0 it), {errors[3]:.2e} (3 it); plain {plain_error:.2e}")
    assert errors[3] < plain_error / 20 and errors[0] < plain_error / 4


# -- README ---------------------------------------------------------------------------------------
def _readme_blocks() -> list[str]:
    text = open(README, encoding="utf-8").read()
    section = re.split(r"^#+ Edit with diffusers\s*$", text, maxsplit=1, flags=re.M)[1]
    section = re.split(r"^#+ ", section, maxsplit=1, flags=re.M)[0]
    return re.findall(r"```python\n(.*?)```", section, re.S)


def _pil(seed=5, size=16):
    from PIL import Image

    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 256, (size, size, 3), dtype=np.uint8))


def test_readme_example_runs_as_written(pipe, tmp_path, monkeypatch):
    definitions, usage = _readme_blocks()
    namespace: dict = {}
    exec(compile(definitions, "README: Edit with diffusers", "exec"), namespace)
    # the usage block, from the picture on: the tiny pipeline and a 16 px picture for the download
    lines = usage.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("source ="))
    monkeypatch.chdir(tmp_path)
    namespace.update(pipe=pipe, image=_pil())
    exec(compile("\n".join(lines[start:]), "README usage", "exec"), namespace)
    assert (tmp_path / "dog.png").is_file()
    assert namespace["same"].size == (16, 16)


def test_readme_edit_round_trip_and_edit(pipe):
    """The README's edit(): prompt = source gives the image latent back; another prompt changes it."""
    namespace: dict = {}
    exec(compile(_readme_blocks()[0], "README: Edit with diffusers", "exec"), namespace)
    edit = namespace["edit"]
    image, seed = _pil(), 11

    def run(prompt, **kw):
        out = edit(
            pipe,
            image,
            "a photo of a cat",
            prompt,
            steps=10,
            strength=0.6,
            generator=torch.Generator().manual_seed(seed),
            output_type="latent",
            **kw,
        )
        return out

    same = run("a photo of a cat")
    dog = run("a photo of a dog")
    # the image latent the pipeline encodes with that generator (diffusers img2img: sample * scaling)
    pixels = pipe.image_processor.preprocess(image)
    latent = pipe.vae.encode(pixels).latent_dist.sample(generator=torch.Generator().manual_seed(seed))
    latent = latent * pipe.vae.config.scaling_factor
    with cfgpp(pipe, "euler", 0.6):
        plain = pipe(
            "a photo of a cat",
            image=image,
            num_inference_steps=10,
            strength=0.6,
            guidance_scale=7.5,
            generator=torch.Generator().manual_seed(seed),
            output_type="latent",
        ).images
    e_same, e_plain = _relative(same, latent), _relative(plain, latent)
    e_edit = _relative(dog, same)
    print(f"\nREADME edit(): round trip {e_same:.2e}, plain img2img {e_plain:.2e}; dog vs cat {e_edit:.2e}")
    assert e_same < e_plain / 10
    assert e_edit > 0.05  # the edit changes the picture, beyond the round trip's own error
    assert torch.equal(run("a photo of a cat"), same)


def test_start_latent_is_what_the_pass_starts_from(pipe):
    """start_from: the pass's first UNet input is the inverted latent, scaled as the scheduler scales."""
    seen = []
    handle = pipe.unet.register_forward_pre_hook(
        lambda m, a, k: seen.append(a[0][:1].clone()), with_kwargs=True
    )
    try:
        with cfgpp(pipe, "euler", LAM) as sched:
            start = invert_cfgpp(
                pipe,
                pipes.latents(seed=7),
                None,
                num_inference_steps=6,
                strength=0.5,
                guidance_scale=W,
                **_embeds(),
            )
            seen.clear()
            with start_from(pipe, start):
                _pass(pipe, pipes.latents(seed=7), 6, 0.5)
    finally:
        handle.remove()
    sigma = float(sched.sigmas[sched.begin_index])
    assert torch.allclose(seen[0], start / (sigma**2 + 1) ** 0.5, atol=1e-6)
    noise = randn_tensor(start.shape, generator=torch.Generator().manual_seed(0))
    assert not torch.allclose(start, pipes.latents(seed=7) + sigma * noise, atol=1e-2)


def test_with_hidiffusion_each_inversion_call_runs_the_pass_model_of_its_step():
    """HiDiffusion's clock reads the scheduler: the inversion, which walks the steps backwards, sees
    at every timestep the same RAU-Net state as the pass at that timestep (the model it undoes)."""
    from lib_hidiff import zoo
    from lib_hidiff.diffusers import hidiffusion

    unet = zoo.build_diffusers_unet("sd1", 32, context_dim=pipes.CONTEXT_DIM, heads=2)
    p = pipes.img2img(unet)
    p.scheduler = pipes.scheduler()
    seen: list[tuple[float, int]] = []
    timestep: list[float] = []
    handles = [
        unet.register_forward_pre_hook(lambda m, a, k: timestep.append(float(a[1])), with_kwargs=True),
        unet.down_blocks[0]
        .downsamplers[0]
        .register_forward_hook(lambda m, a, out: seen.append((timestep[-1], out.shape[-1]))),
    ]
    image = pipes.latents(seed=7, size=32)
    try:
        with hidiffusion(p, seed=0, native=16), cfgpp(p, "euler", LAM):
            start = invert_cfgpp(
                p, image, None, num_inference_steps=10, strength=1.0, guidance_scale=W, **_embeds()
            )
            inverted, seen[:] = list(seen), []
            with start_from(p, start):
                _pass(p, image, 10, 1.0)
    finally:
        for h in handles:
            h.remove()
    in_pass = dict(seen)
    assert len(inverted) == len(in_pass) == 10
    assert all(in_pass[t] == side for t, side in inverted)
    assert len(set(in_pass.values())) == 2  # RAU-Net on for the first steps only


def test_float16_pipeline(unet):
    """A half-precision pipeline: the UNet runs in float16, the inversion in float32, the start is
    cast to the pipeline's dtype by start_from."""
    p = pipes.img2img(copy.deepcopy(unet)).to(dtype=torch.float16)
    e = {k: v.half() for k, v in _embeds().items()}
    image = pipes.latents(seed=7).half()
    kw = {"num_inference_steps": 10, "strength": 0.6, "guidance_scale": W, **e}
    with cfgpp(p, "euler", LAM):
        start = invert_cfgpp(p, image, None, iterations=3, **kw)
        with start_from(p, start):
            back = p(image=image, output_type="latent", **kw).images
        plain = p(image=image, output_type="latent", **kw).images
    assert start.dtype == torch.float32 and back.dtype == torch.float16
    e_back, e_plain = _relative(back, image), _relative(plain, image)
    print(f"\nfloat16: round trip {e_back:.2e} (3 it); plain {e_plain:.2e}")
    assert e_back < e_plain / 20


def test_scheduler_with_another_input_scaling_is_refused(pipe):
    """EDM-style Euler scales the UNet input otherwise: one line instead of a wrong inversion."""
    pipe.scheduler = pipes.scheduler("EulerDiscreteScheduler")
    original = pipe.scheduler.scale_model_input
    pipe.scheduler.scale_model_input = lambda sample, timestep: original(sample, timestep) * 0.5
    with pytest.raises(ValueError, match="scales the UNet input otherwise") as err:
        invert_cfgpp(
            pipe,
            pipes.latents(seed=7),
            None,
            num_inference_steps=4,
            strength=0.5,
            scale=LAM,
            guidance_scale=W,
            **_embeds(),
        )
    assert "\n" not in str(err.value)
