"""Every CFG++ sampler against an independent float64 reference of its update rule.

Closed-form Gaussian and Gaussian-mixture denoisers; Karras / exponential / uniform / DDIM grids;
1, 2, 10 and 20 steps; grids that end at 0, above 0, and img2img tails. Max abs error ≤ 1e-10.
"""

from __future__ import annotations

import inspect
import itertools

import k_diffusion.sampling as ks
import pytest

from lib_hidiff import cfgpp

from . import reference as ref
from .oracles import ENDINGS, KINDS, PAIRS, STEPS, GuidedModel, NoiseQueue, TorchWithQueue, grid, initial_x

TOL = 1e-10
LAMBDAS = {"gaussian": 0.6, "mixture": 1.3}

CASES = {
    "euler": (cfgpp.sample_euler_cfgpp, ref.ref_euler, {}),
    "euler_churn": (
        cfgpp.sample_euler_cfgpp,
        ref.ref_euler,
        {"s_churn": 2.0, "s_tmin": 0.1, "s_tmax": 5.0, "s_noise": 1.003},
    ),
    "euler_a": (cfgpp.sample_euler_ancestral_cfgpp, ref.ref_euler_a, {}),
    "euler_a_eta0.5": (cfgpp.sample_euler_ancestral_cfgpp, ref.ref_euler_a, {"eta": 0.5, "s_noise": 0.9}),
    "dpmpp_2m_A": (cfgpp.sample_dpmpp_2m_cfgpp, ref.ref_dpmpp_2m, {"variant": "A"}),
    "dpmpp_2m_B": (cfgpp.sample_dpmpp_2m_cfgpp, ref.ref_dpmpp_2m, {"variant": "B"}),
    "dpmpp_2s_a": (cfgpp.sample_dpmpp_2s_ancestral_cfgpp, ref.ref_dpmpp_2s_a, {}),
    "dpmpp_2s_a_eta0": (cfgpp.sample_dpmpp_2s_ancestral_cfgpp, ref.ref_dpmpp_2s_a, {"eta": 0.0}),
    "dpmpp_sde": (cfgpp.sample_dpmpp_sde_cfgpp, ref.ref_dpmpp_sde, {}),
    "dpmpp_sde_r0.3": (
        cfgpp.sample_dpmpp_sde_cfgpp,
        ref.ref_dpmpp_sde,
        {"eta": 0.7, "s_noise": 1.1, "r": 0.3},
    ),
    "ddim": (cfgpp.sample_ddim_cfgpp, ref.ref_ddim, {}),
    "ddim_eta0.6": (cfgpp.sample_ddim_cfgpp, ref.ref_ddim, {"eta": 0.6, "s_noise": 0.95}),
}


def run_pair(fn, ref_fn, kwargs, pair, sigmas, monkeypatch, provide=None, seed=7):
    """(library result, reference result, library noise requests, reference noise requests)."""
    cond, uncond = PAIRS[pair]()
    lam = LAMBDAS[pair]
    x = initial_x(sigmas[0])

    lib_noise = NoiseQueue(seed)
    monkeypatch.setattr(ks, "torch", TorchWithQueue(lib_noise))
    kw = dict(kwargs)
    if "noise_sampler" in inspect.signature(fn).parameters:
        kw["noise_sampler"] = lib_noise.noise_sampler
    model = GuidedModel(cond, uncond, provide=provide)
    out = fn(model, x, sigmas, extra_args={"cond_scale": lam}, disable=True, **kw)

    ref_noise = NoiseQueue(seed)
    guided = ref.guided_fn(ref.np_denoiser(cond), ref.np_denoiser(uncond), lam, provide=provide)
    expected = ref_fn(guided, x.numpy(), sigmas.tolist(), ref_noise, **kwargs)
    assert len(model.sigmas) == len(guided.calls)
    return out, expected, lib_noise.requests, ref_noise.requests


def _same_requests(a, b):
    assert len(a) == len(b)
    for ra, rb in zip(a, b):
        if ra is None or rb is None:
            assert ra is rb
        else:
            assert ra == pytest.approx(rb, rel=1e-12)


@pytest.mark.parametrize("case", list(CASES))
def test_sampler_matches_reference(case, monkeypatch):
    fn, ref_fn, kwargs = CASES[case]
    worst = 0.0
    for pair, kind, steps, ending in itertools.product(PAIRS, KINDS, STEPS, ENDINGS):
        sigmas = grid(kind, steps, ending)
        out, expected, lib_req, ref_req = run_pair(fn, ref_fn, kwargs, pair, sigmas, monkeypatch)
        err = float(abs(out.numpy() - expected).max())
        assert err <= TOL, (case, pair, kind, steps, ending, err)
        _same_requests(lib_req, ref_req)
        worst = max(worst, err)
    print(
        f"\n[cfgpp reference] {case:18s} max |lib - ref| = {worst:.2e} "
        f"over {len(PAIRS) * len(KINDS) * len(STEPS) * len(ENDINGS)} runs"
    )


@pytest.mark.parametrize(
    "case", ["euler", "euler_a", "dpmpp_2m_A", "dpmpp_2m_B", "dpmpp_2s_a", "dpmpp_sde", "ddim_eta0.6"]
)
def test_missing_uncond_steps_match_reference_with_guided_fallback(case, monkeypatch):
    """Calls without an unconditional prediction use D_λ in its place, call by call."""
    fn, ref_fn, kwargs = CASES[case]
    for pair in PAIRS:
        sigmas = grid("karras", 10)
        out, expected, lib_req, ref_req = run_pair(
            fn, ref_fn, kwargs, pair, sigmas, monkeypatch, provide=lambda k: k % 3 != 1
        )
        assert abs(out.numpy() - expected).max() <= TOL
        _same_requests(lib_req, ref_req)
