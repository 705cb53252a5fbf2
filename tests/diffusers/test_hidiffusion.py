"""hidiffusion(pipe): HiDiffusion on a stock diffusers pipeline, clocked by its own scheduler.

A real SD1.5-layout UNet (lib_hidiff.zoo, width 32) in StableDiffusion pipelines. The model is
declared native at latent 16 (`native=16`) so a 32x32 latent is "above native" and stays cheap.
Spies: the output size of the RAD Downsample (halved again while RAU-Net runs) and the batch
seen by attn1's query projection (x4 while MSW-MSA windows it). The official schedule for SD1.5
at this size: RAD for steps i < int(N * 0.4) of the N steps the pipeline runs.
"""

from __future__ import annotations

import pytest
import torch

import lib_hidiff as hd
from lib_hidiff import zoo
from lib_hidiff.diffusers import cfgpp, hidiffusion

from . import pipes

NATIVE, LATENT = 16, 32
NOMINAL = LATENT // 2  # the first Downsample's output without RAU-Net


@pytest.fixture(scope="module")
def hd_unet():
    return zoo.build_diffusers_unet("sd1", 32, context_dim=pipes.CONTEXT_DIM, heads=2)


@pytest.fixture(scope="module")
def hd_pipe(hd_unet):
    return pipes.txt2img(hd_unet)


def _state(module: torch.nn.Module) -> list:
    """Every hook dict and instance attribute of every submodule (what a patch could leave behind)."""
    names = (
        "_forward_hooks",
        "_forward_pre_hooks",
        "_forward_hooks_with_kwargs",
        "_forward_pre_hooks_with_kwargs",
    )
    return [
        (name, sorted(vars(m)), [dict(getattr(m, h)) for h in names]) for name, m in module.named_modules()
    ]


class Spies:
    """Per UNet call: RAD output side, attn1 query batch."""

    def __init__(self, unet):
        self.rad: list[int] = []
        self.attn_batch: list[int] = []
        attn1 = unet.down_blocks[0].attentions[0].transformer_blocks[0].attn1
        self.handles = [
            unet.down_blocks[0]
            .downsamplers[0]
            .register_forward_hook(lambda m, a, out: self.rad.append(out.shape[-1])),
            attn1.to_q.register_forward_pre_hook(lambda m, a: self.attn_batch.append(a[0].shape[0])),
        ]

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        for h in self.handles:
            h.remove()


def _txt2img(pipe, steps=5, latent=LATENT, **kwargs):
    cond, uncond = pipes.embeds()
    return pipe(
        prompt_embeds=cond,
        negative_prompt_embeds=uncond,
        num_inference_steps=steps,
        guidance_scale=4.0,
        output_type="latent",
        latents=pipes.latents(size=latent),
        height=latent * 2,
        width=latent * 2,
        generator=torch.Generator().manual_seed(0),
        **kwargs,
    ).images


def _rad_steps(n: int) -> list[int]:
    return [NOMINAL // 2 if i < int(n * 0.4) else NOMINAL for i in range(n)]


@pytest.mark.parametrize(
    "name", ["EulerDiscreteScheduler", "DPMSolverMultistepScheduler", "HeunDiscreteScheduler"]
)
def test_txt2img_schedule_follows_the_pipeline_scheduler(hd_pipe, name):
    pipe = hd_pipe
    pipe.scheduler = pipes.scheduler(name)
    before = _state(pipe.unet)
    vanilla = _txt2img(pipe)
    with hidiffusion(pipe, seed=3, native=NATIVE), Spies(pipe.unet) as spy:
        patched = _txt2img(pipe)
    n = pipe._num_timesteps  # 5, or 9 UNet calls for Heun
    assert len(spy.rad) == n
    assert spy.rad == _rad_steps(n)
    assert spy.attn_batch == [2 * 4] * n  # [uncond, cond], each in 4 windows
    assert float((patched - vanilla).abs().max()) > 1e-2
    # Nothing left: same hooks and attributes everywhere, the same output as before.
    assert _state(pipe.unet) == before
    assert torch.equal(_txt2img(pipe), vanilla)


def test_img2img_counts_only_the_steps_run(hd_unet):
    pipe = pipes.img2img(hd_unet, pipes.scheduler("EulerDiscreteScheduler"))
    cond, uncond = pipes.embeds()
    with hidiffusion(pipe, native=NATIVE), Spies(pipe.unet) as spy:
        pipe(
            prompt_embeds=cond,
            negative_prompt_embeds=uncond,
            image=pipes.latents(seed=9, size=LATENT),
            strength=0.5,
            num_inference_steps=10,
            guidance_scale=4.0,
            output_type="latent",
            generator=torch.Generator().manual_seed(0),
        )
    assert pipe._num_timesteps == 5
    assert spy.rad == _rad_steps(5)  # int(5 * 0.4) = 2 of the 5 steps run, not of 10


def test_native_size_untouched(hd_pipe):
    hd_pipe.scheduler = pipes.scheduler("EulerDiscreteScheduler")
    vanilla = _txt2img(hd_pipe, steps=3, latent=NATIVE)
    with hidiffusion(hd_pipe, native=NATIVE), Spies(hd_pipe.unet) as spy:
        same = _txt2img(hd_pipe, steps=3, latent=NATIVE)
    assert spy.rad == [NATIVE // 2] * 3 and spy.attn_batch == [2] * 3
    assert torch.equal(same, vanilla)


def test_composes_with_cfgpp(hd_pipe):
    hd_pipe.scheduler = pipes.scheduler()
    before_scheduler, before = hd_pipe.scheduler, _state(hd_pipe.unet)
    with cfgpp(hd_pipe, "euler", 0.6):
        only_cfgpp = _txt2img(hd_pipe)
    hd_pipe.scheduler = pipes.scheduler("EulerDiscreteScheduler")
    with hidiffusion(hd_pipe, native=NATIVE):
        only_hd = _txt2img(hd_pipe)
    hd_pipe.scheduler = before_scheduler
    for outer_first in (True, False):
        with hidiffusion(hd_pipe, native=NATIVE) if outer_first else cfgpp(hd_pipe, "euler", 0.6):
            with cfgpp(hd_pipe, "euler", 0.6) if outer_first else hidiffusion(hd_pipe, native=NATIVE):
                with Spies(hd_pipe.unet) as spy:
                    both = _txt2img(hd_pipe)
                assert hd_pipe.scheduler.cfgpp_fallback_steps == 0
        assert spy.rad == _rad_steps(5)
        assert float((both - only_cfgpp).abs().max()) > 1e-2
        assert float((both - only_hd).abs().max()) > 1e-2
        assert hd_pipe.scheduler is before_scheduler and _state(hd_pipe.unet) == before


def test_exception_leaves_nothing(hd_pipe):
    hd_pipe.scheduler = pipes.scheduler("EulerDiscreteScheduler")
    before_scheduler, before = hd_pipe.scheduler, _state(hd_pipe.unet)

    def stop(pipe, step, t, kwargs):
        if step == 1:
            raise RuntimeError("interrupted")
        return kwargs

    with pytest.raises(RuntimeError, match="interrupted"):
        with hidiffusion(hd_pipe, native=NATIVE), cfgpp(hd_pipe, "dpmpp_2m", 0.6):
            _txt2img(hd_pipe, callback_on_step_end=stop)
    assert hd_pipe.scheduler is before_scheduler
    assert _state(hd_pipe.unet) == before


def test_controlnet_pipeline(hd_unet):
    from diffusers import StableDiffusionControlNetPipeline

    controlnet = zoo.build_controlnet(hd_unet, hint_channels=(8, 8))  # hint at 2x latent = pixel size
    parts = pipes.components(hd_unet, pipes.scheduler("EulerDiscreteScheduler"))
    pipe = StableDiffusionControlNetPipeline(controlnet=controlnet, **parts)
    pipe.set_progress_bar_config(disable=True)
    hint = torch.rand(1, 3, LATENT * 2, LATENT * 2, generator=torch.Generator().manual_seed(5))
    before = _state(pipe.unet)
    outs = {}
    with hidiffusion(pipe, native=NATIVE), Spies(pipe.unet) as spy:
        for scale in (1.0, 0.0):
            outs[scale] = _txt2img(pipe, steps=4, image=hint, controlnet_conditioning_scale=scale)
    assert spy.rad == _rad_steps(4) * 2
    assert all(bool(torch.isfinite(o).all()) for o in outs.values())
    assert float((outs[1.0] - outs[0.0]).abs().max()) > 1e-3  # the ControlNet residuals act
    assert _state(pipe.unet) == before


def test_unsupported_unet_changes_nothing(sd_pipe):
    """The 2-level tiny UNet is no SD layout: one-line UnsupportedUNet, no clock hook left."""
    before = _state(sd_pipe.unet)
    with pytest.raises(hd.UnsupportedUNet) as err:
        with hidiffusion(sd_pipe):
            pass
    assert "\n" not in str(err.value)
    assert _state(sd_pipe.unet) == before


def test_bad_native_one_line(hd_pipe):
    before = _state(hd_pipe.unet)
    with pytest.raises(ValueError, match="'native' must be an integer"):
        with hidiffusion(hd_pipe, native=2.5):
            pass
    assert _state(hd_pipe.unet) == before


def test_native_latent_size_for_sd2_768_v():
    from types import SimpleNamespace as NS

    from lib_hidiff.diffusers.pipeline import native_latent_size

    def pipe(prediction, sample_size):
        return NS(
            scheduler=NS(config={"prediction_type": prediction}), unet=NS(config=NS(sample_size=sample_size))
        )

    sd2, sd1 = NS(family="sd2"), NS(family="sd1")
    assert native_latent_size(pipe("v_prediction", 96), sd2) == 96
    assert native_latent_size(pipe("v_prediction", 64), sd2) == 96  # converted with a 512 default
    assert native_latent_size(pipe("epsilon", 96), sd2) == 96
    assert native_latent_size(pipe("epsilon", 64), sd2) is None  # SD 2.x base: the family default
    assert native_latent_size(pipe("v_prediction", 64), sd1) is None


def test_inpaint_pipeline_with_both(hd_unet):
    """Inpainting (4-channel UNet: the pipeline re-noises the kept area each step) with HiDiffusion + CFG++."""
    from diffusers import StableDiffusionInpaintPipeline

    pipe = StableDiffusionInpaintPipeline(**pipes.components(hd_unet, pipes.scheduler()))
    pipe.set_progress_bar_config(disable=True)
    cond, uncond = pipes.embeds()
    image = torch.rand(1, 3, LATENT * 2, LATENT * 2, generator=torch.Generator().manual_seed(6))
    mask = torch.zeros(1, 1, LATENT * 2, LATENT * 2)
    mask[..., :, LATENT:] = 1.0
    before_scheduler, before = pipe.scheduler, _state(pipe.unet)
    with hidiffusion(pipe, native=NATIVE), cfgpp(pipe, "euler_a", 0.6) as scheduler, Spies(pipe.unet) as spy:
        out = pipe(
            prompt_embeds=cond,
            negative_prompt_embeds=uncond,
            image=image,
            mask_image=mask,
            height=LATENT * 2,
            width=LATENT * 2,
            num_inference_steps=5,
            guidance_scale=4.0,
            output_type="latent",
            generator=torch.Generator().manual_seed(0),
        ).images
        assert scheduler.cfgpp_fallback_steps == 0
    assert spy.rad == _rad_steps(5) and bool(torch.isfinite(out).all())
    assert pipe.scheduler is before_scheduler and _state(pipe.unet) == before
