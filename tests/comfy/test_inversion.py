"""CFG++ inversion and the CFG++ sampler nodes in the fake ComfyUI, on a closed-form denoiser
(data ~ N(m, 1), m from the prompt): the graph "invert with prompt A -> sample with prompt A"
gives the source latent back, far closer than re-noising it; prompt B edits it."""

from __future__ import annotations

import comfy.model_sampling
import pytest
import torch
from comfy_extras.nodes_custom_sampler import (
    BasicScheduler,
    CFGGuider,
    KSamplerSelect,
    SamplerCustom,
    SamplerCustomAdvanced,
)

from lib_hidiff.comfy.nodes import CFGppInversion, SamplerDDIMCFGpp, SamplerDPMPPSDECFGpp

from .comfy_env import ClosedFormUNet, comfy_model, conditioning, latent

LAM = 0.8


@pytest.fixture
def model():
    return comfy_model(ClosedFormUNet())


def _prompts():
    return conditioning(1, scale=2.0), conditioning(2, scale=2.0), conditioning(3, scale=2.0)


def _invert(model, pos, neg, source, sigmas, iterations):
    return CFGppInversion().invert(model, pos, neg, source, sigmas, LAM, iterations)


def _sample_back(model, pos, neg, start, sigmas, sampler=None):
    sampler = sampler or KSamplerSelect().get_sampler("euler_cfg_pp")[0]
    return SamplerCustom().sample(model, False, 0, LAM, pos, neg, sampler, sigmas, start)[0]["samples"]


def _err(a, b):
    return float((a - b).abs().max())


@pytest.mark.parametrize("denoise", [1.0, 0.5])
def test_round_trip_with_the_source_prompt(model, denoise):
    a, neg, _ = _prompts()
    source = latent(8, 8, seed=4)
    sigmas = BasicScheduler().get_sigmas(model, "normal", 20, denoise)[0]
    errors = {}
    for k in (0, 3):
        inverted, _ = _invert(model, a, neg, source, sigmas, k)
        errors[k] = _err(_sample_back(model, a, neg, inverted, sigmas), source["samples"])
    noised = SamplerCustom().sample(
        model, True, 0, LAM, a, neg, KSamplerSelect().get_sampler("euler_cfg_pp")[0], sigmas, source
    )[0]["samples"]
    without = _err(noised, source["samples"])
    assert errors[3] <= errors[0] and errors[3] < 1e-3
    assert without > 100 * errors[3]


def test_noise_output_starts_sampler_custom_advanced_from_the_source(model):
    a, neg, _ = _prompts()
    source = latent(8, 8, seed=5)
    sigmas = BasicScheduler().get_sigmas(model, "normal", 12, 1.0)[0]
    _, noise = _invert(model, a, neg, source, sigmas, 3)
    (guider,) = CFGGuider().get_guider(model, a, neg, LAM)
    back = SamplerCustomAdvanced().sample(
        noise, guider, KSamplerSelect().get_sampler("euler_cfg_pp")[0], sigmas, source
    )
    assert _err(back[0]["samples"], source["samples"]) < 1e-3
    with pytest.raises(ValueError, match="inverted noise"):
        noise.generate_noise(latent(4, 4))


def test_ddim_cfgpp_eta_0_is_inverted_too(model):
    a, neg, _ = _prompts()
    source = latent(8, 8, seed=6)
    sigmas = BasicScheduler().get_sigmas(model, "karras", 15, 1.0)[0]
    inverted, _ = _invert(model, a, neg, source, sigmas, 3)
    (ddim,) = SamplerDDIMCFGpp().get_sampler(0.0, 1.0)
    assert _err(_sample_back(model, a, neg, inverted, sigmas, ddim), source["samples"]) < 1e-3


def test_another_prompt_edits(model):
    a, neg, b = _prompts()
    source = latent(8, 8, seed=7)
    sigmas = BasicScheduler().get_sigmas(model, "normal", 20, 1.0)[0]
    inverted, _ = _invert(model, a, neg, source, sigmas, 2)
    edited = _sample_back(model, b, neg, inverted, sigmas)
    back = _sample_back(model, a, neg, inverted, sigmas)
    m = {k: float(c[0][0].mean()) / 0.18215 for k, c in (("a", a), ("b", b))}
    # the edit moves the latent's mean toward prompt B's data mean
    shift = float((edited - back).mean())
    assert abs(shift) > 0.05 and (shift > 0) == (m["b"] > m["a"])


def test_dpmpp_sde_cfgpp_runs_seeded(model):
    a, neg, _ = _prompts()
    sigmas = BasicScheduler().get_sigmas(model, "karras", 8, 1.0)[0]
    (sampler,) = SamplerDPMPPSDECFGpp().get_sampler(1.0, 1.0, 0.5)
    run = [
        SamplerCustom().sample(model, True, seed, LAM, a, neg, sampler, sigmas, latent(8, 8))[0]["samples"]
        for seed in (1, 1, 2)
    ]
    assert torch.isfinite(run[0]).all() and torch.equal(run[0], run[1]) and not torch.equal(run[0], run[2])
    with pytest.raises(ValueError, match="'r'"):
        SamplerDPMPPSDECFGpp().get_sampler(1.0, 1.0, 0.0)


def test_cfgpp_samplers_refuse_flow_models():
    model = comfy_model(ClosedFormUNet())
    model.model.model_sampling = comfy.model_sampling.ModelSamplingFlow()
    a, neg, _ = _prompts()
    sigmas = torch.tensor([1.0, 0.5, 0.0])
    (ddim,) = SamplerDDIMCFGpp().get_sampler(0.0, 1.0)
    with pytest.raises(ValueError, match="flow-matching"):
        SamplerCustom().sample(model, False, 0, LAM, a, neg, ddim, sigmas, latent(4, 4))
