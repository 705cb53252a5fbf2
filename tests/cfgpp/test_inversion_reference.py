"""`invert_cfgpp(iterations=0)` against an independent float64 reference of the paper's inversion step.

The reference (`reference.ref_invert_cfgpp`) is written in the official code's VP/ε form; the library
works in VE coordinates with residuals. Gaussian and Gaussian-mixture pairs; Karras / exponential /
uniform / DDIM grids; 1, 2, 10 and 20 steps; schedules from 0 (txt2img), from above 0, and img2img
tails. Max abs error ≤ 1e-8.
"""

from __future__ import annotations

import itertools
import logging

import pytest
import torch

from lib_hidiff import cfgpp

from . import reference as ref
from .oracles import ENDINGS, KINDS, PAIRS, STEPS, GuidedModel, grid, initial_x, plain_model

TOL = 1e-8
LAMBDAS = {"gaussian": 0.6, "mixture": 1.3}


def _clean(pair: str, seed: int = 5) -> torch.Tensor:
    """A batch of latents near the condition's data (what an encoded image is to the model)."""
    cond, _ = PAIRS[pair]()
    mean = cond.mean if hasattr(cond, "mean") else cond.means[0]
    return mean + initial_x(0.5, seed=seed)


def _run(pair: str, ascending: torch.Tensor, provide=None):
    cond, uncond = PAIRS[pair]()
    lam = LAMBDAS[pair]
    x = _clean(pair)
    model = GuidedModel(cond, uncond, provide=provide)
    out = cfgpp.invert_cfgpp(model, x, ascending, {"cond_scale": lam}, disable=True)
    guided = ref.guided_fn(ref.np_denoiser(cond), ref.np_denoiser(uncond), lam, provide=provide)
    expected = ref.ref_invert_cfgpp(guided, x.numpy(), ascending.tolist())
    return out, expected, model.sigmas, guided.calls


def test_plain_inversion_matches_reference():
    worst = 0.0
    for pair, kind, steps, ending in itertools.product(PAIRS, KINDS, STEPS, ENDINGS):
        ascending = grid(kind, steps, ending).flip(0)
        out, expected, lib_calls, ref_calls = _run(pair, ascending)
        err = float(abs(out.numpy() - expected).max())
        assert err <= TOL, (pair, kind, steps, ending, err)
        # one model call per step, at the step's higher sigma
        assert lib_calls == pytest.approx([float(s) for s in ascending[1:]], rel=1e-12)
        assert len(ref_calls) == len(lib_calls)
        worst = max(worst, err)
    runs = len(PAIRS) * len(KINDS) * len(STEPS) * len(ENDINGS)
    print(f"\n[cfgpp inversion reference] max |lib - ref| = {worst:.2e} over {runs} runs")


def test_missing_uncond_is_the_cfg_inversion_of_the_guided_model(caplog):
    """Calls without D_u use D_λ in its place (one warning per run): the plain-CFG DDIM inversion."""
    for pair in PAIRS:
        ascending = grid("karras", 10).flip(0)
        out, expected, _, _ = _run(pair, ascending, provide=lambda k: k % 3 != 1)
        assert abs(out.numpy() - expected).max() <= TOL

    cond, uncond = PAIRS["mixture"]()
    lam = LAMBDAS["mixture"]
    guided = GuidedModel(cond, uncond)
    x = _clean("mixture")
    ascending = grid("ddim", 10).flip(0)
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="lib_hidiff.cfgpp"):
        out = cfgpp.invert_cfgpp(
            lambda xx, s, **ea: guided(xx, s, **ea),
            x,
            ascending,
            {"cond_scale": lam},
            disable=True,
            iterations=3,
        )
    warnings = [r for r in caplog.records if r.name == "lib_hidiff.cfgpp" and r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "CFG++ inversion" in warnings[0].getMessage()
    # iterations=0 of the same model equals the reference with D_u := D_λ on every call
    out0 = cfgpp.invert_cfgpp(plain_model(lambda xx, s: guided(xx, s, lam)), x, ascending, disable=True)
    no_uncond = ref.guided_fn(ref.np_denoiser(cond), ref.np_denoiser(uncond), lam, provide=lambda k: False)
    assert abs(out0.numpy() - ref.ref_invert_cfgpp(no_uncond, x.numpy(), ascending.tolist())).max() <= TOL
    assert torch.isfinite(out).all()
