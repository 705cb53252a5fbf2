"""Degenerate cases against the real k-diffusion 0.0.16 (the version the WebUI 1.10 pins).

cond ≡ uncond: every CFG++ sampler is its base k-diffusion sampler, for any λ, with the same noise
(same global seed, same draws in the same order). λ = 0: the base sampler on the uncond model.
"""

from __future__ import annotations

from importlib.metadata import version

import k_diffusion.sampling as ks
import pytest
import torch

from lib_hidiff import cfgpp

from .oracles import PAIRS, GuidedModel, NoiseQueue, TorchWithQueue, grid, initial_x, plain_model

TOL = 1e-11

# (CFG++ sampler, base k-diffusion sampler, kwargs for both). DDIM(η) in VE coordinates is
# k-diffusion's Euler ancestral with eta = η (η ≤ 1); k-diffusion has no DDIM of its own.
BASES = {
    "euler": (cfgpp.sample_euler_cfgpp, ks.sample_euler, {}),
    "euler_churn": (
        cfgpp.sample_euler_cfgpp,
        ks.sample_euler,
        {"s_churn": 1.5, "s_tmin": 0.2, "s_noise": 1.01},
    ),
    "euler_a": (cfgpp.sample_euler_ancestral_cfgpp, ks.sample_euler_ancestral, {}),
    "euler_a_eta0.5": (
        cfgpp.sample_euler_ancestral_cfgpp,
        ks.sample_euler_ancestral,
        {"eta": 0.5, "s_noise": 0.9},
    ),
    "dpmpp_2m_A": (cfgpp.sample_dpmpp_2m_cfgpp, ks.sample_dpmpp_2m, {}),
    "dpmpp_2m_B": (lambda *a, **k: cfgpp.sample_dpmpp_2m_cfgpp(*a, variant="B", **k), ks.sample_dpmpp_2m, {}),
    "dpmpp_2s_a": (cfgpp.sample_dpmpp_2s_ancestral_cfgpp, ks.sample_dpmpp_2s_ancestral, {}),
    "dpmpp_2s_a_eta0": (cfgpp.sample_dpmpp_2s_ancestral_cfgpp, ks.sample_dpmpp_2s_ancestral, {"eta": 0.0}),
    "dpmpp_sde": (cfgpp.sample_dpmpp_sde_cfgpp, ks.sample_dpmpp_sde, {}),
    "dpmpp_sde_eta0.5": (cfgpp.sample_dpmpp_sde_cfgpp, ks.sample_dpmpp_sde, {"eta": 0.5, "r": 0.4}),
    "ddim": (cfgpp.sample_ddim_cfgpp, ks.sample_euler_ancestral, {"eta": 0.0}),
    "ddim_eta0.6": (cfgpp.sample_ddim_cfgpp, ks.sample_euler_ancestral, {"eta": 0.6}),
}

GRIDS = [("karras", 10, "zero"), ("exponential", 7, "positive"), ("uniform", 6, "tail"), ("ddim", 12, "zero")]


def test_pinned_kdiffusion_version():
    assert version("k-diffusion") == "0.0.16"


def _run_seeded(fn, model, x, sigmas, extra_args, kwargs, seed=2024):
    torch.manual_seed(seed)  # default noise: torch.randn_like / an unseeded Brownian tree (seed from torch)
    return fn(model, x, sigmas, extra_args=extra_args, disable=True, **kwargs)


def _max_diff(case, make_models, lam):
    fn, base, kwargs = BASES[case]
    worst = 0.0
    for kind, steps, ending in GRIDS:
        sigmas = grid(kind, steps, ending)
        x = initial_x(sigmas[0])
        cfgpp_model, base_model = make_models()
        out = _run_seeded(fn, cfgpp_model, x, sigmas, {"cond_scale": lam}, kwargs)
        expected = _run_seeded(base, base_model, x, sigmas, {"cond_scale": lam}, kwargs)
        worst = max(worst, float((out - expected).abs().max()))
    return worst


@pytest.mark.parametrize("case", list(BASES))
@pytest.mark.parametrize("pair", list(PAIRS))
def test_cond_equal_uncond_is_the_base_sampler(case, pair):
    _, uncond = PAIRS[pair]()
    for lam in (0.6, 3.0):
        worst = _max_diff(case, lambda: (GuidedModel(uncond, uncond), plain_model(uncond)), lam)
        assert worst <= TOL, (case, pair, lam, worst)
    print(f"\n[cfgpp degenerate] cond==uncond {case:16s} {pair:8s} max diff vs k-diffusion = {worst:.1e}")


@pytest.mark.parametrize("case", list(BASES))
@pytest.mark.parametrize("pair", list(PAIRS))
def test_lambda_zero_is_the_base_sampler_on_uncond(case, pair):
    cond, uncond = PAIRS[pair]()
    worst = _max_diff(case, lambda: (GuidedModel(cond, uncond), plain_model(uncond)), 0.0)
    assert worst <= TOL, (case, pair, worst)


@pytest.mark.parametrize("case", list(BASES))
def test_same_noise_draws_as_the_base_sampler(case, monkeypatch):
    """Same number and order of draws, through k_diffusion.sampling.torch.randn_like or the given
    noise_sampler, with the same (sigma, sigma_next) requests."""
    fn, base, kwargs = BASES[case]
    cond, uncond = PAIRS["mixture"]()
    sigmas = grid("karras", 8, "positive")
    x = initial_x(sigmas[0])
    requests, randn_calls = [], []
    for sampler, model in ((fn, GuidedModel(cond, uncond)), (base, plain_model(uncond))):
        queue = NoiseQueue(5)
        proxy = TorchWithQueue(queue)
        monkeypatch.setattr(ks, "torch", proxy)
        kw = dict(kwargs)
        if case.startswith("dpmpp_sde"):
            kw["noise_sampler"] = queue.noise_sampler
        sampler(model, x, sigmas, extra_args={"cond_scale": 0.0}, disable=True, **kw)
        requests.append(queue.requests)
        randn_calls.append(proxy.randn_like_calls)
    assert randn_calls[0] == randn_calls[1]
    assert len(requests[0]) == len(requests[1])
    assert len(requests[0]) == 0 if case.startswith("dpmpp_2m") else len(requests[0]) > 0
    for a, b in zip(*requests):
        assert (a is None and b is None) or a == pytest.approx(b, rel=1e-12)
