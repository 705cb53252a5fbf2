"""HiDiffusion's clock in the fake ComfyUI: (step, total) from the schedule being sampled and the
sigma of each call, whatever the sampler, batching, step range or denoise."""

from __future__ import annotations

import comfy.model_management
import nodes
import pytest
import torch
from comfy_extras.nodes_custom_sampler import BasicScheduler, KSamplerSelect, SamplerCustom

from lib_hidiff.comfy.clock import step_in_schedule
from lib_hidiff.comfy.nodes import HiDiffusion
from lib_hidiff.unet.patcher import in_window

from .comfy_env import comfy_model, conditioning, latent, nothing_left, probe_unet


def _run(sampler="euler", steps=6, **kw):
    unet = probe_unet()
    (model,) = HiDiffusion().patch(comfy_model(unet))
    nodes.common_ksampler(
        model, 3, steps, 5.0, sampler, "normal", conditioning(1), conditioning(2), latent(80, 80), **kw
    )
    assert nothing_left(unet)
    assert all(c["open"] for c in unet.calls)
    return unet.calls


def test_step_in_schedule_rule():
    sched = [14.6, 8.0, 4.0, 2.0, 0.0]
    assert [step_in_schedule(s, sched) for s in (14.6, 10.0, 8.0, 8.0 * (1 + 1e-7), 5.0, 4.0, 1.0)] == [
        (0, 4), (0, 4), (1, 4), (1, 4), (1, 4), (2, 4), (3, 4)
    ]  # fmt: skip
    assert step_in_schedule(20.0, sched) == (0, 4)  # churned sigma above the first one


def test_batched_calls_count_steps():
    calls = _run("euler", steps=6)
    assert [c["clock"] for c in calls] == [(i, 6) for i in range(6)]
    assert all(c["rows"] == 2 for c in calls)


def test_split_cond_and_uncond_calls_share_their_step(monkeypatch):
    monkeypatch.setattr(comfy.model_management, "FREE_MEMORY", 1)  # ComfyUI runs them one by one
    calls = _run("euler", steps=4)
    assert [c["rows"] for c in calls] == [1] * 8
    assert [c["cond_or_uncond"] for c in calls[:2]] == [[1], [0]]
    assert [c["clock"] for c in calls] == [(i // 2, 4) for i in range(8)]


def test_second_order_samplers():
    # Heun: each step evaluates at sigma_i and corrects at sigma_{i+1} (the next step's level);
    # the last step (to 0) is an Euler step.
    assert [c["clock"][0] for c in _run("heun", steps=4)] == [0, 1, 1, 2, 2, 3, 3]
    # DPM 2: the midpoint between sigma_i and sigma_{i+1} belongs to step i.
    assert [c["clock"][0] for c in _run("dpm_2", steps=4)] == [0, 0, 1, 1, 2, 2, 3]


def test_ksampler_advanced_range_is_its_own_schedule():
    unet = probe_unet()
    (model,) = HiDiffusion().patch(comfy_model(unet))
    nodes.KSamplerAdvanced().sample(
        model, "enable", 3, 20, 5.0, "euler", "normal", conditioning(1), conditioning(2), latent(80, 80),
        start_at_step=4, end_at_step=10, return_with_leftover_noise="enable",
    )  # fmt: skip
    assert [c["clock"] for c in unet.calls] == [(i, 6) for i in range(6)]
    full = BasicScheduler().get_sigmas(model, "normal", 20, 1.0)[0]
    assert [c["sigma"] for c in unet.calls] == pytest.approx([float(s) for s in full[4:10]])


def test_img2img_denoise_counts_the_steps_it_runs():
    calls = _run("euler", steps=5, denoise=0.5)
    assert [c["clock"] for c in calls] == [(i, 5) for i in range(5)]


def test_sampler_custom_with_the_official_thresholds():
    unet = probe_unet()
    (model,) = HiDiffusion().patch(comfy_model(unet))
    sigmas = BasicScheduler().get_sigmas(model, "karras", 10, 1.0)[0]
    SamplerCustom().sample(
        model, True, 0, 5.0, conditioning(1), conditioning(2), KSamplerSelect().get_sampler("euler")[0], sigmas,
        latent(80, 80),
    )  # fmt: skip
    clocks = [c["clock"] for c in unet.calls]
    assert clocks == [(i, 10) for i in range(10)]
    # SD 1.5 at 640 px: the official row sd15_1024 runs RAD/RAU while int(10 * 0.4) = 4 > step
    assert [in_window(c, (0.0, 0.4)) for c in clocks] == [True] * 4 + [False] * 6


def test_no_schedule_falls_back_to_the_timestep(caplog):
    """A call without ComfyUI's sampling state (a node calling the model directly) is timed by its
    timestep (999 = start), with one warning."""
    unet = probe_unet()
    (model,) = HiDiffusion().patch(comfy_model(unet))
    import comfy.samplers

    guider = comfy.samplers.CFGGuider(model)
    guider.set_conds(conditioning(1), conditioning(2))
    guider.set_cfg(5.0)

    def direct(model_k, x, sigmas, extra_args=None, callback=None, disable=None):
        options = dict(extra_args["model_options"])
        options["transformer_options"] = {
            k: v for k, v in options["transformer_options"].items() if k != "sample_sigmas"
        }
        return model_k(x, sigmas[0] * x.new_ones([1]), model_options=options, seed=0, denoise_mask=None)

    sigmas = torch.tensor([14.6, 0.0])
    guider.sample(
        torch.zeros(1, 4, 80, 80), torch.zeros(1, 4, 80, 80), comfy.samplers.KSAMPLER(direct), sigmas
    )
    assert len(unet.calls) == 1
    assert unet.calls[0]["clock"] == pytest.approx(0.0, abs=1e-3)
    assert nothing_left(unet)
