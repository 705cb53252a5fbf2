"""Tiny random diffusers pipelines shared by the diffusers-layer tests (built once per session)."""

import pytest
import torch

from . import pipes


@pytest.fixture(autouse=True)
def _one_thread():
    # Width-32 UNets on 8x8 latents gain nothing from threads, and on a shared 2-core machine two
    # threads make each tiny conv ~50x slower. One thread also computes the two rows of a
    # [uncond, cond] batch bit-identically, so cond == uncond comparisons are exact.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def unet():
    return pipes.tiny_unet()


@pytest.fixture(scope="session")
def sd_pipe(unet):
    return pipes.txt2img(unet)


@pytest.fixture(scope="session")
def sd_img2img(sd_pipe):
    from diffusers import StableDiffusionImg2ImgPipeline

    pipe = StableDiffusionImg2ImgPipeline(**sd_pipe.components)
    pipe.set_progress_bar_config(disable=True)
    return pipe


@pytest.fixture
def fresh_scheduler(sd_pipe):
    """Each test starts from a plain PNDM scheduler (SD 1.5's config) on the shared pipeline."""
    sd_pipe.scheduler = pipes.scheduler()
    yield
    sd_pipe.scheduler = pipes.scheduler()
